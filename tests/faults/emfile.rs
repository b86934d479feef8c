//! Fault 2: the process runs out of descriptors, so `accept` fails with `EMFILE`. The serve
//! loop backs off instead of spinning, logs one warning per episode, and serves again once
//! descriptors are free. Per-connection accept errors (`ECONNABORTED` and friends) are
//! skipped; a broken listening socket ends `serve_forever` with the error.
//!
//! Each scenario lowers its own soft `RLIMIT_NOFILE`: it runs in a process of its own.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
use sockserve::concurrency::{Forking, ProcessRequest, Synchronous, Threading};
use sockserve::transport::{BaseKind, Tcp, Transport};
use sockserve::{BaseRequest, Options, RequestError, RequestHandler, Server, StreamHandler, StreamRequest};

use crate::harness::{self, bump, get, isolated_tests};

/// The soft descriptor limit of the scenarios.
const LIMIT: u64 = 64;

/// While descriptors are out, the server may use at most this share of one core.
const MAX_CPU_SHARE: f64 = 0.20;

/// Answers `ok` to each line until the client closes: a connection holds its descriptor for
/// as long as the client keeps it open.
struct HoldingEcho {
    served: &'static AtomicU64,
}

impl StreamHandler for HoldingEcho {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            req.wfile.write_all(b"ok\n")?;
            bump(self.served);
            line.clear();
        }
        Ok(())
    }

    fn handle_error(&self, _client: &SocketAddr, _error: &RequestError) {}
}

/// A TCP socket created now and moved to a descriptor number at or above 1000, above the
/// lowered limit: it stays usable but takes no slot the server could use.
fn parked_socket() -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: `raw` is a live descriptor owned by `socket`; F_DUPFD_CLOEXEC creates a new
    // descriptor and takes no pointers.
    let high = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 1000) };
    assert!(high >= 1000, "fcntl(F_DUPFD): {}", io::Error::last_os_error());
    // SAFETY: `high` was just created by fcntl and is owned by nothing else.
    Socket::from(unsafe { OwnedFd::from_raw_fd(high) })
}

/// Opens `/dev/null` until the process is out of descriptors; returns what it opened.
fn exhaust_descriptors() -> Vec<File> {
    let mut fillers = Vec::new();
    for _ in 0..LIMIT {
        match File::open("/dev/null") {
            Ok(file) => fillers.push(file),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return fillers,
            Err(e) => panic!("open /dev/null: {e}"),
        }
    }
    panic!("still not out of descriptors after {LIMIT} files");
}

/// Waits for the first warning of an episode, then checks over one second of wall time that
/// the process stays nearly idle and logs nothing more.
fn check_episode(warnings_before: usize) {
    assert!(
        harness::eventually(Duration::from_secs(5), || harness::warnings() > warnings_before),
        "no warning while accept fails with EMFILE"
    );
    let (cpu, wall) = (harness::cpu_time(), Instant::now());
    thread::sleep(Duration::from_secs(1));
    let (cpu, wall) = (harness::cpu_time() - cpu, wall.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "out of descriptors: {cpu:?} of CPU in {wall:?} ({:.1}%)",
        share * 100.0
    );
    assert!(
        share < MAX_CPU_SHARE,
        "the loop spins while accept fails: {share:.2} of a core"
    );
    let text = harness::warning_text();
    assert_eq!(
        harness::warnings(),
        warnings_before + 1,
        "one warning per episode; got {text:?}"
    );
    let last = text.last().expect("the warning");
    assert!(last.contains("Too many open files"), "unexpected warning: {last}");
}

/// Reads the `ok` answering the line sent earlier on `client`.
fn read_ok(client: &mut TcpStream) {
    let mut reply = [0u8; 3];
    client.read_exact(&mut reply).expect("reply after recovery");
    assert_eq!(&reply, b"ok\n");
}

