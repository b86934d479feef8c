//! [`Declared`]: what `#[server(...)]` implements for a handler struct.

use std::io;

use crate::concurrency::Concurrency;
use crate::options::Options;
use crate::server::Server;
use crate::transport::{ToAddress, Transport};

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

    /// Creates the declared server on a transport made (or adopted) by the caller, with
    /// `options`. The macro generates it; it is the one place where the handler is checked
    /// against the transport and the concurrency model, so a mismatch is one error at the
    /// attribute, and a server once made asks nothing more of its types.
    fn on_transport(
        self,
        transport: Self::Transport,
        options: Options,
    ) -> io::Result<Server<Self::Transport, Self::Concurrency, Self>>;

    /// Serves on a socket made elsewhere: inherited from systemd, a parent process, or the
    /// previous generation of a server being reloaded (`Tcp::from_std(listener)?` and the
    /// like), with the declared options.
    fn adopt(
        self,
        transport: Self::Transport,
    ) -> io::Result<Server<Self::Transport, Self::Concurrency, Self>> {
        self.on_transport(transport, Self::OPTIONS)?.bound_and_activated()
    }

    /// Creates the declared server with `options` in place of [`OPTIONS`](Declared::OPTIONS),
    /// its socket not yet bound.
    fn unbound_with<A>(
        self,
        address: A,
        options: Options,
    ) -> io::Result<Server<Self::Transport, Self::Concurrency, Self>>
    where
        A: ToAddress<<Self::Transport as Transport>::BindAddress>,
    {
        options.validate()?;
        let transport = Self::Transport::open(address.to_address()?, &options)?;
        self.on_transport(transport, options)
    }

    /// Creates the declared server on `address`, bound and listening.
    fn bind<A>(self, address: A) -> io::Result<Server<Self::Transport, Self::Concurrency, Self>>
    where
        A: ToAddress<<Self::Transport as Transport>::BindAddress>,
    {
        self.bind_with(address, Self::OPTIONS)
    }

    /// Creates the declared server with run-time `options`, bound and listening: the options
    /// of the attribute are the defaults, the program overrides what its flags set.
    ///
    /// ```ignore
    /// let mut options = Echo::OPTIONS;                 // what #[server(...)] declared
    /// options.max_threads = Some(args.threads);        // what the command line says
    /// let server = Echo.bind_with(&args.bind, options)?;
    /// ```
    fn bind_with<A>(
        self,
        address: A,
        options: Options,
    ) -> io::Result<Server<Self::Transport, Self::Concurrency, Self>>
    where
        A: ToAddress<<Self::Transport as Transport>::BindAddress>,
    {
        self.unbound_with(address, options)?.bound_and_activated()
    }

    /// Creates the declared server with its socket not yet bound (Python's
    /// `bind_and_activate=False`).
    fn unbound<A>(self, address: A) -> io::Result<Server<Self::Transport, Self::Concurrency, Self>>
    where
        A: ToAddress<<Self::Transport as Transport>::BindAddress>,
    {
        self.unbound_with(address, Self::OPTIONS)
    }
}
