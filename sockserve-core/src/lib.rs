//! The runtime of sockserve: Python's `socketserver`, composed at compile time.
//!
//! # What a server is made of
//! Python builds a server class from three parts, and so does sockserve, with types instead
//! of inheritance:
//!
//! - a **transport** ([`transport`]): where requests come from. [`Tcp`]
//!   (IPv4 or IPv6, by the bound address), [`Udp`],
//!   [`Unix`], [`UnixDgram`], or
//!   your own [`Transport`](transport::Transport) (rows of a SQL table, say);
//!   TLS over any stream transport is a layer, `transport::Tls<T>` (the `tls` feature, on
//!   by default), whose handshake runs in the connection's prepare stage (on its thread or
//!   child, or without blocking on a multiplex or pooled worker's event loop);
//! - a **concurrency mix-in** ([`concurrency`]): how a request runs.
//!   [`Synchronous`] (one at a time, in the serving thread),
//!   [`Threading`] (a thread each),
//!   [`Forking`] (a child process each);
//! - a **handler**: your type, implementing the handler trait of the transport's kind:
//!   [`StreamHandler`] (connections: `rfile`, `wfile`), [`DatagramHandler`] (datagrams:
//!   `packet`, `wfile` sent back), or [`RequestHandler`] (anything else).
//!
//! [`Server<T, C, H>`](Server) puts them together; the twelve Python classes are aliases
//! ([`TcpServer`], [`ThreadingUdpServer`], [`ForkingUnixStreamServer`], ...). A stream
//! handler on a datagram transport, or the reverse, does not compile.
//!
//! **Platform:** Linux only (eventfd, `waitid`, `/proc`, abstract Unix names); other systems
//! get a compile error that says so.
//!
//! # Which one to pick
//! Synchronous servers suit short requests and datagram services: one slow client holds
//! up everyone else. Threading suits connections that stay open; the handler is shared by
//! all threads, so its state needs locks (the seed's warning). Forking isolates each request
//! in its own process, at the price of a `fork` per request and no shared memory: what a
//! child changes, the parent never sees.
//!
//! # One request, top to bottom
//! `serve_forever` waits for the transport's descriptor (or the `shutdown` wake-up), then
//! for each pending request: `get_request`, `verify_request` (refused: `shutdown_request`),
//! `process_request` (the mix-in), which runs `finish_request` (the handler's `setup`,
//! `handle`, `finish`), `handle_error` on failure or panic, and always `shutdown_request`.
//! After each pass it runs `service_actions`. The code is in [`Server`]'s `handle_one` and
//! [`Pipeline::process_inline`].
//!
//! # Hooks
//! Socket-level hooks (`server_bind`, `server_activate`, `get_request`,
//! `shutdown_request`, `close_request`, `server_close`, `fileno`) belong to the
//! [`Transport`](transport::Transport): wrap a built-in one to change them. `process_request`
//! belongs to the mix-in ([`ProcessRequest`](concurrency::ProcessRequest)). `verify_request`,
//! `handle_error`, `handle_timeout` and `service_actions` are methods of the handler
//! traits, with Python's defaults.
//!
//! ```no_run
//! use std::io::{self, BufRead, Write};
//! use sockserve_core::{StreamHandler, StreamRequest, ThreadingTcpServer, transport::Tcp};
//!
//! struct Echo;
//!
//! impl StreamHandler for Echo {
//!     fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
//!         let mut line = Vec::new();
//!         while req.rfile.read_until(b'\n', &mut line)? > 0 {
//!             req.wfile.write_all(&line)?;
//!             line.clear();
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let server = ThreadingTcpServer::bind("127.0.0.1:0", Echo)?;
//! println!("listening on {}", server.server_address());
//! server.serve_forever()?;
//! # Ok::<(), io::Error>(())
//! ```

#![warn(missing_docs)]

// sockserve uses Linux interfaces throughout (eventfd, waitid, abstract Unix names,
// /proc/net/unix, SO_OOBINLINE inheritance, MSG_TRUNC on receive): it says so at build time
// rather than failing somewhere inside on another system.
#[cfg(not(target_os = "linux"))]
compile_error!("sockserve supports Linux only (it uses eventfd, waitid, /proc and abstract Unix sockets)");

pub mod concurrency;
mod context;
mod declared;
mod handler;
mod options;
mod pipeline;
mod reload;
mod serve;
mod server;
pub mod signals;
mod sys;
pub mod systemd;
pub mod transport;

