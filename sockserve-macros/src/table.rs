//! The tables that define the DSL: transports, concurrency models and option keys.
//!
//! Everything the macro knows about `sockserve-core` lives here. Validation, the
//! "did you mean" suggestions, code generation and the README key table are all
//! driven by these three tables, so adding a concurrency model (say `thread_pool`)
//! or an option is one new row.

/// One transport keyword of the grammar.
#[derive(Debug)]
pub(crate) struct TransportDef {
    /// The keyword written in `#[server(...)]`.
    pub name: &'static str,
    /// The type under `::sockserve::transport`.
    pub ty: &'static str,
    /// The stem of the core server aliases: `Tcp` in `ThreadingTcpServer`.
    pub alias_stem: &'static str,
}

/// The transports, in the order the documentation lists them.
pub(crate) const TRANSPORTS: &[TransportDef] = &[
    TransportDef {
        name: "tcp",
        ty: "Tcp",
        alias_stem: "Tcp",
    },
    TransportDef {
        name: "udp",
        ty: "Udp",
        alias_stem: "Udp",
    },
    TransportDef {
        name: "unix_stream",
        ty: "Unix",
        alias_stem: "UnixStream",
    },
    TransportDef {
        name: "unix_datagram",
        ty: "UnixDgram",
        alias_stem: "UnixDatagram",
    },
];

/// The layer word `tls`: the transport wrapped in `::sockserve::transport::Tls` (TLS through
/// rustls, the handshake in the prepare stage). Stream transports only.
pub(crate) const TLS_WORD: &str = "tls";

/// One concurrency keyword of the grammar.
#[derive(Debug)]
pub(crate) struct ConcurrencyDef {
    /// The keyword written in `#[server(...)]`.
    pub name: &'static str,
    /// The type under `::sockserve::concurrency`.
    pub ty: &'static str,
    /// Prefix of the named core alias (`""` gives `TcpServer`, `"Threading"` gives
    /// `ThreadingTcpServer`); `None` when core has no alias for the model, in which
    /// case the macro names `::sockserve::Server<T, C, H>` directly.
    pub alias_prefix: Option<&'static str>,
    /// The transports the model serves, and why it serves no others (for the error).
    pub transports: Scope,
    pub why_not: &'static str,
}

/// The concurrency models. The first one is the default when none is written.
pub(crate) const CONCURRENCY: &[ConcurrencyDef] = &[
    ConcurrencyDef {
        name: "sync",
        ty: "Synchronous",
        alias_prefix: Some(""),
        transports: Scope::All,
        why_not: "",
    },
    ConcurrencyDef {
        name: "threading",
        ty: "Threading",
        alias_prefix: Some("Threading"),
        transports: Scope::All,
        why_not: "",
    },
    ConcurrencyDef {
        name: "forking",
        ty: "Forking",
        alias_prefix: Some("Forking"),
        transports: Scope::All,
        why_not: "",
    },
    ConcurrencyDef {
        name: "multiplex",
        ty: "Multiplex",
        alias_prefix: Some("Multiplex"),
        transports: STREAM,
        why_not: "it multiplexes connections, and a datagram server already reads every client's \
                  datagrams from one socket without a thread per client",
    },
    ConcurrencyDef {
        name: "pooled",
        ty: "Pooled",
        alias_prefix: Some("Pooled"),
        transports: STREAM,
        why_not: "it parks idle connections between messages, and a datagram server has no \
                  connections: every datagram is one message already",
    },
];

/// The concurrency model used when the attribute names none.
pub(crate) fn default_concurrency() -> &'static ConcurrencyDef {
    &CONCURRENCY[0]
}

/// Where an option applies: to every transport (or model), or to the listed ones.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope {
    All,
    Only(&'static [&'static str]),
}

/// The value an option key takes, and the Rust type of its `Options` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueKind {
    /// `true` / `false`.
    Bool,
    /// A duration string such as `"250ms"`. `optional`: the field is an
    /// `Option<Duration>`; `positive`: zero is rejected.
    Duration { optional: bool, positive: bool },
    /// An integer literal. `optional`: the field is an `Option<..>`; `min`/`max`
    /// are inclusive bounds.
    Int {
        ty: IntType,
        optional: bool,
        min: u64,
        max: u64,
    },
    /// A Unix permission mode such as `0o660`, stored as `Option<u32>`.
    Mode,
    /// The name of the generated server type, as a string (not an `Options` field).
    TypeName,
    /// The path of the sockserve crate, as a string (not an `Options` field).
    CratePath,
    /// A custom transport type, as a path (not an `Options` field).
    TransportType,
    /// A PROXY protocol version, `"v1"`, `"v2"` or `"any"`: the transport becomes
    /// `transport::Proxied<..>` of the declared one.
    Proxy,
}

