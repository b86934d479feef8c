//! Helpers shared by the core test files: run a server in a background thread, count
//! descriptors and threads, wait for a condition with a deadline.
#![allow(dead_code)]

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sockserve::concurrency::ProcessRequest;
use sockserve::transport::Transport;
use sockserve::Server;

/// A server serving in a background thread; shut down and joined on drop.
pub struct Running<T: Transport, C: sockserve::concurrency::Concurrency, H> {
    pub server: Arc<Server<T, C, H>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl<T, C, H> Running<T, C, H>
where
    T: Transport + Send + Sync,
    C: ProcessRequest<T, H> + Send + Sync,
    H: Send + Sync + 'static,
{
    pub fn start(server: Server<T, C, H>) -> Self {
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = thread::spawn(move || serving.serve_forever());
        Running {
            server,
            thread: Some(thread),
        }
    }

    /// Shuts down and returns what `serve_forever` returned, then the server itself once
    /// no other reference is left.
    pub fn stop(mut self) -> (io::Result<()>, Server<T, C, H>) {
        self.server.shutdown();
        let result = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("serve_forever panicked");
        let server = Arc::clone(&self.server);
        drop(self);
        let server = Arc::try_unwrap(server).expect("server still shared");
        (result, server)
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl<T: Transport, C: sockserve::concurrency::Concurrency, H> Drop for Running<T, C, H> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.server.shutdown();
            let _ = thread.join();
        }
    }
}

/// Waits until `cond` holds, for at most `limit`; returns whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A fresh temporary directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sockserve-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const LIMIT: Duration = Duration::from_secs(10);

/// Sockets listening on `address` (IPv4), from `/proc/net/tcp`: a server's own and, with
/// `worker_listeners`, its workers'.
pub fn listening(address: std::net::SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let std::net::SocketAddr::V4(address) = address else {
        panic!("an IPv4 address")
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(address.ip().octets()),
        address.port()
    );
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}
