//! Fault 7: the peer closes early. Writing to a closed connection fails that request with
//! `EPIPE` (reported to `handle_error`) and nothing else: `SIGPIPE` never kills the process.
//!
//! Each scenario first puts `SIGPIPE` back to its default action (terminate), as a non-Rust
//! `main` would have it, then creates the server, which leaves the disposition alone (a
//! library does not change process-wide signal state behind the program's back). The handler
//! writes to the closed connection through `wfile`: std's socket writes pass `MSG_NOSIGNAL`
//! (TCP and Unix streams), so the write fails with `EPIPE` and no signal is raised.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sockserve::concurrency::{Forking, ProcessRequest, Synchronous, Threading};
use sockserve::transport::{StreamTransport, Tcp, Unix};
use sockserve::{Options, RequestError, Server, StreamHandler, StreamRequest};

use crate::harness::{self, bump, get, isolated_tests, HalfClose};

const ROUNDS: u64 = 6;

const BROKEN_PIPE: usize = 0;
const OTHER_ERRORS: usize = 1;
const ANSWERED: usize = 2;

/// On `flood`, waits until the client has gone, then writes to it through `wfile` until the
/// write fails. Answers `ok` to anything else.
struct Flood {
    counters: &'static [AtomicU64],
}

impl<T: StreamTransport> StreamHandler<T> for Flood {
    fn handle(&self, req: &mut StreamRequest<'_, T>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        if line != "flood\n" {
            req.wfile.write_all(b"ok\n")?;
            bump(&self.counters[ANSWERED]);
            return Ok(());
        }
        let mut rest = Vec::new();
        req.rfile.read_to_end(&mut rest)?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1024 {
            req.wfile.write_all(&chunk)?;
        }
        Err(io::Error::other(
            "64 MiB written to a closed connection without an error",
        ))
    }

    fn handle_error(&self, _client: &T::Address, error: &RequestError) {
        match error {
            RequestError::Disconnected(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                bump(&self.counters[BROKEN_PIPE])
            }
            other => {
                eprintln!("unexpected error: {other}");
                bump(&self.counters[OTHER_ERRORS]);
            }
        }
    }
}

/// The current action of `SIGPIPE` (`SIG_DFL`, `SIG_IGN` or a handler address).
fn sigpipe_action() -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is a valid value of this plain C struct.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a live sigaction that is written.
    let r = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "sigaction: {}", io::Error::last_os_error());
    old.sa_sigaction
}

/// Puts `SIGPIPE` back to its default action, as a process not started by Rust's runtime has.
fn default_sigpipe() {
    // SAFETY: SIG_DFL is a valid disposition for SIGPIPE; no handler code is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_eq!(sigpipe_action(), libc::SIG_DFL);
}

/// What each model adds to the checks: a forking server's children that hit `EPIPE` exit
/// with a failure status (not by the signal: their `handle_error` ran) and are reaped.
trait Children {
    fn check(&self) {}
}

impl Children for Synchronous {}
impl Children for Threading {}

impl Children for Forking {
    fn check(&self) {
        assert!(harness::eventually(Duration::from_secs(5), || {
            self.collect_children(false);
            self.failed_children() == ROUNDS
        }));
    }
}

/// Sends `flood` from clients that close at once, ROUNDS times, each followed by a normal
/// request; the server was created after `SIGPIPE` was put back to its default.
fn closed_peer<T, C>(
    server: &Server<T, C, Flood>,
    counters: &'static [AtomicU64],
    connect: impl Fn() -> io::Result<Box<dyn HalfClose + Send>>,
) where
    T: StreamTransport,
    C: ProcessRequest<T, Flood> + Children + Sync,
    Server<T, C, Flood>: Sync,
{
    assert_eq!(
        sigpipe_action(),
        libc::SIG_DFL,
        "creating a server leaves the SIGPIPE disposition alone"
    );
    harness::serving(server, || {
        assert_eq!(
            harness::ask(connect().expect("connect"), "hello").expect("warm-up"),
            "ok"
        );
        for round in 1..=ROUNDS {
            // The client lives in a process of its own, so its close really closes the
            // connection (a forking server's child would hold a copy of it otherwise).
            harness::client_process(|| {
                let mut client = connect().expect("connect");
                client.write_all(b"flood\n").expect("send");
            })
            .wait();
            assert!(
                harness::eventually(Duration::from_secs(10), || get(&counters[BROKEN_PIPE]) == round),
                "no EPIPE reported for round {round}"
            );
            assert_eq!(
                harness::ask(connect().expect("connect"), "hello").expect("the request after EPIPE"),
                "ok"
            );
        }
        assert_eq!(get(&counters[OTHER_ERRORS]), 0);
        server.concurrency().check();
    });
    assert_eq!(get(&counters[BROKEN_PIPE]), ROUNDS);
    assert!(harness::eventually(Duration::from_secs(5), || get(
        &counters[ANSWERED]
    ) == ROUNDS + 1));
}

fn options() -> Options {
    Options::DEFAULT.poll_interval(Duration::from_millis(50))
}

fn tcp<C>()
where
    C: ProcessRequest<Tcp, Flood> + Children + Sync,
{
    default_sigpipe();
    let counters = harness::shared_counters(3);
    let server: Server<Tcp, C, Flood> =
        Server::with_options("127.0.0.1:0", Flood { counters }, options()).expect("bind");
    let addr = server.server_address();
    closed_peer(&server, counters, || {
        Ok(Box::new(harness::connect_tcp(addr)?) as Box<dyn HalfClose + Send>)
    });
}

fn unix<C>()
where
    C: ProcessRequest<Unix, Flood> + Children + Sync,
{
    default_sigpipe();
    let dir = harness::temp_dir("sigpipe");
    let path = dir.join("server.sock");
    let counters = harness::shared_counters(3);
    let server: Server<Unix, C, Flood> =
        Server::with_options(&path, Flood { counters }, options()).expect("bind");
    closed_peer(&server, counters, || {
        Ok(Box::new(harness::connect_unix(Path::new(&path))?) as Box<dyn HalfClose + Send>)
    });
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

isolated_tests! {
    fn closed_peer_tcp_sync() {
        tcp::<Synchronous>();
    }

    fn closed_peer_tcp_threading() {
        tcp::<Threading>();
    }

    fn closed_peer_tcp_forking() {
        tcp::<Forking>();
    }

    fn closed_peer_unix_sync() {
        unix::<Synchronous>();
    }

    fn closed_peer_unix_threading() {
        unix::<Threading>();
    }

    fn closed_peer_unix_forking() {
        unix::<Forking>();
    }
}
