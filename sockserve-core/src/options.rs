//! [`Options`]: Python's server and handler class attributes, in one place.

use std::time::Duration;

/// The attributes Python sets on server and handler classes, gathered in one struct.
///
/// Every field keeps its Python name where Python has one. Which fields apply depends on the
/// transport and concurrency model (the `#[server]` macro rejects the others at compile time;
/// at run time they are ignored):
///
/// | field | applies to | Python |
/// |---|---|---|
/// | `poll_interval` | all | `serve_forever(poll_interval=0.5)` |
/// | `timeout` | all | `BaseServer.timeout` |
/// | `request_queue_size` | tcp, unix stream | `TCPServer.request_queue_size` |
/// | `allow_reuse_address`, `allow_reuse_port` | tcp, udp | same names |
/// | `max_packet_size` | udp, unix datagram | `UDPServer.max_packet_size` |
/// | `daemon_threads`, `max_threads` | threading | `ThreadingMixIn.daemon_threads`; `max_threads` is new |
/// | `block_on_close` | threading, forking | same name |
/// | `max_children` | forking | `ForkingMixIn.max_children` |
/// | `rbufsize`, `wbufsize`, `connection_timeout`, `disable_nagle_algorithm` | stream servers | `StreamRequestHandler.rbufsize`, `.wbufsize`, `.timeout`, `.disable_nagle_algorithm` |
/// | `socket_mode`, `remove_stale_socket` | unix | new |
/// | `oob_inline` | tcp | new (the socket option `SO_OOBINLINE`) |
/// | `workers`, `max_connections`, `idle_timeout`, `max_input` | multiplex, pooled | new |
/// | `worker_listeners` | tcp with multiplex or pooled | new (`SO_REUSEPORT` listener per worker) |
/// | `proxy_protocol` | [`Proxied`](crate::transport::Proxied) stream transports | new (HAProxy's PROXY protocol) |
///
/// Build one from [`Options::DEFAULT`] (or a declared handler's `OPTIONS`) with the setters,
/// one per field and named after it, usable in `const` context; or change the public fields
/// of a copy. New fields can be added without breaking either (the struct is
/// `#[non_exhaustive]`). A server checks its options when it is made
/// ([`validate`](Options::validate)).
///
/// ```
/// use std::time::Duration;
/// use sockserve_core::Options;
///
/// const OPTIONS: Options = Options::DEFAULT
///     .connection_timeout(Some(Duration::from_secs(5)))
///     .daemon_threads(true);
/// assert_eq!(OPTIONS.max_children, 40);
///
/// let mut at_run_time = OPTIONS;
/// at_run_time.max_threads = Some(16);
/// assert!(at_run_time.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// How often `serve_forever` wakes up to run `service_actions` when idle. Shutdown does
    /// not wait for it: `shutdown()` wakes the loop at once. Default 500 ms.
    pub poll_interval: Duration,
    /// How long `handle_request()` waits before calling `handle_timeout()`. `None` waits
    /// forever. Default `None`.
    pub timeout: Option<Duration>,
    /// The `listen()` backlog of stream servers. Python's default of 5 drops connections under
    /// any burst; sockserve defaults to 1024 (the kernel caps it at `net.core.somaxconn`).
    pub request_queue_size: u32,
    /// `SO_REUSEADDR` before bind (TCP, UDP). Default `true`, so a restarted server does not
    /// fail on connections in `TIME_WAIT` (Python's default is `False`).
    pub allow_reuse_address: bool,
    /// `SO_REUSEPORT` before bind (TCP, UDP). Default `false`.
    pub allow_reuse_port: bool,
    /// The largest datagram a datagram server receives whole; a larger one is reported to
    /// `handle_error` as truncated, never handed on cut short. Default 8192.
    pub max_packet_size: usize,
    /// Threading: do not track handler threads, so `server_close` does not wait for them.
    /// Default `false`.
    pub daemon_threads: bool,
    /// Threading and forking: `server_close` waits for every handler thread or child process.
    /// Default `true`.
    pub block_on_close: bool,
    /// Threading: the most handler threads alive at once (like `tcpserver -c`); at the cap the
    /// server stops accepting, so new connections wait in the listen backlog. Default 1024
    /// (Python has no cap, so a connection flood could start a thread each); `None` lifts the
    /// cap.
    pub max_threads: Option<usize>,
    /// Forking: the most child processes alive at once; at the cap the server waits for a
    /// child to exit before forking again. Default 40.
    pub max_children: usize,
    /// Stream handlers: the capacity of `rfile`'s buffer. 0 means unbuffered: `rfile` never
    /// reads past what the handler consumes. Default 8192.
    pub rbufsize: usize,
    /// Stream handlers: the capacity of `wfile`'s buffer, flushed after `finish()`. 0 means
    /// unbuffered: every write is sent whole before it returns. Default 0.
    pub wbufsize: usize,
    /// Stream handlers: read and write timeout on the connection (Python's
    /// `StreamRequestHandler.timeout`). Default `None`.
    pub connection_timeout: Option<Duration>,
    /// Stream handlers on TCP: set `TCP_NODELAY` on each connection. Default `false`.
    pub disable_nagle_algorithm: bool,
    /// Unix servers bound to a path: the file mode given to the socket file after bind.
    /// Default `None` (the process umask decides).
    pub socket_mode: Option<u32>,
    /// Unix servers bound to a path: when the path is a socket nobody is listening on (left by
    /// a dead server), remove it before bind. A socket another server listens on is never
    /// removed, nor a file that is not a socket. Default `true`.
    pub remove_stale_socket: bool,
    /// TCP urgent ("out-of-band") data, sent with `MSG_OOB`. `true` (the default): urgent
    /// bytes stay in the stream where they were sent (`SO_OOBINLINE`), so nothing a client
    /// sends is lost or reordered. `false`: each urgent byte is taken out of the stream and
    /// handed to the handler's `handle_urgent` before the in-band bytes after it are read.
    /// RFC 6093 advises new protocols not to use urgent data at all.
    pub oob_inline: bool,
    /// Multiplex: the number of event-loop threads, each with its own epoll instance.
    /// `None` (the default) means `std::thread::available_parallelism()`.
    pub workers: Option<usize>,
    /// Multiplex and pooled, on TCP: each worker accepts on a listening socket of its own,
    /// bound to the server's address with `SO_REUSEADDR` and `SO_REUSEPORT`, so the kernel
    /// spreads new connections across the workers' listeners and the server's own (by a
    /// hash of the client's address and port), and a connection that lands on a worker's
    /// listener is accepted and served by that worker, without the serve loop's hand-off.
    /// Default `false`: the serve loop accepts every connection and hands it to a worker,
    /// round robin.
    ///
    /// - It implies `allow_reuse_port` for the server's listener (`SO_REUSEPORT` is set
    ///   before bind). A listener adopted already bound ([`Tcp::from_std`](crate::transport::Tcp::from_std),
    ///   systemd's `ReusePort=`) must have `SO_REUSEPORT` set, or the workers' listeners
    ///   cannot bind and `serve_forever` fails.
    /// - The server's own listener stays in the group: the connections the kernel gives it
    ///   are accepted by the serve loop and handed off as without this option (with `workers`
    ///   workers, about one in `workers + 1`).
    /// - The workers start, with their listeners, when the server starts serving
    ///   (`serve_forever`, `handle_request`); `verify_request` runs on the worker that
    ///   accepted; `max_connections` counts the connections of every listener (at the cap a
    ///   worker stops accepting, holding at most the one it accepted, until a connection
    ///   closes); `EMFILE` and its kind back off as in the serve loop.
    /// - `server_close` closes the workers' listeners: what is queued on one then is accepted
    ///   and drained with the other connections, not reset; a connection the kernel queues on
    ///   a listener that is closing is reset, as with any listener that closes.
    /// - Any process of the same user may bind a `SO_REUSEPORT` listener to the same address
    ///   and so take a share of the connections.
    ///
    /// Transports that cannot open another listener on their address
    /// ([`Transport::worker_listener`](crate::transport::Transport::worker_listener) is
    /// `None`: Unix sockets, the layers) ignore it, as do the other models.
    pub worker_listeners: bool,
    /// Multiplex: the most connections open at once; at the cap the server stops accepting,
    /// so new connections wait in the listen backlog. Default `None` (no cap beyond the
    /// descriptor limit).
    pub max_connections: Option<usize>,
    /// Multiplex: a connection that sends nothing and has nothing left to send for this long
    /// is closed (`handle_error` gets [`RequestError::TimedOut`](crate::RequestError::TimedOut)).
    /// Default `None`.
    pub idle_timeout: Option<Duration>,
    /// Multiplex: the most unread input bytes a connection may hold (what its handler has not
    /// consumed yet); a connection above it goes to `handle_error` and is closed. Bounds memory
    /// against oversized messages and slow senders. Default 1 MiB.
    pub max_input: usize,
    /// Stream servers whose transport is [`Proxied`](crate::transport::Proxied): which PROXY
    /// protocol header (HAProxy's v1 text or v2 binary) each connection must start with; the
    /// original client's address then replaces `client_address`. Default
    /// [`ProxyProtocol::Off`](crate::transport::ProxyProtocol::Off). Other transports ignore
    /// it.
    pub proxy_protocol: crate::transport::ProxyProtocol,
}

