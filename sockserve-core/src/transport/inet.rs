//! TCP and UDP over IPv4 and IPv6 (the family follows the bound address).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::{
    Connection, Datagram, DatagramKind, DatagramTransport, Incoming, Packets, StreamKind, StreamTransport,
    Transport,
};
use crate::options::Options;
use crate::sys;

fn backlog(options: &Options) -> i32 {
    i32::try_from(options.request_queue_size).unwrap_or(i32::MAX)
}

/// `reuse_port`: set `SO_REUSEPORT` (`allow_reuse_port`, or what another option implies).
fn bind_inet(
    socket: SockRef<'_>,
    address: SocketAddr,
    options: &Options,
    reuse_port: bool,
) -> io::Result<SocketAddr> {
    socket.set_reuse_address(options.allow_reuse_address)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&address.into())?;
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound socket has no IP address"))
}

/// TCP (Python's `TCPServer` socket half): a listening socket whose requests are
/// [`TcpStream`]s. `shutdown_request` shuts down the write side, then closes.
#[derive(Debug)]
pub struct Tcp {
    listener: TcpListener,
    address: SocketAddr,
    /// Made elsewhere and handed over ([`Tcp::from_std`]): already bound and listening.
    adopted: bool,
}

impl Tcp {
    /// Adopts a socket that already listens: inherited from systemd (`LISTEN_FDS`), from a
    /// parent process, or from the previous generation of a server being reloaded (Python:
    /// `bind_and_activate=False`, then replacing `server.socket`). `server_bind` leaves it as
    /// it is; `server_activate` only applies `oob_inline` and makes it non-blocking;
    /// `server_close` stops it accepting like any other. Give it to
    /// [`Server::from_transport`](crate::Server::from_transport) or `Declared::adopt`.
    pub fn from_std(listener: TcpListener) -> io::Result<Tcp> {
        let address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        Ok(Tcp {
            listener,
            address,
            adopted: true,
        })
    }

    /// The listening socket, for socket options before `server_bind` (create the server with
    /// `Server::unbound`) or at any time after.
    pub fn socket(&self) -> SockRef<'_> {
        SockRef::from(&self.listener)
    }
}

impl Transport for Tcp {
    const BACKLOG: bool = true;
    type Request = TcpStream;
    type Address = SocketAddr;
    type ServerAddress = SocketAddr;
    type BindAddress = SocketAddr;
    type Kind = StreamKind;

