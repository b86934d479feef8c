//! The forking model: Python's `ForkingMixIn`.

use std::collections::HashSet;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Concurrency, ProcessRequest};
use crate::handler::{Dispatch, RequestError};
use crate::options::Options;
use crate::pipeline::Pipeline;
use crate::sys::{self, Forked};
use crate::transport::Transport;

/// Serves each request in a forked child process (Python's `ForkingMixIn`).
///
/// The child runs `finish_request`, calls `handle_error` on failure, runs
/// `shutdown_request`, then exits with status 0 (success) or 1 (failure or panic) without
/// running any of the parent's destructors. The parent closes its copy of the connection
/// (`close_request`) and goes on.
///
/// - `max_children` (default 40): at the limit the server waits for a child to exit before
///   forking again, or until a shutdown is requested (the request already accepted is then
///   served anyway), so a server whose children are all stuck still stops.
/// - Children that have exited are reaped on every loop iteration (`service_actions`), after
///   `handle_request` and, by `collect_children`, at `server_close`; only this server's
///   children are reaped, never other children of the process.
/// - `block_on_close` (default): `server_close` waits for every child.
///
/// Forked children do not share memory with the parent: state a handler changes in a child
/// is lost when the child exits.
///
/// **After fork.** The child of a multi-threaded process holds only the forking thread; any
/// lock another thread held at that moment stays locked in the child. sockserve forks while
/// holding std's stdout and stderr locks and releases them on both sides, so a child may
/// log (through the `log` crate to stderr), print, panic (the panic message is written) and
/// allocate (glibc's allocator resets its own locks at fork). A handler must not take locks
/// of its own that other threads of the parent use (a `Mutex` in the handler's state, a
/// logger that buffers behind its own lock in another thread): take them only in the parent,
/// or use a per-child resource.
#[derive(Debug)]
pub struct Forking {
    max_children: usize,
    block_on_close: bool,
    children: Mutex<HashSet<libc::pid_t>>,
    reaped: AtomicU64,
    failed: AtomicU64,
}

impl Forking {
    fn lock(&self) -> MutexGuard<'_, HashSet<libc::pid_t>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of children alive or not yet reaped (Python's `len(active_children)`).
    pub fn active_children(&self) -> usize {
        self.lock().len()
    }

    /// Children reaped so far.
    pub fn reaped_children(&self) -> u64 {
        self.reaped.load(Ordering::Relaxed)
    }

    /// Reaped children that exited with a non-zero status or by a signal.
    pub fn failed_children(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    fn record(&self, pid: libc::pid_t, status: libc::c_int) {
        self.reaped.fetch_add(1, Ordering::Relaxed);
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
            log::debug!("child {pid} ended with status {status:#x}");
        }
    }

    /// Reaps `pid` if it has exited (or waits for it); returns whether it is gone.
    fn reap(&self, pid: libc::pid_t, block: bool) -> bool {
        match sys::waitpid(pid, block) {
            Ok(Some(status)) => {
                self.record(pid, status);
                true
            }
            Ok(None) => false,
            // ECHILD: reaped elsewhere (or never ours): forget it.
            Err(e) => e.raw_os_error() == Some(libc::ECHILD),
        }
    }

    /// Python's `collect_children(blocking=...)`: while at `max_children`, waits for a child
    /// to exit; then reaps every child that has exited, or, when `blocking`, waits for all.
    pub fn collect_children(&self, blocking: bool) {
        while self.active_children() >= self.max_children.max(1) {
            match sys::wait_any_child_exited() {
                Ok(pid) if self.lock().contains(&pid) => {
                    if self.reap(pid, true) {
                        self.lock().remove(&pid);
                    }
                }
                // Another child of the process exited (not ours to reap): poll ours instead.
                Ok(_) => {
                    self.reap_exited(false);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => {
                    if e.raw_os_error() == Some(libc::ECHILD) {
                        self.lock().clear();
                    }
                    break;
                }
            }
        }
        self.reap_exited(blocking);
    }

    /// While at `max_children`, waits for a child to exit, polling (from 1 ms, up to 20 ms
    /// apart) so that `give_up` is asked in between: a blocking wait could not see a shutdown.
    /// Below the cap only the cheap probe runs (once per request). At the cap each round asks
    /// after every child, so children reaped elsewhere (`SIGCHLD` ignored, `SA_NOCLDWAIT`, a
    /// library's `waitpid(-1)`) are forgotten on `ECHILD` and free their slot.
    fn wait_for_slot(&self, give_up: impl Fn() -> bool) {
        let cap = self.max_children.max(1);
        self.reap_exited(false);
        if self.active_children() < cap {
            return;
        }
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            self.reap_each(false);
            if self.active_children() < cap || give_up() {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
        }
    }

    fn reap_exited(&self, blocking: bool) {
        // One probe instead of a waitpid per child: most calls (one per accepted request and
        // per loop pass) find nothing to reap, and a server holding thousands of long-lived
        // children would otherwise pay thousands of system calls for each.
        if !blocking {
            match sys::child_exited() {
                sys::ChildExited::No => return,
                sys::ChildExited::Yes => {}
                // No child left at all: whatever this server still counts was reaped
                // elsewhere.
                sys::ChildExited::NoChildren => {
                    self.lock().clear();
                    return;
                }
            }
        }
        self.reap_each(blocking);
    }

    /// Asks after every child (waiting for each when `blocking`); forgets those that are gone.
    fn reap_each(&self, blocking: bool) {
        let pids: Vec<libc::pid_t> = self.lock().iter().copied().collect();
        for pid in pids {
            if self.reap(pid, blocking) {
                self.lock().remove(&pid);
            }
        }
    }
}

