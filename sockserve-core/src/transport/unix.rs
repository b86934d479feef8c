//! Unix domain sockets: filesystem paths and Linux abstract names.
//!
//! # Socket files
//! A server bound to a path creates a socket file there. sockserve's policy:
//! - before bind, if the path is a socket file that no socket is bound to (its server died
//!   without removing it), it is removed when [`Options::remove_stale_socket`] is set (the
//!   default). A socket another server is bound to, listening or not yet, is never removed
//!   (bind fails with `AddrInUse`), nor is a file that is not a socket (`AlreadyExists`).
//!   The check, the removal and the bind happen under an exclusive `flock` of the directory,
//!   and the check reads `/proc/net/unix` instead of connecting, so a live server sees no
//!   probe connection (one is tried only for a socket listed under another spelling of the
//!   path);
//! - after bind, the file gets [`Options::socket_mode`] if set;
//! - `server_close` removes the file it created, and only that file: if the path was replaced
//!   since, it is left alone.
//!
//! Abstract names (`UnixAddr::Abstract`, written `@name`) have no file and need none of this.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{self, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::{
    Connection, Datagram, DatagramKind, DatagramTransport, Packets, StreamKind, StreamTransport, ToAddress,
    Transport,
};
use crate::options::Options;

/// The address of a Unix domain socket (Python's `str` or `bytes` addresses of `AF_UNIX`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A filesystem path.
    Path(PathBuf),
    /// A Linux abstract name (no file), without its leading NUL byte.
    Abstract(Vec<u8>),
    /// A socket that is not bound to any name (most clients).
    Unnamed,
}

impl UnixAddr {
    /// An abstract-namespace address.
    pub fn abstract_name(name: impl Into<Vec<u8>>) -> Self {
        UnixAddr::Abstract(name.into())
    }

    /// The filesystem path, if this is one.
    pub fn as_pathname(&self) -> Option<&Path> {
        match self {
            UnixAddr::Path(p) => Some(p),
            _ => None,
        }
    }

    fn to_sockaddr(&self) -> io::Result<SockAddr> {
        match self {
            UnixAddr::Path(p) => SockAddr::unix(p),
            UnixAddr::Abstract(name) => {
                let mut bytes = Vec::with_capacity(name.len() + 1);
                bytes.push(0);
                bytes.extend_from_slice(name);
                SockAddr::unix(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                    &bytes,
                ))
            }
            UnixAddr::Unnamed => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an unnamed Unix socket has no address to send to or bind",
            )),
        }
    }

    fn from_sockaddr(addr: &SockAddr) -> Self {
        if let Some(path) = addr.as_pathname() {
            UnixAddr::Path(path.to_path_buf())
        } else if let Some(name) = addr.as_abstract_namespace() {
            UnixAddr::Abstract(name.to_vec())
        } else {
            UnixAddr::Unnamed
        }
    }

    fn from_std(addr: &net::SocketAddr) -> Self {
        if let Some(path) = addr.as_pathname() {
            UnixAddr::Path(path.to_path_buf())
        } else if let Some(name) = addr.as_abstract_name() {
            UnixAddr::Abstract(name.to_vec())
        } else {
            UnixAddr::Unnamed
        }
    }
}

/// Paths print as they are, abstract names as `@name` (bytes outside printable ASCII
/// escaped), unnamed sockets as `(unnamed)`.
impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) => write!(f, "{}", p.display()),
            UnixAddr::Abstract(name) => write!(f, "@{}", name.escape_ascii()),
            UnixAddr::Unnamed => f.write_str("(unnamed)"),
        }
    }
}

macro_rules! unix_addr_from_path {
    ($($ty:ty),*) => {$(
        impl ToAddress<UnixAddr> for $ty {
            fn to_address(self) -> io::Result<UnixAddr> {
                Ok(UnixAddr::Path(AsRef::<Path>::as_ref(&self).to_path_buf()))
            }
        }
    )*};
}
unix_addr_from_path!(&str, String, &String, &Path, PathBuf, &PathBuf);

