// `tcp` transport, `multiplex` concurrency: the alias is core's `MultiplexTcpServer`, the
// handler a `ConnectionHandler`, and every multiplex key lands in `OPTIONS`.
use std::io;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;

#[server(
    tcp,
    multiplex,
    workers = 2,
    max_connections = 100,
    idle_timeout = "30s",
    max_input = 4096,
    disable_nagle_algorithm = true
)]
struct Handler;

impl ConnectionHandler<Tcp> for Handler {
    type Conn = ();

    fn connected(&self, _io: &mut ConnIo<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }

    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tcp>, input: &[u8]) -> io::Result<usize> {
        io.write(input);
        Ok(input.len())
    }
}

// Compiles only if the generated alias and associated types are exactly core's.
fn same_server(server: HandlerServer) -> MultiplexTcpServer<Handler> {
    server
}
fn same_concurrency(c: <Handler as Declared>::Concurrency) -> Multiplex {
    c
}

fn main() {
    let _ = (same_server, same_concurrency);
    assert_eq!(Handler::OPTIONS.workers, Some(2));
    assert_eq!(Handler::OPTIONS.max_connections, Some(100));
    assert_eq!(Handler::OPTIONS.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(Handler::OPTIONS.max_input, 4096);
    assert_eq!(Handler::OPTIONS.disable_nagle_algorithm, true);
}
