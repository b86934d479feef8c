use std::cell::Cell;
use std::io;

use sockserve::prelude::*;

#[sockserve::server(tcp, threading)]
struct Counter(Cell<u64>);

impl StreamHandler for Counter {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.0.set(self.0.get() + 1);
        Ok(())
    }
}

fn main() {}
