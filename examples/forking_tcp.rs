//! A forking TCP server (Python's `ForkingTCPServer`): each connection is served by a child
//! process of its own, and every reply says which one.
//!
//! ```sh
//! cargo run --example forking_tcp -- --bind 127.0.0.1:9002
//! printf 'hello\nagain\n' | nc -N 127.0.0.1 9002   # pid 4242: hello / pid 4242: again
//! printf 'hello\n' | nc -N 127.0.0.1 9002          # another connection, another pid
//! ```
//!
//! Each line comes back as `pid <child pid>: <line>`. The child exits when its client is done;
//! the parent reaps it. At most 40 children run at once (`max_children`). SIGTERM/SIGINT: the
//! parent stops accepting; children answer the line in hand, then end (they see the stop flag
//! in memory shared with the parent); the parent waits for them and exits 0.

#[path = "support/mod.rs"]
mod support;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use support::{Connection as _, Next};

#[server(tcp, forking)]
struct PerProcess;

impl StreamHandler for PerProcess {
    fn setup(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        req.request.poll_reads()
    }

    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        // This runs in the child: its pid is not the server's.
        let prefix = format!("pid {}: ", std::process::id());
        support::serve_lines(&mut req.rfile, &mut req.wfile, IDLE, |line, out| {
            let mut reply = prefix.clone().into_bytes();
            reply.extend_from_slice(line);
            if !reply.ends_with(b"\n") {
                reply.push(b'\n');
            }
            out.write_all(&reply)?;
            Ok(Next::Continue)
        })
    }
}

/// How long a silent client keeps its child process.
const IDLE: Duration = Duration::from_secs(300);

const SPEC: support::Spec = support::Spec {
    about: "Forking TCP server: a child process per connection; replies carry the child's pid.",
    default_bind: "127.0.0.1:9002",
    bind_value: "HOST:PORT",
    options: &[support::MAX_CHILDREN],
};

fn main() -> ExitCode {
    support::run(&SPEC, |args| {
        support::bind_declared(PerProcess, args, args.server_options(PerProcess::OPTIONS))
    })
}