    fn open(address: SocketAddr, _options: &Options) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
        Ok(Tcp {
            listener: socket.into(),
            address,
            adopted: false,
        })
    }

    fn server_bind(&mut self, options: &Options) -> io::Result<()> {
        if !self.adopted {
            // Workers' listeners join this one's SO_REUSEPORT group, which needs it set here.
            let reuse_port = options.allow_reuse_port || options.worker_listeners;
            self.address = bind_inet(self.socket(), self.address, options, reuse_port)?;
        }
        Ok(())
    }

    fn server_activate(&mut self, options: &Options) -> io::Result<()> {
        // Accepted connections inherit SO_OOBINLINE from the listener: one call for all.
        self.socket().set_out_of_band_inline(options.oob_inline)?;
        if !self.adopted {
            self.socket().listen(backlog(options))?;
        }
        self.listener.set_nonblocking(true)
    }

    fn server_address(&self) -> SocketAddr {
        self.address
    }

    fn fileno(&self) -> Option<BorrowedFd<'_>> {
        Some(self.listener.as_fd())
    }

    fn get_request(&self) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        match self.listener.accept() {
            Ok(pair) => Ok(Some(pair)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn shutdown_request(&self, request: TcpStream) {
        // Send FIN explicitly, as Python does: a forked child's copy of the descriptor must not
        // keep the client waiting. Errors (the peer is gone) change nothing.
        let _ = request.shutdown(Shutdown::Write);
    }

    fn server_close(&self) {
        // Stops accepting now, even while handler threads still hold the transport; the
        // descriptor itself is closed when the last of them drops it.
        let _ = self.socket().shutdown(Shutdown::Both);
    }

    /// A listener on the same address with `SO_REUSEADDR` and `SO_REUSEPORT` (which this one
    /// must have: set before its bind, by `allow_reuse_port` or `worker_listeners`), the same
    /// `IPV6_V6ONLY`, backlog and `oob_inline`; non-blocking.
    fn worker_listener(&self, options: &Options) -> Option<io::Result<Self>> {
        let open = || {
            let mut sibling = Tcp::open(self.address, options)?;
            let socket = sibling.socket();
            if self.address.is_ipv6() {
                socket.set_only_v6(self.socket().only_v6()?)?;
            }
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.bind(&self.address.into())?;
            sibling.server_activate(options)?;
            Ok(sibling)
        };
        Some(open())
    }
}

impl StreamTransport for Tcp {}

impl Connection for TcpStream {
    type Reader<'a> = &'a TcpStream;
    type Writer<'a> = &'a TcpStream;
    fn reader(&self) -> &TcpStream {
        self
    }
    fn writer(&self) -> &TcpStream {
        self
    }
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        TcpStream::set_nodelay(self, nodelay)
    }
    fn read_side(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.as_fd())
    }
    fn wait_input(&self, timeout: Option<Duration>) -> io::Result<Incoming> {
        Ok(match sys::wait_input_or_urgent(self.as_fd(), timeout)? {
            sys::Input::TimedOut => Incoming::TimedOut,
            sys::Input::Ready => Incoming::Ready,
            // Lost to a race (read elsewhere): let the read decide.
            sys::Input::Urgent => sys::recv_urgent(self.as_fd())?.map_or(Incoming::Ready, Incoming::Urgent),
        })
    }
    fn read_nowait(&self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv_nowait(self.as_fd(), buf)
    }
    fn write_nowait(&self, buf: &[u8]) -> io::Result<usize> {
        sys::send_nowait(self.as_fd(), buf)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// UDP (Python's `UDPServer` socket half): every datagram is a request; replies go out of
/// the same socket.
#[derive(Debug)]
pub struct Udp {
    socket: Arc<UdpSocket>,
    address: SocketAddr,
    packets: Packets,
    /// Made elsewhere and handed over ([`Udp::from_std`]): already bound.
    adopted: bool,
}

impl Udp {
    /// Adopts a bound socket made elsewhere (inherited from systemd, a parent, a previous
    /// generation): `server_bind` leaves it as it is. See [`Tcp::from_std`].
    pub fn from_std(socket: UdpSocket) -> io::Result<Udp> {
        let address = socket.local_addr()?;
        Ok(Udp {
            socket: Arc::new(socket),
            address,
            packets: Packets::new(crate::options::Options::DEFAULT.max_packet_size),
            adopted: true,
        })
    }

    /// The server socket, for socket options.
    pub fn socket(&self) -> SockRef<'_> {
        SockRef::from(&*self.socket)
    }
}

impl Transport for Udp {
    type Request = Datagram<UdpSocket>;
    type Address = SocketAddr;
    type ServerAddress = SocketAddr;
    type BindAddress = SocketAddr;
    type Kind = DatagramKind;

    fn open(address: SocketAddr, options: &Options) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
        Ok(Udp {
            socket: Arc::new(socket.into()),
            address,
            packets: Packets::new(options.max_packet_size),
            adopted: false,
        })
    }

    fn server_bind(&mut self, options: &Options) -> io::Result<()> {
        if !self.adopted {
            self.address = bind_inet(self.socket(), self.address, options, options.allow_reuse_port)?;
        }
        Ok(())
    }

    fn server_activate(&mut self, options: &Options) -> io::Result<()> {
        // Python's UDPServer.server_activate does nothing; the buffers follow the options.
        self.packets = Packets::new(options.max_packet_size);
        Ok(())
    }

    fn server_address(&self) -> SocketAddr {
        self.address
    }

    fn fileno(&self) -> Option<BorrowedFd<'_>> {
        Some(self.socket.as_fd())
    }

    fn get_request(&self) -> io::Result<Option<(Datagram<UdpSocket>, SocketAddr)>> {
        self.packets.recv(&self.socket, |from| {
            from.as_socket()
                .ok_or_else(|| io::Error::other("datagram from a non-IP address"))
        })
    }

    fn close_request(&self, request: Datagram<UdpSocket>) {
        self.packets.recycle(request.packet);
    }
}

impl DatagramTransport for Udp {
    type Socket = UdpSocket;
    fn send_to(socket: &UdpSocket, buf: &[u8], address: &SocketAddr) -> io::Result<usize> {
        socket.send_to(buf, address)
    }
}

/// The listening (or receiving) socket: Python's `fileno()`.
impl AsFd for Tcp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// The listening (or receiving) socket: Python's `fileno()`.
impl AsFd for Udp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