/// The process's descriptors are taken by something else (files the application opened):
/// pending connections wait in the backlog while the loop backs off, and are served once the
/// files are closed.
fn out_of_descriptors<C>()
where
    C: ProcessRequest<Tcp, HoldingEcho> + Sync,
{
    const PENDING: usize = 8;
    let served = &harness::shared_counters(1)[0];
    let options = Options::DEFAULT.poll_interval(Duration::from_millis(50));
    let server: Server<Tcp, C, HoldingEcho> =
        Server::with_options("127.0.0.1:0", HoldingEcho { served }, options).expect("bind");
    let addr = server.server_address();
    let parked: Vec<Socket> = (0..PENDING).map(|_| parked_socket()).collect();
    harness::set_nofile_soft(LIMIT);
    harness::serving(&server, || {
        let idle = harness::fd_count();
        assert_eq!(harness::ask_tcp(addr, "warm-up").expect("warm-up request"), "ok");
        // The warm-up's connection must be gone first: closed later, it would free a slot
        // in the middle of the episode and split it in two.
        assert!(harness::eventually(Duration::from_secs(5), || harness::fd_count() == idle));
        let fillers = exhaust_descriptors();
        let warnings = harness::warnings();
        let mut clients: Vec<TcpStream> = parked
            .into_iter()
            .map(|socket| send_request(socket, addr))
            .collect();
        check_episode(warnings);

        drop(fillers);
        // One at a time, so a synchronous server (which holds each connection until its
        // client closes) gets through all of them.
        for client in &mut clients {
            read_ok(client);
            client.shutdown(std::net::Shutdown::Write).unwrap();
        }
        drop(clients);
        assert_eq!(
            harness::ask_tcp(addr, "after").expect("request after recovery"),
            "ok"
        );
        assert!(harness::eventually(Duration::from_secs(5), || get(served) == PENDING as u64 + 2));
    });
}

/// Connects a parked client socket (made before the descriptors ran out) and sends one
/// request line.
fn send_request(socket: Socket, addr: std::net::SocketAddr) -> TcpStream {
    socket.connect(&SockAddr::from(addr)).expect("connect");
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(harness::CLIENT_TIMEOUT)).unwrap();
    stream.write_all(b"request\n").expect("send");
    stream
}

/// More connections than descriptors: a threading server holds each connection in a handler
/// thread until its client closes, so the connections themselves exhaust the table. Closing
/// them lets the waiting ones in.
fn more_connections_than_descriptors() {
    const CONNECTIONS: usize = 2 * LIMIT as usize;
    let served = &harness::shared_counters(1)[0];
    let options = Options::DEFAULT.poll_interval(Duration::from_millis(50));
    let server: Server<Tcp, Threading, HoldingEcho> =
        Server::with_options("127.0.0.1:0", HoldingEcho { served }, options).expect("bind");
    let addr = server.server_address();
    let parked: Vec<Socket> = (0..CONNECTIONS).map(|_| parked_socket()).collect();
    harness::set_nofile_soft(LIMIT);
    harness::serving(&server, || {
        let warnings = harness::warnings();
        let mut clients: Vec<TcpStream> = parked
            .into_iter()
            .map(|socket| send_request(socket, addr))
            .collect();
        check_episode(warnings);
        let held = server.concurrency().active_threads();
        println!("{held} connections held when accept failed; {CONNECTIONS} connected");
        assert!(
            held < CONNECTIONS,
            "every connection was accepted under the limit"
        );

        // Every client is answered in turn; closing the answered ones frees descriptors for
        // the ones still waiting in the backlog.
        for client in &mut clients {
            read_ok(client);
            client.shutdown(std::net::Shutdown::Both).unwrap();
        }
        drop(clients);
        assert_eq!(
            harness::ask_tcp(addr, "after").expect("request after recovery"),
            "ok"
        );
        assert!(harness::eventually(Duration::from_secs(5), || get(served) == CONNECTIONS as u64 + 1));
    });
}

/// One step of a scripted request source: an accept error, or a request.
#[derive(Clone, Copy, Debug)]
enum Step {
    Fail(i32),
    Request(u32),
}

