//! [`RpcServer`]: one service over UDP and TCP on the same port, registered with rpcbind.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use sockserve_core::concurrency::{Concurrency, ProcessRequest, Synchronous, Threading};
use sockserve_core::transport::{Tcp, Udp};
use sockserve_core::{Options, Server, ShutdownHandle};

use crate::rpcbind::{Registration, Rpcbind};
use crate::service::{RpcHandler, RpcService};

/// How an [`RpcServer`] is set up.
#[derive(Clone, Debug)]
pub struct RpcOptions {
    /// Options of the TCP server. Default: [`RpcOptions::TCP_DEFAULT`].
    pub tcp: Options,
    /// Options of the UDP server. Default: [`RpcOptions::UDP_DEFAULT`].
    pub udp: Options,
    /// Register with rpcbind at start, unregister at `server_close`. With `Some` and no
    /// rpcbind running, [`RpcServer::bind`] fails with an error that says so; `None` opts
    /// out. Default: the system's rpcbind ([`Rpcbind::local`]).
    pub rpcbind: Option<Rpcbind>,
    /// How many times a free port (port 0) is picked again when UDP cannot have the port TCP
    /// got. Default 20.
    pub port_attempts: u32,
}

impl RpcOptions {
    /// TCP defaults: `connection_timeout` 120 s (an idle or stalled client is dropped),
    /// `TCP_NODELAY`, the rest as [`Options::DEFAULT`].
    pub const TCP_DEFAULT: Options = Options::DEFAULT
        .connection_timeout(Some(Duration::from_secs(120)))
        .disable_nagle_algorithm(true);
    /// UDP defaults: `max_packet_size` 65535 (any datagram), the rest as [`Options::DEFAULT`].
    pub const UDP_DEFAULT: Options = Options::DEFAULT.max_packet_size(65535);

    /// The defaults without rpcbind registration (tests, private services).
    pub fn unregistered() -> Self {
        RpcOptions {
            rpcbind: None,
            ..RpcOptions::default()
        }
    }
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions {
            tcp: RpcOptions::TCP_DEFAULT,
            udp: RpcOptions::UDP_DEFAULT,
            rpcbind: Some(Rpcbind::local()),
            port_attempts: 20,
        }
    }
}

/// One RPC service served over UDP and TCP on the same address and port, as C servers made
/// by rpcgen are: TCP with concurrency `CT` (default [`Threading`], so a slow client holds
/// up nobody), UDP with `CU` (default [`Synchronous`]). Both servers share one service, so
/// state is the same whichever transport a call takes.
///
/// Bound, the programs are registered with rpcbind (unless opted out);
/// [`server_close`](RpcServer::server_close) (or drop) unregisters them. A program that
/// stops on SIGTERM calls [`shutdown`](RpcServer::shutdown) from its signal handling and
/// lets the server close.
///
/// ```no_run
/// # use sockserve_rpc::{RpcOptions, RpcServer, RpcService};
/// # fn service() -> RpcService { RpcService::new() }
/// let server: RpcServer = RpcServer::bind("127.0.0.1:0", service(), RpcOptions::default())?;
/// println!("listening on {}", server.tcp_address());
/// server.serve_forever()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct RpcServer<CT: Concurrency = Threading, CU: Concurrency = Synchronous> {
    registration: Option<Registration>,
    tcp: Server<Tcp, CT, RpcHandler>,
    udp: Server<Udp, CU, RpcHandler>,
    handler: RpcHandler,
}

impl<CT: Concurrency, CU: Concurrency> fmt::Debug for RpcServer<CT, CU> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcServer")
            .field("tcp", &self.tcp.server_address())
            .field("udp", &self.udp.server_address())
            .field("service", self.handler.service())
            .finish_non_exhaustive()
    }
}

fn addr_in_use(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrInUse
}

