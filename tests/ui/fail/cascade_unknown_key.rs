// An unknown option is one error; the rest of the program still compiles.
use std::io;

use sockserve::prelude::*;

#[sockserve::server(tcp, threading, max_thread = 4)]
struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }
}

fn main() -> io::Result<()> {
    Echo.bind("127.0.0.1:0")?.serve_forever()
}
