//! The library's graceful stop (`serve_until_signal`, `StopSignals`) and systemd's
//! `NOTIFY_SOCKET`: each scenario's server runs in a process of its own (this test binary,
//! re-executed for that scenario), which the test signals over real sockets.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::signals::{Graceful, StopSignals};
use util::{TempDir, LIMIT};

const CHILD_ENV: &str = "SOCKSERVE_PROD_SIGNALS_CHILD";

/// Reads a line, works on it for `work`, answers `done LINE`; closes an idle connection once a
/// stop was asked for ([`sockserve::signals::stop_requested`]).
struct Slow {
    work: Duration,
}

impl StreamHandler for Slow {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        // Wake every 50 ms to look at the stop flag: an idle connection closes on a stop.
        req.request.set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut line = String::new();
        loop {
            match req.rfile.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if sockserve::signals::stop_requested() {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            line.clear();
            if req.rfile.read_line(&mut line)? == 0 {
                return Ok(());
            }
            std::thread::sleep(self.work);
            write!(req.wfile, "done {line}")?;
            req.wfile.flush()?;
        }
    }
}

/// A keep-alive handler with plain blocking reads: it never looks at the stop flag, so only the
/// library (`close_idle_connections` in the graceful stop) can end its idle connections.
struct Plain;

impl StreamHandler for Plain {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            write!(req.wfile, "done {line}")?;
            line.clear();
        }
        Ok(())
    }
}

/// In the child: the scenario's server. `model` is `threading`, `forking` or `plain` (a
/// threading server with the [`Plain`] handler).
fn child_main(model: &str, work: Duration, drain: Duration) {
    let stop = StopSignals::install(Graceful::DEFAULT.drain(drain)).expect("install");
    let graceful = |served: io::Result<()>| {
        served.expect("serve");
        println!("drained");
        std::process::exit(0);
    };
    match model {
        "plain" => {
            let server = ThreadingTcpServer::bind("127.0.0.1:0", Plain).expect("bind");
            println!("listening on {}", server.server_address());
            graceful(stop.serve(&server));
        }
        "threading" => {
            let server = ThreadingTcpServer::bind("127.0.0.1:0", Slow { work }).expect("bind");
            println!("listening on {}", server.server_address());
            graceful(stop.serve(&server));
        }
        _ => {
            let server = ForkingTcpServer::bind("127.0.0.1:0", Slow { work }).expect("bind");
            println!("listening on {}", server.server_address());
            graceful(stop.serve(&server));
        }
    }
}

/// Runs the scenario `args` in a child process (this binary again); returns it and its
/// address once it listens. The caller waits for the child it gets back.
#[allow(clippy::zombie_processes)]
fn spawn(
    args: &str,
    notify: Option<&std::path::Path>,
) -> (Child, SocketAddr, BufReader<std::process::ChildStdout>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(path) = notify {
        command.env("NOTIFY_SOCKET", path);
    }
    let mut child = command.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended before listening"
        );
        // libtest writes `test child_entry ... ` on the same line first.
        if let Some((_, address)) = line.trim().split_once("listening on ") {
            return (child, address.parse().unwrap(), out);
        }
    }
}

#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let ms = |s: &str| Duration::from_millis(s.parse().unwrap());
    child_main(parts[0], ms(parts[1]), ms(parts[2]));
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) with the pid of a child this test started and has not waited for.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..(LIMIT.as_millis() / 20) {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("the server did not exit within {LIMIT:?}");
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream
}

/// SIGTERM with a request in flight: it is answered, the idle connection is closed, the
/// listener accepts no more, and the process exits 0 after draining.
fn finishes_in_flight(model: &str) {
    let (mut child, address, mut out) = spawn(&format!("{model},400,10000"), None);
    let mut busy = connect(address);
    let mut idle = connect(address);
    writeln!(idle, "first").unwrap();
    let mut reply = String::new();
    BufReader::new(&idle).read_line(&mut reply).unwrap();
    assert_eq!(reply, "done first\n");
    writeln!(busy, "slow").unwrap();
    // The request is being worked on (400 ms) when the signal comes.
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, libc::SIGTERM);
    let mut answer = String::new();
    busy.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer, "done slow\n",
        "the request in flight is answered, then closed"
    );
    let status = wait(&mut child);
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("drained"), "{rest:?}");
    // The idle connection was closed by the stop (end of file, no reset).
    let mut tail = Vec::new();
    assert_eq!(idle.read_to_end(&mut tail).unwrap(), 0);
    assert!(TcpStream::connect(address).is_err(), "nobody listens any more");
}

/// SIGTERM with idle keep-alive connections whose handler blocks in a plain read: the library
/// ends them (end of input), so the drain does not wait for their clients (10 s here: the
/// process would exit 1 at the deadline).
#[test]
fn sigterm_closes_idle_connections_of_a_plain_blocking_handler() {
    let (mut child, address, mut out) = spawn("plain,0,10000", None);
    let mut idle: Vec<TcpStream> = (0..5).map(|_| connect(address)).collect();
    for (i, stream) in idle.iter_mut().enumerate() {
        writeln!(stream, "hello {i}").unwrap();
        let mut reply = String::new();
        BufReader::new(&*stream).read_line(&mut reply).unwrap();
        assert_eq!(reply, format!("done hello {i}\n"));
    }
    signal(&child, libc::SIGTERM);
    let status = wait(&mut child);
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("drained"), "{rest:?}");
    for stream in &mut idle {
        let mut tail = Vec::new();
        assert_eq!(
            stream.read_to_end(&mut tail).unwrap(),
            0,
            "an idle connection was not ended"
        );
    }
}

#[test]
fn threading_sigterm_finishes_the_request_in_flight() {
    finishes_in_flight("threading");
}

#[test]
fn forking_sigterm_finishes_the_request_in_flight() {
    finishes_in_flight("forking");
}

#[test]
fn second_signal_exits_at_once_with_status_1() {
    let (mut child, address, _out) = spawn("threading,60000,60000", None);
    let mut busy = connect(address);
    writeln!(busy, "forever").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, libc::SIGINT);
    let status = wait(&mut child);
    assert_eq!(status.code(), Some(1), "{status}");
}

#[test]
fn drain_deadline_ends_a_stuck_request_with_status_1() {
    let (mut child, address, _out) = spawn("threading,60000,300", None);
    let mut busy = connect(address);
    writeln!(busy, "forever").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, libc::SIGTERM);
    let status = wait(&mut child);
    assert_eq!(status.code(), Some(1), "{status}");
}

#[test]
fn notify_socket_gets_ready_then_stopping() {
    let dir = TempDir::new("notify");
    let path = dir.path("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let (mut child, _address, _out) = spawn("threading,0,10000", Some(&path));
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\n");
    signal(&child, libc::SIGTERM);
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert!(wait(&mut child).success());
}
