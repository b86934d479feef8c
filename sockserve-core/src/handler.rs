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
use std::cell::Cell;
use std::fmt;
use std::io::{self, BufRead, Cursor, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use crate::context::ServerContext;
use crate::transport::{
    BaseKind, Connection, DatagramKind, DatagramTransport, Incoming, StreamKind, StreamTransport, Transport,
};

/// Why a request failed.
///
/// Failures that are ordinary peer behaviour ([`Disconnected`](RequestError::Disconnected),
/// [`TimedOut`](RequestError::TimedOut)) have variants of their own, so a `handle_error` can
/// tell them from real faults; the default one logs them at debug level only, so a storm of
/// resets does not flood the log. [`is_peer_event`](RequestError::is_peer_event) says which is
/// which.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// `setup`, `handle` or `finish` returned an error, or the server could not take the
    /// request further (a datagram was truncated, a thread or process could not start).
    Io(io::Error),
    /// A handler method panicked; the panic message.
    Panic(String),
    /// The client went away in the middle of the request: it reset the connection
    /// (`ECONNRESET`), or closed it before the reply was written (`EPIPE`), or the connection
    /// was aborted (`ECONNABORTED`). The error as the handler saw it.
    Disconnected(io::Error),
    /// The connection made no progress for `connection_timeout` (Python's
    /// `StreamRequestHandler.timeout`) and was closed.
    TimedOut(Duration),
    /// The connection failed the transport's prepare stage
    /// ([`Transport::prepare`](crate::transport::Transport::prepare)): the peer did not
    /// complete a TLS handshake (plaintext, garbage, a truncated or stalled handshake, a
    /// refused certificate) or sent a bad header. A peer event: logged at debug level by
    /// default, so a port scan does not flood the log.
    Prepare(io::Error),
    /// After the prepare stage, the peer broke the connection's protocol: a corrupt, forged or
    /// out-of-place TLS record (an error carrying a [`PeerProtocolError`]). A peer event, like
    /// a reset: logged at debug level by default.
    Protocol(io::Error),
}

/// The payload of an `io::Error` (`ErrorKind::InvalidData`) a connection returns when the peer
/// broke its protocol, such as a TLS record that does not decrypt: what turns such an error,
/// passed on with `?` from `rfile`, into [`RequestError::Protocol`], a peer event.
#[derive(Debug)]
pub struct PeerProtocolError(pub String);

impl fmt::Display for PeerProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PeerProtocolError {}

impl PeerProtocolError {
    /// An `InvalidData` error carrying this payload.
    pub fn io(message: impl Into<String>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, PeerProtocolError(message.into()))
    }
}

impl RequestError {
    /// Whether this is ordinary peer behaviour (a disconnect or an idle timeout) rather than a
    /// fault of the server or the handler.
    pub fn is_peer_event(&self) -> bool {
        matches!(
            self,
            RequestError::Disconnected(_)
                | RequestError::TimedOut(_)
                | RequestError::Prepare(_)
                | RequestError::Protocol(_)
        )
    }