impl Options {
    /// The defaults, usable in `const` context (`..Options::DEFAULT`).
    pub const DEFAULT: Options = Options {
        poll_interval: Duration::from_millis(500),
        timeout: None,
        request_queue_size: 1024,
        allow_reuse_address: true,
        allow_reuse_port: false,
        max_packet_size: 8192,
        daemon_threads: false,
        block_on_close: true,
        max_threads: Some(1024),
        max_children: 40,
        rbufsize: 8192,
        wbufsize: 0,
        connection_timeout: None,
        disable_nagle_algorithm: false,
        socket_mode: None,
        remove_stale_socket: true,
        oob_inline: true,
        workers: None,
        worker_listeners: false,
        max_connections: None,
        idle_timeout: None,
        max_input: 1 << 20,
        proxy_protocol: crate::transport::ProxyProtocol::Off,
    };
}

/// A `const` setter per field: `Options::DEFAULT.max_threads(Some(16))`.
macro_rules! setters {
    ($($field:ident: $ty:ty),* $(,)?) => {
        impl Options {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Options::", stringify!($field), ").")]
                #[must_use]
                pub const fn $field(mut self, $field: $ty) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

setters! {
    poll_interval: Duration,
    timeout: Option<Duration>,
    request_queue_size: u32,
    allow_reuse_address: bool,
    allow_reuse_port: bool,
    max_packet_size: usize,
    daemon_threads: bool,
    block_on_close: bool,
    max_threads: Option<usize>,
    max_children: usize,
    rbufsize: usize,
    wbufsize: usize,
    connection_timeout: Option<Duration>,
    disable_nagle_algorithm: bool,
    socket_mode: Option<u32>,
    remove_stale_socket: bool,
    oob_inline: bool,
    workers: Option<usize>,
    worker_listeners: bool,
    max_connections: Option<usize>,
    idle_timeout: Option<Duration>,
    max_input: usize,
    proxy_protocol: crate::transport::ProxyProtocol,
}

impl Options {
    /// Checks values no server can work with; every server made runs it. A zero
    /// `connection_timeout` (the OS rejects it, so every request would fail), a zero
    /// `max_threads`, `max_children`, `max_packet_size` or `request_queue_size`, and a
    /// `socket_mode` beyond `0o7777` are errors (`InvalidInput`, naming the field). A zero
    /// `poll_interval` is allowed and means 1 ms.
    pub fn validate(&self) -> std::io::Result<()> {
        let invalid = |what: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid Options: {what}"),
            ))
        };
        if self.connection_timeout == Some(Duration::ZERO) {
            return invalid("connection_timeout must be above zero (None means no timeout)");
        }
        if self.max_threads == Some(0) {
            return invalid("max_threads must be at least 1 (None means no cap)");
        }
        if self.max_children == 0 {
            return invalid("max_children must be at least 1");
        }
        if self.max_packet_size == 0 {
            return invalid("max_packet_size must be at least 1");
        }
        if self.request_queue_size == 0 {
            return invalid("request_queue_size must be at least 1");
        }
        if self.workers == Some(0) {
            return invalid("workers must be at least 1 (None means one per CPU)");
        }
        if self.max_connections == Some(0) {
            return invalid("max_connections must be at least 1 (None means no cap)");
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return invalid("idle_timeout must be above zero (None means no timeout)");
        }
        if self.max_input == 0 {
            return invalid("max_input must be at least 1");
        }
        if self.socket_mode.is_some_and(|mode| mode > 0o7777) {
            return invalid("socket_mode must be a file mode, at most 0o7777");
        }
        Ok(())
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::DEFAULT
    }
}
