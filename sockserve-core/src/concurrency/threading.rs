//! The threading model: Python's `ThreadingMixIn`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{Concurrency, ProcessRequest};
use crate::handler::{Dispatch, RequestError};
use crate::options::Options;
use crate::pipeline::Pipeline;
use crate::transport::Transport;

/// Serves each request in a thread of its own (Python's `ThreadingMixIn`).
///
/// - `daemon_threads`: `server_close` does not wait for handler threads.
/// - `block_on_close` (default): `server_close` waits for every request in flight, then joins
///   every handler thread.
/// - `max_threads`: at most this many requests run at once; at the cap the loop stops
///   accepting until one finishes, so new connections wait in the listen backlog.
///
/// Every request in flight has a thread to itself, as in Python. A thread whose request has
/// finished waits up to [`Threading::IDLE_TIMEOUT`] for the next request before it exits, so a
/// busy server does not pay for a thread spawn per request; its thread count follows the
/// number of requests in flight, and an idle server's goes back to none. (A handler that
/// keeps per-request data in thread-locals must reset it in `setup`.)
#[derive(Debug)]
pub struct Threading {
    daemon_threads: bool,
    block_on_close: bool,
    max_threads: Option<usize>,
    pool: Arc<Pool>,
}

/// One request, ready to run on a handler thread.
type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a job is queued or the pool closes: idle threads wait on it.
    job_queued: Condvar,
    /// Signalled when a request finishes or a thread exits.
    finished: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Pool")
            .field("running", &state.running)
            .field("idle", &state.idle)
            .finish()
    }
}

#[derive(Default)]
struct PoolState {
    /// Requests in flight.
    running: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// Jobs handed to idle threads, not yet taken.
    queued: VecDeque<Job>,
    /// Live handler threads (not daemon ones), joined once they exit or at close.
    threads: HashMap<u64, JoinHandle<()>>,
    /// Threads that have exited and wait to be joined.
    exited: Vec<u64>,
    next_id: u64,
    /// Set by `server_close`: idle threads exit instead of waiting.
    closing: bool,
    /// Callers waiting on `finished` (at `max_threads`, or in `server_close`): a finished
    /// request wakes them only when there are some, sparing a futex call per request.
    waiting: usize,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the threads that have exited since the last call.
    fn join_exited(&self) {
        let exited: Vec<JoinHandle<()>> = {
            let mut state = self.lock();
            let PoolState { threads, exited, .. } = &mut *state;
            exited.drain(..).filter_map(|id| threads.remove(&id)).collect()
        };
        for handle in exited {
            let _ = handle.join();
        }
    }

    /// A handler thread: runs its first job, then the jobs handed to it while it waits idle,
    /// until it has waited `IDLE_TIMEOUT` for nothing or the pool closes.
    fn work(&self, first: Job, id: u64) {
        // Counts the thread out when it ends, also by unwinding.
        struct Exit<'a>(&'a Pool, u64);
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                let mut state = self.0.lock();
                state.exited.push(self.1);
                if state.waiting > 0 {
                    self.0.finished.notify_all();
                }
            }
        }
        let _exit = Exit(self, id);
        let mut job = first;
        loop {
            // `process_inline` already catches handler panics; this keeps the count right
            // should anything else in the job unwind.
            let _ = panic::catch_unwind(AssertUnwindSafe(job));
            let mut state = self.lock();
            state.running -= 1;
            if state.waiting > 0 {
                self.finished.notify_all();
            }
            state.idle += 1;
            job = loop {
                if let Some(next) = state.queued.pop_front() {
                    break next;
                }
                if state.closing {
                    state.idle -= 1;
                    return;
                }
                let (next, timeout) = self
                    .job_queued
                    .wait_timeout(state, Threading::IDLE_TIMEOUT)
                    .unwrap_or_else(|e| e.into_inner());
                state = next;
                if timeout.timed_out() && state.queued.is_empty() {
                    state.idle -= 1;
                    return;
                }
            };
            // `idle` counted this thread while it waited; it is busy again.
            state.idle -= 1;
        }
    }
}

impl Threading {
    /// How long a handler thread whose request finished waits for the next one before it
    /// exits.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

    /// Requests in flight, each on its own handler thread.
    pub fn active_threads(&self) -> usize {
        self.pool.lock().running
    }

    /// Handler threads alive (running a request or idle) that `server_close` would join.
    pub fn tracked_threads(&self) -> usize {
        let state = self.pool.lock();
        state
            .threads
            .keys()
            .filter(|id| !state.exited.contains(id))
            .count()
    }
}

impl Concurrency for Threading {
    fn new(options: &Options) -> io::Result<Self> {
        Ok(Threading {
            daemon_threads: options.daemon_threads,
            block_on_close: options.block_on_close,
            max_threads: options.max_threads,
            pool: Arc::default(),
        })
    }

    fn service_actions(&self) {
        self.pool.join_exited();
    }

    fn server_close(&self) {
        let wait = self.block_on_close && !self.daemon_threads;
        let mut state = self.pool.lock();
        state.waiting += 1;
        while wait && state.running > 0 {
            state = self.pool.finished.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.waiting -= 1;
        state.closing = true;
        self.pool.job_queued.notify_all();
        let threads: Vec<JoinHandle<()>> = state.threads.drain().map(|(_, handle)| handle).collect();
        state.exited.clear();
        drop(state);
        if wait {
            for handle in threads {
                let _ = handle.join();
            }
        }
    }
}

impl<T, H> ProcessRequest<T, H> for Threading
where
    T: Transport + Send + Sync,
    T::Kind: Dispatch<T, H>,
    T::Request: Send,
    H: Send + Sync + 'static,
{
    super::transport_kind_hooks!();

    fn process_request(&self, core: &Arc<Pipeline<T, H>>, request: T::Request, client_address: T::Address) {
        self.pool.join_exited();
        let address = client_address.clone();
        let job_core = Arc::clone(core);
        let job: Job = Box::new(move || {
            job_core.process_inline(request, address);
        });
        let mut state = self.pool.lock();
        if let Some(max) = self.max_threads {
            // A shutdown lifts the cap for the request already accepted, so a handler that
            // calls shutdown() while every slot is taken cannot deadlock the loop.
            state.waiting += 1;
            while state.running >= max.max(1) && !core.context().is_shutdown_requested() {
                state = self
                    .pool
                    .finished
                    .wait_timeout(state, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            state.waiting -= 1;
        }
        state.running += 1;
        // An idle thread that has not been handed a job yet takes this one.
        if state.idle > state.queued.len() {
            state.queued.push_back(job);
            drop(state);
            self.pool.job_queued.notify_one();
            return;
        }
        state.next_id += 1;
        let id = state.next_id;
        drop(state);
        let pool = Arc::clone(&self.pool);
        let spawned = thread::Builder::new()
            .name("sockserve-handler".into())
            .spawn(move || pool.work(job, id));
        match spawned {
            Ok(handle) if !self.daemon_threads => {
                self.pool.lock().threads.insert(id, handle);
            }
            Ok(_) => {}
            Err(e) => {
                // The job was dropped with the closure: the connection is closed.
                let mut state = self.pool.lock();
                state.running -= 1;
                if state.waiting > 0 {
                    self.pool.finished.notify_all();
                }
                drop(state);
                core.handle_error(&client_address, &RequestError::Io(e));
            }
        }
    }
}
