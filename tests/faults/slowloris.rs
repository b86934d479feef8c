//! Fault 3: slowloris. Hundreds of connections that send nothing must not stop a threading
//! server from answering others: with `connection_timeout` the idle ones are dropped when it
//! passes, and with `max_threads` the connections beyond the cap wait in the listen backlog
//! instead of each taking a thread.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sockserve::transport::Tcp;
use sockserve::{Options, RequestError, StreamHandler, StreamRequest, ThreadingTcpServer};

use crate::harness::{self, bump, get, isolated_tests, Usage};

const ANSWERED: usize = 0;
const TIMED_OUT: usize = 1;
const OTHER_ERRORS: usize = 2;

/// Answers one line with `done`.
struct OneLine {
    counters: &'static [AtomicU64],
}

impl StreamHandler for OneLine {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        req.wfile.write_all(b"done\n")?;
        bump(&self.counters[ANSWERED]);
        Ok(())
    }

    fn handle_error(&self, _client: &SocketAddr, error: &RequestError) {
        // connection_timeout firing is reported in words, as TimedOut with the timeout.
        let timed_out = matches!(error, RequestError::TimedOut(t) if *t == Duration::from_secs(1));
        bump(&self.counters[if timed_out { TIMED_OUT } else { OTHER_ERRORS }]);
    }
}

/// 300 idle connections against a threading server with a one-second `connection_timeout`:
/// a normal request is answered within 2 s meanwhile, and each idle connection is closed by
/// the server once its timeout has passed (the client reads end of input).
fn idle_connections_time_out() {
    const IDLE: usize = 300;
    const TIMEOUT: Duration = Duration::from_secs(1);
    let counters = harness::shared_counters(3);
    let options = Options::DEFAULT
        .connection_timeout(Some(TIMEOUT))
        .poll_interval(Duration::from_millis(50));
    let server =
        ThreadingTcpServer::with_options("127.0.0.1:0", OneLine { counters }, options).expect("bind");
    let addr = server.server_address();
    harness::serving(&server, || {
        let baseline = Usage::now();
        assert_eq!(harness::ask_tcp(addr, "warm-up").expect("warm-up"), "done");

        let idle: Vec<(TcpStream, Instant)> = (0..IDLE)
            .map(|_| {
                // Taken before connecting: the server's timer cannot start earlier.
                let started = Instant::now();
                (harness::connect_tcp(addr).expect("connect"), started)
            })
            .collect();
        assert!(
            harness::eventually(Duration::from_secs(5), || server.concurrency().active_threads()
                == IDLE),
            "the idle connections were not all taken by handler threads"
        );

        let asked = Instant::now();
        let reply = harness::ask_tcp(addr, "hello").expect("a normal request among idle connections");
        let took = asked.elapsed();
        println!("normal request answered in {took:?} beside {IDLE} idle connections");
        assert_eq!(reply, "done");
        assert!(took < Duration::from_secs(2), "a normal request took {took:?}");

        let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
        for (mut stream, connected) in idle {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(0) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                other => panic!("an idle connection read {other:?} instead of end of input"),
            }
            let elapsed = connected.elapsed();
            (first, last) = (first.min(elapsed), last.max(elapsed));
        }
        println!("idle connections closed after {first:?} to {last:?}");
        // The timer starts when the handler first reads, after the client connected.
        assert!(first >= TIMEOUT, "an idle connection was closed early");
        assert!(last < TIMEOUT + Duration::from_secs(5));
        assert!(harness::eventually(Duration::from_secs(5), || {
            get(&counters[TIMED_OUT]) == IDLE as u64
        }));
        assert_eq!(get(&counters[OTHER_ERRORS]), 0);
        baseline.settles("after the idle connections timed out");
    });
}

/// A threading server with `max_threads = 8` and 40 connections: never more than 8 handler
/// threads (sampled in `/proc/self/task` and through `active_threads`), the rest wait in the
/// backlog and are served as slots free up.
fn max_threads_caps_handler_threads() {
    const CAP: usize = 8;
    const CONNECTIONS: usize = 40;
    /// Threads that may briefly outlive their slot (exiting while the next one starts).
    const SLACK: usize = 2;
    let counters = harness::shared_counters(3);
    let options = Options::DEFAULT
        .max_threads(Some(CAP))
        .poll_interval(Duration::from_millis(50));
    let server =
        ThreadingTcpServer::with_options("127.0.0.1:0", OneLine { counters }, options).expect("bind");
    let addr = server.server_address();
    let stop = AtomicBool::new(false);
    let most_tasks = AtomicUsize::new(0);
    let most_active = AtomicUsize::new(0);
    harness::serving(&server, || {
        thread::scope(|s| {
            // The sampler exists before the baseline is taken, so it is part of it.
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    most_tasks.fetch_max(harness::thread_count(), Ordering::SeqCst);
                    most_active.fetch_max(server.concurrency().active_threads(), Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(1));
                }
            });
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let baseline = Usage::now();
                assert_eq!(harness::ask_tcp(addr, "warm-up").expect("warm-up"), "done");

                let mut clients: Vec<TcpStream> = (0..CONNECTIONS)
                    .map(|_| harness::connect_tcp(addr).expect("connect"))
                    .collect();
                assert!(harness::eventually(Duration::from_secs(5), || {
                    server.concurrency().active_threads() == CAP
                }));
                // Give the loop time to overstep the cap if it were going to (the bound is
                // checked by the sampler over the whole run, not by this pause).
                thread::sleep(Duration::from_millis(200));
                assert_eq!(server.concurrency().active_threads(), CAP);

                for client in &mut clients {
                    client.write_all(b"go\n").expect("send");
                    let mut reply = [0u8; 5];
                    client.read_exact(&mut reply).expect("served once a slot freed");
                    assert_eq!(&reply, b"done\n");
                }
                drop(clients);
                assert!(harness::eventually(Duration::from_secs(5), || {
                    get(&counters[ANSWERED]) == CONNECTIONS as u64 + 1
                }));
                let tasks = most_tasks.load(Ordering::SeqCst);
                println!(
                    "baseline {} threads; at most {tasks} with {CONNECTIONS} connections and max_threads {CAP}",
                    baseline.threads
                );
                assert!(tasks <= baseline.threads + CAP + SLACK, "{tasks} threads");
                baseline.settles("after the capped connections");
            }));
            stop.store(true, Ordering::SeqCst);
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        });
    });
    assert!(most_active.load(Ordering::SeqCst) <= CAP);
}

isolated_tests! {
    fn slowloris_threading_connection_timeout() {
        idle_connections_time_out();
    }

    fn slowloris_threading_max_threads() {
        max_threads_caps_handler_threads();
    }
}
