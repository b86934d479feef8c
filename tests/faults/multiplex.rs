//! The fault suite against the multiplex model: a reset storm, 10,000 idle connections,
//! running out of descriptors, panicking callbacks, and shutdown with connections in flight.
//!
//! The model's workers start with the first connection and live until `server_close`, so the
//! baselines here are taken after a warm-up request.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

use sockserve::transport::Tcp;
use sockserve::{CloseReason, ConnIo, ConnectionHandler, MultiplexTcpServer, Options, RequestError};

use crate::harness::{self, bump, get, isolated_tests, Usage};

const WORKERS: usize = 2;

const OK: usize = 0;
const FAILED: usize = 1;
const CLOSED: usize = 2;
const SERVER_CLOSED: usize = 3;

/// Answers `ok` to each full line (`panic` panics); a connection that ends inside a line is
/// an error.
struct Lines {
    counters: &'static [AtomicU64],
}

impl ConnectionHandler<Tcp> for Lines {
    type Conn = ();

    fn connected(&self, _io: &mut ConnIo<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }

    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tcp>, input: &[u8]) -> io::Result<usize> {
        let mut consumed = 0;
        while let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') {
            if &input[consumed..consumed + end] == b"panic" {
                panic!("multiplex fault: asked to panic");
            }
            consumed += end + 1;
            io.write(b"ok\n");
            bump(&self.counters[OK]);
        }
        Ok(consumed)
    }

    fn read_closed(&self, _conn: &mut (), io: &mut ConnIo<'_, Tcp>, rest: &[u8]) -> io::Result<()> {
        if !rest.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "request cut short"));
        }
        io.close();
        Ok(())
    }

    fn closed(&self, _conn: (), _client_address: &SocketAddr, reason: CloseReason) {
        bump(&self.counters[CLOSED]);
        if reason == CloseReason::ServerClose {
            bump(&self.counters[SERVER_CLOSED]);
        }
    }

    fn handle_error(&self, _client: &SocketAddr, _error: &RequestError) {
        bump(&self.counters[FAILED]);
    }
}

fn server(options: Options) -> (MultiplexTcpServer<Lines>, &'static [AtomicU64]) {
    let counters = harness::shared_counters(4);
    let options = options
        .poll_interval(Duration::from_millis(50))
        .workers(Some(WORKERS));
    let server = MultiplexTcpServer::with_options("127.0.0.1:0", Lines { counters }, options).expect("bind");
    (server, counters)
}

/// A warm-up request (which starts the workers), then the usage once its connection is gone.
fn warmed_up(server: &MultiplexTcpServer<Lines>) -> Usage {
    let addr = server.server_address();
    assert_eq!(harness::ask_tcp(addr, "warm-up").expect("warm-up request"), "ok");
    assert!(harness::eventually(Duration::from_secs(5), || server
        .concurrency()
        .open_connections()
        == 0));
    Usage::now()
}

