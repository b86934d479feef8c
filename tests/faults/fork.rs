//! Forking across threads and processes (the core second pass): a logging thread holding the
//! stderr lock at fork time, children reaped by someone else, `block_on_close = false` at
//! `max_children`, and shutdown seen across `fork` both ways.

use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sockserve::transport::Tcp;
use sockserve::{ForkingTcpServer, Options, StreamHandler, StreamRequest};

use crate::harness::{self, bump, get, isolated_tests};

/// Reads one line; logs (to stderr, through the scenario's logger) and prints, then answers
/// `ok`. With `SLEEP`, sleeps that long first; with `WAIT_SHUTDOWN`, waits (up to 10 s) until
/// it sees a shutdown, then answers `saw shutdown` (or `no shutdown`); with `STOP`, asks the
/// server to shut down, then sleeps 3 s and answers `stopped`.
struct Forked {
    counters: &'static [AtomicU64],
}

const SERVED: usize = 0;

impl StreamHandler for Forked {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        log::info!("child {} serving {:?}", std::process::id(), line.trim());
        eprintln!("child {} writes to stderr", std::process::id());
        let reply = match line.trim() {
            "WAIT_SHUTDOWN" => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !req.server.is_shutdown_requested() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(5));
                }
                if req.server.is_shutdown_requested() {
                    "saw shutdown"
                } else {
                    "no shutdown"
                }
            }
            "STOP" => {
                thread::sleep(Duration::from_millis(300));
                req.server.shutdown();
                thread::sleep(Duration::from_secs(3));
                "stopped"
            }
            text => {
                if let Some(ms) = text.strip_prefix("SLEEP ") {
                    thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                }
                "ok"
            }
        };
        bump(&self.counters[SERVED]);
        writeln!(req.wfile, "{reply}")
    }
}

fn forking(options: Options) -> (ForkingTcpServer<Forked>, &'static [AtomicU64]) {
    let counters = harness::shared_counters(1);
    let server = ForkingTcpServer::with_options("127.0.0.1:0", Forked { counters }, options).expect("bind");
    (server, counters)
}

fn fast() -> Options {
    Options::DEFAULT.poll_interval(Duration::from_millis(20))
}

/// Whether a reply is waiting on `stream` right now, without waiting for one.
fn reply_waiting(stream: &std::net::TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let waiting = !matches!(stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("blocking");
    waiting
}

fn send(addr: SocketAddr, line: &str) -> std::net::TcpStream {
    let mut stream = harness::connect_tcp(addr).expect("connect");
    stream.write_all(format!("{line}\n").as_bytes()).expect("send");
    stream
}

isolated_tests! {
    /// 300 forked requests while another thread logs to stderr without pause: a child forked
    /// while that thread held the stderr lock would hang on its first log line. All 300 are
    /// answered and every child is reaped.
    fn forked_children_log_while_another_thread_hammers_stderr() {
        let (server, counters) = forking(fast());
        let addr = server.server_address();
        let stop = Arc::new(AtomicBool::new(false));
        let noise = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut lines = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    log::info!("noise from the logging thread, line {lines}");
                    lines += 1;
                }
                lines
            })
        };
        harness::serving(&server, || {
            for i in 0..300 {
                assert_eq!(harness::ask_tcp(addr, "hello").expect("request"), "ok", "request {i}");
            }
        });
        stop.store(true, Ordering::Relaxed);
        assert!(noise.join().expect("noise thread") > 0);
        assert_eq!(get(&counters[SERVED]), 300);
        assert!(harness::eventually(Duration::from_secs(10), || {
            server.concurrency().collect_children(false);
            server.concurrency().active_children() == 0
        }));
    }

    /// SIGCHLD ignored: the kernel reaps the children, so waitpid never finds them. With
    /// max_children = 2, every one of 5 requests is still served.
    fn children_reaped_elsewhere_free_their_slots() {
        // SAFETY: SIG_IGN is a valid disposition for SIGCHLD; no handler code is involved.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
        let (server, counters) = forking(fast().max_children(2));
        let addr = server.server_address();
        harness::serving(&server, || {
            for i in 0..5 {
                assert_eq!(harness::ask_tcp(addr, "hello").expect("request"), "ok", "request {i}");
            }
        });
        assert_eq!(get(&counters[SERVED]), 5);
        assert!(harness::eventually(Duration::from_secs(5), || {
            server.concurrency().collect_children(false);
            server.concurrency().active_children() == 0
        }));
    }

    /// block_on_close = false at max_children: server_close returns while the child still
    /// works (its reply is not there yet), instead of waiting for a free slot.
    fn block_on_close_false_does_not_wait_at_max_children() {
        let (server, _counters) = forking(fast().max_children(1).block_on_close(false));
        let addr = server.server_address();
        let client = send(addr, "SLEEP 2000");
        server.handle_request().expect("handle_request");
        assert_eq!(server.concurrency().active_children(), 1);
        server.server_close();
        assert!(!reply_waiting(&client), "server_close waited for the child");
        assert_eq!(server.concurrency().active_children(), 1, "the child is still working");
        // The child finishes on its own.
        let mut reply = String::new();
        io::BufReader::new(client).read_line(&mut reply).expect("reply");
        assert_eq!(reply, "ok\n");
    }

    /// A child sees a shutdown its parent was asked for: a long request can stop early.
    fn a_child_sees_the_parents_shutdown() {
        let (server, _counters) = forking(fast());
        let addr = server.server_address();
        let client = harness::serving(&server, || {
            let client = send(addr, "WAIT_SHUTDOWN");
            assert!(harness::eventually(Duration::from_secs(5), || server.concurrency().active_children() == 1));
            client
        });
        let mut reply = String::new();
        io::BufReader::new(client).read_line(&mut reply).expect("reply");
        assert_eq!(reply, "saw shutdown\n");
    }

    /// A shutdown a child asks for stops the parent at once, even while the parent waits for
    /// a free slot at max_children: serve_forever returns while that child still works.
    fn a_childs_shutdown_reaches_a_parent_waiting_for_a_slot() {
        let (server, _counters) = forking(fast().max_children(1));
        let addr = server.server_address();
        let (first, second) = thread::scope(|s| {
            let serve = s.spawn(|| server.serve_forever());
            let first = send(addr, "STOP");
            assert!(harness::eventually(Duration::from_secs(5), || server.concurrency().active_children() == 1));
            // Accepted, then waits for the slot the first child holds.
            let second = send(addr, "hello");
            serve.join().expect("serve thread").expect("serve_forever");
            (first, second)
        });
        assert!(!reply_waiting(&first), "serve_forever waited for the child that asked to stop");
        let mut reply = String::new();
        io::BufReader::new(first).read_line(&mut reply).expect("first reply");
        assert_eq!(reply, "stopped\n");
        // The request already accepted is served anyway.
        let mut reply = String::new();
        io::BufReader::new(second).read_to_string(&mut reply).expect("second reply");
        assert_eq!(reply, "ok\n");
    }
}
