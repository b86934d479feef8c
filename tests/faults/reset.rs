//! Fault 1: clients that connect, send half a request and reset the connection (`SO_LINGER`
//! 0), thousands of times. The server keeps serving, and its descriptors and threads return
//! to where they were.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::Duration;

use sockserve::concurrency::{Forking, ProcessRequest, Synchronous, Threading};
use sockserve::transport::Tcp;
use sockserve::{Options, RequestError, Server, StreamHandler, StreamRequest};

use crate::harness::{self, bump, get, isolated_tests, Usage};

/// Reset connections per scenario.
const RESETS: usize = 2000;
/// Client threads sharing them.
const CLIENTS: usize = 4;

const OK: usize = 0;
const FAILED: usize = 1;

/// Answers `ok` to a full line; a connection that ends before its newline is an error.
struct LineOrError {
    counters: &'static [AtomicU64],
}

impl StreamHandler for LineOrError {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        if !line.ends_with('\n') {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "request cut short"));
        }
        req.wfile.write_all(b"ok\n")?;
        bump(&self.counters[OK]);
        Ok(())
    }

    fn handle_error(&self, _client: &SocketAddr, _error: &RequestError) {
        bump(&self.counters[FAILED]);
    }
}

/// Connects, sends part of a line, and closes with `SO_LINGER` 0: the peer gets a reset.
fn connect_and_reset(addr: SocketAddr) -> io::Result<()> {
    let mut stream = harness::connect_tcp(addr)?;
    stream.write_all(b"GET /half-a-req")?;
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}

fn reset_storm<C>()
where
    C: ProcessRequest<Tcp, LineOrError> + Sync,
{
    let counters = harness::shared_counters(2);
    let options = Options::DEFAULT
        .poll_interval(Duration::from_millis(50))
        .max_children(8);
    let server: Server<Tcp, C, LineOrError> =
        Server::with_options("127.0.0.1:0", LineOrError { counters }, options).expect("bind");
    let addr = server.server_address();
    harness::serving(&server, || {
        // The baseline: the server serving, nothing in flight.
        let baseline = Usage::now();
        assert_eq!(harness::ask_tcp(addr, "hello").expect("warm-up request"), "ok");

        // The clients run in a process of their own: a child of a forking server would
        // otherwise inherit the client ends, and their close would reset nothing.
        harness::client_process(|| {
            thread::scope(|s| {
                for _ in 0..CLIENTS {
                    s.spawn(|| {
                        for _ in 0..RESETS / CLIENTS {
                            connect_and_reset(addr).expect("connect and reset");
                        }
                    });
                }
            });
        })
        .wait();

        assert_eq!(
            harness::ask_tcp(addr, "after").expect("request after the resets"),
            "ok"
        );
        println!(
            "{}: {RESETS} resets; handler ok {} (2 expected), failed {}",
            std::any::type_name::<C>(),
            get(&counters[OK]),
            get(&counters[FAILED])
        );
        baseline.settles("after the reset storm");
        // Every reset connection that was accepted failed in the handler, and only those.
        assert!(harness::eventually(Duration::from_secs(5), || get(&counters[OK]) == 2));
        assert!(get(&counters[FAILED]) <= RESETS as u64);
    });
}

isolated_tests! {
    fn reset_storm_sync() {
        reset_storm::<Synchronous>();
    }

    fn reset_storm_threading() {
        reset_storm::<Threading>();
    }

    fn reset_storm_forking() {
        reset_storm::<Forking>();
    }
}
