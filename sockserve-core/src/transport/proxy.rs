//! HAProxy's PROXY protocol (v1 text, v2 binary) as a transport wrapper: [`Proxied`].
//!
//! A load balancer that connects to the server on the client's behalf sends, before the
//! client's first byte, a header naming the original client. [`Proxied<T>`] reads it in the
//! per-connection prepare stage ([`Transport::prepare`]), on the worker, before
//! `verify_request`: `client_address` and `verify_request` then see the original client, and
//! the proxy's address stays available as the connection's peer address
//! (`req.request.peer_addr()`). The header read is bounded in size ([`MAX_HEADER`]) and time
//! ([`HEADER_TIMEOUT`]), and reads nothing past the header. A missing, garbled, too long or
//! too slow header goes to `handle_error` and the connection is closed: the handler never
//! sees it. Parsing is the `ppp` crate's.
//!
//! The wrapper composes: an inner transport that prepares too (a TLS handshake) runs its own
//! `prepare` after the header is read, so `Proxied<Tls<Tcp>>` reads the PROXY header from the
//! raw socket and then shakes hands. On a multiplex or pooled worker the same happens without
//! waiting ([`Transport::prepare_nowait`]): the header is looked at as it arrives (`MSG_PEEK`)
//! and taken whole, then the inner stage runs, the connection's
//! [`PrepareProgress`] recording which part it is in.
//!
//! ```no_run
//! use std::io;
//! use sockserve_core::transport::{Proxied, ProxyProtocol, Tcp};
//! use sockserve_core::{Options, Server, StreamHandler, StreamRequest, concurrency::Threading};
//!
//! struct Hello;
//! impl StreamHandler<Proxied<Tcp>> for Hello {
//!     fn handle(&self, req: &mut StreamRequest<'_, Proxied<Tcp>>) -> io::Result<()> {
//!         use std::io::Write;
//!         writeln!(req.wfile, "hello {} (via {})", req.client_address, req.request.peer_addr()?)
//!     }
//! }
//!
//! let options = Options::DEFAULT.proxy_protocol(ProxyProtocol::V2);
//! let server: Server<Proxied<Tcp>, Threading, Hello> = Server::with_options("127.0.0.1:0", Hello, options)?;
//! server.serve_forever()?;
//! # Ok::<(), io::Error>(())
//! ```

use std::io::{self, Read};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::options::Options;
use crate::transport::{PrepareProgress, StreamKind, StreamTransport, Transport};

/// Which PROXY protocol header a [`Proxied`] transport requires of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    /// No header: connections are served as they come (the default).
    #[default]
    Off,
    /// The v1 text header (HAProxy's `send-proxy`).
    V1,
    /// The v2 binary header (HAProxy's `send-proxy-v2`).
    V2,
    /// Either version.
    Any,
}

impl ProxyProtocol {
    fn accepts_v1(self) -> bool {
        matches!(self, ProxyProtocol::V1 | ProxyProtocol::Any)
    }
    fn accepts_v2(self) -> bool {
        matches!(self, ProxyProtocol::V2 | ProxyProtocol::Any)
    }
}

/// The longest a connection may take to send its whole PROXY header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest PROXY header accepted: v1's own limit is 107 bytes; a v2 header (16 bytes and
/// its addresses and TLVs) above this is refused.
pub const MAX_HEADER: usize = 4096;

/// The v2 signature: the first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1's limit, CR LF included.
const V1_MAX: usize = 107;
/// The shortest v1 header: `PROXY UNKNOWN\r\n`. Reading this much never reads past a header.
const V1_MIN: usize = 15;

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_exact_before(socket: &SockRef<'_>, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete PROXY header within {HEADER_TIMEOUT:?}"),
            ));
        }
        socket.set_read_timeout(Some(left))?;
        match (&**socket).read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended before its PROXY header did",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no complete PROXY header within {HEADER_TIMEOUT:?}"),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one PROXY header of a version `accepted` allows from `fd`, and nothing after it,
