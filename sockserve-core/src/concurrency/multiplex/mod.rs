//! The multiplex model: many connections per thread on epoll (the seed's "explicit table of
//! partially finished requests", with `select()` become epoll through `mio`).
//!
//! The serve loop accepts as for the other models and runs `verify_request` at accept;
//! `process_request` hands the connection to one of `workers` event-loop threads (round
//! robin), each with its own poller. A worker drives each connection's
//! [`ConnectionHandler`] callbacks; an idle connection holds no thread and a few hundred
//! bytes of user-space memory. With [`Options::worker_listeners`] each worker also accepts on
//! a `SO_REUSEPORT` listener of its own (see `worker.rs`).

use std::any::Any;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Concurrency, ProcessRequest};
use crate::context::ServerContext;
use crate::handler::{report_error, run_handle_error, run_hook, run_verify, RequestError};
use crate::options::Options;
use crate::pipeline::Pipeline;
use crate::transport::{Connection, StreamTransport, Transport};

mod handler;
mod worker;

pub(crate) use handler::Lent;
pub use handler::{CloseReason, ConnHandle, ConnIo, ConnectionHandler};

/// What a worker serves: the handler whose callbacks it drives, and the server around it. A
/// multiplex server's pipeline is one ([`ConnectionHandler`] callbacks); the pooled model
/// drives a handler of its own that lends each connection with input to its pool.
pub(crate) trait Driver<T: Transport>: Send + Sync + 'static {
    /// The callbacks the worker drives.
    type Handler: ConnectionHandler<T>;
    fn handler(&self) -> &Self::Handler;
    fn context(&self) -> &ServerContext<T>;
    /// The server's `handle_error`.
    fn report(&self, client_address: &T::Address, error: &RequestError);
    /// The server's `shutdown_request` (closes the connection).
    fn shutdown_request(&self, request: T::Request);
    /// A connection a worker accepted on its own listener ([`Options::worker_listeners`]):
    /// what the serve loop does before it hands one over (`verify_request`, and what the
    /// model's `process_request` does first). `false`: refused, or failed and reported; the
    /// worker closes it.
    fn accepted(&self, request: &T::Request, client_address: &T::Address) -> bool;
    /// Takes a connection the handler lent ([`ConnIo::lend`]). Default: gives it back closed.
    fn lend(&self, lent: Lent<T>) {
        lent.give_back(true);
    }
}

impl<T, H> Driver<T> for Pipeline<T, H>
where
    T: Transport + Send + Sync,
    H: ConnectionHandler<T>,
{
    type Handler = H;
    fn handler(&self) -> &H {
        Pipeline::handler(self)
    }
    fn context(&self) -> &ServerContext<T> {
        Pipeline::context(self)
    }
    fn report(&self, client_address: &T::Address, error: &RequestError) {
        Multiplex::report(self, client_address, error)
    }
    fn shutdown_request(&self, request: T::Request) {
        Pipeline::shutdown_request(self, request)
    }
    fn accepted(&self, request: &T::Request, client_address: &T::Address) -> bool {
        Multiplex::verify(self, request, client_address)
    }
}

