//! Handler kinds: what runs for one request (Python's `BaseRequestHandler`,
//! `StreamRequestHandler`, `DatagramRequestHandler`).
//!
//! The handler value is the server-wide state, shared by every request as `&self` (Python's
//! `self.server`, where applications keep their state). Per-request state lives in the
//! request context ([`StreamRequest`], [`DatagramRequest`], [`BaseRequest`]) and in locals
//! of `handle`.
//!
//! Each request runs `setup`, then `handle`, then `finish`; `finish` runs even when `handle`
//! fails or panics, `handle` and `finish` do not run when `setup` fails. An error or panic
//! in any of them reaches [`handle_error`](StreamHandler::handle_error).
//!
//! The server-level hooks Python overrides on the server class (`verify_request`,
//! `handle_error`, `handle_timeout`, `service_actions`) are methods of the same traits, with
//! Python's defaults.
//!
//! **State and concurrency (the seed's warning):** a threading server runs handlers in many
//! threads at once, so shared state needs locks (the trait requires `Sync` for threading). A
//! forking server runs each request in a child process: changes a handler makes to its state
//! happen in the child's copy of memory and are lost when the child exits; the parent never
//! sees them.

use std::any::Any;
use std::fmt;
use std::io::{self, BufReader, Cursor, Write};
use std::panic::{self, AssertUnwindSafe};

use crate::server::ServerContext;
use crate::transport::{
    BaseKind, Connection, DatagramKind, DatagramTransport, StreamKind, StreamTransport, Transport,
};

/// Why a request failed: the handler returned an error, or panicked.
#[derive(Debug)]
pub enum RequestError {
    /// `setup`, `handle` or `finish` returned an error, or the server could not take the
    /// request further (a datagram was truncated, a thread or process could not start).
    Io(io::Error),
    /// A handler method panicked; the panic message.
    Panic(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Io(e) => write!(f, "{e}"),
            RequestError::Panic(msg) => write!(f, "handler panicked: {msg}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Io(e) => Some(e),
            RequestError::Panic(_) => None,
        }
    }
}

impl From<io::Error> for RequestError {
    fn from(e: io::Error) -> Self {
        RequestError::Io(e)
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "(a non-string panic payload)".to_string(),
        },
    }
}

/// Runs `f`, turning an error or a panic into a [`RequestError`].
pub(crate) fn guarded<R>(f: impl FnOnce() -> Result<R, RequestError>) -> Result<R, RequestError> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(RequestError::Panic(panic_message(payload))),
    }
}

/// Python's `BaseRequestHandler.__init__`: setup, then handle and finish (finish even when
/// handle fails). The first error wins.
fn run_phases<R>(
    req: &mut R,
    setup: impl FnOnce(&mut R) -> io::Result<()>,
    handle: impl FnOnce(&mut R) -> io::Result<()>,
    finish: impl FnOnce(&mut R) -> io::Result<()>,
) -> Result<(), RequestError> {
    guarded(|| Ok(setup(req)?))?;
    let handled = guarded(|| Ok(handle(req)?));
    let finished = guarded(|| Ok(finish(req)?));
    handled.and(finished)
}

/// Logs a failed request with its client address: the default `handle_error`.
pub fn log_request_error(client_address: &dyn fmt::Display, error: &RequestError) {
    log::error!("error handling request from {client_address}: {error}");
}

