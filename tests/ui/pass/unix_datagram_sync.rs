// `unix_datagram` transport, `sync` concurrency (no concurrency word: `sync`): the alias is core's `UnixDatagramServer`, and every
// option that applies to the pair is accepted and lands in `OPTIONS`.
use std::io;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;

#[server(
    unix_datagram,
    poll_interval = "250ms",
    timeout = "1.5s",
    max_packet_size = 1024,
    socket_mode = 0o660
)]
struct Handler;

impl DatagramHandler<UnixDgram> for Handler {
    fn handle(&self, req: &mut DatagramRequest<'_, UnixDgram>) -> io::Result<()> {
        req.wfile.extend_from_slice(req.packet);
        Ok(())
    }
}

// Compiles only if the generated alias and associated types are exactly core's.
fn same_server(server: HandlerServer) -> UnixDatagramServer<Handler> {
    server
}
fn same_transport(t: <Handler as Declared>::Transport) -> UnixDgram {
    t
}
fn same_concurrency(c: <Handler as Declared>::Concurrency) -> Synchronous {
    c
}

fn main() {
    let _ = (same_server, same_transport, same_concurrency);
    assert_eq!(Handler::OPTIONS.poll_interval, Duration::from_millis(250));
    assert_eq!(Handler::OPTIONS.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(Handler::OPTIONS.max_packet_size, 1024);
    assert_eq!(Handler::OPTIONS.socket_mode, Some(0o660));
    assert_eq!(
        Handler::OPTIONS.allow_reuse_address,
        Options::DEFAULT.allow_reuse_address
    );
}