impl<CT, CU> RpcServer<CT, CU>
where
    CT: ProcessRequest<Tcp, RpcHandler>,
    CU: ProcessRequest<Udp, RpcHandler>,
{
    /// Binds TCP and UDP on `address` and registers the service's programs. Port 0 picks a
    /// free TCP port, then binds UDP on the same number (picking again when it is taken).
    pub fn bind(address: impl ToSocketAddrs, service: RpcService, options: RpcOptions) -> io::Result<Self> {
        let address = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"))?;
        let handler = RpcHandler::new(service);
        let attempts = if address.port() == 0 {
            options.port_attempts.max(1)
        } else {
            1
        };
        let mut last = None;
        for _ in 0..attempts {
            let tcp =
                Server::<Tcp, CT, RpcHandler>::with_options(address, handler.clone(), options.tcp.clone())?;
            let same_port = SocketAddr::new(address.ip(), tcp.server_address().port());
            match Server::<Udp, CU, RpcHandler>::with_options(same_port, handler.clone(), options.udp.clone())
            {
                Ok(udp) => return Self::register(tcp, udp, handler, &options),
                Err(e) if addr_in_use(&e) && address.port() == 0 => {
                    log::debug!("udp port {} taken: picking another", same_port.port());
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
    }

    fn register(
        tcp: Server<Tcp, CT, RpcHandler>,
        udp: Server<Udp, CU, RpcHandler>,
        handler: RpcHandler,
        options: &RpcOptions,
    ) -> io::Result<Self> {
        let registration = match &options.rpcbind {
            None => None,
            Some(rpcbind) => Some(
                Registration::register(
                    rpcbind.clone(),
                    &handler.service().programs(),
                    Some(tcp.server_address().port()),
                    Some(udp.server_address().port()),
                )
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("{e}; to serve without rpcbind, set RpcOptions::rpcbind to None"),
                    )
                })?,
            ),
        };
        Ok(RpcServer {
            registration,
            tcp,
            udp,
            handler,
        })
    }

    /// Serves both transports until [`shutdown`](RpcServer::shutdown): UDP on a thread of its
    /// own, TCP on the calling thread. An error of either stops both and is returned.
    pub fn serve_forever(&self) -> io::Result<()>
    where
        Server<Udp, CU, RpcHandler>: Sync,
    {
        let (udp_server, tcp_stop) = (&self.udp, self.tcp.shutdown_handle());
        thread::scope(|scope| {
            let udp = scope.spawn(move || {
                let result = udp_server.serve_forever();
                if result.is_err() {
                    tcp_stop.shutdown();
                }
                result
            });
            let tcp = self.tcp.serve_forever();
            self.udp.shutdown();
            let udp = udp
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the UDP serving thread panicked")));
            tcp.and(udp)
        })
    }
}

impl<CT: Concurrency, CU: Concurrency> RpcServer<CT, CU> {
    /// The TCP address (the port is the same for UDP).
    pub fn tcp_address(&self) -> SocketAddr {
        self.tcp.server_address()
    }

    /// The UDP address.
    pub fn udp_address(&self) -> SocketAddr {
        self.udp.server_address()
    }

    /// The service both transports serve.
    pub fn service(&self) -> &Arc<RpcService> {
        self.handler.service()
    }

    /// The TCP server.
    pub fn tcp(&self) -> &Server<Tcp, CT, RpcHandler> {
        &self.tcp
    }

    /// The UDP server.
    pub fn udp(&self) -> &Server<Udp, CU, RpcHandler> {
        &self.udp
    }

    /// The rpcbind registration, if any.
    pub fn registration(&self) -> Option<&Registration> {
        self.registration.as_ref()
    }

    /// A handle that stops both servers from elsewhere (a signal thread).
    pub fn shutdown_handle(&self) -> RpcShutdownHandle {
        RpcShutdownHandle {
            tcp: self.tcp.shutdown_handle(),
            udp: self.udp.shutdown_handle(),
            handler: self.handler.clone(),
        }
    }

    /// Stops `serve_forever` on both transports; TCP connections close once they are
    /// between calls.
    pub fn shutdown(&self) {
        self.shutdown_handle().shutdown()
    }

    /// Unregisters from rpcbind, then closes both servers (waiting for requests in flight as
    /// the concurrency models do). Idempotent; dropping the server calls it.
    pub fn server_close(&mut self) {
        if let Some(mut registration) = self.registration.take() {
            if let Err(e) = registration.unregister() {
                log::error!("unregistering from rpcbind: {e}");
            }
        }
        self.handler.service().stop_connections();
        self.tcp.server_close();
        self.udp.server_close();
    }
}

impl<CT: Concurrency, CU: Concurrency> Drop for RpcServer<CT, CU> {
    fn drop(&mut self) {
        self.server_close();
    }
}

/// Stops an [`RpcServer`] from another thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RpcShutdownHandle {
    tcp: ShutdownHandle,
    udp: ShutdownHandle,
    handler: RpcHandler,
}

impl RpcShutdownHandle {
    /// [`RpcServer::shutdown`].
    pub fn shutdown(&self) {
        self.handler.service().stop_connections();
        self.tcp.shutdown();
        self.udp.shutdown();
    }
}
