// Without the macro: core's server types reject a stream handler on a datagram transport.
use std::io;

use sockserve::{StreamHandler, StreamRequest, UdpServer};
use sockserve::transport::Tcp;

struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        io::copy(&mut req.rfile, &mut req.wfile).map(drop)
    }
}

fn main() {
    let _server = UdpServer::bind("127.0.0.1:0", Echo);
}
