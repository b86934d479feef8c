//! What every fault scenario shares: process isolation, descriptor and thread counts, shared
//! counters that cross `fork`, a counting logger, child-process scans and small clients.
//!
//! Each scenario runs in a child process of its own (the test binary re-executed with
//! `--exact <name>`), so descriptor and thread counts, resource limits, the `SIGPIPE`
//! disposition, the logger and the process's children belong to that scenario alone, even
//! though libtest runs the tests of this binary in parallel.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use sockserve::concurrency::ProcessRequest;
use sockserve::transport::Transport;
use sockserve::Server;

/// The environment variable that tells a re-executed test binary which scenario it runs.
const CHILD_ENV: &str = "SOCKSERVE_FAULTS_SCENARIO";

/// The longest a scenario's process may run before it is killed and the test fails.
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);

/// Declares tests whose bodies run in a child process of their own (see the module docs).
macro_rules! isolated_tests {
    ($($(#[$meta:meta])* fn $name:ident() $body:block)*) => {$(
        #[test]
        $(#[$meta])*
        fn $name() {
            $crate::harness::isolated(concat!(module_path!(), "::", stringify!($name)), || $body);
        }
    )*};
}
pub(crate) use isolated_tests;

/// Runs `body` in a child process: the test binary re-executed for the test `path` alone.
/// In that child (recognised by the environment), runs `body` itself.
pub fn isolated(path: &str, body: impl FnOnce()) {
    isolated_with(path, true, body);
}

/// [`isolated`], with or without the counting logger installed in the child; returns, in the
/// parent, what the child wrote to stderr (`None` in the child itself).
pub fn isolated_with(path: &str, logger: bool, body: impl FnOnce()) -> Option<String> {
    // module_path! starts with the crate name, which libtest's test names leave out.
    let name = path.split_once("::").map_or(path, |(_, rest)| rest);
    if std::env::var_os(CHILD_ENV).is_some_and(|v| v == name) {
        if logger {
            install_logger();
        }
        body();
        return None;
    }
    let exe = std::env::current_exe().expect("current_exe");
    // A process group of its own, so whatever the scenario leaves behind (the children of a
    // forking server that failed half-way) can be ended with it.
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the scenario process");
    let group = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Leftovers of the group would hold the output pipes open: end them. The group is the one
    // made for this scenario above, so nothing else is touched.
    // SAFETY: kill takes no pointers; a negative pid names the scenario's process group.
    if unsafe { libc::kill(-group, 0) } == 0 {
        println!("scenario {name} left processes behind; ending them");
        // SAFETY: as above.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    // Shown by libtest when the test fails (and with --nocapture).
    println!("--- scenario {name}: stdout ---\n{out}\n--- stderr ---\n{err}");
    match status {
        None => panic!("scenario {name} did not finish within {SCENARIO_LIMIT:?}"),
        Some(status) => assert!(status.success(), "scenario {name} failed: {status}"),
    }
    assert!(
        out.contains("1 passed"),
        "scenario {name} did not run exactly one test"
    );
    Some(err)
}

/// Polls `condition` every few milliseconds until it holds or `limit` passes; returns
/// whether it held.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Open descriptors of this process (the directory handle used to count them included, the
/// same every time).
pub fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Threads of this process.
pub fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").expect("/proc/self/task").count()
}

/// The process's descriptors and threads, to compare with a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub fds: usize,
    pub threads: usize,
}

impl Usage {
    pub fn now() -> Self {
        Usage {
            fds: fd_count(),
            threads: thread_count(),
        }
    }

    /// Waits (up to 5 s) for the usage to come back to `self`; panics with both if it does not.
    pub fn settles(self, what: &str) {
        let mut last = Usage::now();
        let back = eventually(Duration::from_secs(5), || {
            last = Usage::now();
            last == self
        });
        assert!(
            back,
            "{what}: descriptors and threads did not return to {self:?}: {last:?}"
        );
    }
}

/// `n` counters in memory shared with every process forked afterwards (a forking server's
/// children), zeroed. The mapping lives as long as the process: each scenario runs in a
/// process of its own.
pub fn shared_counters(n: usize) -> &'static [AtomicU64] {
    let len = n.max(1) * std::mem::size_of::<AtomicU64>();
    // SAFETY: an anonymous mapping takes no file and no address hint; the result is checked
    // against MAP_FAILED before use.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
    // SAFETY: the mapping is `len` bytes, page-aligned (so aligned for AtomicU64), zero-filled
    // by the kernel (a valid AtomicU64 is any 8 bytes), readable and writable, and never
    // unmapped, so a 'static shared slice of atomics over it is sound; atomics on MAP_SHARED
    // memory are coherent across the processes that share it.
    unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), n.max(1)) }
}

