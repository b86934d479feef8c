//! What a handler sees of its server ([`ServerContext`], Python's `self.server`) and the
//! shutdown machinery it shares with the serve loop, other threads and forked children
//! ([`ShutdownHandle`]).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};

use crate::options::Options;
use crate::sys;
use crate::transport::Transport;

/// The loop's state, in memory shared with forked children (see [`Control`]).
const IDLE: u8 = 0;
const SERVING: u8 = 1;
const STOPPING: u8 = 2;
const STOPPED: u8 = 3;

/// The shutdown machinery shared by a server, its handlers, its [`ShutdownHandle`]s and its
/// forked children.
///
/// The loop's state (idle, serving, stopping, stopped) and a pending shutdown live in a page
/// of shared memory, so a forked child sees a shutdown the parent was asked for, and the
/// parent sees at once one a child asked for; an eventfd wakes the loop. A wake-up that the
/// state does not explain (a `shutdown()` that raced with the end of the loop) is ignored.
/// The connections whose handler waits for its next request: it has answered (written) and
/// reads again with nothing buffered (threading and synchronous servers; `rfile` registers
/// itself for the length of that read). [`close_all`](IdleConnections::close_all) ends those
/// reads with end of input, and every later one at once: a graceful stop closes idle
/// persistent connections without waiting for their clients.
#[derive(Default)]
pub(crate) struct IdleConnections {
    closing: AtomicBool,
    waiting: Mutex<Vec<(u64, RawFd)>>,
    next: AtomicU64,
}

impl IdleConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, RawFd)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A read of `fd` for the next request begins: its ticket, or `None` when idle connections
    /// are being closed (the caller reports end of input instead of reading).
    pub(crate) fn begin_wait(&self, fd: BorrowedFd<'_>) -> Option<u64> {
        let mut waiting = self.lock();
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        waiting.push((ticket, fd.as_raw_fd()));
        Some(ticket)
    }

    /// The read of `ticket` returned (before its descriptor can be closed).
    pub(crate) fn end_wait(&self, ticket: u64) {
        let mut waiting = self.lock();
        if let Some(at) = waiting.iter().position(|&(t, _)| t == ticket) {
            waiting.swap_remove(at);
        }
    }

    /// Whether idle connections are being closed.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Ends every read waiting for a next request, and every such read to come.
    pub(crate) fn close_all(&self) {
        let waiting = self.lock();
        self.closing.store(true, Ordering::Release);
        for &(_, fd) in waiting.iter() {
            // SAFETY: a descriptor stays in the list only while the thread that put it there
            // is inside its read (`end_wait` takes it out, under this lock, before the read
            // returns to code that could close it), so it is open for as long as the lock is
            // held here.
            sys::shutdown_read(unsafe { BorrowedFd::borrow_raw(fd) });
        }
    }

    /// A new `serve_forever`: idle connections are kept again.
    fn reopen(&self) {
        let _waiting = self.lock();
        self.closing.store(false, Ordering::Release);
    }
}

pub(crate) struct Control {
    /// Reads waiting for a next request (see [`IdleConnections`]).
    pub(crate) idle: IdleConnections,
    wake: OwnedFd,
    shared: sys::SharedState,
    local: Mutex<LoopState>,
    stopped: Condvar,
    owner: libc::pid_t,
}

#[derive(Default)]
struct LoopState {
    serving: Option<ThreadId>,
}

/// What [`Control::begin_serving`] decided.
pub(crate) enum Begin<'a> {
    /// Serve until [`Control::is_stopping`].
    Serve(ServingGuard<'a>),
    /// A shutdown was asked for before the loop started: return at once (Python's).
    Pending,
}

impl Control {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Control {
            idle: IdleConnections::default(),
            wake: sys::eventfd()?,
            shared: sys::SharedState::new()?,
            local: Mutex::new(LoopState::default()),
            stopped: Condvar::new(),
            owner: sys::getpid(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoopState> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The eventfd that a shutdown makes readable.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Whether the running loop has been asked to stop: it checks this between requests.
    #[inline]
    pub(crate) fn is_stopping(&self) -> bool {
        self.shared.state().load(Ordering::Acquire) == STOPPING
    }

    /// Whether a shutdown has been asked for: from `shutdown()` until the next
    /// `serve_forever` starts, in this process and in its forked children.
    pub(crate) fn is_requested(&self) -> bool {
        matches!(self.shared.state().load(Ordering::Acquire), STOPPING | STOPPED)
            || self.shared.pending().load(Ordering::Acquire)
    }

    /// The loop was woken: drains the eventfd; returns whether a shutdown explains it.
    pub(crate) fn woken(&self) -> bool {
        sys::eventfd_clear(self.wake.as_fd());
        self.is_stopping()
    }

    /// Asks the loop to stop (or, when it is not serving, the next one: Python's pending
    /// shutdown); waits until it has, unless called from the serving thread (a handler of a
    /// synchronous server) or from a forked child.
    pub(crate) fn shutdown(&self) {
        let state = self.shared.state();
        if state
            .compare_exchange(SERVING, STOPPING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            sys::eventfd_signal(self.wake.as_fd());
        } else if state.load(Ordering::Acquire) != STOPPING {
            self.shared.pending().store(true, Ordering::Release);
        }
        if sys::getpid() != self.owner {
            return;
        }
        let mut local = self.lock();
        if local.serving == Some(thread::current().id()) {
            return;
        }
        while local.serving.is_some() {
            local = self.stopped.wait(local).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(crate) fn begin_serving(&self) -> io::Result<Begin<'_>> {
        let mut local = self.lock();
        if local.serving.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "serve_forever is already running",
            ));
        }
        if self.shared.pending().swap(false, Ordering::AcqRel) {
            self.shared.state().store(STOPPED, Ordering::Release);
            return Ok(Begin::Pending);
        }
        sys::eventfd_clear(self.wake.as_fd());
        self.idle.reopen();
        self.shared.state().store(SERVING, Ordering::Release);
        local.serving = Some(thread::current().id());
        Ok(Begin::Serve(ServingGuard(self)))
    }
}

