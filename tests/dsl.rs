//! The `#[server]` DSL at run time: the declared type is exactly core's, the options
//! given in the attribute are the ones the server runs with, and a declared server
//! serves real sockets.

use std::any::{Any, TypeId};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use sockserve::concurrency::{AfterMessage, MessageHandler, Multiplex};
use sockserve::prelude::*;
use sockserve::server;
use sockserve::transport::Tls;

mod tls_support;
mod util;

/// Echoes every line back.
#[server(
    tcp,
    threading,
    timeout = "500ms",
    connection_timeout = "5s",
    max_threads = 8,
    daemon_threads = true,
    disable_nagle_algorithm = true,
    rbufsize = 0
)]
struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            req.wfile.write_all(line.as_bytes())?;
            line.clear();
        }
        Ok(())
    }
}

/// Answers each datagram with it, upper-cased.
#[server(udp, max_packet_size = 512, poll_interval = "50ms")]
struct Shout;

impl DatagramHandler for Shout {
    fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        req.wfile.extend(req.packet.to_ascii_uppercase());
        Ok(())
    }
}

#[test]
fn the_declared_server_is_cores_threading_tcp_server() {
    assert_eq!(
        TypeId::of::<EchoServer>(),
        TypeId::of::<ThreadingTcpServer<Echo>>()
    );
    assert_eq!(
        TypeId::of::<EchoServer>(),
        TypeId::of::<sockserve::Server<sockserve::transport::Tcp, sockserve::concurrency::Threading, Echo>>()
    );
    // What `bind` returns, assigned to a variable typed with core's alias.
    let server: ThreadingTcpServer<Echo> = Echo.bind("127.0.0.1:0").unwrap();
    let erased: &dyn Any = &server;
    assert!(erased.is::<EchoServer>());
    assert_eq!(TypeId::of::<<Echo as Declared>::Transport>(), TypeId::of::<Tcp>());
    assert_eq!(
        TypeId::of::<<Echo as Declared>::Concurrency>(),
        TypeId::of::<Threading>()
    );
    assert_eq!(TypeId::of::<ShoutServer>(), TypeId::of::<UdpServer<Shout>>());
}

#[test]
fn options_carry_the_attribute_values() {
    let expected = Options::DEFAULT
        .timeout(Some(Duration::from_millis(500)))
        .connection_timeout(Some(Duration::from_secs(5)))
        .max_threads(Some(8))
        .daemon_threads(true)
        .disable_nagle_algorithm(true)
        .rbufsize(0);
    assert_eq!(Echo::OPTIONS, expected);
    let server = Echo.bind("127.0.0.1:0").unwrap();
    assert_eq!(server.options(), &expected);

    let shout = Options::DEFAULT
        .max_packet_size(512)
        .poll_interval(Duration::from_millis(50));
    assert_eq!(Shout::OPTIONS, shout);
}

// Every key written with the default documented in the key table (README, `server`
// docs) gives exactly `Options::DEFAULT`: the documented defaults are core's.
#[server(
    tcp,
    threading,
    poll_interval = "500ms",
    request_queue_size = 1024,
    allow_reuse_address = true,
    allow_reuse_port = false,
    daemon_threads = false,
    block_on_close = true,
    rbufsize = 8192,
    wbufsize = 0,
    disable_nagle_algorithm = false
)]
struct TcpDefaults;

#[server(udp, forking, max_packet_size = 8192, max_children = 40)]
struct UdpDefaults;

#[server(unix_stream, remove_stale_socket = true)]
struct UnixDefaults;

impl StreamHandler for TcpDefaults {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }
}

impl DatagramHandler for UdpDefaults {
    fn handle(&self, _req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        Ok(())
    }
}

impl StreamHandler<Unix> for UnixDefaults {
    fn handle(&self, _req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn documented_defaults_are_cores() {
    assert_eq!(TcpDefaults::OPTIONS, Options::DEFAULT);
    assert_eq!(UdpDefaults::OPTIONS, Options::DEFAULT);
    assert_eq!(UnixDefaults::OPTIONS, Options::DEFAULT);
    let none = Options::DEFAULT;
    assert_eq!(
        (none.timeout, none.connection_timeout, none.socket_mode),
        (None, None, None)
    );
    // Python's ThreadingMixIn has no cap; sockserve's default is 1024 threads.
    assert_eq!(none.max_threads, Some(1024));
}

#[test]
fn tcp_round_trip_through_a_declared_server() {
    let server = Echo.bind("127.0.0.1:0").unwrap();
    let address = server.server_address();
    assert!(address.ip().is_loopback() && address.port() != 0);
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.serve_forever());
        let mut client = TcpStream::connect(address).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(client.try_clone().unwrap());
        for line in ["hello\n", "from the DSL\n"] {
            client.write_all(line.as_bytes()).unwrap();
            let mut reply = String::new();
            reader.read_line(&mut reply).unwrap();
            assert_eq!(reply, line);
        }
        drop((client, reader));
        server.shutdown();
        serving.join().unwrap().unwrap();
    });
}

#[test]
fn udp_round_trip_through_a_declared_server() {
    let server = Shout.bind("127.0.0.1:0").unwrap();
    let address = server.server_address();
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.serve_forever());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client.send_to(b"quiet", address).unwrap();
        let mut buf = [0; 64];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"QUIET"[..], address));
        server.shutdown();
        serving.join().unwrap().unwrap();
    });
}

