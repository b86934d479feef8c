// Without the macro: core's server types reject a datagram handler on a stream transport.
use std::io::{self, Write};

use sockserve::{DatagramHandler, DatagramRequest, ThreadingTcpServer};
use sockserve::transport::Udp;

struct Echo;

impl DatagramHandler for Echo {
    fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        req.wfile.write_all(req.packet)
    }
}

fn main() {
    let _server = ThreadingTcpServer::bind("127.0.0.1:0", Echo);
}
