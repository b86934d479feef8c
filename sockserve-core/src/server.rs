//! The server: one request's path from `get_request` to `shutdown_request`, the serve loop,
//! and shutdown.
//!
//! The flow of a request reads top to bottom in [`Server::handle_one`] (Python's
//! `_handle_request_noblock`): get it, verify it, process it; a request refused by
//! `verify_request` is closed through `shutdown_request`. Processing belongs to the
//! concurrency mix-in, which ends up in [`ServerCore::process_inline`]: `finish_request`, on
//! failure `handle_error`, then always `shutdown_request`.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crate::concurrency::{Concurrency, Process};
use crate::handler::{guarded, report_error, Dispatch, RequestError};
use crate::transport::{ToAddress, Transport};
use crate::{sys, Options};

/// The shutdown machinery shared by a server, its handlers and its [`ShutdownHandle`]s.
///
/// A shutdown request is an eventfd made readable, so it wakes the serve loop at once, and
/// it crosses `fork`: `shutdown()` called in a forked child reaches the parent's loop.
struct Control {
    wake: OwnedFd,
    requested: AtomicBool,
    state: Mutex<LoopState>,
    stopped: Condvar,
    owner: libc::pid_t,
}

#[derive(Default)]
struct LoopState {
    serving: Option<ThreadId>,
}

impl Control {
    fn new() -> io::Result<Self> {
        Ok(Control {
            wake: sys::eventfd()?,
            requested: AtomicBool::new(false),
            state: Mutex::new(LoopState::default()),
            stopped: Condvar::new(),
            owner: sys::getpid(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoopState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Asks the loop to stop; waits until it has, unless called from the serving thread
    /// (a handler of a synchronous server) or from a forked child.
    fn shutdown(&self) {
        self.requested.store(true, Ordering::Release);
        sys::eventfd_signal(self.wake.as_fd());
        if sys::getpid() != self.owner {
            return;
        }
        let mut state = self.lock();
        if state.serving == Some(thread::current().id()) {
            return;
        }
        while state.serving.is_some() {
            state = self.stopped.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn begin_serving(&self) -> io::Result<ServingGuard<'_>> {
        let mut state = self.lock();
        if state.serving.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "serve_forever is already running",
            ));
        }
        state.serving = Some(thread::current().id());
        Ok(ServingGuard(self))
    }
}

/// Marks the loop as stopped when `serve_forever` returns (or unwinds), clearing the request
/// so the server can serve again, like Python's.
struct ServingGuard<'a>(&'a Control);

impl Drop for ServingGuard<'_> {
    fn drop(&mut self) {
        let control = self.0;
        let mut state = control.lock();
        control.requested.store(false, Ordering::Release);
        sys::eventfd_clear(control.wake.as_fd());
        state.serving = None;
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

    /// Whether a shutdown has been asked for and the loop has not stopped yet.
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
    transport: T,
    options: Options,
    control: Arc<Control>,
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
    /// Whether a shutdown has been asked for and the loop has not stopped yet.
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

/// The part of a server that request processing needs: transport, options, handler. The
/// concurrency mix-ins share it (`Arc`) with their threads and children.
pub struct ServerCore<T: Transport, H> {
    context: ServerContext<T>,
    handler: H,
}

impl<T: Transport, H> ServerCore<T, H>
where
    T::Kind: Dispatch<T, H>,
{
    /// What handlers see of the server.
    pub fn context(&self) -> &ServerContext<T> {
        &self.context
    }

    /// The handler (the server-wide state).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Python's `verify_request`: asks the handler. A panic counts as a refusal and is
    /// reported to `handle_error`.
    pub fn verify_request(&self, request: &T::Request, client_address: &T::Address) -> bool {
        match guarded(|| Ok(T::Kind::verify_request(&self.handler, request, client_address))) {
            Ok(verdict) => verdict,
            Err(error) => {
                self.handle_error(client_address, &error);
                false
            }
        }
    }

    /// Python's `finish_request`: runs the handler's setup, handle and finish for one request.
    pub fn finish_request(
        &self,
        request: &mut T::Request,
        client_address: &T::Address,
    ) -> Result<(), RequestError> {
        T::Kind::finish_request(&self.handler, request, client_address, &self.context)
    }

    /// Python's `handle_error`: asks the handler. A panic inside it is logged, not spread.
    pub fn handle_error(&self, client_address: &T::Address, error: &RequestError) {
        if let Err(panic) = guarded(|| {
            T::Kind::handle_error(&self.handler, client_address, error);
            Ok(())
        }) {
            report_error(format_args!(
                "handle_error for {client_address} failed: {panic} (while reporting: {error})"
            ));
        }
    }

    /// Python's `shutdown_request`.
    pub fn shutdown_request(&self, request: T::Request) {
        self.context.transport.shutdown_request(request)
    }

    /// Python's `close_request`.
    pub fn close_request(&self, request: T::Request) {
        self.context.transport.close_request(request)
    }

    /// Serves one request where the caller stands (Python's synchronous `process_request`):
    /// `finish_request`; on failure `handle_error`; then always `shutdown_request`. Returns
    /// whether the request succeeded.
    pub fn process_inline(&self, mut request: T::Request, client_address: T::Address) -> bool {
        let result = self.finish_request(&mut request, &client_address);
        if let Err(error) = &result {
            self.handle_error(&client_address, error);
        }
        self.shutdown_request(request);
        result.is_ok()
    }

    fn handle_timeout(&self) {
        run_hook("handle_timeout", || {
            T::Kind::handle_timeout(&self.handler, &self.context)
        });
    }

    fn service_actions(&self) {
        run_hook("service_actions", || {
            T::Kind::service_actions(&self.handler, &self.context)
        });
    }
}

/// Runs a handler hook that reports to nobody: a panic in it is logged, not spread.
fn run_hook(name: &str, hook: impl FnOnce()) {
    if let Err(e) = guarded(|| {
        hook();
        Ok(())
    }) {
        report_error(format_args!("{name} failed: {e}"));
    }
}

/// How the loop reacts to a failed `get_request`.
enum AcceptFailure {
    /// Interrupted: try again at once.
    Retry,
    /// The failure belongs to one connection (it was reset or aborted before accept):
    /// skip it.
    Skip,
    /// Out of descriptors or memory, or an error of a custom source: back off and retry;
    /// the server recovers when the resource frees up.
    BackOff,
    /// The listening socket itself is unusable.
    Fatal,
}

fn classify(error: &io::Error) -> AcceptFailure {
    if error.kind() == io::ErrorKind::Interrupted {
        return AcceptFailure::Retry;
    }
    match error.raw_os_error() {
        Some(
            libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::ECONNREFUSED
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ETIMEDOUT,
        ) => AcceptFailure::Skip,
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT) => AcceptFailure::Fatal,
        _ => AcceptFailure::BackOff,
    }
}

/// Back-off while `get_request` keeps failing (EMFILE and friends): the loop sleeps
/// 10 ms, doubling up to one second, and logs once per episode.
#[derive(Default)]
struct BackOff {
    failures: u64,
}

impl BackOff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn failed(&mut self, error: &io::Error) -> Duration {
        if self.failures == 0 {
            log::warn!("get_request failed: {error}; backing off until it recovers");
        }
        self.failures += 1;
        let shift = (self.failures - 1).min(7) as u32;
        (Self::FIRST * 2u32.pow(shift)).min(Self::MAX)
    }

