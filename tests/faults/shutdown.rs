//! Fault 5: shutdown with requests in flight (threading, `block_on_close`).
//!
//! What is promised, precisely:
//! - `shutdown()` wakes the loop at once: `serve_forever` returns without waiting for a
//!   `poll_interval` tick, and `shutdown()` returns once it has, while handlers still run;
//! - no connection is accepted after `shutdown()` returns: one made then waits in the listen
//!   backlog unserved, and `server_close()` resets it; a connection attempted after
//!   `server_close()` is refused;
//! - `server_close()` waits for every handler in flight, and each of them completes its
//!   request.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sockserve::transport::Tcp;
use sockserve::{Options, RequestError, StreamHandler, StreamRequest, ThreadingTcpServer};

use crate::harness::{self, bump, get, isolated_tests};

const ENTERED: usize = 0;
const COMPLETED: usize = 1;
const ERRORS: usize = 2;

/// A gate the handlers wait at, so the requests stay in flight until the test opens it.
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let limit = Instant::now() + Duration::from_secs(30);
        let mut open = self.open.lock().unwrap();
        while !*open && Instant::now() < limit {
            open = self
                .opened
                .wait_timeout(open, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Reads a line, waits at the gate, answers `done <line>`.
struct Gated {
    counters: &'static [AtomicU64],
    gate: Arc<Gate>,
}

impl StreamHandler for Gated {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        bump(&self.counters[ENTERED]);
        self.gate.wait();
        req.wfile.write_all(format!("done {line}").as_bytes())?;
        bump(&self.counters[COMPLETED]);
        Ok(())
    }

    fn handle_error(&self, _client: &SocketAddr, _error: &RequestError) {
        bump(&self.counters[ERRORS]);
    }
}

fn shutdown_in_flight() {
    const IN_FLIGHT: usize = 100;
    // Long, so a loop that waited for its tick instead of being woken would be caught.
    const POLL_INTERVAL: Duration = Duration::from_secs(10);
    let counters = harness::shared_counters(3);
    let gate = Arc::new(Gate {
        open: Mutex::new(false),
        opened: Condvar::new(),
    });
    let handler = Gated {
        counters,
        gate: Arc::clone(&gate),
    };
    let options = Options::DEFAULT.poll_interval(POLL_INTERVAL).block_on_close(true);
    let server = ThreadingTcpServer::with_options("127.0.0.1:0", handler, options).expect("bind");
    let addr = server.server_address();

    let (mut clients, mut late, shutdown_took, returned_after) = thread::scope(|s| {
        let serve = s.spawn(|| {
            let result = server.serve_forever();
            (result, Instant::now())
        });
        let clients: Vec<TcpStream> = (0..IN_FLIGHT)
            .map(|i| {
                let mut stream = harness::connect_tcp(addr).expect("connect");
                stream
                    .write_all(format!("request {i}\n").as_bytes())
                    .expect("send");
                stream
            })
            .collect();
        assert!(
            harness::eventually(Duration::from_secs(10), || get(&counters[ENTERED])
                == IN_FLIGHT as u64),
            "only {} requests reached their handler",
            get(&counters[ENTERED])
        );

        let asked = Instant::now();
        server.shutdown();
        let shutdown_took = asked.elapsed();
        let (served, returned) = serve.join().expect("serve thread");
        served.expect("serve_forever");
        assert_eq!(
            get(&counters[COMPLETED]),
            0,
            "the handlers were still waiting at the gate"
        );

        // Connected after shutdown() returned: the kernel completes the handshake (the
        // socket still listens) but nobody accepts it.
        let mut late = harness::connect_tcp(addr).expect("connect after shutdown");
        late.write_all(b"late\n").expect("send after shutdown");
        (clients, late, shutdown_took, returned.duration_since(asked))
    });
    println!(
        "shutdown() took {shutdown_took:?}; serve_forever returned {returned_after:?} after it was called"
    );
    // Both well within one poll_interval: the loop was woken, not left to its next tick.
    assert!(
        shutdown_took < Duration::from_secs(2),
        "shutdown() waited {shutdown_took:?} (poll_interval {POLL_INTERVAL:?})"
    );
    assert!(
        returned_after < Duration::from_secs(2),
        "serve_forever returned {returned_after:?} after shutdown() (poll_interval {POLL_INTERVAL:?})"
    );

    // server_close waits for every handler in flight: open the gate a little later.
    let closed = thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(200));
            gate.open();
        });
        server.server_close();
        get(&counters[COMPLETED])
    });
    assert_eq!(
        closed, IN_FLIGHT as u64,
        "server_close returned with handlers in flight"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        let mut reply = String::new();
        io::BufReader::new(client).read_line(&mut reply).expect("reply");
        assert_eq!(reply, format!("done request {i}\n"));
    }
    assert_eq!(
        get(&counters[ENTERED]),
        IN_FLIGHT as u64,
        "a connection was accepted after shutdown"
    );
    assert_eq!(get(&counters[ERRORS]), 0);

    // The late connection was never served: closing the server ended it.
    let mut rest = Vec::new();
    match late.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "the late connection got {rest:?}"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    // And nobody listens any more.
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map(|_| ());
    let error = refused.expect_err("connected after server_close");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
}

/// Holds each connection until its client stops sending.
struct Holding;

impl StreamHandler for Holding {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        io::copy(&mut req.rfile, &mut io::sink())?;
        Ok(())
    }
}

/// A forking server whose children are all busy (at `max_children`) still stops at once on
/// `shutdown()`: waiting for a child to exit must not keep the loop from seeing the request.
fn shutdown_at_max_children() {
    const MAX_CHILDREN: usize = 2;
    let options = Options::DEFAULT
        .max_children(MAX_CHILDREN)
        .poll_interval(Duration::from_millis(50));
    let server = sockserve::ForkingTcpServer::with_options("127.0.0.1:0", Holding, options).expect("bind");
    let addr = server.server_address();
    let (stopped, took) = thread::scope(|s| {
        let serve = s.spawn(|| server.serve_forever());
        // Busy children; one more connection waits for a free slot.
        let clients: Vec<TcpStream> = (0..=MAX_CHILDREN)
            .map(|_| harness::connect_tcp(addr).expect("connect"))
            .collect();
        assert!(harness::eventually(Duration::from_secs(5), || {
            server.concurrency().active_children() == MAX_CHILDREN
        }));
        let (done, stopped) = std::sync::mpsc::channel();
        let server = &server;
        s.spawn(move || {
            let asked = Instant::now();
            server.shutdown();
            let _ = done.send(asked.elapsed());
        });
        let took = stopped.recv_timeout(Duration::from_secs(2));
        // Release the children either way, so nothing hangs.
        for client in &clients {
            client.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let took = took.or_else(|_| stopped.recv_timeout(harness::CLIENT_TIMEOUT));
        let served = serve.join().expect("serve thread");
        (served, took)
    });
    stopped.expect("serve_forever");
    let took = took.expect("shutdown() never returned");
    println!("shutdown() at max_children returned after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "shutdown() waited {took:?} for a child to exit"
    );
}

isolated_tests! {
    fn shutdown_with_requests_in_flight_threading() {
        shutdown_in_flight();
    }

    fn shutdown_at_max_children_forking() {
        shutdown_at_max_children();
    }
}