pub use concurrency::multiplex::{CloseReason, ConnHandle, ConnIo, ConnectionHandler};
pub use context::{ServerContext, ShutdownHandle};
pub use declared::Declared;
pub use handler::{
    log_request_error, report_error, BaseRequest, DatagramHandler, DatagramRequest, Dispatch,
    PeerProtocolError, RequestError, RequestHandler, Rfile, StatefulDatagramHandler, StatefulRequestHandler,
    StatefulStreamHandler, StreamHandler, StreamRequest, Wfile,
};
pub use options::Options;
pub use pipeline::Pipeline;
pub use server::Server;

use concurrency::{Forking, Multiplex, Pooled, Synchronous, Threading};
use transport::{Tcp, Udp, Unix, UnixDgram};

/// Python's `TCPServer`.
pub type TcpServer<H> = Server<Tcp, Synchronous, H>;
/// Python's `UDPServer`.
pub type UdpServer<H> = Server<Udp, Synchronous, H>;
/// Python's `UnixStreamServer`.
pub type UnixStreamServer<H> = Server<Unix, Synchronous, H>;
/// Python's `UnixDatagramServer`.
pub type UnixDatagramServer<H> = Server<UnixDgram, Synchronous, H>;
/// Python's `ThreadingTCPServer`.
pub type ThreadingTcpServer<H> = Server<Tcp, Threading, H>;
/// Python's `ThreadingUDPServer`.
pub type ThreadingUdpServer<H> = Server<Udp, Threading, H>;
/// Python's `ThreadingUnixStreamServer`.
pub type ThreadingUnixStreamServer<H> = Server<Unix, Threading, H>;
/// Python's `ThreadingUnixDatagramServer`.
pub type ThreadingUnixDatagramServer<H> = Server<UnixDgram, Threading, H>;
/// Python's `ForkingTCPServer`.
pub type ForkingTcpServer<H> = Server<Tcp, Forking, H>;
/// Python's `ForkingUDPServer`.
pub type ForkingUdpServer<H> = Server<Udp, Forking, H>;
/// Python's `ForkingUnixStreamServer`.
pub type ForkingUnixStreamServer<H> = Server<Unix, Forking, H>;
/// Python's `ForkingUnixDatagramServer`.
pub type ForkingUnixDatagramServer<H> = Server<UnixDgram, Forking, H>;
/// Many connections per event-loop thread over TCP ([`Multiplex`]; Python has no such class).
pub type MultiplexTcpServer<H> = Server<Tcp, Multiplex, H>;
/// Many connections per event-loop thread over a Unix stream socket ([`Multiplex`]).
pub type MultiplexUnixStreamServer<H> = Server<Unix, Multiplex, H>;
/// Blocking one-message handlers over TCP, idle connections parked in the event loop
/// ([`Pooled`]; Python has no such class).
pub type PooledTcpServer<H> = Server<Tcp, Pooled, H>;
/// Blocking one-message handlers over a Unix stream socket ([`Pooled`]).
pub type PooledUnixStreamServer<H> = Server<Unix, Pooled, H>;

/// The names most servers need: `use sockserve::prelude::*;`.
pub mod prelude {
    pub use crate::concurrency::{
        AfterMessage, Forking, MessageHandler, Multiplex, Pooled, Synchronous, Threading,
    };
    pub use crate::transport::{Tcp, Udp, Unix, UnixAddr, UnixDgram};
    pub use crate::{
        BaseRequest, DatagramHandler, DatagramRequest, Declared, ForkingTcpServer, ForkingUdpServer,
        ForkingUnixDatagramServer, ForkingUnixStreamServer, Options, RequestError, RequestHandler, Server,
        ServerContext, ShutdownHandle, StatefulDatagramHandler, StatefulRequestHandler,
        StatefulStreamHandler, StreamHandler, StreamRequest, TcpServer, ThreadingTcpServer,
        ThreadingUdpServer, ThreadingUnixDatagramServer, ThreadingUnixStreamServer, UdpServer,
        UnixDatagramServer, UnixStreamServer,
    };
    pub use crate::{
        CloseReason, ConnHandle, ConnIo, ConnectionHandler, MultiplexTcpServer, MultiplexUnixStreamServer,
        PooledTcpServer, PooledUnixStreamServer,
    };
}
