//! The pooled model: blocking handlers on the multiplex event loop.
//!
//! See [`Pooled`].

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::multiplex::{CloseReason, ConnIo, ConnectionHandler, Driver, Lent};
use super::{Concurrency, Multiplex, ProcessRequest};
use crate::context::ServerContext;
use crate::handler::{
    guarded, log_request_error, report_error, run_handle_error, run_hook, run_verify, RequestError, Rfile,
    StreamRequest, Wfile,
};
use crate::options::Options;
use crate::pipeline::Pipeline;
use crate::transport::{Connection, StreamTransport, Transport};

/// What becomes of a connection after [`MessageHandler::handle`] has answered one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterMessage {
    /// Serve the next message: at once if its bytes are buffered already, otherwise when they
    /// arrive (the connection is parked meanwhile, holding no thread).
    KeepOpen,
    /// Close the connection (after what `wfile` holds is sent).
    Close,
}

/// The handler of a [`Pooled`] server: one message at a time, with Python's blocking
/// `rfile`/`wfile`.
///
/// `handle` is called when the first bytes of a message have arrived (they are in
/// `rfile`'s buffer); it reads the rest of that one message (blocking, each read bounded by
/// the connection's timeout), writes the answer and says whether the connection stays open.
/// It must not read past its message: a read that waits for a next message holds a pool
/// thread, which is what this model exists to avoid. Reading with `read_line` or
/// `read_exact` on a framed protocol does this naturally.
///
/// ```no_run
/// use std::io::{self, BufRead, Write};
/// use sockserve_core::concurrency::{AfterMessage, MessageHandler};
/// use sockserve_core::{PooledTcpServer, StreamRequest, transport::Tcp};
///
/// struct Echo;
///
/// impl MessageHandler for Echo {
///     fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<AfterMessage> {
///         let mut line = String::new();
///         if req.rfile.read_line(&mut line)? == 0 {
///             return Ok(AfterMessage::Close);
///         }
///         req.wfile.write_all(line.as_bytes())?;
///         Ok(AfterMessage::KeepOpen)
///     }
/// }
///
/// PooledTcpServer::bind("127.0.0.1:9000", Echo)?.serve_forever()?;
/// # Ok::<(), io::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a message handler for `{T}`",
    label = "a pooled server needs a `MessageHandler<{T}>`",
    note = "a pooled server is served by `impl MessageHandler<..> for {Self}` (one message per `handle`, returning `AfterMessage`); a `StreamHandler` serves the sync, threading and forking models"
)]
pub trait MessageHandler<T: StreamTransport = crate::transport::Tcp>: Send + Sync + 'static {
    /// Handles one message (Python's `handle`, for one request instead of the connection).
    fn handle(&self, req: &mut StreamRequest<'_, T>) -> io::Result<AfterMessage>;

    /// Decides at accept, once per connection, whether to serve it (Python's
    /// `verify_request`). Default: serve every connection.
    fn verify_request(&self, request: &T::Request, client_address: &T::Address) -> bool {
        let _ = (request, client_address);
        true
    }

    /// A message failed (an error, a panic, a read that timed out), or a parked connection
    /// was reset, went idle for `idle_timeout` or sent more than `max_input` (Python's
    /// `handle_error`); that connection is then closed. Default: [`log_request_error`].
    fn handle_error(&self, client_address: &T::Address, error: &RequestError) {
        log_request_error(client_address, error)
    }

    /// A connection that `verify_request` accepted is closed, whatever the reason (the client
    /// closed it, `handle` answered [`AfterMessage::Close`], an error, `idle_timeout`,
    /// `server_close`): once per connection, on an event-loop thread, so it must not block.
    /// With `verify_request` it brackets a connection, for state kept per connection (keyed
    /// by client address). Default: nothing.
    fn closed(&self, client_address: &T::Address) {
        let _ = client_address;
    }

    /// Called by `handle_request` when no connection arrived within `timeout`. Default: nothing.
    fn handle_timeout(&self, server: &ServerContext<T>) {
        let _ = server;
    }

    /// Called on every iteration of `serve_forever`'s loop, in the serving thread. Default:
    /// nothing.
    fn service_actions(&self, server: &ServerContext<T>) {
        let _ = server;
    }
}

