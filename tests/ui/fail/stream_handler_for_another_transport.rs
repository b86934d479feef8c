// A stream handler for `Tcp` does not serve `unix_stream`: the transport parameter matters.
use std::io;

use sockserve::prelude::*;

#[sockserve::server(unix_stream)]
struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }
}

fn main() {}
