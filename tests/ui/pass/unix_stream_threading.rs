// `unix_stream` transport, `threading` concurrency: the alias is core's `ThreadingUnixStreamServer`, and every
// option that applies to the pair is accepted and lands in `OPTIONS`.
use std::io;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;

#[server(
    unix_stream,
    threading,
    poll_interval = "250ms",
    timeout = "1.5s",
    request_queue_size = 8,
    rbufsize = 1024,
    socket_mode = 0o600,
    remove_stale_socket = false,
    daemon_threads = true,
    block_on_close = false,
    max_threads = 8
)]
struct Handler;

impl StreamHandler<Unix> for Handler {
    fn handle(&self, _req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
        Ok(())
    }
}

// Compiles only if the generated alias and associated types are exactly core's.
fn same_server(server: HandlerServer) -> ThreadingUnixStreamServer<Handler> {
    server
}
fn same_transport(t: <Handler as Declared>::Transport) -> Unix {
    t
}
fn same_concurrency(c: <Handler as Declared>::Concurrency) -> Threading {
    c
}

fn main() {
    let _ = (same_server, same_transport, same_concurrency);
    assert_eq!(Handler::OPTIONS.poll_interval, Duration::from_millis(250));
    assert_eq!(Handler::OPTIONS.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(Handler::OPTIONS.request_queue_size, 8);
    assert_eq!(Handler::OPTIONS.rbufsize, 1024);
    assert_eq!(Handler::OPTIONS.socket_mode, Some(0o600));
    assert_eq!(Handler::OPTIONS.remove_stale_socket, false);
    assert_eq!(Handler::OPTIONS.daemon_threads, true);
    assert_eq!(Handler::OPTIONS.block_on_close, false);
    assert_eq!(Handler::OPTIONS.max_threads, Some(8));
    assert_eq!(
        Handler::OPTIONS.allow_reuse_address,
        Options::DEFAULT.allow_reuse_address
    );
}
