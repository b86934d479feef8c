//! Who is connecting, without TLS: a Unix stream server that answers each line with the
//! peer's credentials as the kernel recorded them (`SO_PEERCRED`).
//!
//! ```sh
//! cargo run --example peercred -- --bind /tmp/peercred.sock --allow-uid 1000
//! echo hi | socat - UNIX-CONNECT:/tmp/peercred.sock      # uid=1000 gid=1000 pid=4242
//! ```
//!
//! The socket file is world-writable (`socket_mode = 0o666`): access is decided by who the
//! peer is, not by the file's mode. With `--allow-uid U` (repeatable) a peer of another user
//! is refused in `verify_request`: closed without a reply, and logged. Without it everyone is
//! served. SIGTERM/SIGINT: stop, remove the socket file, exit 0.

#[path = "support/mod.rs"]
mod support;

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use sockserve::transport::PeerCredentials;
use support::Connection as _;

/// The users allowed to connect; empty: everyone.
#[server(unix_stream, threading, socket_mode = 0o666)]
struct PeerCred {
    allowed: Vec<u32>,
}

impl StreamHandler<Unix> for PeerCred {
    fn verify_request(&self, request: &UnixStream, _: &UnixAddr) -> bool {
        match request.peer_credentials() {
            Ok(peer) if self.allowed.is_empty() || self.allowed.contains(&peer.uid) => true,
            Ok(peer) => {
                log::info!("refused uid={} pid={}: not in --allow-uid", peer.uid, peer.pid);
                false
            }
            Err(e) => {
                log::warn!("refused a peer whose credentials are unknown: {e}");
                false
            }
        }
    }

    fn setup(&self, req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
        req.request.poll_reads()
    }

    fn handle(&self, req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
        let peer = req.request.peer_credentials()?;
        support::serve_lines(&mut req.rfile, &mut req.wfile, IDLE, |_line, out| {
            writeln!(out, "uid={} gid={} pid={}", peer.uid, peer.gid, peer.pid)?;
            Ok(support::Next::Continue)
        })
    }
}

/// How long a silent client keeps its connection.
const IDLE: Duration = Duration::from_secs(300);

const SPEC: support::Spec = support::Spec {
    about: "Answers each line with the peer's uid, gid and pid (SO_PEERCRED).",
    default_bind: "/tmp/sockserve-peercred.sock",
    bind_value: "PATH",
    options: &[
        support::Opt {
            name: "allow-uid",
            value: Some("UID"),
            help: "serve only this user (repeatable); default: everyone",
        },
        support::MAX_THREADS,
    ],
};

fn main() -> ExitCode {
    support::run(&SPEC, |args| {
        let mut allowed = Vec::new();
        for uid in args.values("allow-uid") {
            match uid.parse() {
                Ok(uid) => allowed.push(uid),
                Err(_) => {
                    log::error!("--allow-uid takes a numeric user id, not `{uid}`");
                    std::process::exit(2);
                }
            }
        }
        PeerCred { allowed }.bind_with(args.bind.as_str(), args.server_options(PeerCred::OPTIONS))
    })
}
