//! Line echo over TCP, one thread per connection (Python's `ThreadingTCPServer`).
//!
//! ```sh
//! cargo run --example echo_tcp -- --bind 127.0.0.1:9000
//! printf 'hello\nworld\n' | nc -N 127.0.0.1 9000
//! ```
//!
//! Every line a client sends comes back unchanged. A line longer than 4096 bytes gets
//! `error: line too long` and the connection is closed; a client idle for 5 minutes is dropped.
//! SIGTERM/SIGINT: stop accepting, answer the lines already received, exit 0.
//! `--bind systemd` serves on the socket systemd passed (socket activation):
//! `systemd-socket-activate -l 127.0.0.1:9000 target/debug/examples/echo_tcp --bind systemd`.

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

const SPEC: support::Spec = support::Spec {
    about: "Line echo over TCP, one thread per connection.",
    default_bind: "127.0.0.1:9000",
    bind_value: "HOST:PORT",
    options: &[support::MAX_THREADS, support::CONNECTION_TIMEOUT],
};

fn main() -> ExitCode {
    support::run(&SPEC, |args| {
        // The attribute's options are the defaults; the command line overrides what it sets.
        // `--bind systemd`: the socket systemd passed.
        support::bind_declared(Echo, args, args.server_options(Echo::OPTIONS))
    })
}