/// Blocking handlers on the multiplex event loop: idle connections parked in epoll, one
/// message at a time on a bounded thread pool.
///
/// Most handlers are blocking code: read a request from `rfile`, write the answer to `wfile`.
/// Under the threading model each keep-alive connection holds a thread parked in `read`
/// between two requests. Here the unit of work is one message, not one connection (the way
/// Jetty's and Tomcat's NIO connectors serve servlets):
///
/// 1. The serve loop accepts and runs `verify_request`, once per connection, as for the
///    multiplex model, and hands the connection to a multiplex worker (`workers` event loops).
/// 2. There the connection is *parked*: registered with epoll, holding no thread, a few hundred
///    bytes of memory. EOF, a reset or `idle_timeout` while parked closes it on the worker.
/// 3. When bytes arrive, the worker lends the connection (socket and the bytes it read) to a
///    bounded pool of threads (`max_threads`, started as needed, idle ones exit after
///    [`Pooled::KEEP_IDLE`]). A pool thread calls [`MessageHandler::handle`] with blocking
///    `rfile`/`wfile`: a message that arrives in pieces is read there, each read bounded by
///    `connection_timeout` (or [`Pooled::MESSAGE_TIMEOUT`] when that is unset).
/// 4. `handle` answers [`AfterMessage::KeepOpen`] or [`AfterMessage::Close`]. While bytes of
///    further (pipelined) messages are already buffered, `handle` runs again on the same
///    thread. Then the thread keeps the connection for up to [`Pooled::LINGER`] in case its
///    next message comes soon (not while other connections wait for a thread); after that the
///    connection goes back to its worker and is parked again.
///
/// An error or panic in `handle` goes to `handle_error` and closes that connection only.
/// `shutdown` stops accepting; `server_close` lets the messages in progress finish, closes the
/// parked connections at once, and joins the pool.
///
/// Options: `workers`, `worker_listeners`, `max_connections`, `idle_timeout` and `max_input`
/// as for [`Multiplex`] (they apply to parked connections; with `worker_listeners` a
/// worker accepts on its own listener and runs `verify_request` there); `max_threads` bounds the pool (default
/// 1024; threads start as messages need them); `connection_timeout` bounds each read and
/// write of a message. A transport with a prepare stage ([`Tls`](crate::transport::Tls)) runs
/// it on the worker without blocking, as for [`Multiplex`]; `verify_request` follows it.
pub struct Pooled {
    mux: Multiplex,
    max_threads: usize,
    timeout: Duration,
    /// The thread pool, made with the first connection (type-erased: `Threads<T, H>`).
    threads: OnceLock<Arc<dyn PoolClose>>,
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("workers", &self.mux.workers())
            .field("max_threads", &self.max_threads)
            .field("open_connections", &self.mux.open_connections())
            .finish()
    }
}

impl Pooled {
    /// How long a message's reads and writes may each block when `connection_timeout` is not
    /// set: a pool thread is never held without a bound by a client that stops sending.
    pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);
    /// How long a pool thread with nothing to do waits for work before it exits.
    pub const KEEP_IDLE: Duration = Duration::from_secs(10);
    /// How long a pool thread that answered a message keeps its connection, waiting for the
    /// next one, before it gives it back to be parked; not at all while other connections
    /// wait for a thread or the pool is at `max_threads`. On a busy keep-alive connection a
    /// message then costs no hand-off between threads (as under the threading model); an idle
    /// one is parked after this.
    pub const LINGER: Duration = Duration::from_millis(20);

    /// Connections open now (parked or with a message in progress).
    pub fn open_connections(&self) -> usize {
        self.mux.open_connections()
    }

    /// The number of event-loop threads.
    pub fn workers(&self) -> usize {
        self.mux.workers()
    }
}

impl Concurrency for Pooled {
    fn new(options: &Options) -> io::Result<Self> {
        Ok(Pooled {
            mux: <Multiplex as Concurrency>::new(options)?,
            max_threads: options.max_threads.unwrap_or(usize::MAX).max(1),
            timeout: options.connection_timeout.unwrap_or(Pooled::MESSAGE_TIMEOUT),
            threads: OnceLock::new(),
        })
    }

    fn server_close(&self) {
        // The workers wait for their lent connections (messages in progress), close the
        // parked ones, and exit; then the pool, with nothing left to do, is joined.
        if let Some(threads) = self.threads.get() {
            threads.closing();
        }
        self.mux.server_close();
        if let Some(threads) = self.threads.get() {
            threads.join();
        }
    }
}

