//! One event-loop thread of the multiplex model: its poller, its connections, their callbacks,
//! and with `worker_listeners` its own listening socket.
//!
//! Accepting on the worker's own listener follows the serve loop: `verify_request` (through
//! [`Driver::accepted`]), a place under `max_connections` (at the cap the worker holds the one
//! connection it accepted and accepts no more until a connection of the server closes and
//! [`Limit::release`] wakes it), non-blocking and `TCP_NODELAY` as for a handed-over
//! connection, and the serve loop's reading of accept errors: `EMFILE` and its kind back off
//! (10 ms doubling to 1 s, logged once per episode), a connection reset before accept is
//! skipped, an unusable listener is closed (the serve loop's listener still takes
//! connections).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::handler::{Asked, CloseReason, ConnIo, ConnectionHandler, Lent, Mailbox, Message};
use super::{Driver, Limit, Multiplex};
use crate::handler::{guarded, RequestError};
use crate::serve::{classify, take_request, AcceptFailure, BackOff};
use crate::transport::{Connection, PrepareProgress, StreamTransport, Transport};

/// The waker's token; connection `i` has token `i + 1`.
const WAKER: Token = Token(0);
/// The token of the worker's own listener (`worker_listeners`).
const LISTENER: Token = Token(usize::MAX);
/// Connections taken from the worker's own listener per pass of the loop, before the
/// connections' events are looked at again (the serve loop's batch).
const ACCEPT_BATCH: usize = 64;
/// After a pass that handled events, the worker polls this many times without waiting
/// (`epoll_wait` with a zero timeout) before it sleeps in a poll that waits; a pass with
/// events starts the count again. The idea: a ping-pong client's next request may arrive
/// within that time, and finding it so would save a sleep and a wake-up (a context switch
/// each). Measured against 0 (BENCHMARKS.md, "Multiplex against tokio", spinning before
/// blocking): 16 about halved the workers' context switches per request in W1 but added 1.4
/// to 2.5 system calls per request (the polls that found nothing); neither 4 nor 16 lowered
/// server CPU per request or the p99 in W1 (on two cores shared with the client), and 16
/// raised server CPU per connection in W2. So 0: no spinning.
const SPIN_POLLS: u32 = 0;
/// Bytes read per `read` call, into a buffer shared by the worker's connections.
const SCRATCH: usize = 64 * 1024;
/// A connection's input or output buffer larger than this is given back once empty.
const KEEP_CAPACITY: usize = 16 * 1024;

/// The options a worker applies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_input: usize,
    /// `disable_nagle_algorithm`, for connections accepted on the worker's own listener.
    pub(crate) nodelay: bool,
}

/// A lent connection given back: (token, generation, the connection, whether to close it).
type Returned<T> = (usize, u64, <T as Transport>::Request, bool);

/// The part of a worker the serve loop hands connections to, and borrowers give lent ones
/// back to.
pub(crate) struct Shared<T: Transport> {
    pub(crate) mail: Arc<Mailbox>,
    incoming: Mutex<Vec<(T::Request, T::Address)>>,
    /// Lent connections given back.
    returned: Mutex<Vec<Returned<T>>>,
    /// The worker accepts on a listener of its own.
    pub(crate) accepts: bool,
}

/// Pushes onto `queue`, waking the worker when it was empty (a non-empty queue has a wake-up
/// pending already).
fn push_and_wake<X>(mail: &Mailbox, queue: &Mutex<Vec<X>>, item: X) {
    let was_empty = {
        let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = queue.is_empty();
        queue.push(item);
        was_empty
    };
    if was_empty {
        mail.wake();
    }
}

impl<T: Transport> Shared<T> {
    /// Hands a connection (made ready already) to the worker.
    pub(crate) fn hand_over(&self, request: T::Request, client_address: T::Address) {
        push_and_wake(&self.mail, &self.incoming, (request, client_address));
    }

    /// A lent connection comes back, to be closed or served on. A worker that has stopped
    /// does not take it: it is dropped (closed) here.
    pub(crate) fn give_back(&self, token: usize, generation: u64, request: T::Request, close: bool) {
        if self.mail.gone.load(Ordering::Acquire) {
            return drop(request);
        }
        push_and_wake(&self.mail, &self.returned, (token, generation, request, close));
    }
}

/// The per-connection state of the handler a driver runs.
type StateOf<T, D> = <<D as Driver<T>>::Handler as ConnectionHandler<T>>::Conn;

