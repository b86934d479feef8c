//! The server loop and its hooks: serve_forever/shutdown, handle_request/timeout,
//! service_actions, verify_request, handle_error, setup/handle/finish, bind options, fds.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sockserve::prelude::*;
use sockserve::transport::StreamTransport;
use util::{eventually, Running, LIMIT};

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    conn
}

/// Sends `msg`, half-closes, returns everything the server sent back before closing. A server
/// that refuses the client may have closed (and so reset) the connection before the request
/// or the half-close gets there: those errors mean an empty answer.
fn exchange(addr: std::net::SocketAddr, msg: &[u8]) -> String {
    let mut conn = connect(addr);
    let _ = conn.write_all(msg);
    let _ = conn.shutdown(Shutdown::Write);
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

/// Records every hook call; behaviour chosen by the first line of the request.
#[derive(Default)]
struct Probe {
    calls: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    refuse: Mutex<Option<std::net::IpAddr>>,
    service_actions: AtomicUsize,
    timeouts: AtomicUsize,
}

impl Probe {
    fn log(&self, what: impl Into<String>) {
        self.calls.lock().unwrap().push(what.into());
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl StreamHandler for Probe {
    fn setup(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.log("setup");
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        if line.trim() == "fail-setup" {
            return Err(io::Error::other("setup failed"));
        }
        req.wfile.write_all(line.as_bytes())?;
        Ok(())
    }
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.log("handle");
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        match line.trim() {
            "error" => Err(io::Error::other("handler said no")),
            "panic" => panic!("handler panicked on purpose"),
            "shutdown" => {
                req.server.shutdown();
                req.wfile.write_all(b"shutting down\n")
            }
            "whoami" => {
                let peer = req.request.peer_addr()?;
                assert_eq!(&peer, req.client_address);
                writeln!(
                    req.wfile,
                    "{} {}",
                    req.client_address,
                    req.server.server_address()
                )
            }
            other => writeln!(req.wfile, "ok {other}"),
        }
    }
    fn finish(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.log("finish");
        Ok(())
    }
    fn verify_request(&self, _request: &std::net::TcpStream, client_address: &std::net::SocketAddr) -> bool {
        self.log("verify");
        *self.refuse.lock().unwrap() != Some(client_address.ip())
    }
    fn handle_error(&self, client_address: &std::net::SocketAddr, error: &RequestError) {
        assert!(client_address.ip().is_loopback());
        self.errors.lock().unwrap().push(error.to_string());
    }
    fn handle_timeout(&self, _server: &ServerContext<Tcp>) {
        self.timeouts.fetch_add(1, Ordering::SeqCst);
    }
    fn service_actions(&self, _server: &ServerContext<Tcp>) {
        self.service_actions.fetch_add(1, Ordering::SeqCst);
    }
}

fn fast() -> Options {
    Options::DEFAULT.poll_interval(Duration::from_millis(20))
}

#[test]
fn serve_forever_runs_until_shutdown_from_another_thread() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), Options::DEFAULT).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    assert_eq!(exchange(addr, b"a\nb\n"), "a\nok b\n");
    assert_eq!(exchange(addr, b"c\nd\n"), "c\nok d\n");
    // The default poll_interval is 500 ms; shutdown wakes the loop at once and returns only
    // once serve_forever has returned.
    let started = Instant::now();
    running.server.shutdown();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(eventually(Duration::from_millis(100), || running.is_finished()));
    let (result, _server) = running.stop();
    result.unwrap();
}

#[test]
fn shutdown_from_inside_a_synchronous_handler_does_not_deadlock() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let addr = server.server_address();
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever());
    assert_eq!(exchange(addr, b"x\nshutdown\n"), "x\nshutting down\n");
    assert!(
        eventually(LIMIT, || thread.is_finished()),
        "serve_forever did not return"
    );
    thread.join().unwrap().unwrap();
}