/// within `timeout`; returns the original client's address, or `None` for a header that names
/// none (v1 `UNKNOWN`, a v2 `LOCAL` command such as a health check, an address family other
/// than IPv4/IPv6). The socket's read timeout is restored afterwards.
pub fn read_proxy_header(
    fd: BorrowedFd<'_>,
    accepted: ProxyProtocol,
    timeout: Duration,
) -> io::Result<Option<SocketAddr>> {
    let socket = SockRef::from(&fd);
    let saved = socket.read_timeout()?;
    let deadline = Instant::now() + timeout;
    let result = read_header(&socket, accepted, deadline);
    socket.set_read_timeout(saved)?;
    result
}

fn read_header(
    socket: &SockRef<'_>,
    accepted: ProxyProtocol,
    deadline: Instant,
) -> io::Result<Option<SocketAddr>> {
    let mut header = vec![0u8; V1_MIN];
    read_exact_before(socket, &mut header, deadline)?;
    if header.starts_with(V2_SIGNATURE) {
        if !accepted.accepts_v2() {
            return Err(invalid("a PROXY v2 header where v1 is expected"));
        }
        header.resize(16, 0);
        read_exact_before(socket, &mut header[V1_MIN..], deadline)?;
        let length = 16 + usize::from(u16::from_be_bytes([header[14], header[15]]));
        if length > MAX_HEADER {
            return Err(invalid(format!(
                "a PROXY v2 header of {length} bytes (at most {MAX_HEADER})"
            )));
        }
        header.resize(length, 0);
        read_exact_before(socket, &mut header[16..], deadline)?;
        return parse_v2(&header);
    }
    if header.starts_with(b"PROXY ") {
        if !accepted.accepts_v1() {
            return Err(invalid("a PROXY v1 header where v2 is expected"));
        }
        // One byte at a time up to the line end: nothing of the client's data is taken.
        while !header.ends_with(b"\r\n") {
            if header.len() >= V1_MAX {
                return Err(invalid(format!("a PROXY v1 header longer than {V1_MAX} bytes")));
            }
            let mut byte = [0u8];
            read_exact_before(socket, &mut byte, deadline)?;
            header.push(byte[0]);
        }
        return parse_v1(&header);
    }
    Err(invalid(
        "the connection does not start with a PROXY protocol header",
    ))
}

/// How long the PROXY header at the start of `seen` (what has arrived so far) is: `None`
/// while it is incomplete; an error as soon as `seen` cannot be the start of a header
/// `accepted` allows.
fn header_length(seen: &[u8], accepted: ProxyProtocol) -> io::Result<Option<usize>> {
    let starts = |prefix: &[u8]| {
        let n = seen.len().min(prefix.len());
        seen[..n] == prefix[..n]
    };
    if !seen.is_empty() && starts(V2_SIGNATURE) {
        if !accepted.accepts_v2() {
            return Err(invalid("a PROXY v2 header where v1 is expected"));
        }
        if seen.len() < 16 {
            return Ok(None);
        }
        let length = 16 + usize::from(u16::from_be_bytes([seen[14], seen[15]]));
        if length > MAX_HEADER {
            return Err(invalid(format!(
                "a PROXY v2 header of {length} bytes (at most {MAX_HEADER})"
            )));
        }
        return Ok((seen.len() >= length).then_some(length));
    }
    if !seen.is_empty() && starts(b"PROXY ") {
        if !accepted.accepts_v1() {
            return Err(invalid("a PROXY v1 header where v2 is expected"));
        }
        let window = &seen[..seen.len().min(V1_MAX)];
        if let Some(end) = window.windows(2).position(|w| w == b"\r\n") {
            return Ok(Some(end + 2));
        }
        if seen.len() >= V1_MAX {
            return Err(invalid(format!("a PROXY v1 header longer than {V1_MAX} bytes")));
        }
        return Ok(None);
    }
    if seen.is_empty() {
        return Ok(None);
    }
    Err(invalid(
        "the connection does not start with a PROXY protocol header",
    ))
}