    /// The I/O error behind this failure, if there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            RequestError::Io(e)
            | RequestError::Disconnected(e)
            | RequestError::Prepare(e)
            | RequestError::Protocol(e) => Some(e),
            RequestError::Panic(_) | RequestError::TimedOut(_) => None,
        }
    }

    /// A failed prepare stage: [`Disconnected`](RequestError::Disconnected) when the peer
    /// reset the connection, [`Prepare`](RequestError::Prepare) otherwise.
    pub(crate) fn from_prepare(e: io::Error) -> Self {
        match RequestError::from(e) {
            RequestError::Io(e) | RequestError::Protocol(e) => RequestError::Prepare(e),
            other => other,
        }
    }

    /// Turns a read or write timeout on a connection with `connection_timeout` set into
    /// [`TimedOut`](RequestError::TimedOut): the socket reports it as `EAGAIN`.
    pub(crate) fn with_timeout(self, timeout: Option<Duration>) -> Self {
        match (self, timeout) {
            (RequestError::Io(e), Some(t))
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                RequestError::TimedOut(t)
            }
            (other, _) => other,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Io(e) => write!(f, "{e}"),
            RequestError::Panic(msg) => write!(f, "handler panicked: {msg}"),
            RequestError::Disconnected(e) => match e.raw_os_error() {
                Some(libc::ECONNRESET) => f.write_str("the client reset the connection"),
                Some(libc::EPIPE) => {
                    f.write_str("the client closed the connection before the reply was sent")
                }
                Some(libc::ECONNABORTED) => f.write_str("the connection was aborted"),
                _ => write!(f, "the client went away ({e})"),
            },
            RequestError::TimedOut(t) => write!(f, "idle for {t:?} (connection_timeout), closed"),
            RequestError::Prepare(e) => write!(f, "the connection failed its prepare stage: {e}"),
            RequestError::Protocol(e) => write!(f, "the client broke the connection's protocol: {e}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Io(e)
            | RequestError::Disconnected(e)
            | RequestError::Prepare(e)
            | RequestError::Protocol(e) => Some(e),
            RequestError::Panic(_) | RequestError::TimedOut(_) => None,
        }
    }
}

/// An I/O error becomes [`RequestError::Disconnected`] when it says the peer went away,
/// [`RequestError::Io`] otherwise.
impl From<io::Error> for RequestError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                RequestError::Disconnected(e)
            }
            io::ErrorKind::InvalidData
                if e.get_ref().is_some_and(|inner| inner.is::<PeerProtocolError>()) =>
            {
                RequestError::Protocol(e)
            }
            _ => RequestError::Io(e),
        }
    }
}

pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "(a non-string panic payload)".to_string(),
        },
    }
}

/// Runs a handler hook that reports to nobody (`handle_timeout`, `service_actions`): a panic in
/// it is logged as `{what} failed`, not spread.
pub(crate) fn run_hook(what: &str, hook: impl FnOnce()) {
    if let Err(e) = guarded(|| {
        hook();
        Ok(())
    }) {
        report_error(format_args!("{what} failed: {e}"));
    }
}

/// Runs a handler's `handle_error` for `error` (`handle_error` is the call); a panic in it is
/// logged with the error it was reporting.
pub(crate) fn run_handle_error(
    client_address: &dyn fmt::Display,
    error: &RequestError,
    handle_error: impl FnOnce(),
) {
    if let Err(panic) = guarded(|| {
        handle_error();
        Ok(())
    }) {
        report_error(format_args!(
            "handle_error for {client_address} failed: {panic} (while reporting: {error})"
        ));
    }
}

/// Runs a handler's `verify_request` (`verify` is the call); a panic in it is a refusal, handed
/// to `report` (the handler's `handle_error`).
pub(crate) fn run_verify(verify: impl FnOnce() -> bool, report: impl FnOnce(&RequestError)) -> bool {
    match guarded(|| Ok(verify())) {
        Ok(verdict) => verdict,
        Err(error) => {
            report(&error);
            false
        }
    }
}

/// Runs `f`, turning an error or a panic into a [`RequestError`].
pub(crate) fn guarded<R>(f: impl FnOnce() -> Result<R, RequestError>) -> Result<R, RequestError> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(RequestError::Panic(panic_message(payload))),
    }
}

/// Python's `BaseRequestHandler.__init__`: setup (which creates the request's state), then
/// handle and finish (finish even when handle fails). The first error wins.
fn run_phases<R, S>(
    req: &mut R,
    setup: impl FnOnce(&mut R) -> io::Result<S>,
    handle: impl FnOnce(&mut S, &mut R) -> io::Result<()>,
    finish: impl FnOnce(&mut S, &mut R) -> io::Result<()>,
) -> Result<(), RequestError> {
    let mut state = guarded(|| Ok(setup(req)?))?;
    let handled = guarded(|| Ok(handle(&mut state, req)?));
    let finished = guarded(|| Ok(finish(&mut state, req)?));
    handled.and(finished)
}