/// One connection in the worker's table.
struct Conn<T: Transport, S> {
    /// `None` while the connection is lent (see [`Lent`]): another thread owns it.
    socket: Option<T::Request>,
    /// The transport's prepare stage (a TLS handshake) is under way, to be done by this
    /// deadline; the handler knows nothing of the connection yet.
    preparing: Option<Instant>,
    /// The prepare stage's record between calls ([`PrepareProgress`]).
    prepared: u64,
    /// The handler asked to lend the connection; done once its queued output is written.
    lend_asked: bool,
    /// Nothing read yet: a connection accepted just before `server_close` whose first
    /// request is on its way. The drain waits for it (at most
    /// [`Multiplex::FIRST_MESSAGE_GRACE`]) instead of closing it as idle.
    fresh: bool,
    client_address: T::Address,
    /// `None` only while a callback has it out, and after `closed`.
    state: Option<S>,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of `output` already written.
    written: usize,
    generation: u64,
    last_progress: Instant,
    timer: Option<Instant>,
    /// The client sent FIN.
    read_closed: bool,
    /// Output could not be written at once: `drained` is due when it is.
    blocked: bool,
    /// Reading stopped because the output was above the high-water mark.
    paused: bool,
    close_after_flush: bool,
    shutdown_after_flush: bool,
    write_shut: bool,
}

impl<T: Transport, S> Conn<T, S> {
    fn pending(&self) -> usize {
        self.output.len() - self.written
    }
}

/// What ended a connection's turn.
enum Fate {
    Open,
    Close(CloseReason),
    Fail(RequestError),
}

/// A worker's own listening socket (`worker_listeners`).
struct Listener<T: Transport> {
    transport: T,
    /// Connections may be queued: the last accept did not find the queue empty. (The poller
    /// reports the listener when a connection arrives, not while some are queued.)
    ready: bool,
    /// Accepted and verified, waiting for a place under `max_connections`.
    held: Option<(T::Request, T::Address)>,
    backoff: BackOff,
    /// During a back-off (`EMFILE`...): when to accept again.
    retry_at: Option<Instant>,
}

/// What became of a turn at the worker's own listener.
enum Accepted {
    /// Go on accepting when there is something to accept.
    Open,
    /// The listener is unusable: close it.
    Failed,
}

/// The worker: its poller, its table of connections, and the server it serves.
pub(crate) struct Worker<T: Transport, D: Driver<T>> {
    core: Arc<D>,
    config: Config,
    limit: Arc<Limit>,
    shared: Arc<Shared<T>>,
    poll: Poll,
    conns: Vec<Option<Conn<T, StateOf<T, D>>>>,
    free: Vec<usize>,
    generations: u64,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    scratch: Vec<u8>,
    next_sweep: Option<Instant>,
    /// Set while `begin_drain` reads what has arrived: a request already sent is served,
    /// not dropped, though the worker is closing.
    final_read: bool,
    /// While draining: when connections that have sent nothing yet are closed.
    fresh_deadline: Option<Instant>,
    /// `None` without `worker_listeners`, and once closed.
    listener: Option<Listener<T>>,
}

