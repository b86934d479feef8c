// A stream handler on a datagram server is one error at the transport keyword, however
// much of the server the program uses.
use std::io;

use sockserve::prelude::*;

#[sockserve::server(udp, threading)]
struct Time;

impl StreamHandler for Time {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let server: TimeServer = Time.bind("127.0.0.1:0")?;
    server.handle_request()?;
    server.serve_forever()?;
    server.server_close();
    Ok(())
}
