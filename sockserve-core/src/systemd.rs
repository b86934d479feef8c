//! systemd integration: sockets handed over by the service manager (socket activation,
//! `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`) and state notifications (`READY=1`,
//! `STOPPING=1`, `WATCHDOG=1` to `NOTIFY_SOCKET`).
//!
//! Both follow the protocols of `sd_listen_fds(3)` and `sd_notify(3)`, through the `sd-notify`
//! crate; without systemd (no `LISTEN_PID` naming this process, no `NOTIFY_SOCKET`) they do
//! nothing. [`Server::serve_until_signal`](crate::Server::serve_until_signal) notifies on its
//! own; inherited sockets are adopted with [`inherited`] and
//! [`Declared::adopt`](crate::Declared::adopt):
//!
//! ```no_run
//! # use std::io;
//! # use sockserve_core::{StreamHandler, StreamRequest, ThreadingTcpServer, transport::Tcp};
//! # struct Echo;
//! # impl StreamHandler for Echo {
//! #     fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> { Ok(()) }
//! # }
//! let transport: Tcp = sockserve_core::systemd::inherited(None, &Default::default())?;
//! let server = ThreadingTcpServer::from_transport(transport, Echo, Default::default())?;
//! server.serve_until_signal()?;
//! # Ok::<(), io::Error>(())
//! ```

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;

use sd_notify::NotifyState;
use socket2::{Domain, SockRef, Type};

use crate::options::Options;
use crate::sys;
use crate::transport::{Proxied, StreamTransport, Tcp, Transport, Udp, Unix, UnixDgram};

/// One socket passed by the service manager, with its name (`FileDescriptorName=`, `unknown`
/// when none was given).
#[derive(Debug)]
pub struct Inherited {
    /// The socket.
    pub fd: OwnedFd,
    /// Its name from `LISTEN_FDNAMES`.
    pub name: String,
}

/// The sockets not taken yet: read from the environment once, handed out once each.
fn pool() -> &'static Mutex<Vec<Inherited>> {
    static POOL: OnceLock<Mutex<Vec<Inherited>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let fds = match sd_notify::listen_fds_with_names() {
            Ok(fds) => fds.collect::<Vec<_>>(),
            Err(e) => {
                log::error!("LISTEN_FDS: {e}");
                Vec::new()
            }
        };
        let mut taken = Vec::new();
        for (fd, name) in fds {
            match sys::adopt_inherited_fd(fd) {
                Ok(fd) => taken.push(Inherited { fd, name }),
                Err(e) => log::error!("LISTEN_FDS: descriptor {fd}: {e}"),
            }
        }
        Mutex::new(taken)
    })
}

/// Whether sockets were passed to this process (by systemd, `systemd-socket-activate`, or the
/// previous process of a reload) and not all taken yet.
pub fn activated() -> bool {
    !pool().lock().unwrap_or_else(|e| e.into_inner()).is_empty()
}

/// Whether this process took a passed socket: [`notify_ready`] says so, and the predecessor of
/// a reload waits for that before it lets go (a successor that binds a socket of its own would
/// leave the shared one with nobody accepting).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The custom notification (systemd's `X_` convention) that goes with `READY=1` once a passed
/// socket was taken.
pub(crate) const ADOPTED: &str = "X_SOCKSERVE_ADOPTED=1";

/// Takes every socket passed by the service manager that was not taken yet (in order), or an
/// empty list when this process was not socket-activated. Each socket is handed out once.
pub fn take_all() -> Vec<Inherited> {
    let taken = std::mem::take(&mut *pool().lock().unwrap_or_else(|e| e.into_inner()));
    if !taken.is_empty() {
        TAKEN.store(true, Ordering::SeqCst);
    }
    taken
}

/// Takes the first passed socket (`name: None`) or the first one named `name`.
pub fn take(name: Option<&str>) -> Option<Inherited> {
    let mut pool = pool().lock().unwrap_or_else(|e| e.into_inner());
    let at = pool.iter().position(|s| name.is_none_or(|n| s.name == n))?;
    TAKEN.store(true, Ordering::SeqCst);
    Some(pool.remove(at))
}

/// A transport that can adopt a socket passed by the service manager.
pub trait Inherit: Transport {
    /// Adopts `fd`, after checking that it is a socket of the right family and type, for a
    /// server with `options`.
    fn from_fd(fd: OwnedFd, options: &Options) -> io::Result<Self>;
}

fn check(fd: &OwnedFd, domains: &[Domain], kind: Type, what: &str) -> io::Result<()> {
    let socket = SockRef::from(fd);
    let ok = domains.contains(&socket.domain()?) && socket.r#type()? == kind;
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the inherited socket is not a {what} socket"),
        ))
    }
}

