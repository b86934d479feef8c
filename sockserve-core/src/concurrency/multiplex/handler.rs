//! The handler kind of the multiplex model: a per-connection state machine (the seed's
//! "explicit table of partially finished requests").

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::worker::Shared;
use crate::context::ServerContext;
use crate::handler::{log_request_error, RequestError};
use crate::transport::Transport;

/// Why a connection of a multiplex server was closed, as [`ConnectionHandler::closed`] is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The handler asked for it ([`ConnIo::close`] or [`ConnHandle::close`]), after its output
    /// was sent.
    Closed,
    /// The client closed its side and the handler's `read_closed` closed the connection.
    PeerClosed,
    /// A callback failed or panicked, the client reset the connection, or it sent more than
    /// `max_input`; `handle_error` has been told why.
    Error,
    /// No progress for `idle_timeout`.
    IdleTimeout,
    /// `server_close` closed it, after flushing what was pending.
    ServerClose,
}

/// What a multiplex worker shares with the [`ConnHandle`]s of its connections: the queue of
/// sends and closes from other threads, and the waker of its poller.
pub(crate) struct Mailbox {
    pub(crate) waker: mio::Waker,
    pub(crate) queue: Mutex<Vec<Message>>,
    /// Set by `server_close`: drain and stop.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Set when the worker has stopped: sends fail.
    pub(crate) gone: std::sync::atomic::AtomicBool,
}

/// A request to a worker from a [`ConnHandle`].
pub(crate) enum Message {
    Send {
        token: usize,
        generation: u64,
        data: Vec<u8>,
    },
    Close {
        token: usize,
        generation: u64,
    },
}

/// A connection a worker lent to another thread (the pooled model's pool): the connection
/// and the input the worker had read. The worker keeps its place in the table and neither
/// reads, writes nor times it out until it comes back: [`give_back`](Lent::give_back), or
/// when dropped, closed. So it always goes back to the worker, which closes it, once.
pub(crate) struct Lent<T: Transport> {
    /// `None` once given back.
    pub(crate) socket: Option<T::Request>,
    pub(crate) input: Vec<u8>,
    pub(crate) client_address: T::Address,
    pub(crate) worker: Arc<Shared<T>>,
    pub(crate) token: usize,
    pub(crate) generation: u64,
}

impl<T: Transport> Lent<T> {
    /// Gives the connection back to its worker: to be read again (`close` false), or closed.
    pub(crate) fn give_back(mut self, close: bool) {
        self.send_back(close);
    }

    fn send_back(&mut self, close: bool) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        self.worker.give_back(self.token, self.generation, socket, close);
    }
}

impl<T: Transport> Drop for Lent<T> {
    fn drop(&mut self) {
        self.send_back(true);
    }
}

impl Mailbox {
    /// Queues `message`; wakes the worker when the queue was empty (a non-empty queue has a
    /// wake-up pending already). Returns false when the worker has stopped.
    pub(crate) fn post(&self, message: Message) -> bool {
        if self.gone.load(Ordering::Acquire) {
            return false;
        }
        let was_empty = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = queue.is_empty();
            queue.push(message);
            was_empty
        };
        if was_empty {
            if let Err(e) = self.waker.wake() {
                log::error!("multiplex: could not wake a worker: {e}");
            }
        }
        true
    }

    /// Wakes the worker without a message (`server_close`).
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!("multiplex: could not wake a worker: {e}");
        }
    }
}

/// A cheap, cloneable, `Send` handle to one connection of a multiplex server: write to it or
/// close it from any thread (a chat broadcast, a reply computed elsewhere). It wakes the
/// worker that owns the connection. A handle to a connection that has closed does nothing.
#[derive(Clone)]
pub struct ConnHandle {
    mail: Arc<Mailbox>,
    token: usize,
    generation: u64,
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("token", &self.token)
            .field("generation", &self.generation)
            .finish()
    }
}

impl ConnHandle {
    /// Queues `data` to be written to the connection. Returns `false` when the server's worker
    /// has stopped (the bytes are dropped); a connection that has closed meanwhile drops them
    /// silently.
    pub fn send(&self, data: &[u8]) -> bool {
        self.mail.post(Message::Send {
            token: self.token,
            generation: self.generation,
            data: data.to_vec(),
        })
    }

    /// Closes the connection once what was queued before is written.
    pub fn close(&self) -> bool {
        self.mail.post(Message::Close {
            token: self.token,
            generation: self.generation,
        })
    }

    /// Whether two handles name the same connection.
    pub fn same_connection(&self, other: &ConnHandle) -> bool {
        Arc::ptr_eq(&self.mail, &other.mail)
            && self.token == other.token
            && self.generation == other.generation
    }
}

/// What the handler asked of a connection during a callback.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Asked {
    pub(crate) close: bool,
    pub(crate) shutdown_write: bool,
    pub(crate) timer: Option<Instant>,
    pub(crate) cancel_timer: bool,
    pub(crate) lend: bool,
}

/// A connection as its callbacks see it: queue output, close it, half-close it, set its
/// timer, hand out a [`ConnHandle`], reach the server.
pub struct ConnIo<'a, T: Transport> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) asked: &'a mut Asked,
    pub(crate) mail: &'a Arc<Mailbox>,
    pub(crate) token: usize,
    pub(crate) generation: u64,
    pub(crate) server: &'a ServerContext<T>,
    pub(crate) client_address: &'a T::Address,
    pub(crate) request: &'a T::Request,
}