/// Reads a shared counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::SeqCst)
}

/// Adds one to a shared counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

/// A `log` backend that counts records by level and keeps the warnings, so a scenario can
/// check what the server logged. Everything at info and above is also printed to stderr.
struct CountingLogger;

static WARNINGS: AtomicUsize = AtomicUsize::new(0);
static ERRORS: AtomicUsize = AtomicUsize::new(0);
static WARNING_TEXT: Mutex<Vec<String>> = Mutex::new(Vec::new());
static DEBUG_TEXT: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for CountingLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        match record.level() {
            log::Level::Error => {
                ERRORS.fetch_add(1, Ordering::SeqCst);
            }
            log::Level::Warn => {
                WARNINGS.fetch_add(1, Ordering::SeqCst);
                WARNING_TEXT
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(record.args().to_string());
            }
            log::Level::Debug => {
                DEBUG_TEXT
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(record.args().to_string());
            }
            _ => {}
        }
        if record.level() <= log::Level::Info {
            eprintln!("[{}] {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: CountingLogger = CountingLogger;

fn install_logger() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// Warnings logged so far in this process.
pub fn warnings() -> usize {
    WARNINGS.load(Ordering::SeqCst)
}

/// The text of the warnings logged so far.
pub fn warning_text() -> Vec<String> {
    WARNING_TEXT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The text of the debug records logged so far.
pub fn debug_text() -> Vec<String> {
    DEBUG_TEXT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Errors logged so far in this process.
pub fn errors() -> usize {
    ERRORS.load(Ordering::SeqCst)
}

/// Scans every `/proc/<pid>/stat` for children of this process; returns their pids and
/// states (`R`, `S`, `Z`, ...).
pub fn children_by_stat() -> Vec<(i32, char)> {
    // SAFETY: getpid has no preconditions and cannot fail.
    let me = unsafe { libc::getpid() };
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
        if ppid == me {
            found.push((pid, state));
        }
    }
    found
}

/// Zombie children of this process (scan of `/proc/*/stat`).
pub fn zombies() -> Vec<i32> {
    children_by_stat()
        .into_iter()
        .filter(|(_, state)| *state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Sets this process's soft `RLIMIT_NOFILE`; returns the previous soft limit.
pub fn set_nofile_soft(limit: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a live rlimit that getrlimit fills.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    assert_eq!(r, 0, "getrlimit: {}", io::Error::last_os_error());
    let old = rl.rlim_cur;
    rl.rlim_cur = limit.min(rl.rlim_max);
    // SAFETY: `rl` is a valid rlimit with the soft limit at most the hard limit.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    assert_eq!(r, 0, "setrlimit: {}", io::Error::last_os_error());
    old
}

/// CPU time (user + system) this process has used, all threads together.
pub fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live rusage that getrusage fills.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(r, 0, "getrusage: {}", io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// How long clients wait for anything before the scenario fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to a TCP server with the client timeouts set.
pub fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(stream)
}

/// Connects to a Unix stream server with the client timeouts set.
pub fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(stream)
}

/// A stream whose sending side can be shut down on its own.
pub trait HalfClose: Read + Write {
    fn close_write(&self) -> io::Result<()>;
}

impl HalfClose for TcpStream {
    fn close_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl HalfClose for UnixStream {
    fn close_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl HalfClose for Box<dyn HalfClose + Send> {
    fn close_write(&self) -> io::Result<()> {
        (**self).close_write()
    }
}

/// Sends `line` (a newline is added), shuts down the sending side, and reads one line of
/// reply, without its newline.
///
/// The shutdown matters for forking servers: their child inherits a copy of every
/// descriptor this process has, this client's own included, so closing the client would not
/// end the connection for a handler that reads until end of input.
pub fn ask<S: HalfClose>(stream: S, line: &str) -> io::Result<String> {
    let mut reader = BufReader::new(stream);
    reader.get_mut().write_all(format!("{line}\n").as_bytes())?;
    reader.get_ref().close_write()?;
    let mut reply = String::new();
    reader.read_line(&mut reply)?;
    if !reply.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("reply cut short: {reply:?}"),
        ));
    }
    reply.pop();
    Ok(reply)
}

/// One request over a new TCP connection.
pub fn ask_tcp(addr: SocketAddr, line: &str) -> io::Result<String> {
    ask(connect_tcp(addr)?, line)
}

/// A fresh temporary directory for Unix socket files, removed by the scenario's end (each
/// scenario runs in its own process, so the pid keeps names apart).
pub fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("sockserve-faults-{}-{tag}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Runs `serve_forever` in a thread while `body` runs, then shuts the server down and checks
/// that the loop ended cleanly. A panic in `body` still stops the server first, so a failing
/// scenario does not hang.
pub fn serving<T, C, H, R>(server: &Server<T, C, H>, body: impl FnOnce() -> R) -> R
where
    T: Transport,
    C: ProcessRequest<T, H> + Sync,
    Server<T, C, H>: Sync,
{
    thread::scope(|s| {
        let serve = s.spawn(|| server.serve_forever());
        let result = panic::catch_unwind(AssertUnwindSafe(body));
        server.shutdown();
        let served = serve.join();
        match result {
            Ok(r) => {
                served
                    .expect("the serve thread panicked")
                    .expect("serve_forever failed");
                r
            }
            Err(payload) => panic::resume_unwind(payload),
        }
    })
}

/// A process forked to play clients, so that no child of a forking server inherits the
/// client ends of connections (a client's close, or its reset, must reach the server).
pub struct ClientProcess {
    pid: libc::pid_t,
}

/// Forks a process that runs `clients` and exits: status 0 when it returns, 1 when it
/// panics. The new process holds only the calling thread, and copies of the server's
/// descriptors, which it never touches.
pub fn client_process(clients: impl FnOnce()) -> ClientProcess {
    // SAFETY: fork takes no pointers. The child runs only `clients` (socket calls and memory
    // shared with the parent) and leaves through _exit, without running the parent's
    // destructors.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", io::Error::last_os_error()),
        0 => {
            let ok = panic::catch_unwind(AssertUnwindSafe(clients)).is_ok();
            // SAFETY: _exit ends the process at once and touches no Rust state.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => ClientProcess { pid },
    }
}

impl ClientProcess {
    /// Waits (up to [`CLIENT_TIMEOUT`] and then some) for the client process and checks that
    /// it succeeded; kills it if it does not end in time.
    pub fn wait(self) {
        let deadline = Instant::now() + 3 * CLIENT_TIMEOUT;
        loop {
            let mut status = 0;
            // SAFETY: `status` is a live c_int that waitpid writes; the pid is our child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            assert!(r >= 0, "waitpid: {}", io::Error::last_os_error());
            if r == self.pid {
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "the client process failed: status {status:#x}"
                );
                return;
            }
            if Instant::now() > deadline {
                // SAFETY: kill takes no pointers; the pid is our unreaped child.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                panic!("the client process did not finish in time");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Keeps panics whose message contains `marker` (the ones a scenario provokes on purpose)
/// out of the output; other panics are reported as usual.
pub fn quiet_panics(marker: &'static str) {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("");
        if !message.contains(marker) {
            default(info);
        }
    }));
}

/// The unreaped children (alive or zombie) forked by the calling thread.
pub fn children_of_this_thread() -> usize {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    fs::read_to_string(format!("/proc/self/task/{tid}/children"))
        .expect("/proc/self/task/<tid>/children")
        .split_whitespace()
        .count()
}