impl<T, H> ProcessRequest<T, H> for Pooled
where
    T: StreamTransport + Send + Sync,
    T::Request: AsFd,
    H: MessageHandler<T>,
{
    fn process_request(&self, core: &Arc<Pipeline<T, H>>, request: T::Request, client_address: T::Address) {
        // Kept by the socket across the times it is lent (set once, not per message). With a
        // prepare stage the worker sets them once it is done, with verify_request
        // (`Driver::accepted`).
        if !T::PREPARES {
            if let Err(e) = pool_timeouts(&request, self.timeout) {
                report(core, &client_address, &RequestError::Io(e));
                return core.shutdown_request(request);
            }
        }
        self.mux.accept(
            core,
            || Ok(self.driver(core)),
            |address, error| report(core, address, error),
            request,
            client_address,
        );
    }

    fn verify_request(pipeline: &Pipeline<T, H>, request: &T::Request, client_address: &T::Address) -> bool {
        verify(pipeline, request, client_address)
    }

    fn serving(&self, core: &Arc<Pipeline<T, H>>) -> io::Result<()> {
        self.mux.serving_with(|| Ok(self.driver(core)))
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

impl Pooled {
    /// What the workers drive: the pool, made with them (once).
    fn driver<T, H>(&self, core: &Arc<Pipeline<T, H>>) -> Arc<PoolDriver<T, H>>
    where
        T: StreamTransport + Send + Sync,
        T::Request: AsFd,
        H: MessageHandler<T>,
    {
        let threads = Arc::new(Threads {
            core: Arc::clone(core),
            max: self.max_threads,
            timeout: self.timeout,
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                claimed: 0,
            }),
            work: Condvar::new(),
            handles: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            alive: AtomicUsize::new(0),
        });
        let _ = self.threads.set(Arc::clone(&threads) as Arc<dyn PoolClose>);
        Arc::new(PoolDriver {
            lender: Lender {
                core: Arc::clone(core),
            },
            threads,
        })
    }
}

/// The socket timeouts of a pooled connection: writes bounded by `timeout`; reads by
/// [`Pooled::LINGER`], which is how long a pool thread waits for a next message (a read within
/// a message waits up to `timeout` in all: `rfile`'s patience).
fn pool_timeouts<C: Connection>(request: &C, timeout: Duration) -> io::Result<()> {
    request.set_timeouts(Some(timeout))?;
    if let Some(fd) = request.read_side() {
        socket2::SockRef::from(&fd).set_read_timeout(Some(Pooled::LINGER))?;
    }
    Ok(())
}

/// The handler's `verify_request`; a panic in it is a refusal, reported to `handle_error`.
fn verify<T: StreamTransport, H: MessageHandler<T>>(
    pipeline: &Pipeline<T, H>,
    request: &T::Request,
    client_address: &T::Address,
) -> bool {
    run_verify(
        || pipeline.handler().verify_request(request, client_address),
        |error| report(pipeline, client_address, error),
    )
}

/// The handler's `handle_error`, a panic in it logged.
fn report<T: StreamTransport, H: MessageHandler<T>>(
    pipeline: &Pipeline<T, H>,
    client_address: &T::Address,
    error: &RequestError,
) {
    run_handle_error(client_address, error, || {
        pipeline.handler().handle_error(client_address, error)
    })
}

/// The callbacks a worker runs for a pooled server: a connection with input is lent to the
/// pool; EOF while parked closes it (the default `read_closed`).
struct Lender<T: Transport, H> {
    core: Arc<Pipeline<T, H>>,
}

impl<T, H> ConnectionHandler<T> for Lender<T, H>
where
    T: StreamTransport + Send + Sync,
    H: MessageHandler<T>,
{
    type Conn = ();

    fn closed(&self, _conn: (), client_address: &T::Address, _reason: CloseReason) {
        if let Err(panic) = guarded(|| {
            self.core.handler().closed(client_address);
            Ok(())
        }) {
            report(&self.core, client_address, &panic);
        }
    }

    fn connected(&self, _io: &mut ConnIo<'_, T>) -> io::Result<()> {
        Ok(())
    }

    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, T>, _input: &[u8]) -> io::Result<usize> {
        // Nothing consumed: the worker lends the socket with these bytes.
        io.lend();
        Ok(0)
    }
}

/// What the workers of a pooled server drive.
struct PoolDriver<T: Transport, H> {
    lender: Lender<T, H>,
    threads: Arc<Threads<T, H>>,
}