impl ToAddress<UnixAddr> for UnixAddr {
    fn to_address(self) -> io::Result<UnixAddr> {
        Ok(self)
    }
}

impl ToAddress<UnixAddr> for &UnixAddr {
    fn to_address(self) -> io::Result<UnixAddr> {
        Ok(self.clone())
    }
}

/// The socket file a server created, removed again by `server_close` if it is still the same
/// file (same device and inode).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn remove(self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    log::warn!("cannot remove socket file {}: {e}", self.path.display());
                }
            }
            _ => log::debug!(
                "socket file {} was replaced or removed; leaving it alone",
                self.path.display()
            ),
        }
    }
}

/// Whether a socket of this system (listening or merely bound) has `path` as its name, as
/// `/proc/net/unix` lists them. `None` when the list cannot be read.
fn bound_in_proc(path: &Path) -> Option<bool> {
    let list = fs::read_to_string("/proc/net/unix").ok()?;
    let absolute = std::env::current_dir().ok().map(|cwd| cwd.join(path));
    let names = [Some(path), absolute.as_deref()];
    // Num RefCount Protocol Flags Type St Inode Path: the path is the rest of the line.
    Some(list.lines().skip(1).any(|line| {
        let mut rest = line;
        for _ in 0..7 {
            rest = rest.trim_start();
            rest = rest.find(' ').map_or("", |at| &rest[at..]);
        }
        let name = Path::new(rest.trim());
        !rest.trim().is_empty() && names.iter().flatten().any(|n| *n == name)
    }))
}

/// Applies the stale-socket policy to `path` before binding a socket of type `ty` there.
/// The caller holds the directory lock (see [`bind_unix`]).
///
/// A socket file is stale when no socket has it as its name: none is listed under that path
/// in `/proc/net/unix` (which also lists sockets bound but not listening yet, so a server
/// between `server_bind` and `server_activate` is not mistaken for a dead one), and, for a
/// name spelled differently there, a connection to it is refused. The connection is tried
/// only in that second case, so a live server listed under the path never sees a probe.
fn clear_stale_socket(path: &Path, ty: Type) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            ),
        ));
    }
    let in_use = || {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another server is bound to {}", path.display()),
        )
    };
    if bound_in_proc(path) == Some(true) {
        return Err(in_use());
    }
    let probe = Socket::new(Domain::UNIX, ty, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            log::info!("removing stale socket file {}", path.display());
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        // Connected, or a full backlog (EAGAIN), or a live socket of another type (EPROTOTYPE):
        // somebody is there.
        _ => Err(in_use()),
    }
}

/// Holds an exclusive lock on the directory of `path` (`flock`), so that two servers (of
/// this or another process) binding there check, remove and bind one after the other: one
/// can never remove the file another has just bound. Released when dropped.
fn lock_directory(path: &Path) -> io::Result<fs::File> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = fs::File::open(dir)?;
    dir.lock()?;
    Ok(dir)
}

fn bind_unix(
    socket: SockRef<'_>,
    address: &UnixAddr,
    ty: Type,
    options: &Options,
) -> io::Result<Option<SocketFile>> {
    let Some(path) = address.as_pathname() else {
        socket.bind(&address.to_sockaddr()?)?;
        return Ok(None);
    };
    // Check, remove and bind under the directory lock; once bound, the socket is listed in
    // /proc/net/unix, so the next server's check sees it even before it listens.
    let _lock = if options.remove_stale_socket {
        let lock = lock_directory(path)?;
        clear_stale_socket(path, ty)?;
        Some(lock)
    } else {
        None
    };
    socket.bind(&address.to_sockaddr()?)?;
    let meta = fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    if let Some(mode) = options.socket_mode {
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
            file.remove();
            return Err(e);
        }
    }
    Ok(Some(file))
}

