// `tls` and `proxy_protocol` compose: the PROXY header comes first on the wire, then the TLS
// handshake, so the transport is `Proxied<Tls<Tcp>>`.
use std::io;

use sockserve::prelude::*;
use sockserve::server;
use sockserve::transport::{Proxied, Tls, TlsConfig};

#[server(tcp, threading, tls, proxy_protocol = "v2")]
struct Echo;

impl StreamHandler<Proxied<Tls<Tcp>>> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Proxied<Tls<Tcp>>>) -> io::Result<()> {
        io::copy(&mut req.rfile, &mut req.wfile).map(drop)
    }
}

fn same(server: EchoServer) -> Server<Proxied<Tls<Tcp>>, Threading, Echo> {
    server
}

#[allow(dead_code)]
fn bind(config: TlsConfig) -> io::Result<()> {
    let _server = Echo.bind(("127.0.0.1:0", config))?;
    Ok(())
}

fn main() {
    let _ = same;
}
