//! Fault 4: a handler that panics. Synchronous and threading servers catch the panic and
//! report it to `handle_error`; a forking server's child reports it too, then exits with a
//! non-zero status and is reaped. Either way the server serves the next request. A panic in
//! `handle_error` itself is logged and goes no further.

use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sockserve::concurrency::{Forking, ProcessRequest, Synchronous, Threading};
use sockserve::transport::Tcp;
use sockserve::{Options, RequestError, Server, StreamHandler, StreamRequest};

use crate::harness::{self, bump, get, isolated_tests};

const MARKER: &str = "deliberate panic";
const ROUNDS: u64 = 20;

const PANICS: usize = 0;
const OTHER_ERRORS: usize = 1;
const ANSWERED: usize = 2;

/// Panics on the line `panic`, answers `ok` to anything else; with `panic_in_handle_error`
/// its `handle_error` panics as well.
struct Panicky {
    counters: &'static [AtomicU64],
    panic_in_handle_error: bool,
}

impl StreamHandler for Panicky {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        if line.trim_end() == "panic" {
            panic!("{MARKER} in handle");
        }
        req.wfile.write_all(b"ok\n")?;
        bump(&self.counters[ANSWERED]);
        Ok(())
    }

    fn handle_error(&self, _client: &SocketAddr, error: &RequestError) {
        match error {
            RequestError::Panic(message) if message.contains(MARKER) => bump(&self.counters[PANICS]),
            _ => bump(&self.counters[OTHER_ERRORS]),
        }
        if self.panic_in_handle_error {
            panic!("{MARKER} in handle_error");
        }
    }
}

/// What each model adds to the checks: a forking server's children must have failed and been
/// reaped.
trait Reaped {
    fn check_children(&self, _failed: u64, _total: u64) {}
}

impl Reaped for Synchronous {}
impl Reaped for Threading {}

impl Reaped for Forking {
    fn check_children(&self, failed: u64, total: u64) {
        let reaped = harness::eventually(Duration::from_secs(5), || {
            self.collect_children(false);
            self.reaped_children() == total
        });
        assert!(reaped, "reaped {} of {total} children", self.reaped_children());
        assert_eq!(self.failed_children(), failed, "children that exited non-zero");
        assert_eq!(self.active_children(), 0);
    }
}

fn panicking_handler<C>(panic_in_handle_error: bool)
where
    C: ProcessRequest<Tcp, Panicky> + Reaped + Sync,
{
    harness::quiet_panics(MARKER);
    let counters = harness::shared_counters(3);
    let handler = Panicky {
        counters,
        panic_in_handle_error,
    };
    let options = Options::DEFAULT.poll_interval(Duration::from_millis(50));
    let server: Server<Tcp, C, Panicky> =
        Server::with_options("127.0.0.1:0", handler, options).expect("bind");
    let addr = server.server_address();
    harness::serving(&server, || {
        for _ in 0..ROUNDS {
            // The panicking request's connection is closed: its client reads end of input.
            let mut stream = harness::connect_tcp(addr).expect("connect");
            stream.write_all(b"panic\n").expect("send");
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            match stream.read_to_end(&mut rest) {
                Ok(_) => assert!(rest.is_empty(), "a reply from a panicking handler: {rest:?}"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            }
            assert_eq!(
                harness::ask_tcp(addr, "hello").expect("the request after a panic"),
                "ok"
            );
        }
        // Counted after the reply went out (and, for threading and forking, in another thread
        // or process): wait for the counts to settle.
        assert!(harness::eventually(Duration::from_secs(5), || {
            get(&counters[PANICS]) == ROUNDS && get(&counters[ANSWERED]) == ROUNDS
        }));
        assert_eq!(get(&counters[OTHER_ERRORS]), 0);
        server.concurrency().check_children(ROUNDS, 2 * ROUNDS);
    });
    if panic_in_handle_error {
        // Logged by the server, once per failed request (in the child, for forking, whose
        // log this process does not see).
        let expected = if std::any::type_name::<C>().contains("Forking") {
            0
        } else {
            ROUNDS
        };
        harness::eventually(Duration::from_secs(5), || harness::errors() as u64 == expected);
        let logged = harness::errors() as u64;
        println!("{logged} errors logged for panics in handle_error");
        assert_eq!(logged, expected);
    }
}

isolated_tests! {
    fn handler_panic_sync() {
        panicking_handler::<Synchronous>(false);
    }

    fn handler_panic_threading() {
        panicking_handler::<Threading>(false);
    }

    fn handler_panic_forking() {
        panicking_handler::<Forking>(false);
    }

    fn handle_error_panic_sync() {
        panicking_handler::<Synchronous>(true);
    }

    fn handle_error_panic_threading() {
        panicking_handler::<Threading>(true);
    }

    fn handle_error_panic_forking() {
        panicking_handler::<Forking>(true);
    }
}
