// `tcp` transport, `sync` concurrency (no concurrency word: `sync`): the alias is core's `TcpServer`, and every
// option that applies to the pair is accepted and lands in `OPTIONS`.
use std::io;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;

#[server(
    tcp,
    poll_interval = "250ms",
    timeout = "1.5s",
    request_queue_size = 16,
    allow_reuse_port = true,
    rbufsize = 0,
    wbufsize = 4096,
    connection_timeout = "2s",
    disable_nagle_algorithm = true
)]
struct Handler;

impl StreamHandler<Tcp> for Handler {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }
}

// Compiles only if the generated alias and associated types are exactly core's.
fn same_server(server: HandlerServer) -> TcpServer<Handler> {
    server
}
fn same_transport(t: <Handler as Declared>::Transport) -> Tcp {
    t
}
fn same_concurrency(c: <Handler as Declared>::Concurrency) -> Synchronous {
    c
}

fn main() {
    let _ = (same_server, same_transport, same_concurrency);
    assert_eq!(Handler::OPTIONS.poll_interval, Duration::from_millis(250));
    assert_eq!(Handler::OPTIONS.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(Handler::OPTIONS.request_queue_size, 16);
    assert_eq!(Handler::OPTIONS.allow_reuse_port, true);
    assert_eq!(Handler::OPTIONS.rbufsize, 0);
    assert_eq!(Handler::OPTIONS.wbufsize, 4096);
    assert_eq!(Handler::OPTIONS.connection_timeout, Some(Duration::from_secs(2)));
    assert_eq!(Handler::OPTIONS.disable_nagle_algorithm, true);
    assert_eq!(
        Handler::OPTIONS.allow_reuse_address,
        Options::DEFAULT.allow_reuse_address
    );
}
