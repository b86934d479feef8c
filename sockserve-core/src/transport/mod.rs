//! Transports: where requests come from (Python's `TCPServer`, `UDPServer`,
//! `UnixStreamServer`, `UnixDatagramServer`, and any source you write).
//!
//! A transport owns the listening socket (or any other request source) and implements
//! Python's socket-level server methods: `server_bind`, `server_activate`, `get_request`,
//! `shutdown_request`, `close_request`, `server_close`, `fileno`. Its [`Transport::Kind`]
//! says which handler trait serves its requests:
//!
//! | kind | handler trait | built-in transports |
//! |---|---|---|
//! | [`StreamKind`] | [`StreamHandler`](crate::StreamHandler) | [`Tcp`], [`Unix`] |
//! | [`DatagramKind`] | [`DatagramHandler`](crate::DatagramHandler) | [`Udp`], [`UnixDgram`] |
//! | [`BaseKind`] | [`RequestHandler`](crate::RequestHandler) | your own, e.g. rows of a SQL table |
//!
//! To override a socket-level hook (say `server_bind`), wrap a built-in transport in your
//! own type, implement [`Transport`] by delegating, and change the one method.

use std::fmt::{Debug, Display};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::options::Options;

/// The parts of a [`Transport`] impl that a layer over another transport (`self.inner`, a
/// `T: Transport`) hands straight to it: binding, activation, the address, the descriptor, the
/// loop's waits, closing, and `BACKLOG`. A layer writes only what it changes (its request
/// type, `open`, `get_request`, `prepare`, ...), so it cannot drift from its inner transport
/// when the trait grows.
macro_rules! delegate_to_inner {
    () => {
        const BACKLOG: bool = T::BACKLOG;

        fn server_bind(&mut self, options: &$crate::options::Options) -> ::std::io::Result<()> {
            self.inner.server_bind(options)
        }
        fn server_activate(&mut self, options: &$crate::options::Options) -> ::std::io::Result<()> {
            self.inner.server_activate(options)
        }
        fn server_address(&self) -> T::ServerAddress {
            self.inner.server_address()
        }
        fn fileno(&self) -> ::std::option::Option<::std::os::fd::BorrowedFd<'_>> {
            self.inner.fileno()
        }
        fn wait_for_request(
            &self,
            wake: ::std::os::fd::BorrowedFd<'_>,
            timeout: ::std::option::Option<::std::time::Duration>,
        ) -> ::std::io::Result<bool> {
            self.inner.wait_for_request(wake, timeout)
        }
        fn wait_for_request_only(
            &self,
            timeout: ::std::option::Option<::std::time::Duration>,
        ) -> ::std::io::Result<()> {
            self.inner.wait_for_request_only(timeout)
        }
        fn server_close(&self) {
            self.inner.server_close()
        }
    };
}
use delegate_to_inner;

mod inet;
mod peercred;
mod proxy;
#[cfg(feature = "tls")]
pub mod tls;
mod unix;

pub use inet::{Tcp, Udp};
pub use peercred::{PeerCred, PeerCredentials};
pub use proxy::{read_proxy_header, Proxied, ProxyProtocol, HEADER_TIMEOUT, MAX_HEADER};
#[cfg(feature = "tls")]
pub use tls::{Tls, TlsConfig, TlsInfo, TlsStream};
pub use unix::{Unix, UnixAddr, UnixDgram};

/// Marker: the transport's requests are connections, served by a
/// [`StreamHandler`](crate::StreamHandler).
#[derive(Debug)]
pub enum StreamKind {}
/// Marker: the transport's requests are datagrams, served by a
/// [`DatagramHandler`](crate::DatagramHandler).
#[derive(Debug)]
pub enum DatagramKind {}
/// Marker: the transport's requests are handed as they are to a
/// [`RequestHandler`](crate::RequestHandler) (Python's `BaseRequestHandler`).
#[derive(Debug)]
pub enum BaseKind {}