/// [`read_proxy_header`] for an event loop: looks at what has arrived without taking it
/// (`MSG_PEEK`) and, once a whole header has, takes exactly the header (nothing after it);
/// `Ok(None)` while the header is incomplete. Never waits.
fn take_proxy_header_nowait(
    fd: BorrowedFd<'_>,
    accepted: ProxyProtocol,
) -> io::Result<Option<Option<SocketAddr>>> {
    let ended = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection ended before its PROXY header did",
        )
    };
    let mut buf = [0u8; MAX_HEADER];
    let seen = match crate::sys::peek_nowait(fd, &mut buf) {
        Ok(0) => return Err(ended()),
        Ok(n) => n,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let Some(length) = header_length(&buf[..seen], accepted)? else {
        return Ok(None);
    };
    // The whole header has arrived: taking it does not wait.
    let mut taken = 0;
    while taken < length {
        match crate::sys::recv_nowait(fd, &mut buf[taken..length]) {
            Ok(0) => return Err(ended()),
            Ok(n) => taken += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let header = &buf[..length];
    let original = if header.starts_with(V2_SIGNATURE) {
        parse_v2(header)?
    } else {
        parse_v1(header)?
    };
    Ok(Some(original))
}

/// Parses a complete v1 header (`PROXY TCP4 SRC DST SPORT DPORT\r\n`).
fn parse_v1(header: &[u8]) -> io::Result<Option<SocketAddr>> {
    let parsed =
        ppp::v1::Header::try_from(header).map_err(|e| invalid(format!("garbled PROXY v1 header: {e}")))?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::V4(SocketAddrV4::new(a.source_address, a.source_port)))
        }
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::V6(SocketAddrV6::new(
            a.source_address,
            a.source_port,
            0,
            0,
        ))),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// Parses a complete v2 header.
fn parse_v2(header: &[u8]) -> io::Result<Option<SocketAddr>> {
    let parsed =
        ppp::v2::Header::try_from(header).map_err(|e| invalid(format!("garbled PROXY v2 header: {e}")))?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            Some(SocketAddr::V4(SocketAddrV4::new(a.source_address, a.source_port)))
        }
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::V6(SocketAddrV6::new(
            a.source_address,
            a.source_port,
            0,
            0,
        ))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

/// A stream transport whose connections start with a PROXY protocol header, read in the
/// prepare stage before `verify_request`, bounded by [`MAX_HEADER`] and [`HEADER_TIMEOUT`]; the
/// original client's address replaces `client_address`, the proxy's stays the connection's
/// peer address. A missing or garbled header goes to `handle_error`, and the connection is
/// closed. An inner transport that prepares too (TLS) runs its `prepare` after the header is
/// read. Which versions it requires is the
/// server's [`Options::proxy_protocol`] ([`ProxyProtocol::Off`]: none, the connections are
/// served as they come).
#[derive(Debug)]
pub struct Proxied<T> {
    inner: T,
    accepted: ProxyProtocol,
}

