//! Harness for the black-box tests of the example gallery.
//!
//! - [`example`] builds every example once per test process (`cargo build --examples`, with the
//!   cargo, profile and target directory of the running test), then returns a binary's path.
//! - [`Server`] spawns an example, waits for its `listening on ADDR` line, and kills it on drop.
//! - [`run_tool`] runs a real client (`nc`, `socat`, `curl`) with a time limit; a missing tool is
//!   a failure, not a skip, since CI installs them.
//!
//! Every wait is bounded; every address used is loopback or a Unix socket in a temporary dir.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long an example may take to print `listening on`.
pub const STARTUP: Duration = Duration::from_secs(20);
/// The default bound for a client call in a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server may take to exit (the contract says 2 s).
pub const STOP: Duration = Duration::from_secs(2);

/// The directory holding the built examples (`<target>/<profile>/examples`), building them once.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // This test runs as <target>[/<triple>]/<profile>/deps/<name>-<hash>.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in <target>/<profile>/deps");
        let profile = profile_dir
            .file_name()
            .and_then(OsStr::to_str)
            .expect("profile dir name");
        let above = profile_dir.parent().expect("target dir");
        // A target dir holds CACHEDIR.TAG; a `--target <triple>` build nests one level deeper.
        let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
            (above, None)
        } else {
            (
                above.parent().expect("target dir"),
                above.file_name().and_then(OsStr::to_str),
            )
        };
        let mut cargo = Command::new(env!("CARGO"));
        // Without the variables cargo set for this test (CARGO_MANIFEST_DIR, CARGO_PKG_NAME,
        // ...): a build script that watches one of them (ring's does) would otherwise see it
        // change between this build and the enclosing `cargo test`, and each would rebuild
        // it and everything above it.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_by_cargo = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "CARGO_BIN_EXE_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix));
            if set_by_cargo {
                cargo.env_remove(name.as_ref());
            }
        }
        cargo
            .args(["build", "--quiet", "--examples", "-p", "sockserve"])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cargo.arg("--release");
            }
            other => {
                cargo.args(["--profile", other]);
            }
        }
        if let Some(triple) = triple {
            cargo.args(["--target", triple]);
        }
        let status = cargo
            .stdin(Stdio::null())
            .status()
            .expect("run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed: {status}");
        profile_dir.join("examples")
    })
}

/// The path of a built example binary.
pub fn example(name: &str) -> PathBuf {
    let path = examples_dir().join(name);
    assert!(path.exists(), "example binary {} missing", path.display());
    path
}

/// A fresh, empty temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sockserve-ex-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The two ways `echo_tcp`, `kv_store` and `http_server` serve: the default (threading) and
/// `--pooled`. A test of one of them runs once per mode: `for mode in MODES { .. }`.
pub const MODES: [&[&str]; 2] = [&[], &["--pooled"]];

/// Whether `mode` (one of [`MODES`]) is `--pooled`.
pub fn is_pooled(mode: &[&str]) -> bool {
    mode.contains(&"--pooled")
}

/// A running example server.
pub struct Server {
    pub name: String,
    child: Child,
    /// The address from the `listening on ADDR` line.
    pub addr: String,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Set once the server's stderr is closed (all of it is in `stderr`).
    stderr_closed: Arc<AtomicBool>,
    status: Option<ExitStatus>,
}

impl Server {
    /// Spawns `name` with `args`, waits for `listening on ADDR`.
    pub fn start(name: &str, args: &[&str]) -> Server {
        Server::start_in(name, args, None)
    }

    /// [`Server::start`] with `args`, then the options of `mode` (one of [`MODES`]).
    pub fn start_mode(name: &str, args: &[&str], mode: &[&str]) -> Server {
        let all: Vec<&str> = args.iter().chain(mode).copied().collect();
        Server::start(name, &all)
    }

    /// Like [`Server::start`], in the working directory `dir` if given.
    pub fn start_in(name: &str, args: &[&str], dir: Option<&Path>) -> Server {
        let mut server = Server::spawn(name, args, dir);
        let first = server.stdout_line(STARTUP).unwrap_or_else(|| {
            let stderr = server.stderr();
            panic!("{name} {args:?}: no `listening on` line; stderr:\n{stderr}")
        });
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{name}: first line is {first:?}"));
        server.addr = addr.to_string();
        server
    }

