//! Fault 6: forking churn. Thousands of requests through a forking server with a small
//! `max_children`: the number of unreaped children never exceeds it, the serve loop reaps
//! exited children on its own, and `collect_children` leaves no zombie behind.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use sockserve::transport::Tcp;
use sockserve::{ForkingTcpServer, Options, RequestError, ServerContext, StreamHandler, StreamRequest};

use crate::harness::{self, bump, get, isolated_tests};

const REQUESTS: usize = 2000;
/// More clients than `max_children`, so the cap is reached.
const CLIENTS: usize = 16;
const MAX_CHILDREN: usize = 8;

/// Most unreaped children seen by the serve loop (just before each fork).
const MOST_CHILDREN: usize = 0;
/// Handlers running at once, and the most of them seen (counted by the children).
const RUNNING: usize = 1;
const MOST_RUNNING: usize = 2;
const ANSWERED: usize = 3;
const ERRORS: usize = 4;

struct Churn {
    counters: &'static [AtomicU64],
}

impl StreamHandler for Churn {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let running = self.counters[RUNNING].fetch_add(1, Ordering::SeqCst) + 1;
        self.counters[MOST_RUNNING].fetch_max(running, Ordering::SeqCst);
        let mut line = String::new();
        let result = req.rfile.read_line(&mut line).and_then(|_| {
            // Long enough for requests to pile up against max_children.
            thread::sleep(Duration::from_millis(2));
            req.wfile.write_all(b"ok\n")
        });
        self.counters[RUNNING].fetch_sub(1, Ordering::SeqCst);
        result?;
        bump(&self.counters[ANSWERED]);
        Ok(())
    }

    /// Runs in the serve loop right before each request is processed (and so before its
    /// fork): the children the loop has forked and not reaped are exactly the serve thread's
    /// unreaped children, since nothing else forks or reaps in it.
    fn verify_request(&self, _request: &std::net::TcpStream, _client: &SocketAddr) -> bool {
        let children = harness::children_of_this_thread() as u64;
        self.counters[MOST_CHILDREN].fetch_max(children, Ordering::SeqCst);
        true
    }

    /// Runs on every loop iteration, after the loop reaped what had exited.
    fn service_actions(&self, _server: &ServerContext<Tcp>) {
        let children = harness::children_of_this_thread() as u64;
        self.counters[MOST_CHILDREN].fetch_max(children, Ordering::SeqCst);
    }

    fn handle_error(&self, _client: &SocketAddr, _error: &RequestError) {
        bump(&self.counters[ERRORS]);
    }
}

fn churn() {
    const TAIL: usize = 2 * MAX_CHILDREN;
    let counters = harness::shared_counters(5);
    let options = Options::DEFAULT
        .max_children(MAX_CHILDREN)
        .poll_interval(Duration::from_millis(50));
    let server = ForkingTcpServer::with_options("127.0.0.1:0", Churn { counters }, options).expect("bind");
    let addr = server.server_address();
    harness::serving(&server, || {
        thread::scope(|s| {
            for c in 0..CLIENTS {
                s.spawn(move || {
                    for i in 0..REQUESTS / CLIENTS {
                        let reply = harness::ask_tcp(addr, &format!("{c} {i}")).expect("request");
                        assert_eq!(reply, "ok");
                    }
                });
            }
        });
        // No request in flight: the loop reaps every child on its own.
        let mut left = Vec::new();
        let reaped = harness::eventually(Duration::from_secs(5), || {
            left = harness::children_by_stat();
            left.is_empty()
        });
        assert!(reaped, "children left while the loop runs: {left:?}");
        // A last burst, left to collect_children below once the loop has stopped.
        for i in 0..TAIL {
            assert_eq!(
                harness::ask_tcp(addr, &format!("tail {i}")).expect("request"),
                "ok"
            );
        }
    });
    // The loop has stopped; wait until every child has exited (zombie or reaped already).
    let mut states = Vec::new();
    let exited = harness::eventually(Duration::from_secs(5), || {
        states = harness::children_by_stat();
        states.iter().all(|(_, state)| *state == 'Z')
    });
    assert!(exited, "children still running: {states:?}");
    server.concurrency().collect_children(false);
    assert_eq!(
        harness::zombies(),
        Vec::<i32>::new(),
        "zombies after collect_children"
    );
    assert_eq!(server.concurrency().active_children(), 0);

    let total = (REQUESTS + TAIL) as u64;
    println!(
        "{total} requests: {} reaped, {} failed; at most {} unreaped children and {} handlers at once (max_children {MAX_CHILDREN})",
        server.concurrency().reaped_children(),
        server.concurrency().failed_children(),
        get(&counters[MOST_CHILDREN]),
        get(&counters[MOST_RUNNING]),
    );
    assert_eq!(server.concurrency().reaped_children(), total);
    assert_eq!(server.concurrency().failed_children(), 0);
    assert_eq!(get(&counters[ANSWERED]), total);
    assert_eq!(get(&counters[ERRORS]), 0);
    assert!(get(&counters[MOST_CHILDREN]) <= MAX_CHILDREN as u64);
    assert!(get(&counters[MOST_RUNNING]) <= MAX_CHILDREN as u64);
}

isolated_tests! {
    fn fork_churn_no_zombies_max_children() {
        churn();
    }
}