/// Marks the loop as stopped when `serve_forever` returns (or unwinds), so the server can
/// serve again, like Python's; `is_shutdown_requested` stays true until it does.
pub(crate) struct ServingGuard<'a>(&'a Control);

impl Drop for ServingGuard<'_> {
    fn drop(&mut self) {
        let control = self.0;
        let mut local = control.lock();
        // Stopped by a shutdown, or by an error: either way not serving.
        let stopped = if control.shared.state().load(Ordering::Acquire) == STOPPING {
            STOPPED
        } else {
            IDLE
        };
        control.shared.state().store(stopped, Ordering::Release);
        sys::eventfd_clear(control.wake.as_fd());
        local.serving = None;
        control.stopped.notify_all();
    }
}

/// Stops a server's `serve_forever` from anywhere: another thread, a signal-handling thread,
/// a handler, a forked child. Cheap to clone.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Control>);

impl ShutdownHandle {
    /// Python's `shutdown()`: asks `serve_forever` to stop and waits until it has returned.
    /// Called from inside a handler of a synchronous server it does not wait (the loop
    /// stops once that handler returns), so it cannot deadlock; called before
    /// `serve_forever` starts, the next `serve_forever` returns at once.
    pub fn shutdown(&self) {
        self.0.shutdown()
    }

    /// Ends the persistent connections whose handler waits for its next request: it has
    /// answered (written to `wfile`) and reads `rfile` again with nothing buffered. That read
    /// returns end of input, as if the client had closed, and so does every such read from
    /// now on (until the next `serve_forever`); a request in flight is not touched, and a
    /// connection's first request is always read. What a graceful stop does
    /// ([`StopSignals`](crate::signals::StopSignals)) so that idle keep-alive connections do
    /// not hold the drain.
    ///
    /// Threading and synchronous servers over TCP, Unix stream sockets and TLS over them.
    /// Forked children are not reached (their handlers check
    /// [`stop_requested`](crate::signals::stop_requested)); the multiplex and pooled models
    /// close idle connections themselves in `server_close`.
    pub fn close_idle_connections(&self) {
        self.0.idle.close_all()
    }

    /// Whether a shutdown has been asked for: true from `shutdown()` until the next
    /// `serve_forever` starts, also in forked children (the state is in shared memory), so a
    /// long request in a child can stop early.
    pub fn is_shutdown_requested(&self) -> bool {
        self.0.is_requested()
    }
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("requested", &self.0.is_requested())
            .finish()
    }
}

/// What a handler sees of its server (Python's `self.server`, less the application state,
/// which is the handler value itself).
pub struct ServerContext<T: Transport> {
    pub(crate) transport: T,
    pub(crate) options: Options,
    pub(crate) control: Arc<Control>,
}

impl<T: Transport> ServerContext<T> {
    /// The address the server is bound to (Python's `server_address`).
    pub fn server_address(&self) -> T::ServerAddress {
        self.transport.server_address()
    }
    /// The server's options.
    pub fn options(&self) -> &Options {
        &self.options
    }
    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }
    /// Python's `shutdown()`; see [`ShutdownHandle::shutdown`].
    pub fn shutdown(&self) {
        self.control.shutdown()
    }
    /// A handle that stops the server from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.control))
    }
    /// The idle-connection registry, in the server's own process (a forked child's copy is not
    /// reached by the parent, and its lock may have been held by another thread at the fork).
    pub(crate) fn idle_connections(&self) -> Option<&IdleConnections> {
        (sys::getpid() == self.control.owner).then_some(&self.control.idle)
    }
    /// Whether a shutdown has been asked for: true from `shutdown()` until the next
    /// `serve_forever` starts, also in forked children.
    pub fn is_shutdown_requested(&self) -> bool {
        self.control.is_requested()
    }
}

impl<T: Transport> fmt::Debug for ServerContext<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerContext")
            .field("server_address", &self.server_address())
            .finish_non_exhaustive()
    }
}