/// Serves many connections per thread: `workers` event loops (epoll through `mio`), each
/// owning the connections handed to it, driving a [`ConnectionHandler`] per connection.
///
/// - `workers`: event-loop threads, default one per CPU (`available_parallelism`).
/// - `worker_listeners`: each worker also accepts on a `SO_REUSEPORT` listener of its own
///   (TCP; see [`Options::worker_listeners`]). The workers then start when the server starts
///   serving, not with its first connection.
/// - `max_connections`: at the cap the serve loop (and with `worker_listeners` each worker)
///   stops accepting, so new connections wait in the listen backlog, until one closes.
/// - `idle_timeout`: a connection with no progress (nothing read, nothing written) for this
///   long goes to `handle_error` ([`RequestError::TimedOut`]) and is closed.
/// - `max_input`: the most unconsumed input a connection may hold; above it, `handle_error`
///   and close.
/// - Output waits in a per-connection buffer until the socket takes it; while more than
///   [`HIGH_WATER`](Multiplex::HIGH_WATER) bytes wait, the connection is not read.
/// - `server_close` drains: each worker stops reading, flushes pending output and lets pending
///   timers fire (at most [`DRAIN_TIMEOUT`](Multiplex::DRAIN_TIMEOUT)), runs the `closed`
///   callbacks, and exits;
///   `server_close` returns when every worker has.
///
/// Stream transports only ([`Tcp`](crate::transport::Tcp), [`Unix`](crate::transport::Unix)):
/// a datagram server already reads every datagram from one socket without a thread per
/// client, so there is nothing to multiplex, and the DSL refuses `multiplex` there. A
/// transport with a prepare stage ([`Tls`](crate::transport::Tls)) runs it on the worker
/// without blocking ([`Transport::prepare_nowait`]), bounded by
/// [`Transport::prepare_timeout`]; `verify_request` then runs on the worker once it is
/// done, and the handler sees plaintext.
pub struct Multiplex {
    workers: usize,
    max_connections: Option<usize>,
    worker_listeners: bool,
    /// Connections handed to workers and not closed yet.
    limit: Arc<Limit>,
    /// The workers, started with the first connection, or when serving starts with
    /// `worker_listeners` (type-erased: `Pool<T, H>`).
    pool: OnceLock<Box<dyn PoolControl>>,
    /// Held while the workers start, and by `server_close`: set there, so that no workers
    /// start after it (they would never be joined).
    closed: Mutex<bool>,
}

impl std::fmt::Debug for Multiplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multiplex")
            .field("workers", &self.workers)
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

/// The count of open connections, and where the serve loop waits at `max_connections`.
#[derive(Default)]
pub(crate) struct Limit {
    pub(crate) open: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
    cap: usize,
    /// The workers that accept on listeners of their own: woken when the count falls below
    /// the cap, to take up accepting again.
    acceptors: OnceLock<Vec<Arc<handler::Mailbox>>>,
}

impl Limit {
    /// Counts a new connection, unless the cap is reached.
    pub(crate) fn try_acquire(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// A connection closed.
    pub(crate) fn release(&self) {
        let before = self.open.fetch_sub(1, Ordering::AcqRel);
        if before == self.cap {
            {
                let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.freed.notify_all();
            }
            for mail in self.acceptors.get().into_iter().flatten() {
                mail.wake();
            }
        }
    }
}

/// What `server_close` needs of the type-erased pool.
trait PoolControl: Send + Sync {
    fn close(&self);
    fn as_any(&self) -> &dyn Any;
}

/// The worker threads of one server.
struct Pool<T: Transport> {
    workers: Vec<Arc<worker::Shared<T>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicUsize,
}

impl<T: StreamTransport + Send + Sync> PoolControl for Pool<T> {
    fn close(&self) {
        for w in &self.workers {
            w.mail.closing.store(true, Ordering::Release);
            w.mail.wake();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if t.join().is_err() {
                report_error(format_args!("a multiplex worker panicked"));
            }
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Multiplex {
    /// While more than this many bytes of a connection's output wait to be written, the
    /// connection is not read (backpressure).
    pub const HIGH_WATER: usize = 256 * 1024;
    /// How long `server_close` waits for pending output to be written before it closes the
    /// connections anyway.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
    /// How long `server_close` waits for the first request of a connection that has sent
    /// nothing yet (accepted just before the close: its request is on its way), to serve it
    /// before closing; connections that have been served are closed at once.
    pub const FIRST_MESSAGE_GRACE: Duration = Duration::from_millis(500);

    /// The number of event-loop threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Connections open now (accepted, not yet closed).
    pub fn open_connections(&self) -> usize {
        self.limit.open.load(Ordering::Acquire)
    }

    /// Whether each worker accepts on a listener of its own (`worker_listeners`).
    pub fn worker_listeners(&self) -> bool {
        self.worker_listeners
    }

    /// The workers' own listeners with `worker_listeners` (none when the transport has no
    /// such listener).
    fn listeners<T: Transport>(&self, context: &ServerContext<T>) -> io::Result<Vec<T>> {
        if !self.worker_listeners {
            return Ok(Vec::new());
        }
        let mut listeners = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            match context.transport.worker_listener(context.options()) {
                None => return Ok(Vec::new()),
                Some(Ok(listener)) => listeners.push(listener),
                Some(Err(e)) => {
                    let hint = match e.kind() {
                        io::ErrorKind::AddrInUse => " (the server's listener must have SO_REUSEPORT)",
                        _ => "",
                    };
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "worker_listeners: worker {i} could not listen on {}{hint}: {e}",
                            context.server_address()
                        ),
                    ));
                }
            }
        }
        Ok(listeners)
    }