    /// Spawns `name` with `args` without waiting for anything.
    pub fn spawn(name: &str, args: &[&str], dir: Option<&Path>) -> Server {
        let mut command = Command::new(example(name));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info");
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_closed = Arc::new(AtomicBool::new(false));
        let err = child.stderr.take().expect("stderr");
        let (sink, closed) = (Arc::clone(&stderr), Arc::clone(&stderr_closed));
        thread::spawn(move || {
            let mut err = BufReader::new(err);
            let mut line = Vec::new();
            while matches!(err.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
            closed.store(true, Ordering::SeqCst);
        });
        Server {
            name: name.to_string(),
            child,
            addr: String::new(),
            stdout,
            stderr,
            stderr_closed,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the server prints on stdout, waiting at most `timeout`.
    pub fn stdout_line(&mut self, timeout: Duration) -> Option<String> {
        self.stdout.recv_timeout(timeout).ok()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGINT`, ...).
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with the pid of our own child, which is not reaped yet (we hold it).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Waits at most `timeout` for the server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_child(&mut self.child, timeout)?;
        self.status = Some(status);
        // Let the reader thread collect the last of stderr (bounded: a forked child that
        // outlived its parent could hold the pipe open).
        let closed = &self.stderr_closed;
        wait_until(Duration::from_secs(1), || closed.load(Ordering::SeqCst));
        Some(status)
    }

    /// Sends `signal`, then asserts the server exits with status 0 within [`STOP`].
    pub fn stop_with(&mut self, signal: i32) {
        self.signal(signal);
        let started = Instant::now();
        let status = self.wait_exit(STOP);
        let stderr = self.stderr();
        match status {
            Some(status) => assert!(
                status.success(),
                "{} exited with {status} after signal {signal}; stderr:\n{stderr}",
                self.name
            ),
            None => panic!(
                "{} still running {:?} after signal {signal}; stderr:\n{stderr}",
                self.name,
                started.elapsed()
            ),
        }
    }

    /// Asserts the server is still running (it did not crash on what a test just sent).
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("{} exited with {status}; stderr:\n{}", self.name, self.stderr());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a client tool with `input` on stdin; kills it after `timeout`. Panics if the tool is
/// missing (CI installs nc, socat and curl).
pub fn run_tool(program: &str, args: &[&str], input: &[u8], timeout: Duration) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}` ({e}): install it (apt-get install netcat-openbsd socat curl)")
        });
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{program} {args:?}` still running after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A line-oriented client over any stream socket, every read and write bounded by
/// [`IO_TIMEOUT`].
pub struct Client<S: Read + Write> {
    inner: BufReader<S>,
}

/// Connects to a TCP example.
pub fn tcp_client(addr: &str) -> Client<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    Client {
        inner: BufReader::new(stream),
    }
}

/// Connects to a Unix stream example.
pub fn unix_client(path: &str) -> Client<UnixStream> {
    let stream = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {path}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    Client {
        inner: BufReader::new(stream),
    }
}

impl<S: Read + Write> Client<S> {
    pub fn from_stream(stream: S) -> Client<S> {
        Client {
            inner: BufReader::new(stream),
        }
    }

    pub fn stream(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.inner.get_mut().write_all(bytes).expect("send");
    }

    /// The next line, newline included, as bytes; panics at end of input or on timeout.
    pub fn line_bytes(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = self.inner.read_until(b'\n', &mut line).expect("read line");
        assert!(n > 0, "end of input where a line was expected");
        line
    }

    /// The next line without its line ending.
    pub fn line(&mut self) -> String {
        let line = self.line_bytes();
        String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }

    /// The next `n` bytes; panics at end of input or on timeout.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.inner.read_exact(&mut buf).expect("read bytes");
        buf
    }

    /// Sends `bytes`, returns the next line as bytes.
    pub fn line_bytes_after(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.send(bytes);
        self.line_bytes()
    }

    /// Sends `line` and a newline, returns the reply line.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.line()
    }

    /// Everything until the server closes (a reset ends it too, keeping what was read).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0; 8192];
        loop {
            match self.inner.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
                Err(e) => panic!("read: {e} (after {} bytes)", all.len()),
            }
        }
    }

    /// Asserts the server closes the connection without sending anything more.
    pub fn expect_eof(&mut self) {
        let rest = self.read_to_end();
        assert!(
            rest.is_empty(),
            "expected end of input, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// A UDP socket on 127.0.0.1 with bounded reads.
pub fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp client");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

/// Waits until `condition` holds, checking every 20 ms, for at most `timeout`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that nothing in the server's stderr says it panicked.
pub fn assert_no_panic(server: &Server) {
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "{} panicked; stderr:\n{stderr}",
        server.name
    );
}

/// Waits up to `timeout` for `child` to exit; its status, or `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `line` on `stream`, shuts down the sending side, and reads everything the server
/// sends until it closes (reads bounded by [`IO_TIMEOUT`]); each failure says which step.
pub fn half_close_exchange(mut stream: TcpStream, line: &str) -> Result<String, String> {
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    Ok(reply)
}