fn reset_storm() {
    const RESETS: usize = 2000;
    let (server, counters) = server(Options::DEFAULT);
    let addr = server.server_address();
    harness::serving(&server, || {
        let baseline = warmed_up(&server);
        harness::client_process(|| {
            thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..RESETS / 4 {
                            let mut stream = harness::connect_tcp(addr).expect("connect");
                            stream.write_all(b"GET /half-a-req").expect("send");
                            socket2::SockRef::from(&stream)
                                .set_linger(Some(Duration::ZERO))
                                .expect("linger");
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
        baseline.settles("after the reset storm");
        assert_eq!(get(&counters[OK]), 2);
        assert!(get(&counters[FAILED]) <= RESETS as u64);
        assert_eq!(server.concurrency().open_connections(), 0);
    });
}

fn idle_connections() {
    const IDLE: u64 = 10_000;
    let (server, _counters) = server(Options::DEFAULT);
    let addr = server.server_address();
    let sync = harness::shared_counters(2);
    let (connected, release) = (&sync[0], &sync[1]);
    harness::set_nofile_soft(u64::MAX);
    let threads_before = harness::thread_count();
    harness::serving(&server, || {
        let baseline = warmed_up(&server);
        // The idle clients live in a process of their own: 20,000 descriptors in one would
        // pass the usual hard limit.
        let clients = harness::client_process(|| {
            let mut held = Vec::with_capacity(IDLE as usize);
            for _ in 0..IDLE {
                held.push(harness::connect_tcp(addr).expect("connect an idle client"));
                bump(connected);
            }
            let deadline = Instant::now() + 3 * harness::CLIENT_TIMEOUT;
            while get(release) == 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        });
        assert!(
            harness::eventually(Duration::from_secs(25), || server
                .concurrency()
                .open_connections()
                == IDLE as usize),
            "accepted {} of {IDLE}",
            server.concurrency().open_connections()
        );
        assert_eq!(get(connected), IDLE);
        // A live client among them is answered.
        assert_eq!(harness::ask_tcp(addr, "live").expect("a live request"), "ok");
        let threads = harness::thread_count();
        println!("{IDLE} idle connections: {threads} threads (before serving: {threads_before})");
        // The test's own thread, the serve loop, the workers and nothing per connection.
        assert!(threads <= threads_before + 1 + WORKERS + 1, "{threads} threads");
        bump(release);
        clients.wait();
        baseline.settles("after the idle clients left");
    });
}

/// Out of descriptors: accept fails with EMFILE; the loop backs off (no busy loop), and the
/// waiting clients are served once descriptors are free. With `worker_listeners` the workers
/// accept too, and back off as the loop does.
fn out_of_descriptors(options: Options) {
    const LIMIT: u64 = 64;
    const PENDING: usize = 8;
    let (server, counters) = server(options.clone());
    let addr = server.server_address();
    let parked: Vec<socket2::Socket> = (0..PENDING)
        .map(|_| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket
                .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
                .unwrap();
            socket
        })
        .collect();
    harness::serving(&server, || {
        let _ = warmed_up(&server);
        harness::set_nofile_soft(LIMIT);
        let mut fillers = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(file) => fillers.push(file),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("open /dev/null: {e}"),
            }
        }
        // The parked sockets were made before: connecting them needs no new descriptor.
        let warnings = harness::warnings();
        let mut clients: Vec<TcpStream> = parked
            .into_iter()
            .map(|socket| {
                socket.connect(&addr.into()).expect("connect");
                let mut stream = TcpStream::from(socket);
                stream.set_read_timeout(Some(harness::CLIENT_TIMEOUT)).unwrap();
                stream.write_all(b"request\n").expect("send");
                stream
            })
            .collect();
        assert!(
            harness::eventually(Duration::from_secs(5), || harness::warnings() > warnings),
            "no warning while accept fails with EMFILE"
        );
        let (cpu, wall) = (harness::cpu_time(), Instant::now());
        thread::sleep(Duration::from_secs(1));
        let share = (harness::cpu_time() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();
        println!("out of descriptors: {:.1}% of a core", share * 100.0);
        assert!(
            share < 0.2,
            "the loop spins while accept fails: {share:.2} of a core"
        );
        // One warning per episode and acceptor: the serve loop, and each worker with a
        // listener of its own.
        let acceptors = 1 + if options.worker_listeners { WORKERS } else { 0 };
        let logged = harness::warnings() - warnings;
        assert!(
            logged <= acceptors,
            "{logged} warnings from {acceptors} acceptors"
        );
        drop(fillers);
        for client in &mut clients {
            let mut reply = [0u8; 3];
            client.read_exact(&mut reply).expect("reply after recovery");
            assert_eq!(&reply, b"ok\n");
        }
        drop(clients);
        assert!(harness::eventually(Duration::from_secs(5), || get(&counters[OK])
            == PENDING as u64 + 1));
    });
}

/// Panicking callbacks close their own connections only; the others are answered, and the
/// descriptors and threads come back.
fn panics() {
    const CLIENTS: usize = 100;
    harness::quiet_panics("multiplex fault");
    let (server, counters) = server(Options::DEFAULT);
    let addr = server.server_address();
    harness::serving(&server, || {
        let baseline = warmed_up(&server);
        let clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|i| {
                let mut c = harness::connect_tcp(addr).expect("connect");
                c.write_all(if i % 2 == 0 { b"panic\n" } else { b"fine\n" })
                    .unwrap();
                c
            })
            .collect();
        for (i, mut c) in clients.into_iter().enumerate() {
            let mut reply = Vec::new();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            c.read_to_end(&mut reply).expect("read");
            let expected: &[u8] = if i % 2 == 0 { b"" } else { b"ok\n" };
            assert_eq!(reply, expected, "client {i}");
        }
        assert_eq!(get(&counters[FAILED]), CLIENTS as u64 / 2);
        assert_eq!(
            harness::ask_tcp(addr, "after").expect("request after the panics"),
            "ok"
        );
        baseline.settles("after the panics");
    });
}

/// `shutdown` with connections in the middle of a message, then `server_close`: every
/// connection gets its `closed` callback, every client its end of file, and the workers'
/// threads and descriptors are gone.
fn shutdown_in_flight() {
    const CLIENTS: usize = 50;
    let before = Usage::now();
    let (server, counters) = server(Options::DEFAULT);
    let addr = server.server_address();
    let clients = harness::serving(&server, || {
        let _ = warmed_up(&server);
        let clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|_| {
                let mut c = harness::connect_tcp(addr).expect("connect");
                c.write_all(b"half a mess").unwrap();
                c
            })
            .collect();
        assert!(harness::eventually(Duration::from_secs(5), || server
            .concurrency()
            .open_connections()
            == CLIENTS));
        clients
    });
    // The loop has stopped; the connections are still open until server_close.
    assert_eq!(server.concurrency().open_connections(), CLIENTS);
    server.server_close();
    for mut c in clients {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("end of file");
        assert!(rest.is_empty());
    }
    assert_eq!(get(&counters[SERVER_CLOSED]), CLIENTS as u64);
    drop(server);
    before.settles("after server_close");
}

isolated_tests! {
    fn reset_storm_multiplex() {
        reset_storm();
    }

    fn idle_connections_multiplex() {
        idle_connections();
    }

    fn out_of_descriptors_multiplex() {
        out_of_descriptors(Options::DEFAULT);
    }

    fn out_of_descriptors_multiplex_worker_listeners() {
        out_of_descriptors(Options::DEFAULT.worker_listeners(true));
    }

    fn panics_multiplex() {
        panics();
    }

    fn shutdown_in_flight_multiplex() {
        shutdown_in_flight();
    }
}