    #[inline]
    fn succeeded(&mut self) {
        if self.failures > 0 {
            log::info!("get_request recovered after {} failed attempts", self.failures);
            self.failures = 0;
        }
    }
}

/// At most this many requests are taken per loop iteration before `service_actions` runs
/// and the shutdown flag is checked again.
const BATCH: usize = 64;

/// A server: a [`Transport`], a [`Concurrency`] mix-in and a handler, composed at compile
/// time. The twelve Python classes are aliases of it ([`ThreadingTcpServer`](crate::ThreadingTcpServer)
/// and friends).
///
/// Dropping a server closes it ([`server_close`](Server::server_close)), like leaving
/// Python's `with` block.
pub struct Server<T: Transport, C: Concurrency, H> {
    core: Arc<ServerCore<T, H>>,
    concurrency: C,
    /// The steps that need the handler to fit the transport and the mix-in, bound once when
    /// the server is made, so the methods of a made server ask nothing more of its types.
    steps: Steps<T, C, H>,
    closed: AtomicBool,
}

/// `verify_request`, then `process_request` or `shutdown_request`, for one request.
type HandleOne<T, C, H> =
    fn(&C, &Arc<ServerCore<T, H>>, <T as Transport>::Request, <T as Transport>::Address);

/// The handler- and mix-in-specific steps of the serve loop, taken from the bounded impl when
/// a server is made.
struct Steps<T: Transport, C, H> {
    handle_one: HandleOne<T, C, H>,
    service_actions: fn(&ServerCore<T, H>),
    handle_timeout: fn(&ServerCore<T, H>),
}

impl<T: Transport, C: Concurrency, H> fmt::Debug for Server<T, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("server_address", &self.core.context.server_address())
            .field("concurrency", &std::any::type_name::<C>())
            .finish_non_exhaustive()
    }
}

