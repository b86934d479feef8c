// The prelude names no std type that handlers receive: globbing it beside std's socket
// modules leaves every name unambiguous, and a handler writes std's `UnixStream` naturally.
use std::io;
use std::net::*;
use std::os::unix::net::*;

use sockserve::prelude::*;

#[sockserve::server(unix_stream)]
struct Gate;

impl StreamHandler<Unix> for Gate {
    fn verify_request(&self, request: &UnixStream, _client_address: &UnixAddr) -> bool {
        request.peer_addr().is_ok()
    }

    fn handle(&self, _req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
        Ok(())
    }
}

// (std's own `std::net::SocketAddr` and `std::os::unix::net::SocketAddr` clash with each
// other under two globs; sockserve adds no name to that.)
fn _every_name(_: &TcpStream, _: &TcpListener, _: &UdpSocket, _: &UnixDatagram, _: &UnixListener) {}

fn main() {
    let _ = Gate;
}