#[test]
fn shutdown_before_serve_forever_makes_it_return_at_once_and_serving_again_works() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let handle = server.shutdown_handle();
    handle.shutdown();
    server.serve_forever().unwrap();
    // The request was consumed: serving again runs until the next shutdown.
    let server = Arc::new(server);
    let addr = server.server_address();
    let running = Arc::clone(&server);
    let thread = thread::spawn(move || running.serve_forever());
    assert_eq!(exchange(addr, b"again\nz\n"), "again\nok z\n");
    handle.shutdown();
    thread.join().unwrap().unwrap();
}

#[test]
fn serve_forever_twice_at_once_is_an_error() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    // A served request proves the first loop is running.
    assert_eq!(exchange(addr, b"a\nb\n"), "a\nok b\n");
    let err = running.server.serve_forever().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
}

#[test]
fn handle_request_serves_one_request() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let addr = server.server_address();
    let client = thread::spawn(move || exchange(addr, b"one\ntwo\n"));
    server.handle_request().unwrap();
    assert_eq!(client.join().unwrap(), "one\nok two\n");
    assert_eq!(server.handler().calls(), ["verify", "setup", "handle", "finish"]);
    assert_eq!(server.handler().timeouts.load(Ordering::SeqCst), 0);
}

#[test]
fn handle_request_times_out_and_calls_handle_timeout() {
    let options = fast().timeout(Some(Duration::from_millis(100)));
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), options).unwrap();
    let started = Instant::now();
    server.handle_request().unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(100), "returned after {waited:?}");
    assert_eq!(server.handler().timeouts.load(Ordering::SeqCst), 1);
    assert!(server.handler().calls().is_empty());
}

#[test]
fn service_actions_runs_on_every_loop_iteration() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let running = Running::start(server);
    // Idle: the loop wakes every poll_interval (20 ms) and runs service_actions each time.
    assert!(eventually(LIMIT, || running
        .server
        .handler()
        .service_actions
        .load(Ordering::SeqCst)
        >= 5));
    let before = running.server.handler().service_actions.load(Ordering::SeqCst);
    let addr = running.server.server_address();
    exchange(addr, b"a\nb\n");
    assert!(eventually(LIMIT, || running
        .server
        .handler()
        .service_actions
        .load(Ordering::SeqCst)
        > before));
}

#[test]
fn refused_requests_are_closed_without_running_the_handler() {
    let probe = Probe::default();
    *probe.refuse.lock().unwrap() = Some("127.0.0.1".parse().unwrap());
    let server = TcpServer::with_options("127.0.0.1:0", probe, fast()).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    assert_eq!(
        exchange(addr, b"hello\nthere\n"),
        "",
        "a refused client gets EOF and nothing else"
    );
    let calls = running.server.handler().calls();
    assert_eq!(calls, ["verify"]);
    // Served once the address is allowed again.
    *running.server.handler().refuse.lock().unwrap() = None;
    assert_eq!(exchange(addr, b"hello\nthere\n"), "hello\nok there\n");
}

#[test]
fn handler_errors_and_panics_reach_handle_error_and_the_server_keeps_serving() {
    for concurrency in ["sync", "threading"] {
        let addr;
        let errors = |server: &dyn Fn() -> Vec<String>| server();
        macro_rules! run {
            ($server:expr) => {{
                let server = $server;
                addr = server.server_address();
                let running = Running::start(server);
                assert_eq!(exchange(addr, b"x\nerror\n"), "x\n");
                assert_eq!(exchange(addr, b"y\npanic\n"), "y\n");
                assert_eq!(
                    exchange(addr, b"z\nfine\n"),
                    "z\nok fine\n",
                    "{concurrency}: still serving"
                );
                let handler = running.server.handler();
                assert!(eventually(LIMIT, || handler.errors().len() == 2));
                let errs = errors(&|| handler.errors());
                assert!(
                    errs.iter().any(|e| e.contains("handler said no")),
                    "{errs:?}"
                );
                assert!(
                    errs.iter()
                        .any(|e| e.contains("handler panicked on purpose")),
                    "{errs:?}"
                );
                // finish ran after the failing and the panicking handle.
                let calls = handler.calls();
                assert_eq!(
                    calls.iter().filter(|c| *c == "finish").count(),
                    3,
                    "{calls:?}"
                );
            }};
        }
        if concurrency == "sync" {
            run!(TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap());
        } else {
            run!(ThreadingTcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap());
        }
    }
}