/// A source of requests: the socket-level half of a Python server class.
///
/// Built-in: [`Tcp`], [`Udp`], [`Unix`], [`UnixDgram`]. Implement it for any other
/// source; the seed's example is a queue whose `get_request` returns the next pending row of a
/// SQL table (`examples/sql_queue`).
///
/// `get_request` must not block: it returns `Ok(None)` when nothing is pending. The server
/// waits for [`fileno`](Transport::fileno) to become readable; a transport without a
/// descriptor is asked again every `poll_interval`.
pub trait Transport: Sized + 'static {
    /// One request: a connection, a datagram, a row...
    type Request;
    /// The client's address (Python's `client_address`).
    type Address: Clone + Debug + Display + Send + 'static;
    /// The server's own address, as bound (Python's `server_address`).
    type ServerAddress: Clone + Debug + Display + Send + Sync + 'static;
    /// What the server is asked to bind to.
    type BindAddress;
    /// Which handler trait serves this transport: [`StreamKind`], [`DatagramKind`] or
    /// [`BaseKind`].
    type Kind;

    /// Creates the socket (Python's `__init__` up to `server_bind`), without binding it.
    fn open(address: Self::BindAddress, options: &Options) -> io::Result<Self>;
    /// Binds the socket (Python's `server_bind`); afterwards `server_address` is the real
    /// address (the chosen port when port 0 was asked).
    fn server_bind(&mut self, options: &Options) -> io::Result<()>;
    /// Starts listening (Python's `server_activate`).
    fn server_activate(&mut self, options: &Options) -> io::Result<()>;
    /// The address the server is bound to.
    fn server_address(&self) -> Self::ServerAddress;
    /// The descriptor to wait on for requests (Python's `fileno`); `None` for sources that
    /// have none.
    fn fileno(&self) -> Option<BorrowedFd<'_>>;
    /// Takes the next pending request, without blocking (Python's `get_request`).
    fn get_request(&self) -> io::Result<Option<(Self::Request, Self::Address)>>;
    /// Ends a request after it was handled (Python's `shutdown_request`); by default
    /// [`close_request`](Transport::close_request).
    fn shutdown_request(&self, request: Self::Request) {
        self.close_request(request)
    }
    /// Releases a request (Python's `close_request`); by default drops it.
    fn close_request(&self, request: Self::Request) {
        drop(request)
    }
    /// Whether the transport's pending requests are connections the kernel already completed
    /// (a listen backlog), which closing the socket would reset: a graceful stop
    /// ([`Server::serve_until_signal`](crate::Server::serve_until_signal)) then serves them
    /// before closing. `true` for [`Tcp`] and [`Unix`]; default `false` (a stop leaves pending
    /// requests, such as queued rows, for the next server).
    const BACKLOG: bool = false;
    /// Whether requests of this transport go through [`prepare`](Transport::prepare) before
    /// `verify_request`. Default `false`: `verify_request` runs at accept, in the serving
    /// thread, as in Python.
    const PREPARES: bool = false;
    /// The per-connection prepare stage, run where the request is processed (the handler
    /// thread, the forked child, the event loop), never in the accept loop, and before
    /// `verify_request`: a TLS handshake, a PROXY protocol header (which may replace
    /// `client_address` with the original client's). Only called when
    /// [`PREPARES`](Transport::PREPARES) is `true`. An error (or panic) goes to
    /// `handle_error`, then `shutdown_request`; the handler never sees the request. Default:
    /// nothing.
    fn prepare(&self, request: &mut Self::Request, client_address: &mut Self::Address) -> io::Result<()> {
        let _ = (request, client_address);
        Ok(())
    }
    /// The prepare stage on an event loop (the multiplex and pooled models): called when the
    /// connection reaches its worker and again each time its socket is readable or writable,
    /// until it returns `Ok(true)` (done); `Ok(false)` means it waits for the peer, after a
    /// read or write that would have blocked (the poller is edge-triggered). It must never
    /// wait itself: it reads and writes with [`Connection::read_nowait`] and its kind.
    /// `progress` keeps, between calls, one mark per layer of transports: a layer whose stage
    /// comes in parts records where it is with it (`Proxied`: its header is taken; `Tls`: the
    /// stage of the transport under it is done) and hands
    /// [`progress.inner()`](PrepareProgress::inner) to the transport it wraps. The worker
    /// bounds the whole stage by [`prepare_timeout`](Transport::prepare_timeout); an error goes
    /// to `handle_error` as [`RequestError::Prepare`](crate::RequestError::Prepare) and the
    /// connection is closed. Default: `Ok(true)` for a transport without a prepare stage; an
    /// `Unsupported` error for one whose `prepare` has no event-loop form (its connections are
    /// then refused one by one, each reported).
    fn prepare_nowait(
        &self,
        request: &mut Self::Request,
        client_address: &mut Self::Address,
        progress: PrepareProgress<'_>,
    ) -> io::Result<bool> {
        let _ = (request, client_address, progress);
        if Self::PREPARES {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this transport's prepare stage cannot run on an event loop (no prepare_nowait)",
            ))
        } else {
            Ok(true)
        }
    }
    /// How long [`prepare_nowait`](Transport::prepare_nowait) may take in all, from the
    /// connection's arrival at its worker: past it, the connection is closed and
    /// `handle_error` told ([`RequestError::Prepare`](crate::RequestError::Prepare), timed
    /// out). Default: 10 s.
    fn prepare_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
    /// Waits until a request may be pending (the descriptor is readable) or `wake` is (a
    /// shutdown), at most `timeout`; returns whether `wake` is readable. The serve loop waits
    /// here, so a transport whose requests announce themselves some other way (a database
    /// notification, a pipe) overrides it. Default: `poll` on [`fileno`](Transport::fileno)
    /// and `wake`; a transport without a descriptor is asked again after `timeout`.
    fn wait_for_request(&self, wake: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
        let [_, woken] = crate::sys::poll_readable([self.fileno(), Some(wake)], timeout)?;
        Ok(woken)
    }
    /// Waits until a request may be pending, at most `timeout` (`handle_request`, which no
    /// shutdown interrupts). Default: `poll` on [`fileno`](Transport::fileno).
    fn wait_for_request_only(&self, timeout: Option<Duration>) -> io::Result<()> {
        crate::sys::poll_readable([self.fileno()], timeout).map(drop)
    }
    /// Stops taking requests and releases what the transport holds outside the process,
    /// such as a Unix socket file (Python's `server_close`). Called once, by
    /// [`Server::server_close`](crate::Server::server_close).
    fn server_close(&self) {}
    /// Another listener of the same type on this transport's (bound) address, bound and
    /// listening, non-blocking, for one worker of a multiplex or pooled server with
    /// [`Options::worker_listeners`]: the kernel then spreads new connections across this
    /// listener and its siblings (`SO_REUSEPORT`). Called once per worker when the server
    /// starts serving; the worker takes connections from it with
    /// [`get_request`](Transport::get_request) and drops it (never calls its
    /// `server_close`) when it stops. Default `None`: the transport has no such listener
    /// (the option is then ignored and the serve loop accepts every connection). [`Tcp`]
    /// opens one.
    fn worker_listener(&self, options: &Options) -> Option<io::Result<Self>> {
        let _ = options;
        None
    }
}