impl<T, C, H> Server<T, C, H>
where
    T: Transport,
    T::Kind: Dispatch<T, H>,
    C: Process<T, H>,
{
    /// Creates a server on `address` with the default [`Options`], bound and listening
    /// (Python's `Server(address, Handler)`).
    pub fn bind(address: impl ToAddress<T::BindAddress>, handler: H) -> io::Result<Self> {
        Self::with_options(address, handler, Options::DEFAULT)
    }

    /// Creates a server with `options`, bound and listening. A failed bind closes the socket.
    pub fn with_options(
        address: impl ToAddress<T::BindAddress>,
        handler: H,
        options: Options,
    ) -> io::Result<Self> {
        let mut server = Self::unbound(address, handler, options)?;
        server.server_bind()?;
        server.server_activate()?;
        Ok(server)
    }

    /// Creates a server whose socket is not bound yet (Python's `bind_and_activate=False`):
    /// set socket options through [`transport`](Server::transport), then call
    /// [`server_bind`](Server::server_bind) and [`server_activate`](Server::server_activate).
    pub fn unbound(
        address: impl ToAddress<T::BindAddress>,
        handler: H,
        options: Options,
    ) -> io::Result<Self> {
        let transport = T::open(address.to_address()?, &options)?;
        Self::from_transport(transport, handler, options)
    }

    /// Creates a server from a transport the caller made (and bound, if it binds at all):
    /// the way in for custom request sources.
    pub fn from_transport(transport: T, handler: H, options: Options) -> io::Result<Self> {
        sys::ignore_default_sigpipe();
        let concurrency = C::new(&options)?;
        let context = ServerContext {
            transport,
            options,
            control: Arc::new(Control::new()?),
        };
        Ok(Server {
            core: Arc::new(ServerCore { context, handler }),
            concurrency,
            steps: Steps {
                handle_one: Self::verify_and_process,
                service_actions: ServerCore::service_actions,
                handle_timeout: ServerCore::handle_timeout,
            },
            closed: AtomicBool::new(false),
        })
    }

    /// One request, from `get_request` on (Python's `_handle_request_noblock`): verify it,
    /// then process it, or close a refused one through `shutdown_request`.
    fn verify_and_process(
        concurrency: &C,
        core: &Arc<ServerCore<T, H>>,
        request: T::Request,
        client_address: T::Address,
    ) {
        if core.verify_request(&request, &client_address) {
            concurrency.process_request(core, request, client_address);
        } else {
            core.shutdown_request(request);
        }
    }
}

impl<T: Transport, C: Concurrency, H> Server<T, C, H> {
    fn parts_mut(&mut self) -> io::Result<(&mut T, &Options)> {
        let core = Arc::get_mut(&mut self.core).ok_or_else(|| {
            io::Error::new(io::ErrorKind::ResourceBusy, "the server has requests in flight")
        })?;
        Ok((&mut core.context.transport, &core.context.options))
    }

    /// Binds the socket (Python's `server_bind`); `server_address` then holds the real address.
    pub fn server_bind(&mut self) -> io::Result<()> {
        let (transport, options) = self.parts_mut()?;
        transport.server_bind(options)
    }

    /// Starts listening (Python's `server_activate`).
    pub fn server_activate(&mut self) -> io::Result<()> {
        let (transport, options) = self.parts_mut()?;
        transport.server_activate(options)
    }

    /// Serves requests until [`shutdown`](Server::shutdown), waking at least every
    /// `options.poll_interval` to run `service_actions` (Python's `serve_forever`).
    pub fn serve_forever(&self) -> io::Result<()> {
        self.serve_forever_with(self.core.context.options.poll_interval)
    }

    /// [`serve_forever`](Server::serve_forever) with an explicit `poll_interval` (Python's
    /// `serve_forever(poll_interval)`).
    pub fn serve_forever_with(&self, poll_interval: Duration) -> io::Result<()> {
        // A zero interval would turn the idle loop into a busy loop.
        let poll_interval = poll_interval.max(Duration::from_millis(1));
        let control = &*self.core.context.control;
        let _serving = control.begin_serving()?;
        let transport = &self.core.context.transport;
        let mut backoff = BackOff::default();
        loop {
            let mut taken = 0;
            let mut delay = None;
            // A server closed from another thread stops serving: its socket accepts no more.
            if self.is_closed() {
                return Ok(());
            }
            while taken < BATCH && !control.is_requested() {
                match transport.get_request() {
                    Ok(Some((request, client_address))) => {
                        backoff.succeeded();
                        taken += 1;
                        self.handle_one(request, client_address);
                    }
                    Ok(None) => break,
                    Err(error) => match classify(&error) {
                        AcceptFailure::Retry => {}
                        AcceptFailure::Skip => log::debug!("get_request: skipped a failed request: {error}"),
                        AcceptFailure::BackOff => {
                            delay = Some(backoff.failed(&error));
                            break;
                        }
                        // Closed from another thread under the loop: not a failure.
                        AcceptFailure::Fatal if self.is_closed() => return Ok(()),
                        AcceptFailure::Fatal => return Err(error),
                    },
                }
            }
            if control.is_requested() {
                return Ok(());
            }
            self.concurrency.service_actions();
            (self.steps.service_actions)(&self.core);
            if taken == BATCH {
                continue;
            }
            // During a back-off the listening socket stays readable: wait on the wake-up only.
            let (source, timeout) = match delay {
                Some(delay) => (None, delay),
                None => (transport.fileno(), poll_interval),
            };
            let [_, woken] = sys::poll_readable([source, Some(control.wake.as_fd())], Some(timeout))?;
            if woken {
                control.requested.store(true, Ordering::Release);
            }
        }
    }

