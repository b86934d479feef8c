// The `tls` word wraps the transport in `transport::Tls`; the server is bound with the
// address and a `TlsConfig`.
use std::io;

use sockserve::prelude::*;
use sockserve::server;
use sockserve::transport::{Tls, TlsConfig};

#[server(tcp, threading, tls)]
struct Echo;

impl StreamHandler<Tls<Tcp>> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Tcp>>) -> io::Result<()> {
        io::copy(&mut req.rfile, &mut req.wfile).map(drop)
    }
}

#[server(unix_stream, forking, tls, connection_timeout = "5s")]
struct Hello;

impl StreamHandler<Tls<Unix>> for Hello {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Unix>>) -> io::Result<()> {
        let name = req.request.info().peer_common_name().unwrap_or_default();
        io::Write::write_all(&mut req.wfile, name.as_bytes())
    }
}

fn same(server: EchoServer) -> Server<Tls<Tcp>, Threading, Echo> {
    server
}

#[allow(dead_code)]
fn bind(config: TlsConfig) -> io::Result<()> {
    let _tcp = Echo.bind(("127.0.0.1:0", config.clone()))?;
    let _unix = Hello.bind(("/tmp/hello.sock", config))?;
    Ok(())
}

fn main() {
    let _ = same;
}