/// The request phases, shared by the three handler traits: `$request` is the trait's request
/// context, `$what` says what `handle` serves and `$after` what happens after `finish`.
macro_rules! request_phases {
    ($request:ident, $what:literal, $after:literal) => {
        /// Called before `handle` (Python's `setup`). Default: nothing.
        fn setup(&self, req: &mut $request<'_, T>) -> io::Result<()> {
            let _ = req;
            Ok(())
        }
        #[doc = concat!("Serves ", $what, " (Python's `handle`).")]
        fn handle(&self, req: &mut $request<'_, T>) -> io::Result<()>;
        #[doc = concat!("Called after `handle`, even when it failed or panicked (Python's `finish`). ", $after, "Default: nothing.")]
        fn finish(&self, req: &mut $request<'_, T>) -> io::Result<()> {
            let _ = req;
            Ok(())
        }
    };
}

/// The server-level hooks, shared by the three handler traits.
macro_rules! server_hooks {
    () => {
        /// Decides whether to serve a request (Python's `verify_request`). A request refused
        /// here is closed through `shutdown_request`; the handler never sees it. Default:
        /// serve every request.
        fn verify_request(&self, request: &T::Request, client_address: &T::Address) -> bool {
            let _ = (request, client_address);
            true
        }

        /// Called when a request fails: a handler method returned an error or panicked
        /// (Python's `handle_error`). The server goes on serving. Default: log the error with
        /// the client address through the `log` crate at error level.
        fn handle_error(&self, client_address: &T::Address, error: &RequestError) {
            log_request_error(client_address, error)
        }

        /// Called by `handle_request` when no request arrived within `timeout` (Python's
        /// `handle_timeout`). Default: nothing.
        fn handle_timeout(&self, server: &ServerContext<T>) {
            let _ = server;
        }

        /// Called on every iteration of `serve_forever`'s loop, at least every
        /// `poll_interval` (Python's `service_actions`). Default: nothing.
        fn service_actions(&self, server: &ServerContext<T>) {
            let _ = server;
        }
    };
}

/// The writing side of a stream request (Python's `wfile`).
///
/// Unbuffered (`wbufsize` 0, the default): every `write` sends all of its bytes before it
/// returns, like Python's `_SocketWriter`. Buffered (`wbufsize` > 0): writes collect in a
/// buffer of that size, flushed after `finish()`.
pub struct Wfile<'a, C: Connection> {
    inner: WfileInner<C::Writer<'a>>,
}

enum WfileInner<W: Write> {
    Unbuffered(W),
    Buffered(io::BufWriter<W>),
}

impl<'a, C: Connection> Wfile<'a, C> {
    fn new(conn: &'a C, wbufsize: usize) -> Self {
        let writer = conn.writer();
        let inner = if wbufsize == 0 {
            WfileInner::Unbuffered(writer)
        } else {
            WfileInner::Buffered(io::BufWriter::with_capacity(wbufsize, writer))
        };
        Wfile { inner }
    }
}

impl<C: Connection> fmt::Debug for Wfile<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buffered = match &self.inner {
            WfileInner::Unbuffered(_) => None,
            WfileInner::Buffered(w) => Some(w.buffer().len()),
        };
        f.debug_struct("Wfile").field("buffered", &buffered).finish()
    }
}

impl<C: Connection> Write for Wfile<'_, C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            WfileInner::Unbuffered(w) => w.write_all(buf).map(|()| buf.len()),
            WfileInner::Buffered(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            WfileInner::Unbuffered(_) => Ok(()),
            WfileInner::Buffered(w) => w.flush(),
        }
    }
}

/// One connection, as a [`StreamHandler`] sees it (Python's `StreamRequestHandler`
/// attributes).
pub struct StreamRequest<'a, T: StreamTransport> {
    /// Buffered reader over the connection (`rbufsize`).
    pub rfile: BufReader<<T::Request as Connection>::Reader<'a>>,
    /// Writer to the connection (`wbufsize`).
    pub wfile: Wfile<'a, T::Request>,
    /// The connection itself (Python's `self.request`/`self.connection`).
    pub request: &'a T::Request,
    /// The client's address.
    pub client_address: &'a T::Address,
    /// The server (Python's `self.server`): address, options, shutdown.
    pub server: &'a ServerContext<T>,
}

impl<T: StreamTransport> fmt::Debug for StreamRequest<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRequest")
            .field("client_address", self.client_address)
            .finish_non_exhaustive()
    }
}

/// Handles connections of a stream transport ([`Tcp`](crate::transport::Tcp),
/// [`UnixStream`](crate::transport::UnixStream)): Python's `StreamRequestHandler`.
///
/// ```no_run
/// use std::io::{self, BufRead, Write};
/// use sockserve_core::{StreamHandler, StreamRequest, ThreadingTcpServer, transport::Tcp};
///
/// struct Echo;
///
/// impl StreamHandler for Echo {
///     fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
///         let mut line = String::new();
///         while req.rfile.read_line(&mut line)? > 0 {
///             req.wfile.write_all(line.as_bytes())?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
///
/// let server = ThreadingTcpServer::bind("127.0.0.1:9000", Echo)?;
/// server.serve_forever()?;
/// # Ok::<(), io::Error>(())
/// ```
///
/// To serve several stream transports with one handler, implement it generically:
/// `impl<T: StreamTransport> StreamHandler<T> for Echo`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a stream handler for `{T}`",
    label = "`{T}` needs a `StreamHandler<{T}>`",
    note = "stream transports (tcp, unix_stream) are served by `impl StreamHandler<..> for {Self}`; datagram transports (udp, unix_datagram) by `impl DatagramHandler<..> for {Self}`"
)]
pub trait StreamHandler<T: StreamTransport = crate::transport::Tcp>: 'static {
    request_phases!(StreamRequest, "the connection", "`wfile` is flushed after it. ");
    server_hooks!();
}

