//! The fault suite against the pooled model: 5,000 idle keep-alive connections (each has sent
//! a message and is parked) held by the event loop and a bounded pool, while a live client is
//! answered; slow senders that hold every pool thread; a panicking message.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use sockserve::concurrency::{AfterMessage, MessageHandler};
use sockserve::transport::Tcp;
use sockserve::{Options, PooledTcpServer, RequestError, StreamRequest};

use crate::harness::{self, bump, get, isolated_tests};

const WORKERS: usize = 1;
const POOL: usize = 4;

const OK: usize = 0;
const FAILED: usize = 1;
const TIMED_OUT: usize = 2;

/// Answers `ok` to each line (`panic` panics); keeps the connection open.
struct Lines {
    counters: &'static [std::sync::atomic::AtomicU64],
}

impl MessageHandler<Tcp> for Lines {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<AfterMessage> {
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(AfterMessage::Close);
        }
        if line == "panic\n" {
            panic!("pooled fault: asked to panic");
        }
        // Counted before the answer goes out, so a client that has read it sees it counted.
        bump(&self.counters[OK]);
        req.wfile.write_all(b"ok\n")?;
        Ok(AfterMessage::KeepOpen)
    }

    fn handle_error(&self, _client: &SocketAddr, error: &RequestError) {
        bump(&self.counters[FAILED]);
        if matches!(error, RequestError::TimedOut(_)) {
            bump(&self.counters[TIMED_OUT]);
        }
    }
}

fn server(options: Options) -> (PooledTcpServer<Lines>, &'static [std::sync::atomic::AtomicU64]) {
    let counters = harness::shared_counters(3);
    let options = options
        .poll_interval(Duration::from_millis(50))
        .workers(Some(WORKERS))
        .max_threads(Some(POOL));
    let server = PooledTcpServer::with_options("127.0.0.1:0", Lines { counters }, options).expect("bind");
    (server, counters)
}

isolated_tests! {
    fn pooled_holds_5000_idle_keep_alive_connections_on_a_bounded_pool() {
        idle_keep_alive();
    }

    fn pooled_slow_senders_on_every_pool_thread_time_out_and_others_are_then_served() {
        slow_senders();
    }

    fn pooled_a_panicking_message_closes_only_its_connection() {
        panicking_message();
    }
}

fn idle_keep_alive() {
    const IDLE: u64 = 5_000;
    let (server, counters) = server(Options::DEFAULT);
    let addr = server.server_address();
    let sync = harness::shared_counters(2);
    let (parked, release) = (&sync[0], &sync[1]);
    harness::set_nofile_soft(u64::MAX);
    let threads_before = harness::thread_count();
    harness::serving(&server, || {
        // The idle clients live in a process of their own (10,000 descriptors in one would
        // pass the usual limit). Each sends one message and reads its answer: a keep-alive
        // connection between two requests.
        let clients = harness::client_process(|| {
            let mut held = Vec::with_capacity(IDLE as usize);
            for _ in 0..IDLE {
                let stream = harness::connect_tcp(addr).expect("connect a keep-alive client");
                (&stream).write_all(b"hello\n").expect("send");
                let mut reader = io::BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).expect("answer");
                assert_eq!(line, "ok\n");
                held.push(reader);
                bump(parked);
            }
            let deadline = Instant::now() + 3 * harness::CLIENT_TIMEOUT;
            while get(release) == 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        });
        assert!(
            harness::eventually(Duration::from_secs(60), || get(parked) == IDLE),
            "{} of {IDLE} clients got their answer",
            get(parked)
        );
        assert_eq!(server.concurrency().open_connections(), IDLE as usize);
        // A live client among them is answered, several times on one connection.
        let live = harness::connect_tcp(addr).expect("live client");
        let mut reader = io::BufReader::new(&live);
        for _ in 0..3 {
            (&live).write_all(b"live\n").expect("send");
            let mut line = String::new();
            reader.read_line(&mut line).expect("live answer");
            assert_eq!(line, "ok\n");
        }
        let threads = harness::thread_count();
        println!(
            "{IDLE} idle keep-alive connections: {threads} threads (before serving: {threads_before}; \
             workers {WORKERS}, pool {POOL})"
        );
        // The test's own thread, the serve loop, the event loop, the pool, nothing per
        // connection.
        assert!(
            threads <= threads_before + 1 + WORKERS + POOL + 1,
            "{threads} threads"
        );
        assert_eq!(get(&counters[OK]), IDLE + 3);
        assert_eq!(get(&counters[FAILED]), 0);
        drop(reader);
        drop(live);
        bump(release);
        clients.wait();
        assert!(harness::eventually(Duration::from_secs(10), || server
            .concurrency()
            .open_connections()
            == 0));
    });
}

fn slow_senders() {
    let (server, counters) = server(Options::DEFAULT.connection_timeout(Some(Duration::from_millis(300))));
    let addr = server.server_address();
    harness::serving(&server, || {
        // One more slow sender than pool threads: each holds a thread until its timeout.
        let slow: Vec<_> = (0..POOL + 1)
            .map(|_| {
                let stream = harness::connect_tcp(addr).expect("connect");
                (&stream).write_all(b"no newline yet").expect("send");
                stream
            })
            .collect();
        // Served once the slow ones have timed out (bounded by the client's timeout).
        assert_eq!(harness::ask_tcp(addr, "after").expect("a request after"), "ok");
        assert!(harness::eventually(Duration::from_secs(10), || get(
            &counters[TIMED_OUT]
        ) == (POOL + 1)
            as u64));
        for stream in &slow {
            let mut rest = Vec::new();
            let got = io::Read::read_to_end(&mut &*stream, &mut rest);
            assert!(got.is_err() || rest.is_empty(), "a slow sender got {rest:?}");
        }
        assert!(harness::eventually(Duration::from_secs(10), || server
            .concurrency()
            .open_connections()
            == 0));
    });
}

fn panicking_message() {
    let (server, counters) = server(Options::DEFAULT);
    let addr = server.server_address();
    harness::serving(&server, || {
        let bystander = harness::connect_tcp(addr).expect("connect");
        let mut reader = io::BufReader::new(&bystander);
        let mut ask = |text: &[u8]| {
            (&bystander).write_all(text).expect("send");
            let mut line = String::new();
            reader.read_line(&mut line).expect("answer");
            line
        };
        assert_eq!(ask(b"one\n"), "ok\n");
        for _ in 0..20 {
            let victim = harness::connect_tcp(addr).expect("connect");
            (&victim).write_all(b"panic\n").expect("send");
            let mut rest = Vec::new();
            let got = io::Read::read_to_end(&mut &victim, &mut rest);
            assert!(got.is_err() || rest.is_empty());
        }
        assert_eq!(ask(b"two\n"), "ok\n");
        assert!(harness::eventually(Duration::from_secs(5), || get(
            &counters[FAILED]
        ) == 20));
    });
}
