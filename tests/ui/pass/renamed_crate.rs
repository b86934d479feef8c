// A renamed dependency (`ss = { package = "sockserve" }`) declares servers with
// `crate = "ss"`: the generated code names `ss::...`, never `::sockserve`.
extern crate sockserve as ss;

use std::io;

use ss::prelude::*;

#[ss::server(tcp, threading, crate = "ss", max_threads = 4)]
struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }
}

fn main() {
    let server: EchoServer = Echo.bind("127.0.0.1:0").unwrap();
    assert_eq!(server.options().max_threads, Some(4));
}
