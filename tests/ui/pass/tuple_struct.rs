// A tuple struct: the handler's fields are the server-wide state.
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use sockserve::prelude::*;
use sockserve::server;

#[server(tcp, threading, max_threads = 2)]
pub(crate) struct Counter(AtomicUsize, &'static str);

impl StreamHandler for Counter {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        writeln!(req.wfile, "{} {n}", self.1)
    }
}

fn main() {
    let server: CounterServer = Counter(AtomicUsize::new(0), "visitor")
        .bind("127.0.0.1:0")
        .unwrap();
    assert_eq!(server.handler().1, "visitor");
    assert_eq!(server.options().max_threads, Some(2));
}
