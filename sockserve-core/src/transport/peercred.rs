//! Who is at the other end of a Unix stream connection (`SO_PEERCRED`): authentication
//! without TLS.
//!
//! The kernel records the peer's process id, user id and group id when it connects; the
//! peer cannot forge them (only a privileged process can pass other ids). A handler reads
//! them with [`PeerCredentials::peer_credentials`] on the request, in `verify_request` (to
//! refuse a user before the handler runs) or in `handle`:
//!
//! ```no_run
//! use std::io;
//! use std::os::unix::net::UnixStream;
//! use sockserve_core::{StreamHandler, StreamRequest, transport::{PeerCredentials, Unix}};
//!
//! struct OnlyMe;
//!
//! impl StreamHandler<Unix> for OnlyMe {
//!     fn verify_request(&self, request: &UnixStream, _: &sockserve_core::transport::UnixAddr) -> bool {
//!         request.peer_credentials().is_ok_and(|peer| peer.uid == 1000)
//!     }
//!     fn handle(&self, _req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Unix datagrams: the kernel attaches a sender's credentials (`SCM_CREDENTIALS`) only to
//! datagrams received on a socket with `SO_PASSCRED` set, through `recvmsg` control data;
//! [`UnixDgram`](super::UnixDgram) does not ask for them. A datagram service that needs the
//! sender's identity uses a Unix stream socket, or a custom transport that sets
//! `SO_PASSCRED` and reads the control message.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

/// The peer of a Unix stream connection, as the kernel recorded it at `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// The peer's process id (of the process that connected; in another pid namespace, 0).
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

/// Connections that can say who their peer is (`SO_PEERCRED`).
pub trait PeerCredentials {
    /// The peer's process, user and group ids.
    fn peer_credentials(&self) -> io::Result<PeerCred>;
}

impl PeerCredentials for UnixStream {
    fn peer_credentials(&self) -> io::Result<PeerCred> {
        let (pid, uid, gid) = crate::sys::peer_credentials(self.as_fd())?;
        Ok(PeerCred { pid, uid, gid })
    }
}

/// TLS over a Unix stream socket: the socket's peer.
#[cfg(feature = "tls")]
impl<S: PeerCredentials> PeerCredentials for super::TlsStream<S> {
    fn peer_credentials(&self) -> io::Result<PeerCred> {
        self.get_ref().peer_credentials()
    }
}