impl ValueKind {
    /// Whether the key sets a field of `Options` (the others shape the declaration).
    pub(crate) fn is_options_field(self) -> bool {
        !matches!(
            self,
            ValueKind::TypeName | ValueKind::CratePath | ValueKind::TransportType
        )
    }
}

/// The Rust type of an integer field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntType {
    U32,
    Usize,
}

/// The largest value any integer key accepts (`usize` keys are capped here so
/// the literal fits on every target `sockserve` builds for).
pub(crate) const USIZE_MAX: u64 = u32::MAX as u64;

/// One `key = value` option of the grammar.
///
/// `default`, `python` and `doc` only feed the documentation; the tests render
/// them into the key table of the README and of the `server` docs.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct KeyDef {
    /// The key, which is also the field of `::sockserve::Options` it sets
    /// (except `name`, which names the server type).
    pub name: &'static str,
    pub kind: ValueKind,
    pub transports: Scope,
    pub concurrency: Scope,
    /// The value used when the key is omitted (`Options::DEFAULT`), as documented.
    pub default: &'static str,
    /// A valid value, shown in error messages.
    pub example: &'static str,
    /// The name of the setting in Python's `socketserver`.
    pub python: &'static str,
    /// What the option does, one line.
    pub doc: &'static str,
}

const STREAM: Scope = Scope::Only(&["tcp", "unix_stream"]);
const DATAGRAM: Scope = Scope::Only(&["udp", "unix_datagram"]);
const INET: Scope = Scope::Only(&["tcp", "udp"]);
const MULTIPLEX: Scope = Scope::Only(&["multiplex", "pooled"]);
const UNIX: Scope = Scope::Only(&["unix_stream", "unix_datagram"]);