/// One datagram, as a [`DatagramHandler`] sees it (Python's `DatagramRequestHandler`
/// attributes).
pub struct DatagramRequest<'a, T: DatagramTransport> {
    /// The datagram's bytes.
    pub packet: &'a [u8],
    /// The server socket.
    pub socket: &'a T::Socket,
    /// A reader over `packet`.
    pub rfile: Cursor<&'a [u8]>,
    /// The reply: sent to `client_address` after `finish()` if it is not empty.
    pub wfile: Vec<u8>,
    /// The client's address.
    pub client_address: &'a T::Address,
    /// The server (Python's `self.server`).
    pub server: &'a ServerContext<T>,
}

impl<T: DatagramTransport> fmt::Debug for DatagramRequest<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramRequest")
            .field("client_address", self.client_address)
            .field("packet_len", &self.packet.len())
            .finish_non_exhaustive()
    }
}

/// Handles datagrams of a datagram transport ([`Udp`](crate::transport::Udp),
/// [`UnixDatagram`](crate::transport::UnixDatagram)): Python's `DatagramRequestHandler`.
///
/// ```no_run
/// use std::io::{self, Write};
/// use sockserve_core::{DatagramHandler, DatagramRequest, UdpServer, transport::Udp};
///
/// struct Echo;
///
/// impl DatagramHandler for Echo {
///     fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
///         req.wfile.write_all(req.packet)
///     }
/// }
///
/// UdpServer::bind("127.0.0.1:9000", Echo)?.serve_forever()?;
/// # Ok::<(), io::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a datagram handler for `{T}`",
    label = "`{T}` needs a `DatagramHandler<{T}>`",
    note = "datagram transports (udp, unix_datagram) are served by `impl DatagramHandler<..> for {Self}`; stream transports (tcp, unix_stream) by `impl StreamHandler<..> for {Self}`"
)]
pub trait DatagramHandler<T: DatagramTransport = crate::transport::Udp>: 'static {
    request_phases!(
        DatagramRequest,
        "the datagram",
        "`wfile` is sent after it, if not empty. "
    );
    server_hooks!();
}

/// One request of a [`BaseKind`] transport, as a [`RequestHandler`] sees it (Python's
/// `BaseRequestHandler` attributes).
pub struct BaseRequest<'a, T: Transport> {
    /// The request as the transport produced it.
    pub request: &'a mut T::Request,
    /// Where it came from.
    pub client_address: &'a T::Address,
    /// The server (Python's `self.server`).
    pub server: &'a ServerContext<T>,
}

/// Handles requests of a transport whose [`Kind`](Transport::Kind) is [`BaseKind`]: Python's
/// `BaseRequestHandler`, for request sources that are not sockets.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a request handler for `{T}`",
    label = "`{T}` needs a `RequestHandler<{T}>`",
    note = "a transport with `type Kind = BaseKind` is served by `impl RequestHandler<{T}> for {Self}`"
)]
pub trait RequestHandler<T: Transport>: 'static {
    request_phases!(BaseRequest, "the request", "");
    server_hooks!();
}

/// Connects a transport's [`Kind`](Transport::Kind) to the handler trait that serves it.
/// Implemented for [`StreamKind`], [`DatagramKind`] and [`BaseKind`]; the server requires
/// `T::Kind: Dispatch<T, H>`, which holds exactly when `H` implements the handler trait of
/// `T`'s kind.
#[diagnostic::on_unimplemented(
    message = "`{H}` cannot serve the requests of `{T}`",
    note = "stream transports need a `StreamHandler`, datagram transports a `DatagramHandler`, other transports a `RequestHandler`"
)]
pub trait Dispatch<T: Transport, H> {
    /// Runs one request through the handler (Python's `finish_request`: build the handler,
    /// run setup, handle, finish).
    fn finish_request(
        handler: &H,
        request: &mut T::Request,
        client_address: &T::Address,
        server: &ServerContext<T>,
    ) -> Result<(), RequestError>;
    /// The handler's `verify_request`.
    fn verify_request(handler: &H, request: &T::Request, client_address: &T::Address) -> bool;
    /// The handler's `handle_error`.
    fn handle_error(handler: &H, client_address: &T::Address, error: &RequestError);
    /// The handler's `handle_timeout`.
    fn handle_timeout(handler: &H, server: &ServerContext<T>);
    /// The handler's `service_actions`.
    fn service_actions(handler: &H, server: &ServerContext<T>);
}