impl<T, H> Driver<T> for PoolDriver<T, H>
where
    T: StreamTransport + Send + Sync,
    T::Request: AsFd,
    H: MessageHandler<T>,
{
    type Handler = Lender<T, H>;
    fn handler(&self) -> &Lender<T, H> {
        &self.lender
    }
    fn context(&self) -> &ServerContext<T> {
        self.threads.core.context()
    }
    fn report(&self, client_address: &T::Address, error: &RequestError) {
        report(&self.threads.core, client_address, error)
    }
    fn shutdown_request(&self, request: T::Request) {
        self.threads.core.shutdown_request(request)
    }
    /// As the serve loop's way: `verify_request`, then the timeouts `process_request` sets.
    fn accepted(&self, request: &T::Request, client_address: &T::Address) -> bool {
        let core = &self.threads.core;
        if !verify(core, request, client_address) {
            return false;
        }
        match pool_timeouts(request, self.threads.timeout) {
            Ok(()) => true,
            Err(e) => {
                report(core, client_address, &RequestError::Io(e));
                false
            }
        }
    }
    fn lend(&self, lent: Lent<T>) {
        Threads::submit(&self.threads, lent)
    }
}

/// What `server_close` needs of the type-erased pool.
trait PoolClose: Send + Sync {
    /// From now on buffered (pipelined) messages are not started: connections go back to be
    /// closed.
    fn closing(&self);
    /// Waits for every pool thread to exit.
    fn join(&self);
}

struct PoolState<T: Transport> {
    queue: VecDeque<Lent<T>>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for work and not yet claimed by a `submit`.
    idle: usize,
    /// Wake-ups sent to idle threads and not yet taken.
    claimed: usize,
}

/// The bounded pool of threads that run messages.
struct Threads<T: Transport, H> {
    core: Arc<Pipeline<T, H>>,
    max: usize,
    timeout: Duration,
    state: Mutex<PoolState<T>>,
    work: Condvar,
    handles: Mutex<Vec<JoinHandle<()>>>,
    closing: AtomicBool,
    /// The queue's length, read without the lock by lingering threads (one look per message).
    queued: AtomicUsize,
    /// `threads` of the state, read without the lock by lingering threads.
    alive: AtomicUsize,
}

impl<T, H> PoolClose for Threads<T, H>
where
    T: StreamTransport + Send + Sync,
    T::Request: AsFd,
    H: MessageHandler<T>,
{
    fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    fn join(&self) {
        self.work.notify_all();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            if handle.join().is_err() {
                report_error(format_args!("a pooled server's thread panicked"));
            }
        }
    }
}