impl Concurrency for Forking {
    fn new(options: &Options) -> io::Result<Self> {
        Ok(Forking {
            max_children: options.max_children,
            block_on_close: options.block_on_close,
            children: Mutex::new(HashSet::new()),
            reaped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    // Reap without waiting at max_children: the wait belongs to process_request, where a
    // shutdown can end it.
    fn service_actions(&self) {
        self.reap_exited(false);
    }

    fn handle_timeout(&self) {
        self.reap_exited(false);
    }

    fn server_close(&self) {
        if self.block_on_close {
            self.collect_children(true);
        } else {
            // The option promises not to wait: not for a free slot either.
            self.reap_exited(false);
        }
    }
}

impl<T: Transport, H> ProcessRequest<T, H> for Forking
where
    T::Kind: Dispatch<T, H>,
{
    super::transport_kind_hooks!();

    fn process_request(&self, core: &Arc<Pipeline<T, H>>, request: T::Request, client_address: T::Address) {
        self.wait_for_slot(|| core.context().is_shutdown_requested());
        // Fork while this thread holds std's stdout and stderr locks, and release them on both
        // sides (the pthread_atfork pattern): another thread (a logger) holding one at the
        // moment of fork would leave it locked forever in the child, whose first log line or
        // panic message would then hang. Both locks are reentrant and owned by this thread,
        // which is the child's only thread, so the child can release them.
        let forked = {
            let _stdout = std::io::stdout().lock();
            let _stderr = std::io::stderr().lock();
            sys::fork()
        };
        match forked {
            Ok(Forked::Parent(pid)) => {
                self.lock().insert(pid);
                core.close_request(request);
            }
            Ok(Forked::Child) => {
                let ok =
                    panic::catch_unwind(AssertUnwindSafe(|| core.process_inline(request, client_address)));
                sys::exit_child(if matches!(ok, Ok(true)) { 0 } else { 1 });
            }
            Err(e) => {
                core.handle_error(&client_address, &RequestError::Io(e));
                core.shutdown_request(request);
            }
        }
    }
}