/// Shared state of both Unix transports.
#[derive(Debug)]
struct Bound {
    address: UnixAddr,
    file: Mutex<Option<SocketFile>>,
    /// Made elsewhere and handed over: already bound; its socket file is not ours to remove.
    adopted: bool,
}

impl Bound {
    fn new(address: UnixAddr) -> Self {
        Bound {
            address,
            file: Mutex::new(None),
            adopted: false,
        }
    }
    fn adopted(socket: SockRef<'_>) -> io::Result<Self> {
        Ok(Bound {
            address: UnixAddr::from_sockaddr(&socket.local_addr()?),
            file: Mutex::new(None),
            adopted: true,
        })
    }
    fn bind(&mut self, socket: SockRef<'_>, ty: Type, options: &Options) -> io::Result<()> {
        if self.adopted {
            return Ok(());
        }
        let file = bind_unix(socket, &self.address, ty, options)?;
        *self.file.get_mut().unwrap_or_else(|e| e.into_inner()) = file;
        Ok(())
    }
    fn close(&self) {
        if let Some(file) = self.file.lock().unwrap_or_else(|e| e.into_inner()).take() {
            file.remove();
        }
    }
}

/// Unix stream sockets (Python's `UnixStreamServer` socket half): requests are
/// [`std::os::unix::net::UnixStream`]s.
#[derive(Debug)]
pub struct Unix {
    listener: UnixListener,
    bound: Bound,
}

impl Unix {
    /// Adopts a socket that already listens (inherited from systemd, a parent, a previous
    /// generation): `server_bind` and `server_activate` leave it as it is (it is made
    /// non-blocking), and `server_close` does not remove its socket file, which belongs to
    /// whoever made it. See [`Tcp::from_std`](crate::transport::Tcp::from_std).
    pub fn from_std(listener: UnixListener) -> io::Result<Unix> {
        let bound = Bound::adopted(SockRef::from(&listener))?;
        listener.set_nonblocking(true)?;
        Ok(Unix { listener, bound })
    }

    /// The listening socket, for socket options.
    pub fn socket(&self) -> SockRef<'_> {
        SockRef::from(&self.listener)
    }
}

impl Transport for Unix {
    const BACKLOG: bool = true;
    type Request = net::UnixStream;
    type Address = UnixAddr;
    type ServerAddress = UnixAddr;
    type BindAddress = UnixAddr;
    type Kind = StreamKind;