    fn start<T, D>(&self, core: &Arc<D>) -> io::Result<Pool<T>>
    where
        T: StreamTransport + Send + Sync,
        T::Request: AsFd,
        D: Driver<T>,
    {
        let options = core.context().options();
        let config = worker::Config {
            idle_timeout: options.idle_timeout,
            max_input: options.max_input,
            nodelay: options.disable_nagle_algorithm,
        };
        let mut listeners = self.listeners(core.context())?.into_iter();
        let mut workers = Vec::with_capacity(self.workers);
        let mut threads = Vec::with_capacity(self.workers);
        let pool_result = (|| {
            for i in 0..self.workers {
                let listener = listeners.next();
                let (shared, poll) = worker::Worker::<T, D>::prepare(listener.as_ref())?;
                let (core, limit, thread_shared) =
                    (Arc::clone(core), Arc::clone(&self.limit), Arc::clone(&shared));
                let thread = std::thread::Builder::new()
                    .name(format!("sockserve-mux-{i}"))
                    .spawn(move || {
                        worker::Worker::start(core, config, limit, thread_shared, poll, listener)
                    })?;
                workers.push(shared);
                threads.push(thread);
            }
            Ok(())
        })();
        // Listeners of workers that did not start are closed here.
        drop(listeners);
        if pool_result.is_ok() && self.worker_listeners {
            let acceptors = workers
                .iter()
                .filter(|w| w.accepts)
                .map(|w| Arc::clone(&w.mail))
                .collect();
            let _ = self.limit.acceptors.set(acceptors);
        }
        let pool = Pool {
            workers,
            threads: Mutex::new(threads),
            next: AtomicUsize::new(0),
        };
        match pool_result {
            Ok(()) => Ok(pool),
            Err(e) => {
                pool.close();
                Err(e)
            }
        }
    }
}

impl Concurrency for Multiplex {
    fn new(options: &Options) -> io::Result<Self> {
        let workers = match options.workers {
            Some(n) => n.max(1),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Multiplex {
            workers,
            max_connections: options.max_connections,
            worker_listeners: options.worker_listeners,
            limit: Arc::new(Limit {
                cap: options.max_connections.unwrap_or(usize::MAX),
                ..Limit::default()
            }),
            pool: OnceLock::new(),
            closed: Mutex::new(false),
        })
    }

    fn server_close(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        if let Some(pool) = self.pool.get() {
            pool.close();
        }
    }
}

impl<T, H> ProcessRequest<T, H> for Multiplex
where
    T: StreamTransport + Send + Sync,
    T::Request: AsFd,
    H: ConnectionHandler<T>,
{
    fn process_request(&self, core: &Arc<Pipeline<T, H>>, request: T::Request, client_address: T::Address) {
        self.accept(
            core,
            || Ok(Arc::clone(core)),
            |address, error| Self::report(core, address, error),
            request,
            client_address,
        );
    }

    fn verify_request(pipeline: &Pipeline<T, H>, request: &T::Request, client_address: &T::Address) -> bool {
        Self::verify(pipeline, request, client_address)
    }

    fn serving(&self, core: &Arc<Pipeline<T, H>>) -> io::Result<()> {
        self.serving_with(|| Ok(Arc::clone(core)))
    }

    fn run_handle_timeout(pipeline: &Pipeline<T, H>) {
        run_hook("handle_timeout", || {
            pipeline.handler().handle_timeout(pipeline.context())
        })
    }

    fn run_service_actions(pipeline: &Pipeline<T, H>) {
        run_hook("service_actions", || {
            pipeline.handler().service_actions(pipeline.context())
        })
    }
}