impl<T, D> Worker<T, D>
where
    T: StreamTransport + Send + Sync,
    T::Request: AsFd,
    D: Driver<T>,
{
    /// Makes a worker's poller (with `listener` registered, the worker's own listener if it
    /// has one) and the part the serve loop shares; [`start`](Self::start) runs it on its
    /// thread (connection state is not `Send`, so the worker is made there).
    pub(crate) fn prepare(listener: Option<&T>) -> io::Result<(Arc<Shared<T>>, Poll)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        if let Some(listener) = listener {
            let fd = listener
                .fileno()
                .ok_or_else(|| io::Error::other("a worker's listener has no descriptor to wait on"))?;
            poll.registry()
                .register(&mut SourceFd(&fd.as_raw_fd()), LISTENER, Interest::READABLE)?;
        }
        let shared = Arc::new(Shared {
            mail: Arc::new(Mailbox {
                waker,
                queue: Mutex::new(Vec::new()),
                closing: AtomicBool::new(false),
                gone: AtomicBool::new(false),
            }),
            incoming: Mutex::new(Vec::new()),
            returned: Mutex::new(Vec::new()),
            accepts: listener.is_some(),
        });
        Ok((shared, poll))
    }

    /// Runs a worker on the calling thread until `server_close` has drained it; `listener`
    /// is the one [`prepare`](Self::prepare) registered.
    pub(crate) fn start(
        core: Arc<D>,
        config: Config,
        limit: Arc<Limit>,
        shared: Arc<Shared<T>>,
        poll: Poll,
        listener: Option<T>,
    ) {
        Worker {
            core,
            config,
            limit,
            shared,
            poll,
            conns: Vec::new(),
            free: Vec::new(),
            generations: 0,
            timers: BinaryHeap::new(),
            scratch: vec![0; SCRATCH],
            next_sweep: None,
            final_read: false,
            fresh_deadline: None,
            listener: listener.map(|transport| Listener {
                transport,
                // What was queued before the registration is taken at once.
                ready: true,
                held: None,
                backoff: BackOff::default(),
                retry_at: None,
            }),
        }
        .run()
    }

    /// The event loop, until `server_close` has drained the connections.
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut drain_deadline: Option<Instant> = None;
        // Zero-timeout polls left before the next poll that waits (SPIN_POLLS).
        let mut spins: u32 = 0;
        loop {
            let closing = self.shared.mail.closing.load(Ordering::Acquire);
            if closing && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + Multiplex::DRAIN_TIMEOUT);
                self.close_listener();
                self.begin_drain();
            }
            if closing {
                self.take_incoming();
                if self.conns.iter().all(Option::is_none) {
                    break;
                }
            }
            let timeout = if spins > 0 || self.accept_due() {
                spins = spins.saturating_sub(1);
                Some(Duration::ZERO)
            } else {
                self.next_deadline(match (drain_deadline, self.fresh_deadline) {
                    (Some(d), Some(f)) => Some(d.min(f)),
                    (d, f) => d.or(f),
                })
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("multiplex worker: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            if !events.is_empty() {
                spins = SPIN_POLLS;
            }
            let mut woken = false;
            for event in events.iter() {
                if event.token() == WAKER {
                    woken = true;
                    continue;
                }
                if event.token() == LISTENER {
                    if let Some(listener) = self.listener.as_mut() {
                        listener.ready = true;
                    }
                    continue;
                }
                let index = event.token().0 - 1;
                if self.conns[index].as_ref().is_some_and(|c| c.preparing.is_some()) {
                    self.step_prepare(index);
                    continue;
                }
                if event.is_writable() || event.is_error() {
                    self.on_writable(index);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(index, event.is_read_closed() || event.is_error());
                }
            }
            if woken {
                self.take_incoming();
                self.take_returned();
                self.take_messages();
            }
            self.accept();
            self.fire_timers();
            self.sweep_idle();
            if self.fresh_deadline.is_some_and(|d| Instant::now() >= d) {
                self.fresh_deadline = None;
                for index in 0..self.conns.len() {
                    if self.conns[index]
                        .as_ref()
                        .is_some_and(|c| c.fresh && c.socket.is_some())
                    {
                        self.close(index, Fate::Close(CloseReason::ServerClose));
                    }
                }
            }
            if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                for index in 0..self.conns.len() {
                    // Lent ones finish their message (bounded by the borrower's timeouts).
                    if self.conns[index].as_ref().is_some_and(|c| c.socket.is_some()) {
                        self.close(index, Fate::Close(CloseReason::ServerClose));
                    }
                }
            }
        }
        self.shared.mail.gone.store(true, Ordering::Release);
        // Connections handed over after the last look are closed unserved.
        self.take_incoming();
    }

    /// How long the poller may wait: until the nearest timer, idle sweep, drain deadline or
    /// the end of an accept back-off.
    fn next_deadline(&self, drain: Option<Instant>) -> Option<Duration> {
        let mut next = drain;
        if let Some(at) = self.listener.as_ref().and_then(|l| l.retry_at) {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if let Some(Reverse((at, _, _))) = self.timers.peek() {
            next = Some(next.map_or(*at, |n| n.min(*at)));
        }
        if let Some(at) = self.next_sweep {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Whether the worker's own listener has connections to take now (so the poller must not
    /// wait): not while one is held at `max_connections` (a release wakes the worker) nor
    /// during a back-off (the deadline does).
    fn accept_due(&self) -> bool {
        self.listener
            .as_ref()
            .is_some_and(|l| l.ready && l.held.is_none() && l.retry_at.is_none())
    }

    /// A turn at the worker's own listener, if it has one: at most [`ACCEPT_BATCH`]
    /// connections.
    fn accept(&mut self) {
        let Some(mut listener) = self.listener.take() else {
            return;
        };
        match self.accept_from(&mut listener, ACCEPT_BATCH) {
            Accepted::Open => self.listener = Some(listener),
            // Dropped: closed, and out of the poller with it.
            Accepted::Failed => drop(listener),
        }
    }

    /// Takes up to `batch` connections from `listener`: the one held at the cap first, then
    /// until its queue is empty, the cap is reached, or accept fails for want of resources.
    fn accept_from(&mut self, listener: &mut Listener<T>, batch: usize) -> Accepted {
        if let Some(at) = listener.retry_at {
            if Instant::now() < at {
                return Accepted::Open;
            }
            listener.retry_at = None;
        }
        if let Some((request, client_address)) = listener.held.take() {
            if !self.limit.try_acquire() {
                listener.held = Some((request, client_address));
                return Accepted::Open;
            }
            self.serve_accepted(request, client_address);
        }
        for _ in 0..batch {
            if !listener.ready {
                break;
            }
            match take_request(&listener.transport) {
                Ok(Some((request, client_address))) => {
                    listener.backoff.succeeded();
                    // With a prepare stage, verify_request runs once it is done.
                    if !T::PREPARES && !self.core.accepted(&request, &client_address) {
                        self.core.shutdown_request(request);
                        continue;
                    }
                    if !self.limit.try_acquire() {
                        listener.held = Some((request, client_address));
                        break;
                    }
                    self.serve_accepted(request, client_address);
                }
                Ok(None) => listener.ready = false,
                Err(error) => match classify(&error) {
                    AcceptFailure::Retry => {}
                    AcceptFailure::Skip => {
                        log::debug!("multiplex worker: skipped a failed accept: {error}");
                    }
                    AcceptFailure::BackOff => {
                        listener.retry_at = Some(Instant::now() + listener.backoff.failed(&error));
                        break;
                    }
                    AcceptFailure::Fatal => {
                        log::error!(
                            "multiplex worker: its listener failed ({error}); the server's own \
                             listener takes the connections"
                        );
                        return Accepted::Failed;
                    }
                },
            }
        }
        Accepted::Open
    }

    /// A connection from the worker's own listener, verified and counted: made ready as a
    /// handed-over one is, then served here.
    fn serve_accepted(&mut self, request: T::Request, client_address: T::Address) {
        Multiplex::ready_socket(&request, self.config.nodelay);
        self.admit(request, client_address);
    }

    /// `server_close`: what is queued on the worker's own listener is taken (at most a
    /// backlog's worth; then drained with the other connections rather than reset by the
    /// close), and the listener is closed. A connection held at the cap is closed unserved.
    fn close_listener(&mut self) {
        let Some(mut listener) = self.listener.take() else {
            return;
        };
        listener.ready = true;
        listener.retry_at = None;
        let backlog = self.core.context().options().request_queue_size;
        let _ = self.accept_from(&mut listener, usize::try_from(backlog).unwrap_or(usize::MAX));
        if let Some((request, _)) = listener.held.take() {
            self.core.shutdown_request(request);
        }
    }

    /// Registers the connections handed over since the last look and calls `connected`.
    fn take_incoming(&mut self) {
        let incoming = std::mem::take(&mut *self.shared.incoming.lock().unwrap_or_else(|e| e.into_inner()));
        let closing = self.shared.mail.closing.load(Ordering::Acquire);
        let gone = self.shared.mail.gone.load(Ordering::Acquire);
        for (request, client_address) in incoming {
            if gone {
                // Handed over after the worker stopped: never connected, closed unserved.
                self.core.shutdown_request(request);
                self.limit.release();
                continue;
            }
            self.admit(request, client_address);
        }
        // Accepted before server_close: connected, then drained like the others.
        if closing && !gone {
            self.begin_drain();
        }
    }

    /// Takes a connection into the table: registered with the poller, then its prepare stage
    /// started, or (without one) `connected`.
    fn admit(&mut self, request: T::Request, client_address: T::Address) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let raw = request.as_fd().as_raw_fd();
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&raw),
            Token(index + 1),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(index);
            self.core.report(&client_address, &RequestError::Io(e));
            self.core.shutdown_request(request);
            self.limit.release();
            return;
        }
        self.generations += 1;
        let now = Instant::now();
        if self.next_sweep.is_none() {
            self.next_sweep = self.config.idle_timeout.map(|t| now + sweep_every(t));
        }
        let preparing = T::PREPARES.then(|| now + self.core.context().transport.prepare_timeout());
        if let Some(deadline) = preparing {
            self.timers.push(Reverse((deadline, index, self.generations)));
        }
        self.conns[index] = Some(Conn {
            socket: Some(request),
            preparing,
            prepared: 0,
            lend_asked: false,
            fresh: true,
            client_address,
            state: None,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            generation: self.generations,
            last_progress: now,
            timer: None,
            read_closed: false,
            blocked: false,
            paused: false,
            close_after_flush: false,
            shutdown_after_flush: false,
            write_shut: false,
        });
        if preparing.is_some() {
            self.step_prepare(index);
        } else {
            self.connect(index);
        }
    }

    /// `connected`: the handler makes the connection's state.
    fn connect(&mut self, index: usize) {
        let fate = self.callback(index, |handler, _, io, _| {
            let state = handler.connected(io)?;
            Ok(Some(state))
        });
        self.settle(index, fate);
    }

    /// Runs the transport's prepare stage as far as the socket allows now
    /// ([`Transport::prepare_nowait`]); once done, `verify_request` (through
    /// [`Driver::accepted`]), `connected`, and the input that came with the stage's end.
    fn step_prepare(&mut self, index: usize) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        let Some(request) = conn.socket.as_mut() else {
            return;
        };
        let transport = &self.core.context().transport;
        let client_address = &mut conn.client_address;
        let progress = PrepareProgress::new(&mut conn.prepared);
        let result = guarded(|| {
            transport
                .prepare_nowait(request, client_address, progress)
                .map_err(RequestError::from_prepare)
        });
        match result {
            Ok(false) => {}
            Ok(true) => {
                conn.preparing = None;
                conn.last_progress = Instant::now();
                let (Some(request), address) = (conn.socket.as_ref(), &conn.client_address) else {
                    return;
                };
                if !self.core.accepted(request, address) {
                    // Refused: closed without callbacks (the handler never had it).
                    return self.close(index, Fate::Close(CloseReason::Closed));
                }
                self.connect(index);
                // What arrived with the end of the stage raised no new event.
                self.on_readable(index, true);
            }
            Err(error) => self.close(index, Fate::Fail(error)),
        }
    }

    /// Runs one callback on connection `index` with its state, its `ConnIo` and (for `input`)
    /// the bytes it sees; applies what it asked. A panic or error fails the connection.
    fn callback<F>(&mut self, index: usize, f: F) -> Fate
    where
        F: FnOnce(
            &D::Handler,
            Option<&mut StateOf<T, D>>,
            &mut ConnIo<'_, T>,
            &[u8],
        ) -> io::Result<Option<StateOf<T, D>>>,
    {
        self.callback_with(index, None, f)
    }

    /// [`callback`](Self::callback) that shows the callback input bytes: `data` is
    /// `Some((true, len))` for the first `len` bytes of the scratch buffer, `Some((false, _))`
    /// for the connection's unconsumed input.
    fn callback_with<F>(&mut self, index: usize, data: Option<(bool, usize)>, f: F) -> Fate
    where
        F: FnOnce(
            &D::Handler,
            Option<&mut StateOf<T, D>>,
            &mut ConnIo<'_, T>,
            &[u8],
        ) -> io::Result<Option<StateOf<T, D>>>,
    {
        let Some(conn) = self.conns[index].as_mut() else {
            return Fate::Open;
        };
        // Lent: its borrower has it, and no callback runs until it comes back.
        let Some(request) = conn.socket.as_ref() else {
            return Fate::Open;
        };
        let mut asked = Asked::default();
        let mut state = conn.state.take();
        let bytes: &[u8] = match data {
            Some((true, len)) => &self.scratch[..len],
            Some((false, _)) => &conn.input,
            None => &[],
        };
        let mut io = ConnIo {
            out: &mut conn.output,
            asked: &mut asked,
            mail: &self.shared.mail,
            token: index,
            generation: conn.generation,
            server: self.core.context(),
            client_address: &conn.client_address,
            request,
        };
        let handler = self.core.handler();
        let result = guarded(|| Ok(f(handler, state.as_mut(), &mut io, bytes)?));
        match result {
            Ok(Some(new_state)) => conn.state = Some(new_state),
            Ok(None) => conn.state = state,
            Err(error) => {
                conn.state = state;
                return Fate::Fail(error);
            }
        }
        if asked.close {
            conn.close_after_flush = true;
        }
        if asked.shutdown_write {
            conn.shutdown_after_flush = true;
        }
        if asked.lend {
            conn.lend_asked = true;
        }
        if let Some(at) = asked.timer {
            conn.timer = Some(at);
            self.timers.push(Reverse((at, index, conn.generation)));
        } else if asked.cancel_timer {
            conn.timer = None;
        }
        Fate::Open
    }

    /// After a callback: writes what it queued, closes or fails the connection when due.
    fn settle(&mut self, index: usize, fate: Fate) {
        match fate {
            Fate::Open => {}
            other => return self.close(index, other),
        }
        let fate = self.flush(index);
        if !matches!(fate, Fate::Open) {
            return self.close(index, fate);
        }
        let lend = self.conns[index]
            .as_ref()
            .is_some_and(|c| c.lend_asked && c.pending() == 0 && !c.close_after_flush);
        if lend {
            self.lend(index);
        }
    }

    /// Lends connection `index` to the driver (its socket and unconsumed input): the worker
    /// neither reads nor writes it, nor times it out, until [`Message::Return`] gives it back.
    fn lend(&mut self, index: usize) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        let Some(socket) = conn.socket.take() else {
            return;
        };
        conn.lend_asked = false;
        // Out of the poller while lent: its borrower reads it, and every message it gets would
        // otherwise wake this worker for nothing. Registered again when it comes back.
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&socket.as_fd().as_raw_fd()));
        let lent = Lent {
            socket: Some(socket),
            input: std::mem::take(&mut conn.input),
            client_address: conn.client_address.clone(),
            worker: Arc::clone(&self.shared),
            token: index,
            generation: conn.generation,
        };
        self.core.lend(lent);
    }

    /// A lent connection came back: the worker owns its socket again. Output queued meanwhile
    /// is written; a close asked for (by the borrower, a `ConnHandle` or `server_close`)
    /// happens; otherwise the socket is read at once, since what arrived while it was lent
    /// raised an edge the worker did not act on.
    fn give_back(&mut self, index: usize, generation: u64, socket: T::Request, close: bool) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return drop(socket);
        };
        if conn.generation != generation || conn.socket.is_some() {
            return drop(socket);
        }
        let registered = self.poll.registry().register(
            &mut SourceFd(&socket.as_fd().as_raw_fd()),
            Token(index + 1),
            Interest::READABLE | Interest::WRITABLE,
        );
        conn.socket = Some(socket);
        conn.last_progress = Instant::now();
        if let Err(e) = registered {
            return self.close(index, Fate::Fail(RequestError::Io(e)));
        }
        if close || self.shared.mail.closing.load(Ordering::Acquire) {
            conn.close_after_flush = true;
            if conn.pending() == 0 {
                return self.close(index, Fate::Close(CloseReason::Closed));
            }
        }
        self.settle(index, Fate::Open);
        if self.conns[index].as_ref().is_some_and(|c| c.socket.is_some()) {
            self.on_readable(index, true);
        }
    }

    /// Writes pending output; applies close- and shutdown-after-flush; calls `drained` when
    /// output that had waited is all written.
    fn flush(&mut self, index: usize) -> Fate {
        let Some(conn) = self.conns[index].as_mut() else {
            return Fate::Open;
        };
        // Lent: written when it comes back.
        let Some(socket) = conn.socket.as_ref() else {
            return Fate::Open;
        };
        while conn.pending() > 0 {
            match socket.write_nowait(&conn.output[conn.written..]) {
                Ok(0) => return Fate::Fail(RequestError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    conn.written += n;
                    conn.last_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.blocked = true;
                    return Fate::Open;
                }
                Err(e) => return Fate::Fail(RequestError::from(e)),
            }
        }
        conn.output.clear();
        conn.written = 0;
        if conn.output.capacity() > KEEP_CAPACITY {
            conn.output = Vec::new();
        }
        // What the connection itself holds (TLS records) goes out too.
        match socket.flush_nowait() {
            Ok(true) => {}
            Ok(false) => {
                conn.blocked = true;
                return Fate::Open;
            }
            Err(e) => return Fate::Fail(RequestError::from(e)),
        }
        if conn.close_after_flush {
            let reason = if conn.read_closed {
                CloseReason::PeerClosed
            } else {
                CloseReason::Closed
            };
            return Fate::Close(reason);
        }
        if conn.shutdown_after_flush && !conn.write_shut {
            conn.write_shut = true;
            let _ = socket.shutdown_write();
        }
        if std::mem::take(&mut conn.blocked) && !self.shared.mail.closing.load(Ordering::Acquire) {
            let fate = self.callback(index, |handler, state, io, _| {
                if let Some(state) = state {
                    handler.drained(state, io)?;
                }
                Ok(None)
            });
            if !matches!(fate, Fate::Open) {
                return fate;
            }
            // What `drained` wrote goes out now.
            if self.conns[index]
                .as_ref()
                .is_some_and(|c| c.pending() > 0 || c.close_after_flush)
            {
                return self.flush(index);
            }
        }
        Fate::Open
    }

    fn on_writable(&mut self, index: usize) {
        let Some(conn) = self.conns[index].as_ref() else {
            return;
        };
        if conn.socket.is_none() || conn.pending() == 0 && !conn.blocked {
            return;
        }
        let fate = self.flush(index);
        if !matches!(fate, Fate::Open) {
            return self.close(index, fate);
        }
        // Input the handler left unconsumed for want of room is handed back first; then, if
        // reading had stopped for the output, the socket is read (edge-triggered: what arrived
        // meanwhile raised no new event).
        self.redeliver_all(index);
        let resume = self.conns[index].as_mut().is_some_and(|c| {
            c.paused && c.pending() <= Multiplex::HIGH_WATER && !std::mem::take(&mut c.paused)
        });
        if resume {
            self.on_readable(index, true);
        }
    }

    /// Hands unconsumed input to `input` again while it consumes some (the handler stopped
    /// consuming because its output was above the high-water mark, and now it is not).
    fn redeliver_all(&mut self, index: usize) {
        while self.redeliver(index) > 0 {}
    }

    /// Hands unconsumed input to `input` again once, when the output is below the high-water
    /// mark; returns how much it consumed.
    fn redeliver(&mut self, index: usize) -> usize {
        let Some(conn) = self.conns[index].as_ref() else {
            return 0;
        };
        if conn.input.is_empty()
            || conn.socket.is_none()
            || conn.lend_asked
            || conn.read_closed
            || conn.close_after_flush
            || conn.pending() > Multiplex::HIGH_WATER
            || self.shared.mail.closing.load(Ordering::Acquire)
        {
            return 0;
        }
        let len = conn.input.len();
        let mut consumed = 0;
        let fate = self.callback_with(index, Some((false, len)), |handler, state, io, data| {
            if let Some(state) = state {
                consumed = handler.input(state, io, data)?.min(data.len());
            }
            Ok(None)
        });
        if !matches!(fate, Fate::Open) {
            self.close(index, fate);
            return 0;
        }
        if let Some(conn) = self.conns[index].as_mut() {
            conn.input.drain(..consumed);
        }
        self.settle(index, Fate::Open);
        consumed
    }

    /// Reads what the socket has, hands it to `input`, until the socket is empty, the output
    /// is above the high-water mark or the connection ends. Unless `until_blocked` (the event
    /// said the client closed, or the connection was paused), a short read ends it: the socket
    /// was emptied, and the next arrival is a new edge.
    fn on_readable(&mut self, index: usize, until_blocked: bool) {
        let closing = self.shared.mail.closing.load(Ordering::Acquire) && !self.final_read;
        loop {
            let Some(conn) = self.conns[index].as_mut() else {
                return;
            };
            if conn.pending() > Multiplex::HIGH_WATER {
                conn.paused = true;
                return;
            }
            if conn.read_closed || (closing && !conn.fresh) || conn.close_after_flush || conn.lend_asked {
                return;
            }
            let Some(socket) = conn.socket.as_ref() else {
                return;
            };
            let from_scratch = conn.input.is_empty();
            let read = if from_scratch {
                socket.read_nowait(&mut self.scratch)
            } else {
                // Input left over from before: append to it, at most up to max_input + 1.
                let room = (self.config.max_input + 1)
                    .saturating_sub(conn.input.len())
                    .clamp(1, SCRATCH);
                let start = conn.input.len();
                conn.input.resize(start + room, 0);
                let read = socket.read_nowait(&mut conn.input[start..]);
                let got = *read.as_ref().unwrap_or(&0);
                conn.input.truncate(start + got);
                read
            };
            let n = match read {
                Ok(0) => {
                    conn.read_closed = true;
                    conn.fresh = false;
                    let fate = self.callback_with(index, Some((false, 0)), |handler, state, io, rest| {
                        if let Some(state) = state {
                            handler.read_closed(state, io, rest)?;
                        }
                        Ok(None)
                    });
                    return self.settle(index, fate);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.close(index, Fate::Fail(RequestError::from(e))),
            };
            conn.last_progress = Instant::now();
            // The first request of a connection the drain waited for: served, then closed.
            let first_while_closing =
                std::mem::take(&mut conn.fresh) && self.shared.mail.closing.load(Ordering::Acquire);
            let len = if from_scratch { n } else { conn.input.len() };
            let mut consumed = 0;
            let fate = self.callback_with(index, Some((from_scratch, len)), |handler, state, io, data| {
                if let Some(state) = state {
                    consumed = handler.input(state, io, data)?.min(data.len());
                }
                Ok(None)
            });
            if !matches!(fate, Fate::Open) {
                return self.close(index, fate);
            }
            let max_input = self.config.max_input;
            let Some(conn) = self.conns[index].as_mut() else {
                return;
            };
            if from_scratch {
                conn.input.extend_from_slice(&self.scratch[consumed..n]);
            } else {
                conn.input.drain(..consumed);
            }
            if conn.input.is_empty() && conn.input.capacity() > KEEP_CAPACITY {
                conn.input = Vec::new();
            }
            if conn.input.len() > max_input {
                let error = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than max_input ({max_input} bytes) of unconsumed input"),
                );
                return self.close(index, Fate::Fail(RequestError::Io(error)));
            }
            self.settle(index, Fate::Open);
            if consumed > 0 {
                // The handler may have stopped for its output, which the socket has taken.
                self.redeliver_all(index);
            }
            if first_while_closing {
                if let Some(conn) = self.conns[index].as_mut() {
                    conn.close_after_flush = true;
                    if conn.socket.is_some() && conn.pending() == 0 {
                        return self.close(index, Fate::Close(CloseReason::ServerClose));
                    }
                }
                return;
            }
            if n < SCRATCH && from_scratch && !until_blocked {
                return;
            }
        }
    }

    /// Applies the sends and closes queued by `ConnHandle`s.
    fn take_messages(&mut self) {
        let messages = std::mem::take(&mut *self.shared.mail.queue.lock().unwrap_or_else(|e| e.into_inner()));
        for message in messages {
            let (token, generation) = match message {
                Message::Send {
                    token, generation, ..
                }
                | Message::Close { token, generation } => (token, generation),
            };
            let Some(conn) = self.conns.get_mut(token).and_then(Option::as_mut) else {
                continue;
            };
            if conn.generation != generation || conn.close_after_flush && conn.pending() == 0 {
                continue;
            }
            match message {
                Message::Send { data, .. } => conn.output.extend_from_slice(&data),
                Message::Close { .. } => conn.close_after_flush = true,
            }
            self.settle(token, Fate::Open);
        }
    }

    /// Takes back the lent connections given back since the last look.
    fn take_returned(&mut self) {
        let returned = std::mem::take(&mut *self.shared.returned.lock().unwrap_or_else(|e| e.into_inner()));
        for (token, generation, request, close) in returned {
            self.give_back(token, generation, request, close);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, index, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if conn.generation != generation {
                continue;
            }
            if conn.preparing.is_some() {
                if conn.preparing == Some(at) {
                    let limit = self.core.context().transport.prepare_timeout();
                    let error = io::Error::new(io::ErrorKind::TimedOut, format!("not done within {limit:?}"));
                    self.close(index, Fate::Fail(RequestError::Prepare(error)));
                }
                continue;
            }
            if conn.timer != Some(at) {
                continue;
            }
            conn.timer = None;
            let fate = self.callback(index, |handler, state, io, _| {
                if let Some(state) = state {
                    handler.timer(state, io)?;
                }
                Ok(None)
            });
            // Draining: the reply the timer held is sent, then the connection is closed.
            if self.shared.mail.closing.load(Ordering::Acquire) {
                if let Some(conn) = self.conns[index].as_mut().filter(|c| c.timer.is_none()) {
                    conn.close_after_flush = true;
                }
            }
            self.settle(index, fate);
        }
    }

    fn sweep_idle(&mut self) {
        let (Some(idle), Some(at)) = (self.config.idle_timeout, self.next_sweep) else {
            return;
        };
        let now = Instant::now();
        if now < at {
            return;
        }
        self.next_sweep = Some(now + sweep_every(idle));
        for index in 0..self.conns.len() {
            let idle_for = match &self.conns[index] {
                // A lent connection is timed by its borrower, a preparing one by its deadline.
                Some(conn) if conn.socket.is_some() && conn.preparing.is_none() => {
                    now.saturating_duration_since(conn.last_progress)
                }
                _ => continue,
            };
            if idle_for >= idle {
                self.close(index, Fate::Fail(RequestError::TimedOut(idle)));
            }
        }
    }

    /// `server_close`: stop reading; close what has nothing left to send and no timer pending
    /// (the others close once their output is written, their timer has fired, or
    /// `DRAIN_TIMEOUT` has passed).
    fn begin_drain(&mut self) {
        for index in 0..self.conns.len() {
            // What a client sent before the close is served (a reload or a stop must not drop
            // a request that has arrived): read at once, as if its event had come.
            let unread = self.conns[index]
                .as_ref()
                .is_some_and(|c| c.socket.is_some() && !c.close_after_flush && c.timer.is_none());
            if unread {
                self.final_read = true;
                if self.conns[index].as_ref().is_some_and(|c| c.preparing.is_some()) {
                    self.step_prepare(index);
                } else {
                    self.on_readable(index, true);
                }
                self.final_read = false;
            }
            if let Some(conn) = self.conns[index].as_mut() {
                // A connection waiting on its timer (a reply in flight) is closed after it fires.
                if conn.timer.is_some() {
                    continue;
                }
                // One whose first request has not arrived yet gets it served, or is closed at
                // the grace's end.
                if conn.fresh && conn.socket.is_some() {
                    let grace = Instant::now() + Multiplex::FIRST_MESSAGE_GRACE;
                    self.fresh_deadline = Some(self.fresh_deadline.map_or(grace, |d| d.max(grace)));
                    continue;
                }
                conn.close_after_flush = true;
                // A lent one (a message in progress) is closed when it comes back.
                if conn.socket.is_none() {
                    continue;
                }
                if conn.pending() == 0 {
                    self.close(index, Fate::Close(CloseReason::ServerClose));
                }
            }
        }
    }

    /// Closes connection `index`: `handle_error` for a failure, `closed`, `shutdown_request`.
    fn close(&mut self, index: usize, fate: Fate) {
        if let Some(conn) = self.conns[index].as_mut().filter(|c| c.socket.is_none()) {
            // Lent: its borrower owns the socket; closed when it comes back.
            conn.close_after_flush = true;
            return;
        }
        let Some(mut conn) = self.conns[index].take() else {
            return;
        };
        self.free.push(index);
        let reason = match fate {
            Fate::Open => CloseReason::Closed,
            Fate::Close(reason) => reason,
            Fate::Fail(error) => {
                self.core.report(&conn.client_address, &error);
                CloseReason::Error
            }
        };
        let reason = if self.shared.mail.closing.load(Ordering::Acquire) && reason != CloseReason::Error {
            CloseReason::ServerClose
        } else {
            reason
        };
        // No deregister: closing the descriptor (its only one) takes it out of the epoll set,
        // which saves a system call per connection.
        if let Some(state) = conn.state.take() {
            let handler = self.core.handler();
            let address = &conn.client_address;
            if let Err(panic) = guarded(|| {
                handler.closed(state, address, reason);
                Ok(())
            }) {
                self.core.report(address, &panic);
            }
        }
        let Some(socket) = conn.socket.take() else {
            return;
        };
        self.core.shutdown_request(socket);
        self.limit.release();
    }
}

/// How often idle connections are looked for: a quarter of the timeout, at least every 10 ms.
fn sweep_every(idle: Duration) -> Duration {
    (idle / 4).max(Duration::from_millis(10))
}