/// Reports a server error where a person will see it: through the `log` crate when a logger
/// takes error records from sockserve, on standard error otherwise (as Python's
/// `handle_error` prints its traceback), so that no error vanishes for want of a logger.
pub fn report_error(args: fmt::Arguments<'_>) {
    let metadata = log::Metadata::builder()
        .level(log::Level::Error)
        .target(module_path!())
        .build();
    if log::Level::Error <= log::max_level() && log::logger().enabled(&metadata) {
        log::error!("{args}");
    } else {
        // Written in one call, so that lines of concurrent requests do not interleave.
        let line = format!("sockserve: {args}\n");
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

/// The default `handle_error`: a peer event (disconnect, idle timeout) is logged at debug
/// level, in words; any other failure is reported at error level with the client address
/// through [`report_error`] (stderr when no logger is installed).
pub fn log_request_error(client_address: &dyn fmt::Display, error: &RequestError) {
    if error.is_peer_event() {
        log::debug!("request from {client_address}: {error}");
    } else {
        report_error(format_args!(
            "error handling request from {client_address}: {error}"
        ));
    }
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

/// The request phases of the stateful handler traits: `setup` creates the request's own
/// state, which `handle` and `finish` borrow mutably.
macro_rules! stateful_phases {
    ($request:ident, $what:literal, $after:literal) => {
        /// The request's own state: Python's handler instance attributes (`self.x` set in
        /// `setup`). `setup` creates it; `handle` and `finish` borrow it mutably, with no lock;
        /// it is dropped when the request ends.
        type State;
        /// Called before `handle`; creates the request's state (Python's `setup`).
        fn setup(&self, req: &mut $request<'_, T>) -> io::Result<Self::State>;
        #[doc = concat!("Serves ", $what, " (Python's `handle`).")]
        fn handle(&self, state: &mut Self::State, req: &mut $request<'_, T>) -> io::Result<()>;
        #[doc = concat!("Called after `handle`, even when it failed or panicked (Python's `finish`). ", $after, "Default: nothing.")]
        fn finish(&self, state: &mut Self::State, req: &mut $request<'_, T>) -> io::Result<()> {
            let _ = (state, req);
            Ok(())
        }
    };
}

/// The stateless handler trait `$plain` is its stateful twin `$stateful` with `State = ()`.
macro_rules! stateless_is_stateful {
    ($plain:ident, $stateful:ident, $request:ident, $bound:path, { $($extra:item)* }) => {
        #[diagnostic::do_not_recommend]
        impl<T: $bound, H: $plain<T>> $stateful<T> for H {
            type State = ();
            #[inline]
            fn setup(&self, req: &mut $request<'_, T>) -> io::Result<()> {
                $plain::setup(self, req)
            }
            #[inline]
            fn handle(&self, _: &mut (), req: &mut $request<'_, T>) -> io::Result<()> {
                $plain::handle(self, req)
            }
            #[inline]
            fn finish(&self, _: &mut (), req: &mut $request<'_, T>) -> io::Result<()> {
                $plain::finish(self, req)
            }
            fn verify_request(&self, request: &T::Request, client_address: &T::Address) -> bool {
                $plain::verify_request(self, request, client_address)
            }
            fn handle_error(&self, client_address: &T::Address, error: &RequestError) {
                $plain::handle_error(self, client_address, error)
            }
            fn handle_timeout(&self, server: &ServerContext<T>) {
                $plain::handle_timeout(self, server)
            }
            fn service_actions(&self, server: &ServerContext<T>) {
                $plain::service_actions(self, server)
            }
            $($extra)*
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
        /// (Python's `handle_error`). The server goes on serving. Default:
        /// [`log_request_error`]: a disconnect or idle timeout at debug level, anything else
        /// at error level with the client address (on stderr when no logger is installed).
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
    /// Set on every write: the next read with nothing buffered waits for a new request.
    wrote: Option<&'a Cell<bool>>,
}

enum WfileInner<W: Write> {
    Unbuffered(W),
    Buffered(io::BufWriter<W>),
}

impl<'a, C: Connection> Wfile<'a, C> {
    pub(crate) fn new(conn: &'a C, wbufsize: usize) -> Self {
        let writer = conn.writer();
        let inner = if wbufsize == 0 {
            WfileInner::Unbuffered(writer)
        } else {
            WfileInner::Buffered(io::BufWriter::with_capacity(wbufsize, writer))
        };
        Wfile { inner, wrote: None }
    }

    /// A `wfile` that marks `wrote` on every write (see [`IdleWatch`]).
    fn watched(conn: &'a C, wbufsize: usize, wrote: Option<&'a Cell<bool>>) -> Self {
        Wfile {
            wrote,
            ..Wfile::new(conn, wbufsize)
        }
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
        if let Some(wrote) = self.wrote {
            wrote.set(true);
        }
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

/// The reading side of a stream request (Python's `rfile`): the connection's reader behind a
/// buffer of `rbufsize` bytes (`rbufsize` 0: one byte, so nothing past what the handler
/// consumes is ever read), and, when `oob_inline` is off, the hand-off of TCP urgent bytes to
/// `handle_urgent` before each read from the connection (a `poll` for input or urgent data,
/// then the read).
///
/// It is `BufRead` and `Read` like std's `BufReader`. Unlike a `BufReader` over a reader type
/// of its own (which zero-fills its whole buffer before the first read), it initialises its
/// buffer only as far as reads have reached (512 bytes at first, doubling while reads fill it,
/// up to `rbufsize`): an idle connection that received a short request keeps one page of
/// buffer in memory, not `rbufsize` (measured with `benches/echo.rs` workload 4: 13.8 KiB
/// per idle threading connection instead of 17.7).
pub struct Rfile<'a, C: Connection> {
    conn: &'a C,
    reader: C::Reader<'a>,
    urgent: Option<UrgentHook<'a>>,
    idle: Option<IdleWatch<'a>>,
    /// `(short, total)`: while the socket's read timeout is `short` (the pooled model's
    /// linger), a read that times out waits for input up to `total`, then reads again. A
    /// timeout the handler set itself (any other value) is the handler's, and is returned.
    patience: Option<(Duration, Duration)>,
    /// Initialised bytes; `buf.capacity()` is `rbufsize` (at least 1).
    buf: Vec<u8>,
    /// Unread bytes are `buf[pos..filled]`.
    pos: usize,
    filled: usize,
}

/// How `rfile` tells the server it waits for a next request: a read with nothing buffered
/// after the handler wrote (`wrote`, set by `wfile`) is registered with the server's
/// [`IdleConnections`](crate::context::IdleConnections) for its length, so that
/// `close_idle_connections` can end it.
struct IdleWatch<'a> {
    connections: &'a crate::context::IdleConnections,
    wrote: &'a Cell<bool>,
}

struct UrgentHook<'a> {
    deliver: &'a dyn Fn(u8),
    /// `connection_timeout`: the wait for input replaces the socket's own read timeout.
    timeout: Option<Duration>,
}

impl<'a, C: Connection> Rfile<'a, C> {
    /// The first part of the buffer made ready: small enough to stay within one page.
    const FIRST: usize = 512;

    fn new(
        conn: &'a C,
        capacity: usize,
        urgent: Option<UrgentHook<'a>>,
        idle: Option<IdleWatch<'a>>,
    ) -> Self {
        Rfile {
            conn,
            reader: conn.reader(),
            urgent,
            idle,
            patience: None,
            buf: Vec::with_capacity(capacity.max(1)),
            pos: 0,
            filled: 0,
        }
    }

    /// An `rfile` whose buffer starts with `input`, bytes already read from the connection
    /// (the pooled model's worker read them); no urgent hook.
    pub(crate) fn with_input(conn: &'a C, capacity: usize, input: Vec<u8>) -> Self {
        let filled = input.len();
        let mut buf = input;
        buf.reserve_exact(capacity.max(1).saturating_sub(buf.len()));
        Rfile {
            conn,
            reader: conn.reader(),
            urgent: None,
            idle: None,
            patience: None,
            buf,
            pos: 0,
            filled,
        }
    }

    /// Sets [`patience`](Rfile::patience): `None` reads with the socket's own timeout only.
    pub(crate) fn set_patience(&mut self, patience: Option<(Duration, Duration)>) {
        self.patience = patience;
    }

    /// The bytes read from the connection and not consumed yet (`BufReader::buffer`).
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    /// The buffer's size: `rbufsize` (at least 1).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads from the connection (see [`IdleWatch`]): a read for the next request ends with
    /// end of input when the server closes idle connections.
    fn read_connection(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(idle) = &self.idle else {
            return self.read_unwatched(buf);
        };
        let ticket = match (idle.wrote.replace(false), self.conn.read_side()) {
            (true, Some(fd)) => match idle.connections.begin_wait(fd) {
                Some(ticket) => Some(ticket),
                None => return Ok(0),
            },
            _ => None,
        };
        let connections = idle.connections;
        let read = self.read_unwatched(buf);
        if let Some(ticket) = ticket {
            connections.end_wait(ticket);
            // Ended by close_idle_connections (end of input, or an error from the layer above
            // the socket, such as TLS without close_notify): the end of input it stands for.
            if connections.is_closing() && !matches!(read, Ok(n) if n > 0) {
                return Ok(0);
            }
        }
        read
    }

    /// Reads from the connection, urgent bytes handed over first when that is asked for.
    fn read_unwatched(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(urgent) = &self.urgent {
            loop {
                match self.conn.wait_input(urgent.timeout)? {
                    Incoming::Ready => break,
                    Incoming::Urgent(byte) => (urgent.deliver)(byte),
                    Incoming::TimedOut => {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "no input within connection_timeout",
                        ))
                    }
                }
            }
        }
        match (self.reader.read(buf), self.patience) {
            (Err(e), Some((short, total)))
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
                    && self.read_timeout_is(short) =>
            {
                match self.conn.wait_input(Some(total))? {
                    Incoming::TimedOut => Err(e),
                    Incoming::Ready | Incoming::Urgent(_) => self.reader.read(buf),
                }
            }
            (read, _) => read,
        }
    }

    /// Whether the socket's read timeout is still `short` (to the kernel's clock tick), not
    /// one the handler set.
    fn read_timeout_is(&self, short: Duration) -> bool {
        let Some(fd) = self.conn.read_side() else {
            return false;
        };
        socket2::SockRef::from(&fd)
            .read_timeout()
            .is_ok_and(|t| t.is_some_and(|t| t.abs_diff(short) <= Duration::from_millis(4)))
    }
}

impl<C: Connection> BufRead for Rfile<'_, C> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.filled {
            let capacity = self.buf.capacity();
            // Grow the initialised part when the last read filled it all.
            if self.buf.len() < capacity && self.filled == self.buf.len() {
                let len = (self.buf.len() * 2).clamp(Self::FIRST.min(capacity), capacity);
                self.buf.resize(len, 0);
            }
            let mut buf = std::mem::take(&mut self.buf);
            let read = self.read_connection(&mut buf);
            self.buf = buf;
            self.pos = 0;
            self.filled = 0;
            self.filled = read?;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.filled);
    }
}

impl<C: Connection> Read for Rfile<'_, C> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Nothing buffered and a large read: straight from the connection, as BufReader does.
        if self.pos >= self.filled && out.len() >= self.buf.capacity() {
            return self.read_connection(out);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<C: Connection> fmt::Debug for Rfile<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfile")
            .field("buffered", &(self.filled - self.pos))
            .field("capacity", &self.buf.capacity())
            .field("urgent_hook", &self.urgent.is_some())
            .finish_non_exhaustive()
    }
}