/// A connection's record of its event-loop prepare stage ([`Transport::prepare_nowait`]),
/// kept by the worker between calls: one mark per layer of transports (the outermost first),
/// for a layer whose stage comes in parts to record where it is, whatever order it and the
/// transport it wraps go in.
#[derive(Debug)]
pub struct PrepareProgress<'a> {
    marks: &'a mut u64,
    depth: u32,
}

impl<'a> PrepareProgress<'a> {
    /// A new connection's record, no mark set, as the outermost layer sees it.
    pub(crate) fn new(marks: &'a mut u64) -> Self {
        PrepareProgress { marks, depth: 0 }
    }

    /// This layer's mark (none past the 64th layer).
    fn bit(&self) -> u64 {
        1u64.checked_shl(self.depth).unwrap_or(0)
    }

    /// Whether this layer has set its mark.
    pub fn is_marked(&self) -> bool {
        *self.marks & self.bit() != 0
    }

    /// Sets this layer's mark. (Past 64 layers nothing is recorded: `is_marked` stays false.)
    pub fn mark(&mut self) {
        *self.marks |= self.bit();
    }

    /// The record as the transport this layer wraps sees it: its own mark.
    pub fn inner(&mut self) -> PrepareProgress<'_> {
        PrepareProgress {
            marks: self.marks,
            depth: self.depth.saturating_add(1),
        }
    }
}

