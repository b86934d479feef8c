//! [`Declared`]: what `#[server(...)]` implements for a handler struct.

use std::io;

use crate::concurrency::{Concurrency, Process};
use crate::handler::Dispatch;
use crate::transport::{ToAddress, Transport};
use crate::{Options, Server};

/// A handler whose server was declared with `#[server(...)]`: the transport, the concurrency
/// model and the options are fixed at compile time. The macro implements it; it names only
/// types and constants of this crate, so the declared server is exactly the core type
/// (`#[server(tcp, threading)] struct Echo;` gives `ThreadingTcpServer<Echo>`).
///
/// ```ignore
/// #[sockserve::server(tcp, threading, connection_timeout = "5s")]
/// struct Echo;
/// // impl StreamHandler for Echo { ... }
/// let server = Echo.bind("127.0.0.1:0")?;   // an EchoServer = ThreadingTcpServer<Echo>
/// server.serve_forever()?;
/// ```
pub trait Declared: Sized + 'static {
    /// The transport named in the attribute.
    type Transport: Transport;
    /// The concurrency model named in the attribute (`sync` when omitted).
    type Concurrency: Concurrency;
    /// The options set in the attribute, the rest at their defaults.
    const OPTIONS: Options;

    /// Creates the declared server on `address`, bound and listening.
    fn bind<A>(self, address: A) -> io::Result<Server<Self::Transport, Self::Concurrency, Self>>
    where
        A: ToAddress<<Self::Transport as Transport>::BindAddress>,
        <Self::Transport as Transport>::Kind: Dispatch<Self::Transport, Self>,
        Self::Concurrency: Process<Self::Transport, Self>,
    {
        Server::with_options(address, self, Self::OPTIONS)
    }

    /// Creates the declared server with its socket not yet bound (Python's
    /// `bind_and_activate=False`).
    fn unbound<A>(self, address: A) -> io::Result<Server<Self::Transport, Self::Concurrency, Self>>
    where
        A: ToAddress<<Self::Transport as Transport>::BindAddress>,
        <Self::Transport as Transport>::Kind: Dispatch<Self::Transport, Self>,
        Self::Concurrency: Process<Self::Transport, Self>,
    {
        Server::unbound(address, self, Self::OPTIONS)
    }
}