impl<T, H> Threads<T, H>
where
    T: StreamTransport + Send + Sync,
    T::Request: AsFd,
    H: MessageHandler<T>,
{
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a lent connection: an idle thread takes it, or a new thread while fewer than
    /// `max` run; otherwise it waits for the next free thread.
    fn submit(this: &Arc<Self>, lent: Lent<T>) {
        let mut state = this.lock();
        state.queue.push_back(lent);
        this.queued.store(state.queue.len(), Ordering::Release);
        if state.idle > 0 {
            state.idle -= 1;
            state.claimed += 1;
            drop(state);
            this.work.notify_one();
            return;
        }
        if state.threads >= this.max {
            return;
        }
        state.threads += 1;
        this.alive.store(state.threads, Ordering::Release);
        drop(state);
        let pool = Arc::clone(this);
        let spawned = std::thread::Builder::new()
            .name("sockserve-pool".into())
            .spawn(move || pool.run());
        match spawned {
            Ok(handle) => {
                let mut handles = this.handles.lock().unwrap_or_else(|e| e.into_inner());
                handles.retain(|h| !h.is_finished());
                handles.push(handle);
            }
            Err(e) => {
                let mut state = this.lock();
                state.threads -= 1;
                this.alive.store(state.threads, Ordering::Release);
                // With no thread at all the queued connections would wait forever: they are
                // given back to be closed, and the server is told why.
                let orphans: Vec<Lent<T>> = match state.threads {
                    0 => {
                        this.queued.store(0, Ordering::Release);
                        state.queue.drain(..).collect()
                    }
                    _ => Vec::new(),
                };
                drop(state);
                for lent in orphans {
                    report(
                        &this.core,
                        &lent.client_address,
                        &RequestError::Io(io::Error::new(e.kind(), e.to_string())),
                    );
                    lent.give_back(true);
                }
            }
        }
    }

    /// A pool thread: runs queued messages; exits after [`Pooled::KEEP_IDLE`] without work,
    /// or once the server is closing and nothing is queued.
    fn run(&self) {
        loop {
            let lent = {
                let mut state = self.lock();
                loop {
                    if let Some(lent) = state.queue.pop_front() {
                        self.queued.store(state.queue.len(), Ordering::Release);
                        break Some(lent);
                    }
                    if self.closing.load(Ordering::Acquire) {
                        break None;
                    }
                    state.idle += 1;
                    let (next, waited) = self
                        .work
                        .wait_timeout(state, Pooled::KEEP_IDLE)
                        .unwrap_or_else(|e| e.into_inner());
                    state = next;
                    if state.claimed > 0 {
                        state.claimed -= 1;
                    } else {
                        state.idle -= 1;
                        if waited.timed_out() && state.queue.is_empty() {
                            break None;
                        }
                    }
                }
            };
            match lent {
                Some(lent) => self.serve(lent),
                None => {
                    let mut state = self.lock();
                    state.threads -= 1;
                    self.alive.store(state.threads, Ordering::Release);
                    return;
                }
            }
        }
    }

    /// Serves the messages of one lent connection, then gives it back.
    fn serve(&self, mut lent: Lent<T>) {
        let Some(request) = lent.socket.take() else {
            return;
        };
        let input = std::mem::take(&mut lent.input);
        // The socket is blocking (the workers never wait on it), each read and write bounded
        // by the timeout set at accept.
        let close = self.messages(&request, input, &lent.client_address);
        lent.socket = Some(request);
        lent.give_back(close);
    }

    /// Whether a thread that answered a message may wait for its connection's next one: not
    /// while connections are queued for a thread, nor when the pool has all its threads (a
    /// connection queued meanwhile waits at most [`Pooled::LINGER`] for one).
    fn may_linger(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0 && self.alive.load(Ordering::Acquire) < self.max
    }

    /// Runs `handle` for the message whose first bytes are `input`, for each further one
    /// already buffered, and for one that arrives while the thread lingers; returns whether
    /// the connection is to be closed.
    fn messages(&self, request: &T::Request, input: Vec<u8>, client_address: &T::Address) -> bool {
        let server = self.core.context();
        let options = server.options();
        let handler = self.core.handler();
        let mut rfile = Rfile::with_input(request, options.rbufsize, input);
        // The socket's read timeout is LINGER: a read within a message waits up to the
        // timeout in all.
        rfile.set_patience(Some((Pooled::LINGER, self.timeout)));
        let mut req = StreamRequest {
            rfile,
            wfile: Wfile::new(request, options.wbufsize),
            request,
            client_address,
            server,
        };
        loop {
            let result = guarded(|| handler.handle(&mut req).map_err(RequestError::from));
            let flushed = req.wfile.flush().map_err(RequestError::from);
            match result.and_then(|after| flushed.map(|()| after)) {
                Ok(AfterMessage::KeepOpen) => {
                    if self.closing.load(Ordering::Acquire) {
                        return false;
                    }
                    if req.rfile.buffer().is_empty() {
                        // Park, unless the next message comes within LINGER (the socket's read
                        // timeout) while no other connection waits for a thread. End of input
                        // or an error: the worker sees it again, and closes.
                        if !self.may_linger() {
                            return false;
                        }
                        req.rfile.set_patience(None);
                        let next = match req.rfile.fill_buf() {
                            Ok(buffered) => !buffered.is_empty(),
                            // Nothing within LINGER: park.
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock
                                        | io::ErrorKind::TimedOut
                                        | io::ErrorKind::Interrupted
                                ) =>
                            {
                                false
                            }
                            // A failure (a reset, a corrupt TLS record) is reported here: the
                            // worker may not see it again (rustls has taken the bytes).
                            Err(e) => {
                                report(&self.core, client_address, &RequestError::from(e));
                                return true;
                            }
                        };
                        req.rfile.set_patience(Some((Pooled::LINGER, self.timeout)));
                        if !next {
                            // End of input included: the worker sees it again, and closes.
                            return false;
                        }
                    }
                }
                Ok(AfterMessage::Close) => return true,
                Err(error) => {
                    report(
                        &self.core,
                        client_address,
                        &error.with_timeout(Some(self.timeout)),
                    );
                    return true;
                }
            }
        }
    }
}