#[test]
fn a_failing_setup_skips_handle_and_finish() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let addr = server.server_address();
    let client = thread::spawn(move || exchange(addr, b"fail-setup\n"));
    server.handle_request().unwrap();
    client.join().unwrap();
    assert_eq!(server.handler().calls(), ["verify", "setup"]);
    assert_eq!(server.handler().errors(), ["setup failed"]);
}

#[test]
fn handlers_see_connection_client_address_and_server() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let reply = exchange(addr, b"hi\nwhoami\n");
    let line = reply.lines().nth(1).unwrap();
    let (client, server) = line.split_once(' ').unwrap();
    assert!(client.starts_with("127.0.0.1:"));
    assert_eq!(server, addr.to_string());
    drop(running);
}

#[test]
fn unbound_servers_take_socket_options_before_bind() {
    let mut server = TcpServer::unbound("127.0.0.1:0", Probe::default(), fast()).unwrap();
    server.transport().socket().set_recv_buffer_size(65536).unwrap();
    assert_eq!(server.server_address().port(), 0, "not bound yet");
    server.server_bind().unwrap();
    let addr = server.server_address();
    assert_ne!(addr.port(), 0, "server_address holds the port the kernel chose");
    // Bound, not listening: nobody can connect yet.
    assert!(TcpStream::connect(addr).is_err());
    server.server_activate().unwrap();
    assert!(server.transport().socket().recv_buffer_size().unwrap() >= 65536);
    let running = Running::start(server);
    assert_eq!(exchange(addr, b"a\nb\n"), "a\nok b\n");
    drop(running);
}

#[test]
fn allow_reuse_port_lets_two_servers_share_a_port() {
    let options = fast().allow_reuse_port(true);
    let first = TcpServer::with_options("127.0.0.1:0", Probe::default(), options.clone()).unwrap();
    let addr = first.server_address();
    let second = TcpServer::with_options(addr, Probe::default(), options).unwrap();
    assert_eq!(second.server_address(), addr);
    let plain = TcpServer::with_options(addr, Probe::default(), fast());
    assert_eq!(plain.unwrap_err().kind(), io::ErrorKind::AddrInUse);
}

#[test]
fn allow_reuse_address_is_applied() {
    for reuse in [true, false] {
        let options = fast().allow_reuse_address(reuse);
        let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), options).unwrap();
        assert_eq!(server.transport().socket().reuse_address().unwrap(), reuse);
    }
}

/// The listen backlog shows in /proc/net/tcp? No: `ss -ltn` shows it as Send-Q. We read it
/// through the kernel's sock_diag-free path: /proc/self/net/tcp lacks it, so use `ss`.
#[test]
fn request_queue_size_sets_the_listen_backlog() {
    let options = fast().request_queue_size(7);
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), options).unwrap();
    let port = server.server_address().port();
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output();
    let out = out.expect("ss (iproute2) is needed for this test");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    // State Recv-Q Send-Q Local Peer: Send-Q of a listener is its backlog.
    assert_eq!(fields.get(2), Some(&"7"), "ss said {text:?}");
}

#[test]
fn fileno_is_the_listening_socket() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let fd = server.fileno().expect("a listening socket").as_raw_fd();
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    assert!(link.to_string_lossy().starts_with("socket:"));
    assert!(!server.is_closed());
    server.server_close();
    assert!(server.is_closed());
    assert!(
        server.fileno().is_none(),
        "Python's fileno() is -1 after server_close"
    );
}

#[test]
fn dropping_a_server_closes_it() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let addr = server.server_address();
    assert!(TcpStream::connect(addr).is_ok());
    drop(server);
    assert!(TcpStream::connect(addr).is_err(), "nobody listens after drop");
}

#[test]
fn server_close_is_idempotent_and_stops_accepting() {
    let server = TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let addr = server.server_address();
    server.server_close();
    server.server_close();
    assert!(TcpStream::connect(addr).is_err());
}

