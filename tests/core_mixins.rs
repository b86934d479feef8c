//! Threading and forking mix-ins: daemon_threads, block_on_close, reaping of finished
//! threads, max_children, active_children, collect_children, child exit status, zombies,
//! and the seed's warning that forked children share no memory with the parent.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sockserve::prelude::*;
use util::{eventually, Running, LIMIT};

/// Forking tests count this process's zombie children, so they must not overlap.
static FORKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn forking_lock() -> std::sync::MutexGuard<'static, ()> {
    FORKING.lock().unwrap_or_else(|e| e.into_inner())
}

fn fast(options: Options) -> Options {
    options.poll_interval(Duration::from_millis(20))
}

/// `sleep N` sleeps N ms then answers; `count` answers with the handler's counter after
/// adding one; `fail` returns an error; `panic` panics.
#[derive(Default)]
struct Work {
    counter: AtomicUsize,
    finished: AtomicUsize,
}

impl StreamHandler for Work {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        let mut words = line.split_whitespace();
        let result = match words.next() {
            Some("sleep") => {
                let ms = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                thread::sleep(Duration::from_millis(ms));
                writeln!(req.wfile, "slept {}", std::process::id())
            }
            Some("count") => {
                let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
                writeln!(req.wfile, "{n}")
            }
            Some("fail") => Err(io::Error::other("failing on purpose")),
            Some("panic") => panic!("panicking on purpose"),
            _ => writeln!(req.wfile, "?"),
        };
        self.finished.fetch_add(1, Ordering::SeqCst);
        result
    }
}

fn send(addr: SocketAddr, line: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    conn.write_all(line.as_bytes()).unwrap();
    conn.write_all(b"\n").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    conn
}

fn reply(mut conn: TcpStream) -> String {
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

#[test]
fn threading_block_on_close_waits_for_handler_threads() {
    let server =
        ThreadingTcpServer::with_options("127.0.0.1:0", Work::default(), fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let conns: Vec<TcpStream> = (0..5).map(|_| send(addr, "sleep 300")).collect();
    assert!(eventually(LIMIT, || running
        .server
        .concurrency()
        .active_threads()
        == 5));
    let (result, server) = running.stop();
    result.unwrap();
    let started = Instant::now();
    server.server_close();
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "server_close returned before the handlers"
    );
    assert_eq!(server.handler().finished.load(Ordering::SeqCst), 5);
    assert_eq!(server.concurrency().active_threads(), 0);
    for conn in conns {
        assert!(reply(conn).starts_with("slept"));
    }
}

#[test]
fn daemon_threads_are_not_waited_for() {
    for options in [
        Options::DEFAULT.daemon_threads(true),
        Options::DEFAULT.block_on_close(false),
    ] {
        let server = ThreadingTcpServer::with_options("127.0.0.1:0", Work::default(), fast(options)).unwrap();
        let addr = server.server_address();
        let running = Running::start(server);
        let conn = send(addr, "sleep 500");
        assert!(eventually(LIMIT, || running
            .server
            .concurrency()
            .active_threads()
            == 1));
        let (result, server) = running.stop();
        result.unwrap();
        let started = Instant::now();
        server.server_close();
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "server_close waited"
        );
        assert_eq!(server.handler().finished.load(Ordering::SeqCst), 0);
        // The in-flight request still completes on its own.
        assert!(reply(conn).starts_with("slept"));
    }
}

