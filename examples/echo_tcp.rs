//! Line echo over TCP, one thread per connection (Python's `ThreadingTCPServer`), or
//! `--pooled`: no thread per connection between lines.
//!
//! ```sh
//! cargo run --example echo_tcp -- --bind 127.0.0.1:9000
//! printf 'hello\nworld\n' | nc -N 127.0.0.1 9000
//! cargo run --example echo_tcp -- --bind 127.0.0.1:9000 --pooled
//! ```
//!
//! Every line a client sends comes back unchanged. A line longer than 4096 bytes gets
//! `error: line too long` and the connection is closed; a client idle for 5 minutes is dropped.
//! SIGTERM/SIGINT: stop accepting, answer the lines already received, exit 0.
//! `--bind systemd` serves on the socket systemd passed (socket activation):
//! `systemd-socket-activate -l 127.0.0.1:9000 target/debug/examples/echo_tcp --bind systemd`.
//!
//! `--pooled` serves the same protocol on the pooled model ([`PooledEcho`]): `handle` answers
//! one line per call and the connection waits for the next line parked in the event loop,
//! holding no thread; `--max-threads` then caps the lines being answered at once, not the
//! connections.

#[path = "support/mod.rs"]
mod support;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use support::Connection as _;

/// The handler: stateless, so one value serves every thread.
#[server(tcp, threading)]
struct Echo;

impl StreamHandler for Echo {
    fn setup(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        req.request.poll_reads()
    }

    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        support::serve_lines(&mut req.rfile, &mut req.wfile, IDLE, support::echo)
    }
}

/// How long a silent client keeps its connection.
const IDLE: Duration = Duration::from_secs(300);

/// `--pooled`: one line per `handle`; between lines the connection is parked in the event
/// loop, and a silent client is dropped after `idle_timeout` (the threading handler's [`IDLE`]).
#[server(tcp, pooled, idle_timeout = "300s")]
struct PooledEcho;

impl MessageHandler<Tcp> for PooledEcho {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<AfterMessage> {
        support::serve_line(req, support::echo)
    }
}

/// `--pooled`: serve on the pooled model.
const POOLED: support::Opt = support::Opt {
    name: "pooled",
    value: None,
    help: "serve on the pooled model (no thread per connection between lines)",
};

const SPEC: support::Spec = support::Spec {
    about: "Line echo over TCP, one thread per connection (--pooled: a thread per line).",
    default_bind: "127.0.0.1:9000",
    bind_value: "HOST:PORT",
    options: &[POOLED, support::MAX_THREADS, support::CONNECTION_TIMEOUT],
};

fn main() -> ExitCode {
    let served = support::start().and_then(|stopper| {
        let args = support::parse_args(&SPEC);
        // The attribute's options are the defaults; the command line overrides what it sets.
        // `--bind systemd`: the socket systemd passed.
        if args.flag(POOLED.name) {
            let options = args.server_options(PooledEcho::OPTIONS);
            support::serve(support::bind_declared(PooledEcho, &args, options)?, stopper)
        } else {
            let options = args.server_options(Echo::OPTIONS);
            support::serve(support::bind_declared(Echo, &args, options)?, stopper)
        }
    });
    support::report(served)
}
