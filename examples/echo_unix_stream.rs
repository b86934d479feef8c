//! Line echo over a Unix stream socket, one thread per connection
//! (Python's `ThreadingUnixStreamServer`).
//!
//! ```sh
//! cargo run --example echo_unix_stream -- --bind /tmp/echo.sock
//! printf 'hello\n' | socat - UNIX-CONNECT:/tmp/echo.sock
//! ```
//!
//! Same protocol as `echo_tcp`. A stale socket file left by a dead server is replaced at start;
//! the socket file is removed when the server stops (SIGTERM/SIGINT).

#[path = "support/mod.rs"]
mod support;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use support::Connection as _;

#[server(unix_stream, threading)]
struct Echo;

impl StreamHandler<Unix> for Echo {
    fn setup(&self, req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
        req.request.poll_reads()
    }

    fn handle(&self, req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
        support::serve_lines(&mut req.rfile, &mut req.wfile, IDLE, support::echo)
    }
}

/// How long a silent client keeps its connection.
const IDLE: Duration = Duration::from_secs(300);

const SPEC: support::Spec = support::Spec {
    about: "Line echo over a Unix stream socket, one thread per connection.",
    default_bind: "/tmp/sockserve-echo-stream.sock",
    bind_value: "PATH",
    options: &[],
};

fn main() -> ExitCode {
    support::run(&SPEC, |args| Echo.bind(args.bind.as_str()))
}
