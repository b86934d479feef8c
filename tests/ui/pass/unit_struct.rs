// A unit struct: the handler holds no state.
use std::io::{self, Write};

use sockserve::prelude::*;
use sockserve::server;

#[server(udp)]
pub struct Pong;

impl DatagramHandler for Pong {
    fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        req.wfile.write_all(b"pong")
    }
}

fn main() {
    let server: PongServer = Pong.bind("127.0.0.1:0").unwrap();
    let _: &UdpServer<Pong> = &server;
    assert_eq!(server.options(), &Options::DEFAULT);
}