/// One connection, as a [`StreamHandler`] sees it (Python's `StreamRequestHandler`
/// attributes).
pub struct StreamRequest<'a, T: StreamTransport> {
    /// Buffered reader over the connection (`rbufsize`).
    pub rfile: Rfile<'a, T::Request>,
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
/// [`Unix`](crate::transport::Unix)): Python's `StreamRequestHandler`.
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

    /// Called with each TCP urgent byte (sent with `MSG_OOB`) when `oob_inline` is off, on the
    /// connection's own thread or child, before the in-band bytes after it are read (that is,
    /// when the handler next reads `rfile`). Default: log it at debug level and drop it.
    fn handle_urgent(&self, byte: u8, client_address: &T::Address) {
        log::debug!("urgent byte {byte:#04x} from {client_address} dropped (no handle_urgent)");
    }
}

/// A [`StreamHandler`] with per-request state: Python's handler instance, in Rust terms.
///
/// `setup` returns the request's [`State`](StatefulStreamHandler::State), which `handle` and
/// `finish` borrow mutably (no lock: one request owns it); `&self` stays the server-wide
/// state. Every [`StreamHandler`] is one of these with `State = ()`, at no cost; implement
/// this trait instead of `StreamHandler`, not both.
///
/// ```no_run
/// use std::io::{self, BufRead, Write};
/// use sockserve_core::{StatefulStreamHandler, StreamRequest, ThreadingTcpServer, transport::Tcp};
///
/// struct Counter;
///
/// impl StatefulStreamHandler for Counter {
///     type State = u64; // lines seen on this connection
///
///     fn setup(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<u64> {
///         Ok(0)
///     }
///     fn handle(&self, lines: &mut u64, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
///         let mut line = String::new();
///         while req.rfile.read_line(&mut line)? > 0 {
///             *lines += 1;
///             writeln!(req.wfile, "{lines}")?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
///
/// ThreadingTcpServer::bind("127.0.0.1:9000", Counter)?.serve_forever()?;
/// # Ok::<(), io::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a stream handler for `{T}`",
    label = "`{T}` needs a `StreamHandler<{T}>`",
    note = "stream transports (tcp, unix_stream) are served by `impl StreamHandler<..> for {Self}` (or `StatefulStreamHandler` for per-request state); datagram transports (udp, unix_datagram) by `impl DatagramHandler<..> for {Self}`; a `ConnectionHandler` serves only `multiplex` servers, a `MessageHandler` only `pooled` ones"
)]
pub trait StatefulStreamHandler<T: StreamTransport = crate::transport::Tcp>: 'static {
    stateful_phases!(StreamRequest, "the connection", "`wfile` is flushed after it. ");
    server_hooks!();

    /// Called with each TCP urgent byte (sent with `MSG_OOB`) when `oob_inline` is off, on the
    /// connection's own thread or child, before the in-band bytes after it are read (that is,
    /// when the handler next reads `rfile`). Default: log it at debug level and drop it.
    fn handle_urgent(&self, byte: u8, client_address: &T::Address) {
        log::debug!("urgent byte {byte:#04x} from {client_address} dropped (no handle_urgent)");
    }
}