macro_rules! forward_hooks {
    ($handler:ident) => {
        fn verify_request(handler: &H, request: &T::Request, client_address: &T::Address) -> bool {
            $handler::verify_request(handler, request, client_address)
        }
        fn handle_error(handler: &H, client_address: &T::Address, error: &RequestError) {
            $handler::handle_error(handler, client_address, error)
        }
        fn handle_timeout(handler: &H, server: &ServerContext<T>) {
            $handler::handle_timeout(handler, server)
        }
        fn service_actions(handler: &H, server: &ServerContext<T>) {
            $handler::service_actions(handler, server)
        }
    };
}

impl<T: StreamTransport, H: StreamHandler<T>> Dispatch<T, H> for StreamKind {
    fn finish_request(
        handler: &H,
        request: &mut T::Request,
        client_address: &T::Address,
        server: &ServerContext<T>,
    ) -> Result<(), RequestError> {
        let options = server.options();
        let conn: &T::Request = request;
        if options.connection_timeout.is_some() {
            conn.set_timeouts(options.connection_timeout)?;
        }
        if options.disable_nagle_algorithm {
            conn.set_nodelay(true)?;
        }
        let mut req = StreamRequest {
            rfile: BufReader::with_capacity(options.rbufsize.max(1), conn.reader()),
            wfile: Wfile::new(conn, options.wbufsize),
            request: conn,
            client_address,
            server,
        };
        let result = run_phases(
            &mut req,
            |r| handler.setup(r),
            |r| handler.handle(r),
            |r| handler.finish(r),
        );
        let flushed = req.wfile.flush();
        result?;
        Ok(flushed?)
    }
    forward_hooks!(StreamHandler);
}

thread_local! {
    /// The reply buffer (`wfile`) of datagram requests, reused by the next request on the same
    /// thread so that a reply costs no allocation.
    static REPLY: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A reply buffer larger than this is freed rather than kept for the next request.
const REPLY_KEEP: usize = 64 * 1024;

impl<T: DatagramTransport, H: DatagramHandler<T>> Dispatch<T, H> for DatagramKind {
    fn finish_request(
        handler: &H,
        request: &mut T::Request,
        client_address: &T::Address,
        server: &ServerContext<T>,
    ) -> Result<(), RequestError> {
        if request.is_truncated() {
            return Err(RequestError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "datagram of {} bytes truncated to max_packet_size {}; not handled",
                    request.received,
                    request.packet.len()
                ),
            )));
        }
        let mut req = DatagramRequest {
            packet: &request.packet,
            socket: &*request.socket,
            rfile: Cursor::new(&request.packet),
            wfile: REPLY.take(),
            client_address,
            server,
        };
        let result = run_phases(
            &mut req,
            |r| handler.setup(r),
            |r| handler.handle(r),
            |r| handler.finish(r),
        );
        let sent = if req.wfile.is_empty() {
            Ok(0)
        } else {
            T::send_to(req.socket, &req.wfile, client_address)
        };
        let mut reply = req.wfile;
        if reply.capacity() <= REPLY_KEEP {
            reply.clear();
            REPLY.set(reply);
        }
        result?;
        sent?;
        Ok(())
    }
    forward_hooks!(DatagramHandler);
}

impl<T: Transport, H: RequestHandler<T>> Dispatch<T, H> for BaseKind {
    fn finish_request(
        handler: &H,
        request: &mut T::Request,
        client_address: &T::Address,
        server: &ServerContext<T>,
    ) -> Result<(), RequestError> {
        let mut req = BaseRequest {
            request,
            client_address,
            server,
        };
        run_phases(
            &mut req,
            |r| handler.setup(r),
            |r| handler.handle(r),
            |r| handler.finish(r),
        )
    }
    forward_hooks!(RequestHandler);
}