/// Every option key, in the order of the `Options` struct.
pub(crate) const KEYS: &[KeyDef] = &[
    KeyDef {
        name: "poll_interval",
        kind: ValueKind::Duration {
            optional: false,
            positive: true,
        },
        transports: Scope::All,
        concurrency: Scope::All,
        default: "\"500ms\"",
        example: "\"500ms\"",
        python: "`serve_forever(poll_interval=0.5)`",
        doc: "How often an idle `serve_forever` wakes up to run `service_actions`.",
    },
    KeyDef {
        name: "timeout",
        kind: ValueKind::Duration {
            optional: true,
            positive: false,
        },
        transports: Scope::All,
        concurrency: Scope::All,
        default: "none",
        example: "\"5s\"",
        python: "`BaseServer.timeout`",
        doc: "How long `handle_request` waits for a request before calling `handle_timeout`.",
    },
    KeyDef {
        name: "request_queue_size",
        kind: ValueKind::Int {
            ty: IntType::U32,
            optional: false,
            min: 1,
            max: u32::MAX as u64,
        },
        transports: STREAM,
        concurrency: Scope::All,
        default: "1024",
        example: "128",
        python: "`TCPServer.request_queue_size`",
        doc: "The `listen()` backlog.",
    },
    KeyDef {
        name: "allow_reuse_address",
        kind: ValueKind::Bool,
        transports: INET,
        concurrency: Scope::All,
        default: "true",
        example: "false",
        python: "`TCPServer.allow_reuse_address`",
        doc: "Set `SO_REUSEADDR` before binding.",
    },
    KeyDef {
        name: "allow_reuse_port",
        kind: ValueKind::Bool,
        transports: INET,
        concurrency: Scope::All,
        default: "false",
        example: "true",
        python: "`TCPServer.allow_reuse_port`",
        doc: "Set `SO_REUSEPORT` before binding.",
    },
    KeyDef {
        name: "max_packet_size",
        kind: ValueKind::Int {
            ty: IntType::Usize,
            optional: false,
            min: 1,
            max: USIZE_MAX,
        },
        transports: DATAGRAM,
        concurrency: Scope::All,
        default: "8192",
        example: "65507",
        python: "`UDPServer.max_packet_size`",
        doc: "The largest datagram received whole; a longer one goes to `handle_error`.",
    },
    KeyDef {
        name: "daemon_threads",
        kind: ValueKind::Bool,
        transports: Scope::All,
        concurrency: Scope::Only(&["threading"]),
        default: "false",
        example: "true",
        python: "`ThreadingMixIn.daemon_threads`",
        doc: "Do not wait for handler threads on `server_close`.",
    },
    KeyDef {
        name: "block_on_close",
        kind: ValueKind::Bool,
        transports: Scope::All,
        concurrency: Scope::Only(&["threading", "forking"]),
        default: "true",
        example: "false",
        python: "`ThreadingMixIn.block_on_close`, `ForkingMixIn.block_on_close`",
        doc: "`server_close` waits for running handlers (threads or children).",
    },
    KeyDef {
        name: "max_threads",
        kind: ValueKind::Int {
            ty: IntType::Usize,
            optional: true,
            min: 1,
            max: USIZE_MAX,
        },
        transports: Scope::All,
        concurrency: Scope::Only(&["threading", "pooled"]),
        default: "`1024`",
        example: "64",
        python: "none (new)",
        doc: "Cap on live handler threads; at the cap, connections wait in the backlog.",
    },
    KeyDef {
        name: "max_children",
        kind: ValueKind::Int {
            ty: IntType::Usize,
            optional: false,
            min: 1,
            max: USIZE_MAX,
        },
        transports: Scope::All,
        concurrency: Scope::Only(&["forking"]),
        default: "40",
        example: "40",
        python: "`ForkingMixIn.max_children`",
        doc: "Cap on live child processes; at the cap, the server waits for one to exit.",
    },
    KeyDef {
        name: "rbufsize",
        kind: ValueKind::Int {
            ty: IntType::Usize,
            optional: false,
            min: 0,
            max: USIZE_MAX,
        },
        transports: STREAM,
        concurrency: Scope::All,
        default: "8192",
        example: "65536",
        python: "`StreamRequestHandler.rbufsize`",
        doc: "Buffer size of `rfile` (0 = unbuffered).",
    },
    KeyDef {
        name: "wbufsize",
        kind: ValueKind::Int {
            ty: IntType::Usize,
            optional: false,
            min: 0,
            max: USIZE_MAX,
        },
        transports: STREAM,
        concurrency: Scope::All,
        default: "0",
        example: "8192",
        python: "`StreamRequestHandler.wbufsize`",
        doc: "Buffer size of `wfile` (0 = unbuffered, each write sent whole).",
    },
    KeyDef {
        name: "connection_timeout",
        kind: ValueKind::Duration {
            optional: true,
            positive: true,
        },
        transports: STREAM,
        concurrency: Scope::All,
        default: "none",
        example: "\"30s\"",
        python: "`StreamRequestHandler.timeout`",
        doc: "Read/write timeout on each connection (the OS rejects a zero timeout).",
    },
    KeyDef {
        name: "disable_nagle_algorithm",
        kind: ValueKind::Bool,
        transports: Scope::Only(&["tcp"]),
        concurrency: Scope::All,
        default: "false",
        example: "true",
        python: "`StreamRequestHandler.disable_nagle_algorithm`",
        doc: "Set `TCP_NODELAY` on each connection.",
    },
    KeyDef {
        name: "oob_inline",
        kind: ValueKind::Bool,
        transports: Scope::Only(&["tcp"]),
        concurrency: Scope::All,
        default: "true",
        example: "false",
        python: "none (new; the socket option `SO_OOBINLINE`)",
        doc: "Keep TCP urgent bytes in the stream; `false` hands each to `handle_urgent` instead.",
    },
    KeyDef {
        name: "proxy_protocol",
        kind: ValueKind::Proxy,
        transports: Scope::Only(&["tcp"]),
        concurrency: Scope::All,
        default: "none",
        example: "\"v2\"",
        python: "none (new; HAProxy's PROXY protocol)",
        doc: "Read a PROXY header before `verify_request`; the transport becomes `Proxied<Tcp>`.",
    },
    KeyDef {
        name: "socket_mode",
        kind: ValueKind::Mode,
        transports: UNIX,
        concurrency: Scope::All,
        default: "none (umask)",
        example: "0o660",
        python: "none (new)",
        doc: "Mode of the socket file, set after binding.",
    },
    KeyDef {
        name: "remove_stale_socket",
        kind: ValueKind::Bool,
        transports: UNIX,
        concurrency: Scope::All,
        default: "true",
        example: "false",
        python: "none (new)",
        doc: "Remove a socket file that nobody listens on before binding.",
    },
    KeyDef {
        name: "workers",
        kind: ValueKind::Int {
            ty: IntType::Usize,
            optional: true,
            min: 1,
            max: USIZE_MAX,
        },
        transports: STREAM,
        concurrency: MULTIPLEX,
        default: "one per CPU",
        example: "4",
        python: "none (new)",
        doc: "Event-loop threads, each with its own epoll instance.",
    },
    KeyDef {
        name: "worker_listeners",
        kind: ValueKind::Bool,
        transports: Scope::Only(&["tcp"]),
        concurrency: MULTIPLEX,
        default: "false",
        example: "true",
        python: "none (new)",
        doc: "Each worker also accepts on a `SO_REUSEPORT` listener of its own (implies `allow_reuse_port`); the kernel spreads connections across them and the server's listener.",
    },
    KeyDef {
        name: "max_connections",
        kind: ValueKind::Int {
            ty: IntType::Usize,
            optional: true,
            min: 1,
            max: USIZE_MAX,
        },
        transports: STREAM,
        concurrency: MULTIPLEX,
        default: "none",
        example: "10000",
        python: "none (new)",
        doc: "Cap on open connections; at the cap, connections wait in the backlog.",
    },
    KeyDef {
        name: "idle_timeout",
        kind: ValueKind::Duration {
            optional: true,
            positive: true,
        },
        transports: STREAM,
        concurrency: MULTIPLEX,
        default: "none",
        example: "\"60s\"",
        python: "none (new)",
        doc: "Close a connection that made no progress for this long (`handle_error` first).",
    },
    KeyDef {
        name: "max_input",
        kind: ValueKind::Int {
            ty: IntType::Usize,
            optional: false,
            min: 1,
            max: USIZE_MAX,
        },
        transports: STREAM,
        concurrency: MULTIPLEX,
        default: "1048576",
        example: "65536",
        python: "none (new)",
        doc: "Cap on a connection's unconsumed input; above it, `handle_error` and close.",
    },
    KeyDef {
        name: "name",
        kind: ValueKind::TypeName,
        transports: Scope::All,
        concurrency: Scope::All,
        default: "`<Struct>Server`",
        example: "\"EchoServer\"",
        python: "the server class's name",
        doc: "Name of the generated server type alias.",
    },
    KeyDef {
        name: "transport",
        kind: ValueKind::TransportType,
        transports: Scope::All,
        concurrency: Scope::All,
        default: "none (a transport word)",
        example: "SqlQueue",
        python: "subclassing `BaseServer` with your own `get_request`",
        doc: "Your own transport type (it implements `Transport`) instead of a transport word; only keys for all transports apply.",
    },
    KeyDef {
        name: "crate",
        kind: ValueKind::CratePath,
        transports: Scope::All,
        concurrency: Scope::All,
        default: "`\"::sockserve\"`",
        example: "\"ss\"",
        python: "none (new)",
        doc: "Where the generated code finds sockserve, for a renamed dependency (`ss = { package = \"sockserve\" }`).",
    },
];

/// The transport of a declaration with `transport = Type`: a keyword of no table row, so that
/// only the keys for all transports apply, and no named core alias.
pub(crate) static CUSTOM_TRANSPORT: TransportDef = TransportDef {
    name: "custom",
    ty: "",
    alias_stem: "",
};

/// Finds a transport by keyword.
pub(crate) fn transport(name: &str) -> Option<&'static TransportDef> {
    TRANSPORTS.iter().find(|t| t.name == name)
}

/// Finds a concurrency model by keyword.
pub(crate) fn concurrency(name: &str) -> Option<&'static ConcurrencyDef> {
    CONCURRENCY.iter().find(|c| c.name == name)
}

/// Finds an option key.
pub(crate) fn key(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}