stateless_is_stateful!(
    StreamHandler,
    StatefulStreamHandler,
    StreamRequest,
    StreamTransport,
    {
        fn handle_urgent(&self, byte: u8, client_address: &T::Address) {
            StreamHandler::handle_urgent(self, byte, client_address)
        }
    }
);

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
/// [`UnixDgram`](crate::transport::UnixDgram)): Python's `DatagramRequestHandler`.
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

/// A [`DatagramHandler`] with per-request state, created by `setup` and owned by the request
/// through `handle` and `finish` (see [`StatefulStreamHandler`]). Every `DatagramHandler` is
/// one with `State = ()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a datagram handler for `{T}`",
    label = "`{T}` needs a `DatagramHandler<{T}>`",
    note = "datagram transports (udp, unix_datagram) are served by `impl DatagramHandler<..> for {Self}` (or `StatefulDatagramHandler` for per-request state); stream transports (tcp, unix_stream) by `impl StreamHandler<..> for {Self}`"
)]
pub trait StatefulDatagramHandler<T: DatagramTransport = crate::transport::Udp>: 'static {
    stateful_phases!(
        DatagramRequest,
        "the datagram",
        "`wfile` is sent after it, if not empty. "
    );
    server_hooks!();
}

stateless_is_stateful!(
    DatagramHandler,
    StatefulDatagramHandler,
    DatagramRequest,
    DatagramTransport,
    {}
);

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

