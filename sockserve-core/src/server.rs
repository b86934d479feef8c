//! The server: a transport, a concurrency mix-in and a handler, composed at compile time;
//! made, bound, closed here, served in `serve.rs`.
//!
//! The flow of a request reads top to bottom in [`Server::verify_and_process`] (Python's
//! `_handle_request_noblock`): verify it, process it; a request refused by
//! `verify_request` is closed through `shutdown_request`. Processing belongs to the
//! concurrency mix-in, which ends up in [`Pipeline::process_inline`]: `finish_request`, on
//! failure `handle_error`, then always `shutdown_request`.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::concurrency::{Concurrency, ProcessRequest};
use crate::context::{Control, ServerContext, ShutdownHandle};
use crate::options::Options;
use crate::pipeline::Pipeline;
use crate::transport::{ToAddress, Transport};

/// A server: a [`Transport`], a [`Concurrency`] mix-in and a handler, composed at compile
/// time. The twelve Python classes are aliases of it ([`ThreadingTcpServer`](crate::ThreadingTcpServer)
/// and friends).
///
/// Dropping a server closes it ([`server_close`](Server::server_close)), like leaving
/// Python's `with` block.
pub struct Server<T: Transport, C: Concurrency, H> {
    pub(crate) core: Arc<Pipeline<T, H>>,
    pub(crate) concurrency: C,
    /// The steps that need the handler to fit the transport and the mix-in, bound once when
    /// the server is made, so the methods of a made server ask nothing more of its types.
    pub(crate) steps: Steps<T, C, H>,
    closed: AtomicBool,
}

/// `verify_request`, then `process_request` or `shutdown_request`, for one request.
type HandleOne<T, C, H> = fn(&C, &Arc<Pipeline<T, H>>, <T as Transport>::Request, <T as Transport>::Address);

/// [`ProcessRequest::serving`] for `C`, `T` and `H`.
type Serving<T, C, H> = fn(&C, &Arc<Pipeline<T, H>>) -> io::Result<()>;

/// The handler- and mix-in-specific steps of the serve loop, taken from the bounded impl when
/// a server is made.
pub(crate) struct Steps<T: Transport, C, H> {
    pub(crate) handle_one: HandleOne<T, C, H>,
    pub(crate) service_actions: fn(&Pipeline<T, H>),
    pub(crate) handle_timeout: fn(&Pipeline<T, H>),
    /// [`ProcessRequest::serving`], before a serve loop takes its first request.
    pub(crate) serving: Serving<T, C, H>,
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
    C: ProcessRequest<T, H>,
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
        Self::unbound(address, handler, options)?.bound_and_activated()
    }

    /// Creates a server whose socket is not bound yet (Python's `bind_and_activate=False`):
    /// set socket options through [`transport`](Server::transport), then call
    /// [`server_bind`](Server::server_bind) and [`server_activate`](Server::server_activate).
    pub fn unbound(
        address: impl ToAddress<T::BindAddress>,
        handler: H,
        options: Options,
    ) -> io::Result<Self> {
        options.validate()?;
        let transport = T::open(address.to_address()?, &options)?;
        Self::from_transport(transport, handler, options)
    }

    /// Creates a server from a transport the caller made (and bound, if it binds at all):
    /// the way in for custom request sources.
    pub fn from_transport(transport: T, handler: H, options: Options) -> io::Result<Self> {
        options.validate()?;
        let concurrency = C::new(&options)?;
        let context = ServerContext {
            transport,
            options,
            control: Arc::new(Control::new()?),
        };
        Ok(Server {
            core: Arc::new(Pipeline { context, handler }),
            concurrency,
            steps: Steps {
                handle_one: Self::verify_and_process,
                service_actions: C::run_service_actions,
                handle_timeout: C::run_handle_timeout,
                serving: C::serving,
            },
            closed: AtomicBool::new(false),
        })
    }

    /// One request, from `get_request` on (Python's `_handle_request_noblock`): verify it,
    /// then process it, or close a refused one through `shutdown_request`. With a prepare
    /// stage ([`Transport::PREPARES`]: a TLS handshake, a PROXY header) the request is
    /// verified after it, where it is processed, so the accept loop never waits on a client.
    fn verify_and_process(
        concurrency: &C,
        core: &Arc<Pipeline<T, H>>,
        request: T::Request,
        client_address: T::Address,
    ) {
        if T::PREPARES || C::verify_request(core, &request, &client_address) {
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

    /// `server_bind`, then `server_activate` (Python's `bind_and_activate=True`); a failure
    /// drops (and so closes) the server.
    pub(crate) fn bound_and_activated(mut self) -> io::Result<Self> {
        self.server_bind()?;
        self.server_activate()?;
        Ok(self)
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

    /// Python's `shutdown()`: stops `serve_forever` and waits until it has returned. Callable
    /// from any thread; from inside a handler of a synchronous server it returns at once and
    /// the loop stops after that request. Handlers of threading and forking servers may still
    /// be running when it returns: [`server_close`](Server::server_close) waits for them.
    pub fn shutdown(&self) {
        self.core.context.control.shutdown()
    }

    /// Whether a shutdown has been asked for: from `shutdown()` (here, in another thread or in
    /// a forked child) until the next `serve_forever` starts. A `serve_forever` started while
    /// it is pending returns at once, as Python's does.
    pub fn is_shutdown_requested(&self) -> bool {
        self.core.context.is_shutdown_requested()
    }

    /// A handle that calls [`shutdown`](Server::shutdown) from elsewhere (a signal thread,
    /// say).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.core.context.shutdown_handle()
    }

    /// Ends the persistent connections whose handler waits for its next request: see
    /// [`ShutdownHandle::close_idle_connections`]. A graceful stop on a signal does this.
    pub fn close_idle_connections(&self) {
        self.shutdown_handle().close_idle_connections()
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