#[test]
fn finished_threads_are_reaped_as_the_server_runs() {
    let server =
        ThreadingTcpServer::with_options("127.0.0.1:0", Work::default(), fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    for _ in 0..300 {
        assert!(reply(send(addr, "count")).trim().parse::<usize>().is_ok());
    }
    // Bookkeeping is bounded by what is in flight, not by how many requests were served.
    assert!(eventually(LIMIT, || running
        .server
        .concurrency()
        .tracked_threads()
        <= 1));
    assert_eq!(running.server.handler().counter.load(Ordering::SeqCst), 300);
}

#[test]
fn forking_children_do_not_share_memory_with_the_parent() {
    let _serial = forking_lock();
    let server =
        ForkingTcpServer::with_options("127.0.0.1:0", Work::default(), fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    // Each child starts from the parent's counter (0) and its increment dies with it.
    for _ in 0..3 {
        assert_eq!(reply(send(addr, "count")), "1\n");
    }
    assert_eq!(running.server.handler().counter.load(Ordering::SeqCst), 0);
    let pid = reply(send(addr, "sleep 0"));
    assert_ne!(
        pid.trim().trim_start_matches("slept ").parse::<u32>().unwrap(),
        std::process::id()
    );
}

#[test]
fn forking_respects_max_children_and_reaps_every_child() {
    let _serial = forking_lock();
    let options = fast(Options::DEFAULT.max_children(3));
    let server = ForkingTcpServer::with_options("127.0.0.1:0", Work::default(), options).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let started = Instant::now();
    let conns: Vec<TcpStream> = (0..9).map(|_| send(addr, "sleep 200")).collect();
    let mut peak = 0;
    while started.elapsed() < Duration::from_millis(500) {
        peak = peak.max(running.server.concurrency().active_children());
        thread::sleep(Duration::from_millis(5));
    }
    let pids: std::collections::HashSet<String> = conns.into_iter().map(reply).collect();
    // Nine children, at most three at a time: at least three rounds of 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(pids.len(), 9, "one process per request");
    assert!(peak <= 3, "peak of {peak} children");
    let (result, server) = running.stop();
    result.unwrap();
    server.server_close();
    assert_eq!(server.concurrency().active_children(), 0);
    assert_eq!(server.concurrency().reaped_children(), 9);
    assert_eq!(zombie_children(), 0);
}

#[test]
fn forking_child_failures_exit_non_zero_and_are_reaped() {
    let _serial = forking_lock();
    let server =
        ForkingTcpServer::with_options("127.0.0.1:0", Work::default(), fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    assert_eq!(reply(send(addr, "fail")), "");
    assert_eq!(reply(send(addr, "panic")), "");
    assert_eq!(reply(send(addr, "count")), "1\n", "still serving");
    let concurrency = running.server.concurrency();
    assert!(eventually(LIMIT, || concurrency.reaped_children() == 3));
    assert_eq!(concurrency.failed_children(), 2);
}

#[test]
fn forking_block_on_close_waits_for_children_and_collect_children_reaps() {
    let _serial = forking_lock();
    let server =
        ForkingTcpServer::with_options("127.0.0.1:0", Work::default(), fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let conn = send(addr, "sleep 300");
    assert!(eventually(LIMIT, || running
        .server
        .concurrency()
        .active_children()
        == 1));
    let (result, server) = running.stop();
    result.unwrap();
    // Not finished yet: a non-blocking collection leaves it.
    server.concurrency().collect_children(false);
    assert_eq!(server.concurrency().active_children(), 1);
    let started = Instant::now();
    server.server_close();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(server.concurrency().active_children(), 0);
    assert!(reply(conn).starts_with("slept"));
    assert_eq!(zombie_children(), 0);
}

#[test]
fn forking_handle_request_reaps_children() {
    let _serial = forking_lock();
    let server =
        ForkingTcpServer::with_options("127.0.0.1:0", Work::default(), fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    for _ in 0..5 {
        let client = thread::spawn(move || reply(send(addr, "count")));
        server.handle_request().unwrap();
        assert_eq!(client.join().unwrap(), "1\n");
    }
    assert!(eventually(LIMIT, || {
        server.concurrency().collect_children(false);
        server.concurrency().active_children() == 0
    }));
    assert_eq!(server.concurrency().reaped_children(), 5);
}

/// Children of this process in state Z.
fn zombie_children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str())
        })
        .count()
}

/// Set by the `atexit` hook below; the hook appends this process's pid to the file it names.
static ATEXIT_MARKER: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

extern "C" fn record_exit() {
    // At the test binary's own exit the directory is gone: nothing to record then.
    let Some(path) = ATEXIT_MARKER.get() else { return };
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = writeln!(file, "{}", std::process::id());
    }
}

#[test]
fn forked_children_exit_without_running_the_parents_exit_handlers() {
    let _serial = forking_lock();
    let dir = util::TempDir::new("atexit");
    let marker = dir.path("exits");
    std::fs::write(&marker, "").unwrap();
    ATEXIT_MARKER.set(marker.clone()).unwrap();
    // SAFETY: `record_exit` is a plain extern "C" function that lives for the whole process.
    assert_eq!(unsafe { libc::atexit(record_exit) }, 0);
    let options = fast(Options::DEFAULT);
    let server = ForkingTcpServer::with_options("127.0.0.1:0", Work::default(), options).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    for line in ["count", "fail", "panic"] {
        reply(send(addr, line));
    }
    let concurrency = running.server.concurrency();
    assert!(eventually(LIMIT, || concurrency.reaped_children() == 3));
    let recorded = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(recorded, "", "a child ran the parent's atexit handlers");
    // Control: a child that leaves through exit() does run them, so the check above can fail.
    // SAFETY: the child only calls exit(0), which is what the control is about.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ends the child; its exit handlers run, as intended.
        unsafe { libc::exit(0) };
    }
    let mut status = 0;
    // SAFETY: `status` is a live c_int; `pid` is the child just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), pid.to_string());
}

/// Records the thread each request ran on.
#[derive(Default)]
struct WhichThread(std::sync::Mutex<Vec<std::thread::ThreadId>>);

impl StreamHandler for WhichThread {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        if let Some(ms) = line.trim().strip_prefix("sleep ").and_then(|ms| ms.parse().ok()) {
            thread::sleep(Duration::from_millis(ms));
        }
        self.0.lock().unwrap().push(thread::current().id());
        req.wfile.write_all(b"done\n")
    }
}

#[test]
fn threading_gives_each_request_in_flight_its_own_thread_and_reuses_finished_ones() {
    let server =
        ThreadingTcpServer::with_options("127.0.0.1:0", WhichThread::default(), fast(Options::DEFAULT))
            .unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let ids = || running.server.handler().0.lock().unwrap().clone();
    // Eight requests at once: eight threads.
    let conns: Vec<TcpStream> = (0..8).map(|_| send(addr, "sleep 300")).collect();
    assert!(eventually(LIMIT, || running
        .server
        .concurrency()
        .active_threads()
        == 8));
    for conn in conns {
        assert_eq!(reply(conn), "done\n");
    }
    let concurrent: std::collections::HashSet<_> = ids().into_iter().collect();
    assert_eq!(concurrent.len(), 8);
    // One hundred requests one after another: the finished threads serve them, no new ones.
    for _ in 0..100 {
        assert_eq!(reply(send(addr, "now")), "done\n");
    }
    let all: std::collections::HashSet<_> = ids().into_iter().collect();
    assert_eq!(all.len(), 8, "sequential requests ran on the idle threads");
    assert!(running.server.concurrency().tracked_threads() <= 8);
    // Idle threads exit after IDLE_TIMEOUT.
    let idle_limit = sockserve::concurrency::Threading::IDLE_TIMEOUT * 5;
    assert!(eventually(idle_limit, || running
        .server
        .concurrency()
        .tracked_threads()
        == 0));
}
