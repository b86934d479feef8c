use std::io;

use sockserve::prelude::*;

#[sockserve::server(tcp, threading)]
struct Echo;

impl ConnectionHandler<Tcp> for Echo {
    type Conn = ();

    fn connected(&self, _io: &mut ConnIo<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }

    fn input(&self, _conn: &mut (), _io: &mut ConnIo<'_, Tcp>, input: &[u8]) -> io::Result<usize> {
        Ok(input.len())
    }
}

fn main() {}
