//! Errors reach a person, and normal peer behaviour does not look like an error: a reset
//! storm and idle timeouts are reported in words at debug level (the default `handle_error`),
//! while `handle_error` still sees each one; with no logger installed, a real error still
//! reaches stderr, as Python's traceback does.

use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::Duration;

use sockserve::transport::Tcp;
use sockserve::{log_request_error, Options, RequestError, StreamHandler, StreamRequest, ThreadingTcpServer};

use crate::harness::{self, bump, get, isolated_tests};

const SEEN: usize = 0;
const PEER_EVENTS: usize = 1;

/// Reads one line and answers it; counts what reaches `handle_error`, then hands it to the
/// default (`log_request_error`), whose log records the scenario checks.
struct Reporting {
    counters: &'static [AtomicU64],
}

impl StreamHandler for Reporting {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        // Reads until the newline: a reset connection fails here with ECONNRESET.
        while !line.ends_with('\n') {
            if req.rfile.read_line(&mut line)? == 0 {
                return Ok(());
            }
        }
        req.wfile.write_all(line.as_bytes())
    }

    fn handle_error(&self, client: &SocketAddr, error: &RequestError) {
        bump(&self.counters[SEEN]);
        if error.is_peer_event() {
            bump(&self.counters[PEER_EVENTS]);
        }
        log_request_error(client, error);
    }
}

const RESETS: usize = 500;

isolated_tests! {
    /// 500 clients that reset mid-request: handle_error sees every one as a peer event, the
    /// log has no error record, and each debug record says in words what happened.
    fn a_reset_storm_is_not_an_error() {
        let counters = harness::shared_counters(2);
        let server = ThreadingTcpServer::with_options("127.0.0.1:0", Reporting { counters }, Options::DEFAULT)
            .expect("bind");
        let addr = server.server_address();
        harness::serving(&server, || {
            for _ in 0..RESETS {
                let mut stream = harness::connect_tcp(addr).expect("connect");
                stream.write_all(b"half a li").expect("send");
                // The handler is blocked reading the rest when the reset arrives.
                thread::sleep(Duration::from_millis(1));
                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).expect("linger");
                drop(stream);
            }
            assert!(harness::eventually(Duration::from_secs(20), || get(&counters[SEEN]) == RESETS as u64));
        });
        assert_eq!(get(&counters[PEER_EVENTS]), RESETS as u64, "every reset is a peer event");
        assert_eq!(harness::errors(), 0, "resets are not logged as errors");
        let words = harness::debug_text()
            .iter()
            .filter(|t| t.contains("the client reset the connection"))
            .count();
        assert_eq!(words, RESETS, "each reset is logged in words at debug level");
        assert!(
            !harness::debug_text().iter().any(|t| t.contains("os error")),
            "no raw OS text in the peer-event records"
        );
    }

    /// An idle client past `connection_timeout`: reported as "idle for 300ms", a peer event,
    /// at debug level.
    fn an_idle_timeout_is_reported_in_words() {
        let counters = harness::shared_counters(2);
        let mut options = Options::DEFAULT;
        options.connection_timeout = Some(Duration::from_millis(300));
        let server = ThreadingTcpServer::with_options("127.0.0.1:0", Reporting { counters }, options).expect("bind");
        let addr = server.server_address();
        harness::serving(&server, || {
            let mut idle = harness::connect_tcp(addr).expect("connect");
            let mut buf = [0u8; 8];
            assert_eq!(idle.read(&mut buf).expect("closed by the server"), 0);
            assert!(harness::eventually(Duration::from_secs(5), || get(&counters[SEEN]) == 1));
        });
        assert_eq!(get(&counters[PEER_EVENTS]), 1);
        assert_eq!(harness::errors(), 0);
        let text = harness::debug_text();
        assert!(
            text.iter().any(|t| t.ends_with(": idle for 300ms (connection_timeout), closed")),
            "{text:?}"
        );
    }
}

/// A handler that fails for real.
struct Failing;

const FAILURE: &str = "the-disk-is-on-fire";

impl StreamHandler for Failing {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        Err(io::Error::other(FAILURE))
    }
}

/// With no logger installed, the default `handle_error` writes the error and the client
/// address to stderr.
#[test]
fn without_a_logger_errors_reach_stderr() {
    let stderr = harness::isolated_with(
        concat!(module_path!(), "::without_a_logger_errors_reach_stderr"),
        false,
        || {
            let server =
                ThreadingTcpServer::with_options("127.0.0.1:0", Failing, Options::DEFAULT).expect("bind");
            let addr = server.server_address();
            let client = harness::connect_tcp(addr).expect("connect");
            let client_addr = client.local_addr().expect("local_addr");
            server.handle_request().expect("handle_request");
            let mut reader = io::BufReader::new(client);
            let mut rest = String::new();
            let _ = reader.read_line(&mut rest);
            drop(server);
            println!("client was {client_addr}");
        },
    );
    if let Some(stderr) = stderr {
        let line = stderr
            .lines()
            .find(|l| l.contains(FAILURE))
            .unwrap_or_else(|| panic!("no error on stderr: {stderr:?}"));
        assert!(
            line.starts_with("sockserve: error handling request from 127.0.0.1:"),
            "{line}"
        );
    }
}