/// Server-wide state reached from handlers (Python's `self.server`).
struct Counter(AtomicUsize);

impl<T: StreamTransport> StreamHandler<T> for Counter {
    fn handle(&self, req: &mut StreamRequest<'_, T>) -> io::Result<()> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        writeln!(req.wfile, "{n}")
    }
}

#[test]
fn handlers_share_server_wide_state() {
    let server =
        ThreadingTcpServer::with_options("127.0.0.1:0", Counter(AtomicUsize::new(0)), fast()).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let clients: Vec<_> = (0..20)
        .map(|_| thread::spawn(move || exchange(addr, b"")))
        .collect();
    let mut seen: Vec<usize> = clients
        .into_iter()
        .map(|c| c.join().unwrap().trim().parse().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    assert_eq!(running.server.handler().0.load(Ordering::SeqCst), 20);
}

#[test]
fn server_close_works_on_a_server_shared_with_its_serving_thread() {
    let server = ThreadingTcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    assert!(TcpStream::connect(addr).is_ok());
    // The serving thread holds the server too (an Arc): close it from here.
    running.server.server_close();
    assert!(running.server.is_closed());
    assert!(running.server.fileno().is_none());
    assert!(
        TcpStream::connect(addr).is_err(),
        "nobody listens after server_close"
    );
    let (result, _server) = running.stop();
    result.unwrap();
}

#[test]
fn invalid_options_are_refused_when_a_server_is_made() {
    let cases = [
        (
            fast().connection_timeout(Some(Duration::ZERO)),
            "connection_timeout",
        ),
        (fast().max_threads(Some(0)), "max_threads"),
        (fast().max_children(0), "max_children"),
        (fast().request_queue_size(0), "request_queue_size"),
    ];
    for (options, field) in cases {
        let err = ThreadingTcpServer::with_options("127.0.0.1:0", Probe::default(), options).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(field), "{err}");
    }
}

/// Two `shutdown()` calls racing with the end of `serve_forever`: a `serve_forever` that
/// returns without serving is explained by `is_shutdown_requested()` (a pending shutdown, as
/// in Python), never by a stray wake-up.
#[test]
fn racing_shutdowns_leave_no_unexplained_wake_up() {
    let server = Arc::new(TcpServer::with_options("127.0.0.1:0", Probe::default(), fast()).unwrap());
    let addr = server.server_address();
    let serve = |server: &Arc<TcpServer<Probe>>| {
        let server = Arc::clone(server);
        thread::spawn(move || server.serve_forever())
    };
    for round in 0..100 {
        let serving = serve(&server);
        // Race with the end of a loop that is serving.
        assert!(eventually(LIMIT, || !server.is_shutdown_requested()));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let handle = server.shutdown_handle();
                thread::spawn(move || handle.shutdown())
            })
            .collect();
        for racer in racers {
            racer.join().unwrap();
        }
        serving.join().unwrap().unwrap();
        let requested = server.is_shutdown_requested();
        let serving = serve(&server);
        let mut conn = connect(addr);
        conn.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        conn.write_all(b"ping\n").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        // The probe answers the first line with itself.
        if conn.read_to_string(&mut reply).is_ok() && reply.starts_with("ping\n") {
            server.shutdown();
            serving.join().unwrap().unwrap();
            continue;
        }
        // Not served: serve_forever returned at once, which only a pending shutdown explains.
        assert!(serving.is_finished() || eventually(LIMIT, || serving.is_finished()));
        serving.join().unwrap().unwrap();
        assert!(
            requested,
            "round {round}: serve_forever returned without a shutdown requested"
        );
        // The pending shutdown was used up: the next serve_forever serves the waiting client.
        let serving = serve(&server);
        conn.set_read_timeout(Some(LIMIT)).unwrap();
        let mut rest = String::new();
        conn.read_to_string(&mut rest).unwrap();
        assert!((reply + &rest).starts_with("ping\n"));
        server.shutdown();
        serving.join().unwrap().unwrap();
    }
}