/// A connection a [`StreamHandler`](crate::StreamHandler) reads and writes.
///
/// `rfile` and `wfile` read and write it through shared references at the same time
/// (`&TcpStream` is both `Read` and `Write`), so a connection names the types that do that.
pub trait Connection: Send + 'static {
    /// What `rfile` buffers: for sockets, `&Self`.
    type Reader<'a>: Read
    where
        Self: 'a;
    /// What `wfile` writes to: for sockets, `&Self`.
    type Writer<'a>: Write
    where
        Self: 'a;
    /// A reader over the connection.
    fn reader(&self) -> Self::Reader<'_>;
    /// A writer to the connection.
    fn writer(&self) -> Self::Writer<'_>;
    /// Sets the read and write timeouts (Python's `StreamRequestHandler.timeout`).
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// The socket whose read side, shut down (`shutdown(SHUT_RD)`), ends a read blocked on
    /// this connection with end of input: how
    /// [`close_idle_connections`](crate::ShutdownHandle::close_idle_connections) reaches a
    /// handler waiting for its next request. Default: none (such a connection is not ended).
    fn read_side(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// Sets `TCP_NODELAY` where that means something; a no-op by default.
    fn set_nodelay(&self, _nodelay: bool) -> io::Result<()> {
        Ok(())
    }
    /// Waits up to `timeout` (`None`: no limit) for input, and takes a TCP urgent byte if that
    /// is what arrived. `rfile` calls it before each read when `oob_inline` is off. Default:
    /// this kind of connection has no urgent data, so input is always [`Incoming::Ready`] and
    /// the read itself waits.
    fn wait_input(&self, timeout: Option<Duration>) -> io::Result<Incoming> {
        let _ = timeout;
        Ok(Incoming::Ready)
    }

    // What an event loop needs (the multiplex and pooled models). The socket stays blocking,
    // for the threads that use the connection as it is (a pooled model's pool thread); these
    // calls never wait. A connection kind without them is refused by those models with
    // `Unsupported` errors, one per connection, through `handle_error`.

    /// Reads what has arrived, without waiting: `Ok(0)` at end of input, a `WouldBlock` error
    /// when nothing has. A read that returns less than `buf.len()` has emptied the socket: the
    /// event loop's poller is edge-triggered, and what such a read left would raise no new
    /// event. Default: unsupported.
    fn read_nowait(&self, buf: &mut [u8]) -> io::Result<usize> {
        let _ = buf;
        Err(no_event_loop())
    }
    /// Writes what the socket takes now, without waiting; a `WouldBlock` error when it takes
    /// nothing. Default: unsupported.
    fn write_nowait(&self, buf: &[u8]) -> io::Result<usize> {
        let _ = buf;
        Err(no_event_loop())
    }
    /// Sends what the connection holds that the socket has not taken yet (TLS records),
    /// without waiting; `Ok(true)` when nothing is left, `Ok(false)` when the rest waits for
    /// the socket to be writable. Default: a connection holds nothing (`Ok(true)`).
    fn flush_nowait(&self) -> io::Result<bool> {
        Ok(true)
    }
    /// Half-closes: no more output (TLS sends `close_notify` first), input is still read.
    /// Default: unsupported.
    fn shutdown_write(&self) -> io::Result<()> {
        Err(no_event_loop())
    }
}

fn no_event_loop() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this kind of connection cannot be driven by an event loop (no non-blocking reads and writes)",
    )
}

/// What [`Connection::wait_input`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// In-band input (or its end) is ready: a read will not wait.
    Ready,
    /// A TCP urgent byte, taken out of the stream.
    Urgent(u8),
    /// Nothing arrived within the timeout.
    TimedOut,
}

/// A transport whose requests are [`Connection`]s.
pub trait StreamTransport: Transport<Kind = StreamKind, Request: Connection> {}

/// A transport whose requests are [`Datagram`]s.
pub trait DatagramTransport: Transport<Kind = DatagramKind, Request = Datagram<Self::Socket>> {
    /// The server socket, shared with every request to send replies.
    type Socket: Send + Sync + 'static;
    /// Sends `buf` to `address` from `socket`.
    fn send_to(socket: &Self::Socket, buf: &[u8], address: &Self::Address) -> io::Result<usize>;
}

