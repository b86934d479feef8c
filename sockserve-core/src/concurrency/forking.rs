//! The forking model: Python's `ForkingMixIn`.

use std::collections::HashSet;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Concurrency, Process};
use crate::handler::{Dispatch, RequestError};
use crate::options::Options;
use crate::pipeline::ServerCore;
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
/// is lost when the child exits. The child of a multi-threaded process holds only the
/// forking thread; a handler should not rely on locks other threads may hold.
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
    fn wait_for_slot(&self, give_up: impl Fn() -> bool) {
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            self.reap_exited(false);
            if self.active_children() < self.max_children.max(1) || give_up() {
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
        if !blocking && !sys::any_child_exited() {
            return;
        }
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
        self.collect_children(self.block_on_close);
    }
}

impl<T: Transport, H> Process<T, H> for Forking
where
    T::Kind: Dispatch<T, H>,
{
    fn process_request(&self, core: &Arc<ServerCore<T, H>>, request: T::Request, client_address: T::Address) {
        self.wait_for_slot(|| core.context().is_shutdown_requested());
        match sys::fork() {
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
