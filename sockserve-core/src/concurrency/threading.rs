//! The threading model: Python's `ThreadingMixIn`.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{Concurrency, Process};
use crate::handler::{Dispatch, RequestError};
use crate::server::ServerCore;
use crate::transport::Transport;
use crate::Options;

/// Serves each request in a new thread (Python's `ThreadingMixIn`).
///
/// - `daemon_threads`: handler threads are not tracked and `server_close` does not wait for
///   them.
/// - `block_on_close` (default): `server_close` joins every non-daemon handler thread.
/// - `max_threads`: at most this many handler threads at once; at the cap the loop stops
///   accepting until one finishes, so new connections wait in the listen backlog.
///
/// Finished threads are joined as new requests arrive, so a long-running server's
/// bookkeeping stays as large as the number of requests in flight.
#[derive(Debug)]
pub struct Threading {
    daemon_threads: bool,
    block_on_close: bool,
    max_threads: Option<usize>,
    threads: Arc<Threads>,
}

#[derive(Debug, Default)]
struct Threads {
    state: Mutex<ThreadState>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct ThreadState {
    running: usize,
    next_id: u64,
    handles: HashMap<u64, JoinHandle<()>>,
    done: Vec<u64>,
}

impl Threads {
    fn lock(&self) -> MutexGuard<'_, ThreadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the threads that have finished since the last call.
    fn reap(&self) {
        let finished: Vec<JoinHandle<()>> = {
            let mut state = self.lock();
            let ThreadState { handles, done, .. } = &mut *state;
            done.drain(..).filter_map(|id| handles.remove(&id)).collect()
        };
        for handle in finished {
            let _ = handle.join();
        }
    }
}

/// Marks a handler thread finished when it ends, even by unwinding.
struct Finished {
    threads: Arc<Threads>,
    id: Option<u64>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let mut state = self.threads.lock();
        state.running -= 1;
        if let Some(id) = self.id {
            state.done.push(id);
        }
        drop(state);
        self.threads.finished.notify_all();
    }
}

impl Threading {
    /// Handler threads alive now.
    pub fn active_threads(&self) -> usize {
        self.threads.lock().running
    }

    /// Threads joined by `server_close` or not yet reaped (finished but not joined).
    pub fn tracked_threads(&self) -> usize {
        self.threads.lock().handles.len()
    }
}

impl Concurrency for Threading {
    fn new(options: &Options) -> io::Result<Self> {
        Ok(Threading {
            daemon_threads: options.daemon_threads,
            block_on_close: options.block_on_close,
            max_threads: options.max_threads,
            threads: Arc::default(),
        })
    }

    fn service_actions(&self) {
        self.threads.reap();
    }

    fn server_close(&self) {
        if !self.block_on_close {
            return;
        }
        loop {
            let handles: Vec<JoinHandle<()>> = {
                let mut state = self.threads.lock();
                state.done.clear();
                state.handles.drain().map(|(_, h)| h).collect()
            };
            if handles.is_empty() {
                return;
            }
            for handle in handles {
                let _ = handle.join();
            }
        }
    }
}

impl<T, H> Process<T, H> for Threading
where
    T: Transport + Send + Sync,
    T::Kind: Dispatch<T, H>,
    T::Request: Send,
    H: Send + Sync + 'static,
{
    fn process_request(&self, core: &Arc<ServerCore<T, H>>, request: T::Request, client_address: T::Address) {
        self.threads.reap();
        let id = {
            let mut state = self.threads.lock();
            if let Some(max) = self.max_threads {
                // A shutdown lifts the cap for the request already accepted, so a handler that
                // calls shutdown() while every slot is taken cannot deadlock the loop.
                while state.running >= max.max(1) && !core.context().is_shutdown_requested() {
                    state = self
                        .threads
                        .finished
                        .wait_timeout(state, Duration::from_millis(50))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            state.running += 1;
            state.next_id += 1;
            state.next_id
        };
        let tracked = !self.daemon_threads;
        let finished = Finished {
            threads: Arc::clone(&self.threads),
            id: tracked.then_some(id),
        };
        let thread_core = Arc::clone(core);
        let address = client_address.clone();
        let spawned = thread::Builder::new()
            .name("sockserve-handler".into())
            .spawn(move || {
                let _finished = finished;
                thread_core.process_inline(request, address);
            });
        match spawned {
            Ok(handle) if tracked => {
                self.threads.lock().handles.insert(id, handle);
            }
            Ok(_) => {}
            // The closure, with the request and the `Finished` guard, was dropped: the
            // connection is closed and the slot released.
            Err(e) => core.handle_error(&client_address, &RequestError::Io(e)),
        }
    }
}
