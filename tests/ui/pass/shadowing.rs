// User code that shadows the names generated code could trip on: the expansion uses
// absolute paths only. Everything here refers to the real items with `::`.
#![allow(dead_code, non_camel_case_types)]

mod std {}
mod core {}
mod io {}
mod sockserve {}
mod transport {}
mod concurrency {}
struct Result;
struct Option;
struct Some;
struct None;
struct Duration;
struct Options;
struct Server;
struct TcpServer;
struct ThreadingTcpServer;
trait Declared {}
trait StreamHandler {}
trait DatagramHandler {}
trait Send {}
trait Sync {}
trait Sized {}

#[::sockserve::server(tcp, threading, timeout = "2s", max_threads = 4, connection_timeout = "100ms")]
struct Echo;

impl ::sockserve::StreamHandler for Echo {
    fn handle(
        &self,
        _req: &mut ::sockserve::StreamRequest<'_, ::sockserve::transport::Tcp>,
    ) -> ::std::io::Result<()> {
        ::std::result::Result::Ok(())
    }
}

#[::sockserve::server(unix_datagram, forking, max_packet_size = 512, socket_mode = 0o644)]
struct Datagrams;

impl ::sockserve::DatagramHandler<::sockserve::transport::UnixDgram> for Datagrams {
    fn handle(
        &self,
        _req: &mut ::sockserve::DatagramRequest<'_, ::sockserve::transport::UnixDgram>,
    ) -> ::std::io::Result<()> {
        ::std::result::Result::Ok(())
    }
}

fn main() {
    use ::sockserve::Declared as _;
    ::std::assert_eq!(Echo::OPTIONS.max_threads, ::std::option::Option::Some(4));
    ::std::assert_eq!(Datagrams::OPTIONS.socket_mode, ::std::option::Option::Some(0o644));
    let _: ::std::option::Option<EchoServer> = ::std::option::Option::None;
    let _: ::std::option::Option<DatagramsServer> = ::std::option::Option::None;
}
