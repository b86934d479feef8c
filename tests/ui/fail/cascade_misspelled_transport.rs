// A misspelled transport is one error: the program around it (bind, serve_forever) still
// type-checks against what was meant.
use std::io;

use sockserve::prelude::*;

#[sockserve::server(tpc, threading)]
struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let server: EchoServer = Echo.bind("127.0.0.1:0")?;
    server.serve_forever()
}