impl<T> Proxied<T> {
    /// Wraps a transport made (or adopted, say from systemd) elsewhere.
    pub fn new(inner: T, accepted: ProxyProtocol) -> Self {
        Proxied { inner, accepted }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Which headers are required.
    pub fn accepted(&self) -> ProxyProtocol {
        self.accepted
    }
}

impl<T> Transport for Proxied<T>
where
    T: StreamTransport<Address = SocketAddr>,
    T::Request: AsFd,
{
    type Request = T::Request;
    type Address = SocketAddr;
    type ServerAddress = T::ServerAddress;
    type BindAddress = T::BindAddress;
    type Kind = StreamKind;
    const PREPARES: bool = true;
    super::delegate_to_inner!();

    fn open(address: Self::BindAddress, options: &Options) -> io::Result<Self> {
        Ok(Proxied::new(T::open(address, options)?, options.proxy_protocol))
    }
    fn get_request(&self) -> io::Result<Option<(Self::Request, SocketAddr)>> {
        self.inner.get_request()
    }
    fn shutdown_request(&self, request: Self::Request) {
        self.inner.shutdown_request(request)
    }
    fn close_request(&self, request: Self::Request) {
        self.inner.close_request(request)
    }
    fn prepare(&self, request: &mut Self::Request, client_address: &mut SocketAddr) -> io::Result<()> {
        if self.accepted != ProxyProtocol::Off {
            if let Some(original) = read_proxy_header(request.as_fd(), self.accepted, HEADER_TIMEOUT)? {
                *client_address = original;
            }
        }
        if T::PREPARES {
            self.inner.prepare(request, client_address)?;
        }
        Ok(())
    }
    /// The header on a multiplex or pooled worker, read as it arrives without waiting (this
    /// layer's mark: it is taken), then the inner transport's own stage (a TLS handshake).
    fn prepare_nowait(
        &self,
        request: &mut Self::Request,
        client_address: &mut SocketAddr,
        mut progress: PrepareProgress<'_>,
    ) -> io::Result<bool> {
        if self.accepted != ProxyProtocol::Off && !progress.is_marked() {
            match take_proxy_header_nowait(request.as_fd(), self.accepted)? {
                None => return Ok(false),
                Some(original) => {
                    if let Some(original) = original {
                        *client_address = original;
                    }
                    progress.mark();
                }
            }
        }
        if T::PREPARES {
            return self
                .inner
                .prepare_nowait(request, client_address, progress.inner());
        }
        Ok(true)
    }
    fn prepare_timeout(&self) -> Duration {
        let inner = if T::PREPARES {
            self.inner.prepare_timeout()
        } else {
            Duration::ZERO
        };
        HEADER_TIMEOUT + inner
    }
    /// The inner transport's own listener for a worker, requiring the same headers.
    fn worker_listener(&self, options: &Options) -> Option<io::Result<Self>> {
        let listener = self.inner.worker_listener(options)?;
        Some(listener.map(|inner| Proxied::new(inner, self.accepted)))
    }
}

impl<T> StreamTransport for Proxied<T>
where
    T: StreamTransport<Address = SocketAddr>,
    T::Request: AsFd,
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_and_unknown() {
        let a = parse_v1(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n").unwrap();
        assert_eq!(a, Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), None);
        let a = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").unwrap();
        assert_eq!(a, Some("[2001:db8::1]:1".parse().unwrap()));
    }

    #[test]
    fn header_length_waits_for_a_whole_header_and_refuses_early() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nHELLO";
        let end = v1.len() - 5;
        for cut in 0..end {
            assert_eq!(
                header_length(&v1[..cut], ProxyProtocol::Any).unwrap(),
                None,
                "{cut}"
            );
        }
        assert_eq!(header_length(v1, ProxyProtocol::V1).unwrap(), Some(end));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb,
        ]);
        v2.extend_from_slice(b"data");
        for cut in 0..28 {
            assert_eq!(
                header_length(&v2[..cut], ProxyProtocol::V2).unwrap(),
                None,
                "{cut}"
            );
        }
        assert_eq!(header_length(&v2, ProxyProtocol::Any).unwrap(), Some(28));
        // Wrong version, not a header, too long: known before the rest arrives.
        assert!(header_length(b"PRO", ProxyProtocol::V2).is_err());
        assert!(header_length(b"PROXY ", ProxyProtocol::V2).is_err());
        assert!(header_length(&v2[..3], ProxyProtocol::V1).is_err());
        assert!(header_length(b"GET / HTTP/1.1\r\n", ProxyProtocol::Any).is_err());
        assert!(header_length(&[0x16, 0x03, 0x01], ProxyProtocol::Any).is_err());
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert!(header_length(&long, ProxyProtocol::V1).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(header_length(&huge, ProxyProtocol::V2).is_err());
    }

    #[test]
    fn v1_garbled_is_an_error() {
        assert!(parse_v1(b"PROXY TCP4 300.0.0.1 1.2.3.4 1 2\r\n").is_err());
        assert!(parse_v1(b"PROXY TCP4 1.2.3.4\r\n").is_err());
        assert!(parse_v1(b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n").is_err());
    }

    #[test]
    fn v2_proxy_local_and_garbled() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb,
        ]);
        assert_eq!(parse_v2(&h).unwrap(), Some("10.0.0.9:40000".parse().unwrap()));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse_v2(&local).unwrap(), None);
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[
            0x31, 0x11, 0, 12, 10, 0, 0, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb,
        ]);
        assert!(parse_v2(&bad).is_err(), "version 3 is refused");
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 10, 0, 0, 9]);
        assert!(
            parse_v2(&short).is_err(),
            "addresses shorter than the family needs"
        );
    }
}