impl Multiplex {
    /// Starts the workers (once) with the driver `driver` makes; `Ok(false)` when
    /// `server_close` came first (no workers then: they would never be joined).
    fn ensure_started<T, D>(&self, driver: impl FnOnce() -> io::Result<Arc<D>>) -> io::Result<bool>
    where
        T: StreamTransport + Send + Sync,
        T::Request: AsFd,
        D: Driver<T>,
    {
        if self.pool.get().is_some() {
            return Ok(true);
        }
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return Ok(false);
        }
        if self.pool.get().is_none() {
            let pool = self.start(&driver()?)?;
            let _ = self.pool.set(Box::new(pool));
        }
        Ok(true)
    }

    /// [`ProcessRequest::serving`] of the models on multiplex workers: with
    /// `worker_listeners`, the workers start now (they accept on their own listeners before
    /// any connection reaches the serve loop); otherwise with the first connection.
    pub(crate) fn serving_with<T, D>(&self, driver: impl FnOnce() -> io::Result<Arc<D>>) -> io::Result<()>
    where
        T: StreamTransport + Send + Sync,
        T::Request: AsFd,
        D: Driver<T>,
    {
        if !self.worker_listeners {
            return Ok(());
        }
        self.ensure_started(driver).map(drop)
    }

    /// Makes an accepted connection ready for a worker: `TCP_NODELAY` when `nodelay`
    /// (`disable_nagle_algorithm`).
    pub(crate) fn ready_socket<C: Connection>(request: &C, nodelay: bool) {
        // The socket stays blocking: the workers read and write it without waiting
        // (`Connection::read_nowait`), and a pooled model's thread uses it as it is.
        if nodelay {
            // Not every stream socket is TCP: an error here only means there is no Nagle.
            let _ = request.set_nodelay(true);
        }
    }

    /// `process_request` of the models on multiplex workers: waits at `max_connections`,
    /// starts the workers with the driver `driver` makes (at the first connection), makes the
    /// connection ready and hands it to a worker, round robin (which runs the transport's
    /// prepare stage, if it has one). Failures go to `report`.
    pub(crate) fn accept<T, H, D>(
        &self,
        core: &Arc<Pipeline<T, H>>,
        driver: impl FnOnce() -> io::Result<Arc<D>>,
        report: impl Fn(&T::Address, &RequestError),
        request: T::Request,
        client_address: T::Address,
    ) where
        T: StreamTransport + Send + Sync,
        T::Request: AsFd,
        D: Driver<T>,
    {
        // The connection's place under `max_connections` is taken first: with
        // `worker_listeners` the workers take places too. At the cap the loop stops
        // accepting; a shutdown lifts the wait for the connection already accepted (it is
        // counted above the cap).
        if self.max_connections.is_some() {
            let mut guard = self.limit.lock.lock().unwrap_or_else(|e| e.into_inner());
            while !self.limit.try_acquire() {
                if core.context().is_shutdown_requested() {
                    self.limit.open.fetch_add(1, Ordering::AcqRel);
                    break;
                }
                guard = self
                    .limit
                    .freed
                    .wait_timeout(guard, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        } else {
            self.limit.open.fetch_add(1, Ordering::AcqRel);
        }
        match self.ensure_started(driver) {
            Ok(true) => {}
            // Closed under the loop: the connection is closed unserved.
            Ok(false) => {
                self.limit.release();
                core.shutdown_request(request);
                return;
            }
            Err(e) => {
                self.limit.release();
                report(&client_address, &RequestError::Io(e));
                core.shutdown_request(request);
                return;
            }
        }
        let Some(pool) = self.pool.get().and_then(|p| p.as_any().downcast_ref::<Pool<T>>()) else {
            // One Multiplex serves one server, so the pool is always of this server's types.
            self.limit.release();
            core.shutdown_request(request);
            return;
        };
        Self::ready_socket(&request, core.context().options().disable_nagle_algorithm);
        let i = pool.next.fetch_add(1, Ordering::Relaxed) % pool.workers.len();
        pool.workers[i].hand_over(request, client_address);
    }

    /// The handler's `verify_request`; a panic in it is a refusal, reported to `handle_error`.
    pub(crate) fn verify<T: Transport, H: ConnectionHandler<T>>(
        pipeline: &Pipeline<T, H>,
        request: &T::Request,
        client_address: &T::Address,
    ) -> bool {
        run_verify(
            || pipeline.handler().verify_request(request, client_address),
            |error| Self::report(pipeline, client_address, error),
        )
    }

    /// The handler's `handle_error`, a panic in it logged.
    pub(crate) fn report<T: Transport, H: ConnectionHandler<T>>(
        pipeline: &Pipeline<T, H>,
        client_address: &T::Address,
        error: &RequestError,
    ) {
        run_handle_error(client_address, error, || {
            pipeline.handler().handle_error(client_address, error)
        })
    }
}