/// A request source that replays a script of `get_request` results, to drive the serve loop
/// through errors that cannot be provoked from outside (`ECONNABORTED`, `EPROTO`, ...).
struct Scripted {
    script: Mutex<VecDeque<Step>>,
}

impl Transport for Scripted {
    type Request = u32;
    type Address = String;
    type ServerAddress = String;
    type BindAddress = ();
    type Kind = BaseKind;

    fn open(_address: (), _options: &Options) -> io::Result<Self> {
        Ok(Scripted {
            script: Mutex::new(VecDeque::new()),
        })
    }
    fn server_bind(&mut self, _options: &Options) -> io::Result<()> {
        Ok(())
    }
    fn server_activate(&mut self, _options: &Options) -> io::Result<()> {
        Ok(())
    }
    fn server_address(&self) -> String {
        "script".into()
    }
    fn fileno(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    fn get_request(&self) -> io::Result<Option<(u32, String)>> {
        match self.script.lock().unwrap().pop_front() {
            Some(Step::Fail(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(Step::Request(n)) => Ok(Some((n, "client".into()))),
            None => Ok(None),
        }
    }
}

/// Records the requests it is handed.
struct Recorder {
    seen: Mutex<Vec<u32>>,
}

impl RequestHandler<Scripted> for Recorder {
    fn handle(&self, req: &mut BaseRequest<'_, Scripted>) -> io::Result<()> {
        self.seen.lock().unwrap().push(*req.request);
        Ok(())
    }
}

/// The serve loop's reaction to each kind of `get_request` failure, driven by a script.
fn accept_error_classification() {
    use Step::*;
    let script = [
        // Failures of one connection: skipped at once, nothing logged above debug.
        Fail(libc::ECONNABORTED),
        Fail(libc::EPROTO),
        Fail(libc::ECONNRESET),
        Fail(libc::EPERM),
        Fail(libc::ETIMEDOUT),
        Fail(libc::ENETUNREACH),
        Fail(libc::EHOSTUNREACH),
        Fail(libc::EINTR),
        Request(1),
        // Out of a resource: one back-off episode, one warning.
        Fail(libc::EMFILE),
        Fail(libc::ENFILE),
        Fail(libc::ENOBUFS),
        Fail(libc::ENOMEM),
        Request(2),
        Fail(libc::ECONNABORTED),
        Request(3),
        // A second episode.
        Fail(libc::EMFILE),
        Request(4),
        // The listening socket is gone: serve_forever ends with the error.
        Fail(libc::EBADF),
        Request(5),
    ];
    let transport = Scripted {
        script: Mutex::new(script.into_iter().collect()),
    };
    let options = Options::DEFAULT.poll_interval(Duration::from_millis(5));
    let handler = Recorder {
        seen: Mutex::new(Vec::new()),
    };
    let server: Server<Scripted, Synchronous, Recorder> =
        Server::from_transport(transport, handler, options).expect("server");
    let warnings = harness::warnings();
    let ended = server.serve_forever();
    let error = ended.expect_err("EBADF must end serve_forever");
    assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{error}");
    assert_eq!(*server.handler().seen.lock().unwrap(), [1, 2, 3, 4]);
    let text = harness::warning_text();
    assert_eq!(
        harness::warnings() - warnings,
        2,
        "one warning per episode: {text:?}"
    );
    assert_eq!(harness::errors(), 0);
    // Request 5 was never taken.
    assert_eq!(server.transport().script.lock().unwrap().len(), 1);
}

isolated_tests! {
    fn out_of_descriptors_sync() {
        out_of_descriptors::<Synchronous>();
    }

    fn out_of_descriptors_threading() {
        out_of_descriptors::<Threading>();
    }

    fn out_of_descriptors_forking() {
        out_of_descriptors::<Forking>();
    }

    fn more_connections_than_descriptors_threading() {
        more_connections_than_descriptors();
    }

    fn accept_errors_are_classified() {
        accept_error_classification();
    }
}