impl<T: Transport> std::fmt::Debug for ConnIo<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnIo")
            .field("client_address", self.client_address)
            .field("pending_output", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> ConnIo<'_, T> {
    /// Queues `data` for the client. It is written when the socket takes it; while more than
    /// [`Multiplex::HIGH_WATER`](super::Multiplex::HIGH_WATER) bytes wait, the connection is
    /// not read (backpressure).
    pub fn write(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }

    /// Bytes queued and not yet written, this callback's included.
    pub fn pending_output(&self) -> usize {
        self.out.len()
    }

    /// Closes the connection once its queued output is written.
    pub fn close(&mut self) {
        self.asked.close = true;
    }

    /// Half-closes the connection (sends FIN) once its queued output is written; the client's
    /// input is still read.
    pub fn shutdown_write(&mut self) {
        self.asked.shutdown_write = true;
    }

    /// Calls [`ConnectionHandler::timer`] after `after` (replacing a timer set before).
    pub fn set_timer(&mut self, after: Duration) {
        self.asked.timer = Some(Instant::now() + after);
        self.asked.cancel_timer = false;
    }

    /// Cancels the timer.
    pub fn cancel_timer(&mut self) {
        self.asked.timer = None;
        self.asked.cancel_timer = true;
    }

    /// Lends the connection to the server's driver once its queued output is written (the
    /// pooled model: a pool thread serves the next message with blocking reads and writes).
    pub(crate) fn lend(&mut self) {
        self.asked.lend = true;
    }

    /// A handle to write to or close this connection from anywhere.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle {
            mail: Arc::clone(self.mail),
            token: self.token,
            generation: self.generation,
        }
    }

    /// The client's address.
    pub fn client_address(&self) -> &T::Address {
        self.client_address
    }

    /// The connection (Python's `self.request`): socket options, and over TLS what the
    /// handshake found ([`TlsStream::info`](crate::transport::TlsStream::info): ALPN, SNI, the
    /// client's certificate). Reading or writing it directly bypasses the worker's buffers:
    /// use [`write`](Self::write) and the `input` callback.
    pub fn request(&self) -> &T::Request {
        self.request
    }

    /// The server (Python's `self.server`): its address, options, `shutdown()`.
    pub fn server(&self) -> &ServerContext<T> {
        self.server
    }
}

/// The handler of a [`Multiplex`](super::Multiplex) server: one state machine per connection,
/// driven by events instead of a thread blocked in `read`.
///
/// A worker thread owns many connections. For each it calls [`connected`](Self::connected)
/// (which makes the connection's state, [`Conn`](Self::Conn)), [`input`](Self::input) whenever
/// bytes arrive (it sees all unread input, consumes whole messages and leaves the rest for
/// the next call), [`drained`](Self::drained) when output that had to wait has all been
/// written, [`timer`](Self::timer) when the timer it set fires, [`read_closed`](Self::read_closed)
/// when the client half-closes, and [`closed`](Self::closed) once at the end, whatever the
/// reason. Callbacks must not block: a blocked callback stalls every connection of its
/// worker. An error or panic in a callback goes to [`handle_error`](Self::handle_error) and
/// closes that connection only.
///
/// The server-level hooks keep their meaning: `verify_request` runs at accept,
/// `service_actions` and `handle_timeout` in the serving thread.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a connection handler for `{T}`",
    label = "a multiplex server needs a `ConnectionHandler<{T}>`",
    note = "a multiplex server is served by `impl ConnectionHandler<..> for {Self}` (callbacks `connected`, `input`, `closed`, ...); a `StreamHandler` serves the sync, threading and forking models"
)]
pub trait ConnectionHandler<T: Transport>: Send + Sync + 'static {
    /// The state of one connection (the "partially finished request"): lives on its worker
    /// thread, so it need not be `Send`.
    type Conn;

    /// A connection was accepted (and verified): makes its state. Output written here is sent
    /// first (a greeting).
    fn connected(&self, io: &mut ConnIo<'_, T>) -> io::Result<Self::Conn>;

    /// Input arrived: `input` is all the unread input. Returns how many bytes were consumed
    /// (whole messages); the rest is handed back, with more, on the next call. At most
    /// `max_input` unconsumed bytes are kept: above that, `handle_error` and close.
    fn input(&self, conn: &mut Self::Conn, io: &mut ConnIo<'_, T>, input: &[u8]) -> io::Result<usize>;

    /// The client closed its sending side (EOF); unread input that formed no whole message
    /// is in `rest`. Default: close once the queued output is written.
    fn read_closed(&self, conn: &mut Self::Conn, io: &mut ConnIo<'_, T>, rest: &[u8]) -> io::Result<()> {
        let _ = (conn, rest);
        io.close();
        Ok(())
    }

    /// Output that could not be written at once has now all been written. Default: nothing.
    fn drained(&self, conn: &mut Self::Conn, io: &mut ConnIo<'_, T>) -> io::Result<()> {
        let _ = (conn, io);
        Ok(())
    }

    /// The timer set with [`ConnIo::set_timer`] fired. Default: nothing.
    fn timer(&self, conn: &mut Self::Conn, io: &mut ConnIo<'_, T>) -> io::Result<()> {
        let _ = (conn, io);
        Ok(())
    }

    /// The connection is closed (its state is handed back for the last time). Called exactly
    /// once per connection that `connected` accepted. Default: nothing.
    fn closed(&self, conn: Self::Conn, client_address: &T::Address, reason: CloseReason) {
        let _ = (conn, client_address, reason);
    }

    /// Decides at accept whether to serve a connection (Python's `verify_request`).
    /// Default: serve every connection.
    fn verify_request(&self, request: &T::Request, client_address: &T::Address) -> bool {
        let _ = (request, client_address);
        true
    }

    /// A callback failed or panicked, the client reset the connection, it went idle or sent
    /// too much (Python's `handle_error`); the connection is then closed, the others go on.
    /// Default: [`log_request_error`].
    fn handle_error(&self, client_address: &T::Address, error: &RequestError) {
        log_request_error(client_address, error)
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