/// A [`RequestHandler`] with per-request state, created by `setup` and owned by the request
/// through `handle` and `finish` (see [`StatefulStreamHandler`]). Every `RequestHandler` is
/// one with `State = ()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a request handler for `{T}`",
    label = "`{T}` needs a `RequestHandler<{T}>`",
    note = "a transport with `type Kind = BaseKind` is served by `impl RequestHandler<{T}> for {Self}` (or `StatefulRequestHandler` for per-request state)"
)]
pub trait StatefulRequestHandler<T: Transport>: 'static {
    stateful_phases!(BaseRequest, "the request", "");
    server_hooks!();
}

stateless_is_stateful!(RequestHandler, StatefulRequestHandler, BaseRequest, Transport, {});

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

impl<T: StreamTransport, H: StatefulStreamHandler<T>> Dispatch<T, H> for StreamKind {
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
        let deliver = |byte| handler.handle_urgent(byte, client_address);
        let urgent = (!options.oob_inline).then_some(UrgentHook {
            deliver: &deliver,
            timeout: options.connection_timeout,
        });
        let wrote = Cell::new(false);
        let idle = server.idle_connections().map(|connections| IdleWatch {
            connections,
            wrote: &wrote,
        });
        let watched = idle.is_some().then_some(&wrote);
        let mut req = StreamRequest {
            rfile: Rfile::new(conn, options.rbufsize, urgent, idle),
            wfile: Wfile::watched(conn, options.wbufsize, watched),
            request: conn,
            client_address,
            server,
        };
        let result = run_phases(
            &mut req,
            |r| handler.setup(r),
            |state, r| handler.handle(state, r),
            |state, r| handler.finish(state, r),
        );
        let flushed = req.wfile.flush().map_err(RequestError::from);
        result
            .and(flushed)
            .map_err(|e| e.with_timeout(options.connection_timeout))
    }
    forward_hooks!(StatefulStreamHandler);
}

thread_local! {
    /// The reply buffer (`wfile`) of datagram requests, reused by the next request on the same
    /// thread so that a reply costs no allocation.
    static REPLY: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A reply buffer larger than this is freed rather than kept for the next request.
const REPLY_KEEP: usize = 64 * 1024;

impl<T: DatagramTransport, H: StatefulDatagramHandler<T>> Dispatch<T, H> for DatagramKind {
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
            |state, r| handler.handle(state, r),
            |state, r| handler.finish(state, r),
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
    forward_hooks!(StatefulDatagramHandler);
}

impl<T: Transport, H: StatefulRequestHandler<T>> Dispatch<T, H> for BaseKind {
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
            |state, r| handler.handle(state, r),
            |state, r| handler.finish(state, r),
        )
    }
    forward_hooks!(StatefulRequestHandler);
}
