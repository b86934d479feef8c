use std::io;

use sockserve::prelude::*;

#[sockserve::server(tcp, threading)]
struct Echo;

impl DatagramHandler for Echo {
    fn handle(&self, _req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        Ok(())
    }
}

fn main() {}