    /// Serves one request, waiting up to `options.timeout` for it; calls `handle_timeout`
    /// when none arrives (Python's `handle_request`). Forked children that have exited are
    /// reaped before it returns.
    pub fn handle_request(&self) -> io::Result<()> {
        let transport = &self.core.context.transport;
        let options = &self.core.context.options;
        let deadline = options.timeout.map(|t| Instant::now() + t);
        let result = loop {
            match transport.get_request() {
                Ok(Some((request, client_address))) => {
                    self.handle_one(request, client_address);
                    break Ok(());
                }
                Ok(None) => {}
                Err(error) => match classify(&error) {
                    AcceptFailure::Retry | AcceptFailure::Skip => continue,
                    AcceptFailure::BackOff | AcceptFailure::Fatal => break Err(error),
                },
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining == Some(Duration::ZERO) {
                self.concurrency.handle_timeout();
                (self.steps.handle_timeout)(&self.core);
                break Ok(());
            }
            let fd = transport.fileno();
            // A source without a descriptor is asked again every poll_interval.
            let wait = match fd {
                Some(_) => remaining,
                None => Some(remaining.map_or(options.poll_interval, |r| r.min(options.poll_interval))),
            };
            sys::poll_readable([fd], wait)?;
        };
        self.concurrency.service_actions();
        result
    }

    /// One request, from `get_request` on: the steps of `verify_and_process`.
    fn handle_one(&self, request: T::Request, client_address: T::Address) {
        (self.steps.handle_one)(&self.concurrency, &self.core, request, client_address)
    }

    /// Python's `shutdown()`: stops `serve_forever` and waits until it has returned. Callable
    /// from any thread; from inside a handler of a synchronous server it returns at once and
    /// the loop stops after that request. Handlers of threading and forking servers may still
    /// be running when it returns: [`server_close`](Server::server_close) waits for them.
    pub fn shutdown(&self) {
        self.core.context.control.shutdown()
    }

    /// A handle that calls [`shutdown`](Server::shutdown) from elsewhere (a signal thread,
    /// say).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.core.context.shutdown_handle()
    }

    /// Python's `server_close()`: stops accepting, waits for handler threads or children
    /// (`block_on_close`), releases the socket file of a Unix server. Idempotent; takes
    /// `&self`, so a server shared with the thread that serves it (`Arc<Server>`) can be
    /// closed from another; dropping the server calls it.
    pub fn server_close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.core.context.transport.server_close();
        self.concurrency.server_close();
    }

    /// Whether [`server_close`](Server::server_close) has been called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Python's `fileno()`: the descriptor the server waits on for requests; `None` once the
    /// server is closed (where Python returns -1), and for a transport without a descriptor.
    pub fn fileno(&self) -> Option<BorrowedFd<'_>> {
        if self.is_closed() {
            return None;
        }
        self.core.context.transport.fileno()
    }

    /// The address the server is bound to (Python's `server_address`): the real port when
    /// port 0 was asked.
    pub fn server_address(&self) -> T::ServerAddress {
        self.core.context.server_address()
    }

    /// The handler: the server-wide state.
    pub fn handler(&self) -> &H {
        &self.core.handler
    }

    /// The options the server was made with.
    pub fn options(&self) -> &Options {
        &self.core.context.options
    }

    /// The transport (sockets, for options).
    pub fn transport(&self) -> &T {
        &self.core.context.transport
    }

    /// What handlers see as `server`.
    pub fn context(&self) -> &ServerContext<T> {
        &self.core.context
    }

    /// The concurrency mix-in (counters such as `active_children`).
    pub fn concurrency(&self) -> &C {
        &self.concurrency
    }
}

impl<T: Transport, C: Concurrency, H> Drop for Server<T, C, H> {
    fn drop(&mut self) {
        self.server_close();
    }
}