    fn open(address: UnixAddr, _options: &Options) -> io::Result<Self> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        Ok(Unix {
            listener: UnixListener::from(std::os::fd::OwnedFd::from(socket)),
            bound: Bound::new(address),
        })
    }

    fn server_bind(&mut self, options: &Options) -> io::Result<()> {
        let socket = SockRef::from(&self.listener);
        self.bound.bind(socket, Type::STREAM, options)
    }

    fn server_activate(&mut self, options: &Options) -> io::Result<()> {
        if !self.bound.adopted {
            self.socket()
                .listen(i32::try_from(options.request_queue_size).unwrap_or(i32::MAX))?;
        }
        self.listener.set_nonblocking(true)
    }

    fn server_address(&self) -> UnixAddr {
        self.bound.address.clone()
    }

    fn fileno(&self) -> Option<BorrowedFd<'_>> {
        Some(self.listener.as_fd())
    }

    fn get_request(&self) -> io::Result<Option<(net::UnixStream, UnixAddr)>> {
        match self.listener.accept() {
            Ok((stream, addr)) => Ok(Some((stream, UnixAddr::from_std(&addr)))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn shutdown_request(&self, request: net::UnixStream) {
        let _ = request.shutdown(std::net::Shutdown::Write);
    }

    fn server_close(&self) {
        let _ = self.socket().shutdown(std::net::Shutdown::Both);
        self.bound.close();
    }
}

impl StreamTransport for Unix {}

impl Connection for net::UnixStream {
    type Reader<'a> = &'a net::UnixStream;
    type Writer<'a> = &'a net::UnixStream;
    fn reader(&self) -> &net::UnixStream {
        self
    }
    fn writer(&self) -> &net::UnixStream {
        self
    }
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }
    fn read_side(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(std::os::fd::AsFd::as_fd(self))
    }
    fn read_nowait(&self, buf: &mut [u8]) -> io::Result<usize> {
        crate::sys::recv_nowait(self.as_fd(), buf)
    }
    fn write_nowait(&self, buf: &[u8]) -> io::Result<usize> {
        crate::sys::send_nowait(self.as_fd(), buf)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// Unix datagram sockets (Python's `UnixDatagramServer` socket half). Replies reach only
/// clients whose socket is bound to a name.
#[derive(Debug)]
pub struct UnixDgram {
    socket: Arc<net::UnixDatagram>,
    bound: Bound,
    packets: Packets,
}

impl UnixDgram {
    /// Adopts a bound datagram socket made elsewhere: `server_bind` leaves it as it is and
    /// `server_close` does not remove its socket file. See [`Unix::from_std`].
    pub fn from_std(socket: net::UnixDatagram) -> io::Result<UnixDgram> {
        let bound = Bound::adopted(SockRef::from(&socket))?;
        Ok(UnixDgram {
            socket: Arc::new(socket),
            bound,
            packets: Packets::new(Options::DEFAULT.max_packet_size),
        })
    }

    /// The server socket, for socket options.
    pub fn socket(&self) -> SockRef<'_> {
        SockRef::from(&*self.socket)
    }
}

impl Transport for UnixDgram {
    type Request = Datagram<net::UnixDatagram>;
    type Address = UnixAddr;
    type ServerAddress = UnixAddr;
    type BindAddress = UnixAddr;
    type Kind = DatagramKind;

    fn open(address: UnixAddr, options: &Options) -> io::Result<Self> {
        let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
        Ok(UnixDgram {
            socket: Arc::new(net::UnixDatagram::from(std::os::fd::OwnedFd::from(socket))),
            bound: Bound::new(address),
            packets: Packets::new(options.max_packet_size),
        })
    }

    fn server_bind(&mut self, options: &Options) -> io::Result<()> {
        let socket = SockRef::from(&*self.socket);
        self.bound.bind(socket, Type::DGRAM, options)
    }

    fn server_activate(&mut self, options: &Options) -> io::Result<()> {
        self.packets = Packets::new(options.max_packet_size);
        Ok(())
    }

    fn server_address(&self) -> UnixAddr {
        self.bound.address.clone()
    }

    fn fileno(&self) -> Option<BorrowedFd<'_>> {
        Some(self.socket.as_fd())
    }

    fn get_request(&self) -> io::Result<Option<(Datagram<net::UnixDatagram>, UnixAddr)>> {
        self.packets
            .recv(&self.socket, |from| Ok(UnixAddr::from_sockaddr(from)))
    }

    fn close_request(&self, request: Datagram<net::UnixDatagram>) {
        self.packets.recycle(request.packet);
    }

    fn server_close(&self) {
        self.bound.close();
    }
}

impl DatagramTransport for UnixDgram {
    type Socket = net::UnixDatagram;
    fn send_to(socket: &net::UnixDatagram, buf: &[u8], address: &UnixAddr) -> io::Result<usize> {
        // Never wait for a client that does not read its replies (its queue is full): the
        // reply is dropped with `WouldBlock`, reported to `handle_error`, as UDP would drop
        // it, instead of stalling the server.
        SockRef::from(socket).send_to_with_flags(buf, &address.to_sockaddr()?, libc::MSG_DONTWAIT)
    }
}

/// The listening (or receiving) socket: Python's `fileno()`.
impl AsFd for Unix {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// The listening (or receiving) socket: Python's `fileno()`.
impl AsFd for UnixDgram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