#[test]
fn a_declared_server_adopts_a_listening_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = Echo.adopt(Tcp::from_std(listener).unwrap()).unwrap();
    assert_eq!(server.server_address(), address);
    assert_eq!(server.options(), &Echo::OPTIONS);
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.serve_forever());
        let mut client = TcpStream::connect(address).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client.write_all(b"inherited\n").unwrap();
        let mut reply = String::new();
        BufReader::new(client).read_line(&mut reply).unwrap();
        assert_eq!(reply, "inherited\n");
        server.shutdown();
        serving.join().unwrap().unwrap();
    });
}

/// `proxy_protocol` wraps the declared TCP transport in `transport::Proxied` and sets the
/// option.
#[server(tcp, threading, proxy_protocol = "v2")]
struct BehindProxy;

impl StreamHandler<sockserve::transport::Proxied<Tcp>> for BehindProxy {
    fn handle(&self, req: &mut StreamRequest<'_, sockserve::transport::Proxied<Tcp>>) -> io::Result<()> {
        writeln!(req.wfile, "{}", req.client_address)
    }
}

#[test]
fn proxy_protocol_key_declares_a_proxied_tcp_server() {
    assert_eq!(
        BehindProxy::OPTIONS.proxy_protocol,
        sockserve::transport::ProxyProtocol::V2
    );
    let server: Server<sockserve::transport::Proxied<Tcp>, Threading, BehindProxy> =
        BehindProxy.bind("127.0.0.1:0").unwrap();
    let address = server.server_address();
    let server = std::sync::Arc::new(server);
    let serving = std::sync::Arc::clone(&server);
    let thread = std::thread::spawn(move || serving.serve_forever());
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&[198, 51, 100, 4, 127, 0, 0, 1, 0x1f, 0x90, 0x23, 0x28]);
    stream.write_all(&header).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    assert_eq!(line, "198.51.100.4:8080\n");
    server.shutdown();
    thread.join().unwrap().unwrap();
}

/// Echo on the multiplex model, each worker accepting on a listener of its own.
#[server(tcp, multiplex, workers = 2, worker_listeners = true)]
struct MuxEcho;

impl ConnectionHandler<Tcp> for MuxEcho {
    type Conn = ();

    fn connected(&self, _io: &mut ConnIo<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }

    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tcp>, input: &[u8]) -> io::Result<usize> {
        io.write(input);
        Ok(input.len())
    }
}

#[test]
fn worker_listeners_reach_the_server_and_imply_reuse_port() {
    assert_eq!(
        MuxEcho::OPTIONS,
        Options::DEFAULT.workers(Some(2)).worker_listeners(true)
    );
    let server = MuxEcho.bind("127.0.0.1:0").unwrap();
    assert!(server.concurrency().worker_listeners());
    // The server's listener is in the SO_REUSEPORT group the workers' listeners join.
    assert!(server.transport().socket().reuse_port().unwrap());
    let plain = ThreadingTcpServer::bind("127.0.0.1:0", TcpDefaults).unwrap();
    assert!(!plain.transport().socket().reuse_port().unwrap());
}

/// `tls` composes with the event-loop models: a multiplex server over TLS (the handshake on
/// the worker) ...
#[server(tcp, multiplex, tls, workers = 1)]
struct MuxTlsEcho;

impl ConnectionHandler<Tls<Tcp>> for MuxTlsEcho {
    type Conn = ();

    fn connected(&self, io: &mut ConnIo<'_, Tls<Tcp>>) -> io::Result<()> {
        let sni = io.request().info().server_name.clone().unwrap_or_default();
        io.write(format!("hello {sni}\n").as_bytes());
        Ok(())
    }

    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tls<Tcp>>, input: &[u8]) -> io::Result<usize> {
        io.write(input);
        Ok(input.len())
    }
}

/// ... and a pooled one over TLS on a Unix socket.
#[server(unix_stream, pooled, tls, max_threads = 2)]
struct PooledTlsEcho;

impl MessageHandler<Tls<Unix>> for PooledTlsEcho {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Unix>>) -> io::Result<AfterMessage> {
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(AfterMessage::Close);
        }
        let sni = req.request.info().server_name.as_deref().unwrap_or_default();
        req.wfile.write_all(format!("{sni}: {line}").as_bytes())?;
        Ok(AfterMessage::KeepOpen)
    }
}

#[test]
fn tls_composes_with_the_multiplex_and_pooled_models() {
    use tls_support::{client_config, connect, round_trip, tcp, Ca};
    let ca = Ca::new("dsl CA");
    let leaf = ca.server();
    let config = || leaf.tls_config().build().unwrap();
    let client = client_config(&ca, None, &[]);
    let declared: TypeId = TypeId::of::<MuxTlsEchoServer>();
    assert_eq!(declared, TypeId::of::<Server<Tls<Tcp>, Multiplex, MuxTlsEcho>>());

    let server = MuxTlsEcho.bind(("127.0.0.1:0", config())).unwrap();
    let addr = server.server_address();
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.serve_forever());
        let mut stream = connect(&client, tcp(addr)).unwrap();
        assert_eq!(round_trip(&mut stream, "").unwrap(), "hello localhost\n");
        assert_eq!(round_trip(&mut stream, "over tls\n").unwrap(), "over tls\n");
        server.shutdown();
        serving.join().unwrap().unwrap();
    });

    let dir = util::TempDir::new("dsl-tls");
    let path = dir.path("pooled.sock");
    let server = PooledTlsEcho.bind((path.clone(), config())).unwrap();
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.serve_forever());
        let sock = std::os::unix::net::UnixStream::connect(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = connect(&client, sock).unwrap();
        assert_eq!(round_trip(&mut stream, "one\n").unwrap(), "localhost: one\n");
        assert_eq!(round_trip(&mut stream, "two\n").unwrap(), "localhost: two\n");
        server.shutdown();
        serving.join().unwrap().unwrap();
    });
}
