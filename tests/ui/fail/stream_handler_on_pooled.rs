use std::io;

use sockserve::prelude::*;

#[sockserve::server(tcp, pooled, max_threads = 16)]
struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }
}

fn main() {}