impl Inherit for Tcp {
    fn from_fd(fd: OwnedFd, _options: &Options) -> io::Result<Self> {
        check(&fd, &[Domain::IPV4, Domain::IPV6], Type::STREAM, "TCP")?;
        Tcp::from_std(TcpListener::from(fd))
    }
}

impl Inherit for Udp {
    fn from_fd(fd: OwnedFd, _options: &Options) -> io::Result<Self> {
        check(&fd, &[Domain::IPV4, Domain::IPV6], Type::DGRAM, "UDP")?;
        Udp::from_std(UdpSocket::from(fd))
    }
}

impl Inherit for Unix {
    fn from_fd(fd: OwnedFd, _options: &Options) -> io::Result<Self> {
        check(&fd, &[Domain::UNIX], Type::STREAM, "Unix stream")?;
        Unix::from_std(UnixListener::from(fd))
    }
}

impl Inherit for UnixDgram {
    fn from_fd(fd: OwnedFd, _options: &Options) -> io::Result<Self> {
        check(&fd, &[Domain::UNIX], Type::DGRAM, "Unix datagram")?;
        UnixDgram::from_std(UnixDatagram::from(fd))
    }
}

impl<T> Inherit for Proxied<T>
where
    T: Inherit + StreamTransport<Address = std::net::SocketAddr>,
    T::Request: std::os::fd::AsFd,
{
    fn from_fd(fd: OwnedFd, options: &Options) -> io::Result<Self> {
        Ok(Proxied::new(T::from_fd(fd, options)?, options.proxy_protocol))
    }
}

/// The first passed socket (or the first named `name`) as a transport `T` for a server with
/// `options`; an error when there is none (the process was not socket-activated) or it is of
/// another kind.
pub fn inherited<T: Inherit>(name: Option<&str>, options: &Options) -> io::Result<T> {
    let socket = take(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            match name {
                Some(name) => format!("no socket named `{name}` was passed (LISTEN_FDS, LISTEN_FDNAMES)"),
                None => "no socket was passed (LISTEN_FDS and LISTEN_PID not set for this process)".into(),
            },
        )
    })?;
    T::from_fd(socket.fd, options)
}

fn notify(states: &[NotifyState<'_>]) {
    match sd_notify::notify(states) {
        Ok(()) => {}
        // The notification socket of a reload is gone once the predecessor has exited.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            log::debug!("sd_notify: {e}")
        }
        Err(e) => log::warn!("sd_notify: {e}"),
    }
}

/// Tells the service manager the service is ready (`READY=1`, with `X_SOCKSERVE_ADOPTED=1` when
/// this process took a passed socket), and starts feeding its watchdog (`WATCHDOG=1` at half of
/// `WATCHDOG_USEC`) when it asked for one. Nothing without `NOTIFY_SOCKET`.
pub fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match TAKEN.load(Ordering::SeqCst) {
        true => notify(&[NotifyState::Ready, NotifyState::Custom(ADOPTED)]),
        false => notify(&[NotifyState::Ready]),
    }
    static WATCHDOG: OnceLock<()> = OnceLock::new();
    if let Some(interval) = sd_notify::watchdog_enabled() {
        WATCHDOG.get_or_init(|| {
            thread::spawn(move || loop {
                notify(&[NotifyState::Watchdog]);
                thread::sleep(interval / 2);
            });
        });
    }
}

/// Tells the service manager the service is stopping (`STOPPING=1`). Nothing without
/// `NOTIFY_SOCKET`.
pub fn notify_stopping() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        notify(&[NotifyState::Stopping]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_checks_family_and_type() {
        let options = Options::DEFAULT;
        let tcp = OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
        let udp = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        let err = Udp::from_fd(tcp.try_clone().unwrap(), &options).unwrap_err();
        assert!(err.to_string().contains("not a UDP socket"), "{err}");
        let err = Unix::from_fd(tcp.try_clone().unwrap(), &options).unwrap_err();
        assert!(err.to_string().contains("not a Unix stream socket"), "{err}");
        let err = Tcp::from_fd(udp.try_clone().unwrap(), &options).unwrap_err();
        assert!(err.to_string().contains("not a TCP socket"), "{err}");
        assert!(Tcp::from_fd(tcp, &options).is_ok());
        assert!(Udp::from_fd(udp, &options).is_ok());
        let proxied = Proxied::<Tcp>::from_fd(
            OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap()),
            &Options::DEFAULT.proxy_protocol(crate::transport::ProxyProtocol::V1),
        )
        .unwrap();
        assert_eq!(proxied.accepted(), crate::transport::ProxyProtocol::V1);
    }

    #[test]
    fn without_listen_fds_nothing_is_inherited() {
        // The test process was not socket-activated (LISTEN_PID does not name it).
        assert!(!activated());
        let err = inherited::<Tcp>(None, &Options::DEFAULT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(take(Some("echo")).is_none());
    }
}