/// One received datagram (Python's `(data, socket)` request of datagram servers).
#[derive(Debug)]
pub struct Datagram<S> {
    /// The bytes received, at most `max_packet_size` of them.
    pub packet: Vec<u8>,
    /// The server socket, for replies.
    pub socket: Arc<S>,
    /// The datagram's real length: larger than `packet.len()` when it was truncated.
    pub received: usize,
}

impl<S> Datagram<S> {
    /// Whether the datagram was larger than `max_packet_size` and so was cut.
    pub fn is_truncated(&self) -> bool {
        self.received > self.packet.len()
    }
}

/// Receive buffers of the datagram transports. A datagram is received straight into one (no
/// copy, no zeroing) and becomes the request's `packet`; the buffer comes back when the request
/// is closed, so a busy server allocates nothing per datagram.
#[derive(Debug)]
pub(crate) struct Packets {
    size: usize,
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Packets {
    /// Buffers kept for reuse at most: enough for the requests a threading server has in
    /// flight at once, without holding on to a burst's worth.
    const KEEP: usize = 64;

    pub(crate) fn new(max_packet_size: usize) -> Self {
        Packets {
            size: max_packet_size.max(1),
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Receives one pending datagram as a request from `socket` (shared with the request for
    /// replies), its sender turned into an address by `address`; `None` when nothing is
    /// pending.
    #[inline]
    pub(crate) fn recv<S, A>(
        &self,
        socket: &Arc<S>,
        address: impl FnOnce(&socket2::SockAddr) -> io::Result<A>,
    ) -> io::Result<Option<(Datagram<S>, A)>>
    where
        S: std::os::fd::AsFd,
    {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut packet = reused.unwrap_or_else(|| Vec::with_capacity(self.size));
        let received =
            crate::sys::recv_from_truncating(socket2::SockRef::from(&**socket), &mut packet, self.size);
        let result = received.and_then(|(received, from)| Ok((received, address(&from)?)));
        match result {
            Ok((received, from)) => Ok(Some((
                Datagram {
                    packet,
                    socket: Arc::clone(socket),
                    received,
                },
                from,
            ))),
            Err(e) => {
                self.recycle(packet);
                if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Takes a packet's buffer back.
    #[inline]
    pub(crate) fn recycle(&self, mut buf: Vec<u8>) {
        if buf.capacity() < self.size {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < Self::KEEP {
            free.push(buf);
        }
    }
}

/// Turns what a user passes to `bind` into a transport's [`Transport::BindAddress`].
///
/// Implemented for everything [`ToSocketAddrs`] (`"127.0.0.1:0"`, `("::1", 8080)`, a
/// `SocketAddr`...) for [`Tcp`] and [`Udp`], and for paths and [`UnixAddr`] for the Unix
/// transports. A custom transport implements it for what its users pass to `bind`: with its
/// own address type `A`, `impl ToAddress<A> for PathBuf` is allowed (see `examples/sql_queue`).
pub trait ToAddress<A> {
    /// Resolves the address.
    fn to_address(self) -> io::Result<A>;
}

impl<S: ToSocketAddrs> ToAddress<SocketAddr> for S {
    fn to_address(self) -> io::Result<SocketAddr> {
        self.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolved to no socket address",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::PrepareProgress;

    #[test]
    fn each_layer_has_its_own_mark_in_any_order() {
        let mut marks = 0u64;
        let mut outer = PrepareProgress::new(&mut marks);
        // The inner layer finishes first (Tls<T>: T's stage, then the handshake).
        outer.inner().mark();
        assert!(!outer.is_marked());
        assert!(outer.inner().is_marked());
        assert!(!outer.inner().inner().is_marked());
        outer.mark();
        assert!(outer.is_marked());
        assert_eq!(marks, 0b11);
        // Past 64 layers nothing is recorded, and nothing panics.
        let mut deep = 0u64;
        let mut progress = PrepareProgress::new(&mut deep);
        let mut view = progress.inner();
        for _ in 0..70 {
            view.mark();
            view = PrepareProgress {
                depth: view.depth + 1,
                marks: view.marks,
            };
        }
        view.mark();
        assert!(!view.is_marked());
        assert_eq!(deep, u64::MAX - 1);
    }
}
