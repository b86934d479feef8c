//! TLS over any stream transport (Python's `ssl.SSLContext.wrap_socket`), through rustls.
//!
//! [`Tls<T>`] wraps a stream transport ([`Tcp`](super::Tcp), [`Unix`](super::Unix), or your
//! own): it accepts as `T` does, and runs the TLS handshake in the per-connection prepare
//! stage ([`Transport::prepare`]), that is on the connection's own thread or child, or on a
//! multiplex or pooled worker's event loop without blocking it
//! ([`Transport::prepare_nowait`]), never in the accept loop, and before `verify_request`.
//! Handlers keep `rfile` and `wfile`, which read and write plaintext; the connection
//! ([`TlsStream`]) tells what the handshake found: the ALPN protocol, the SNI name and the
//! client's certificate chain ([`TlsInfo`]), so `verify_request` can refuse a client by
//! identity.
//!
//! ```no_run
//! use std::io::{self, BufRead, Write};
//! use sockserve_core::{Server, StreamHandler, StreamRequest, concurrency::Threading};
//! use sockserve_core::transport::{Tcp, Tls, TlsConfig};
//!
//! struct Echo;
//!
//! impl StreamHandler<Tls<Tcp>> for Echo {
//!     fn handle(&self, req: &mut StreamRequest<'_, Tls<Tcp>>) -> io::Result<()> {
//!         let mut line = Vec::new();
//!         while req.rfile.read_until(b'\n', &mut line)? > 0 {
//!             req.wfile.write_all(&line)?;
//!             line.clear();
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let config = TlsConfig::from_pem_files("cert.pem", "key.pem")?.build()?;
//! let server: Server<Tls<Tcp>, Threading, Echo> = Server::bind(("127.0.0.1:8443", config), Echo)?;
//! server.serve_forever()?;
//! # Ok::<(), io::Error>(())
//! ```
//!
//! # Defaults and edges
//! - TLS 1.2 and 1.3 only (rustls' safe defaults), with rustls' ring provider; no client
//!   certificate is asked for unless [`TlsConfigBuilder::client_ca_pem_file`] says so.
//! - A handshake that does not finish within [`TlsConfigBuilder::handshake_timeout`] (10 s by
//!   default, the whole handshake, not per read) ends the connection; so does a peer that
//!   speaks plaintext, sends garbage or closes mid-handshake. These reach `handle_error` as
//!   [`RequestError::Prepare`](crate::RequestError::Prepare), a peer event logged at debug
//!   level only.
//! - `shutdown_request` sends `close_notify` before the inner transport's shutdown.
//! - A peer that closes without `close_notify` reads as end of file, as Python's
//!   `suppress_ragged_eofs=True` default does.
//! - [`TlsConfig::reload_pem_files`] (or [`TlsConfig::replace`]) changes the certificate
//!   without a restart: connections accepted afterwards get the new one, live ones keep theirs.
//!
//! - Reading and writing share the rustls state under one lock, held while a read waits for
//!   the socket: a handler that reads on one thread while another thread writes the same
//!   connection makes the writer wait for the read (handlers read and write from one
//!   thread, as Python's do).
//!
//! The connection is driven sans-IO style (rustls' `ServerConnection` fed with
//! `read_tls`/`write_tls` from the socket). Threads and children wait on the socket; the
//! multiplex and pooled models' workers drive the same state without waiting: the handshake
//! through [`Transport::prepare_nowait`] (timed by the handshake timeout), records through
//! [`Connection::read_nowait`] and its kind. A pooled server lends the whole `TlsStream` to
//! its pool thread, so a message is read with blocking `rfile` reads as on a thread.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use super::{Connection, Incoming, PrepareProgress, StreamKind, StreamTransport, ToAddress, Transport};
use crate::options::Options;

/// How long a handshake may take by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest TLS record on the wire: what one raw read takes at most.
const RAW_READ: usize = 16 * 1024 + 256 + 5;

fn invalid(what: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// A TLS server configuration that can be replaced while the server runs.
///
/// Cheap to clone: clones share the configuration, so the program keeps one to
/// [`reload_pem_files`](TlsConfig::reload_pem_files) (on SIGHUP, say) while the server holds
/// another.
#[derive(Clone)]
pub struct TlsConfig {
    shared: Arc<Shared>,
}

struct Shared {
    current: RwLock<Arc<ServerConfig>>,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("handshake_timeout", &self.shared.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Starts a configuration from a PEM certificate chain file (the server's certificate
    /// first) and a PEM private key file (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<TlsConfigBuilder> {
        let (chain, key) = read_pem_files(chain.as_ref(), key.as_ref())?;
        Ok(TlsConfigBuilder::new(chain, key))
    }

    /// Starts a configuration from PEM text: a certificate chain and a private key.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> io::Result<TlsConfigBuilder> {
        let (chain, key) = parse_pem(chain, key, "the certificate chain", "the key")?;
        Ok(TlsConfigBuilder::new(chain, key))
    }

    /// Uses a rustls configuration as it is, for full control (protocol versions, cipher
    /// suites, session resumption, certificate resolvers).
    pub fn from_server_config(config: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig::new(config, DEFAULT_HANDSHAKE_TIMEOUT)
    }

    fn new(config: Arc<ServerConfig>, handshake_timeout: Duration) -> TlsConfig {
        TlsConfig {
            shared: Arc::new(Shared {
                current: RwLock::new(config),
                handshake_timeout,
            }),
        }
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.shared.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The handshake time limit.
    pub fn handshake_timeout(&self) -> Duration {
        self.shared.handshake_timeout
    }

    /// Replaces the whole rustls configuration: connections accepted from now on use it.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.shared.current.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Loads a new certificate chain and key from PEM files, keeping every other setting
    /// (client authentication, ALPN, versions): connections accepted from now on get the new
    /// certificate, live ones keep theirs. On error (unreadable files, a key that does not
    /// match the certificate) the current certificate stays.
    pub fn reload_pem_files(&self, chain: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<()> {
        let (chain, key) = read_pem_files(chain.as_ref(), key.as_ref())?;
        let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| invalid(format_args!("certificate and key: {e}")))?;
        let mut config = (*self.current()).clone();
        config.cert_resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
        self.replace(Arc::new(config));
        Ok(())
    }
}

/// Builds a [`TlsConfig`] from PEM: client authentication, ALPN, handshake timeout.
pub struct TlsConfigBuilder {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<(RootCertStore, bool)>,
    alpn: Vec<Vec<u8>>,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfigBuilder")
            .field("chain_len", &self.chain.len())
            .field(
                "client_auth",
                &self.client_roots.as_ref().map(|(_, required)| *required),
            )
            .field("alpn", &self.alpn)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConfigBuilder {
    fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        TlsConfigBuilder {
            chain,
            key,
            client_roots: None,
            alpn: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Mutual TLS: clients present a certificate issued by one of the CAs in the PEM file
    /// `ca`; `required` refuses a client without one, otherwise such a client is served and
    /// has no [`TlsInfo::peer_certificates`]. A certificate from another CA is always refused.
    pub fn client_ca_pem_file(self, ca: impl AsRef<Path>, required: bool) -> io::Result<Self> {
        let path = ca.as_ref();
        let pem = fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        self.client_ca_pem(&pem, required)
    }

    /// [`client_ca_pem_file`](TlsConfigBuilder::client_ca_pem_file) from PEM text.
    pub fn client_ca_pem(mut self, ca: &[u8], required: bool) -> io::Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| invalid(format_args!("client CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format_args!("client CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid("client CA: no certificate in the PEM"));
        }
        self.client_roots = Some((roots, required));
        Ok(self)
    }

    /// The application protocols offered through ALPN, most preferred first
    /// (`["h2", "http/1.1"]`); a client that offers none of them is refused. Default: none.
    pub fn alpn<P: AsRef<[u8]>>(mut self, protocols: impl IntoIterator<Item = P>) -> Self {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// How long the whole handshake may take (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Checks the key against the certificate and builds the configuration.
    pub fn build(self) -> io::Result<TlsConfig> {
        if self.handshake_timeout.is_zero() {
            return Err(invalid("the TLS handshake timeout must not be zero"));
        }
        let verifier = match self.client_roots {
            None => None,
            Some((roots, required)) => {
                let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let builder = if required {
                    builder
                } else {
                    builder.allow_unauthenticated()
                };
                Some(
                    builder
                        .build()
                        .map_err(|e| invalid(format_args!("client CA: {e}")))?,
                )
            }
        };
        let config = build_server_config(self.chain, self.key, verifier, self.alpn)?;
        Ok(TlsConfig::new(Arc::new(config), self.handshake_timeout))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    alpn: Vec<Vec<u8>>,
) -> io::Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid(format_args!("certificate and key: {e}")))?;
    config.alpn_protocols = alpn;
    Ok(config)
}

fn read_pem_files(
    chain: &Path,
    key: &Path,
) -> io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let read = |path: &Path| {
        fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    let (chain_pem, key_pem) = (read(chain)?, read(key)?);
    parse_pem(
        &chain_pem,
        &key_pem,
        &chain.display().to_string(),
        &key.display().to_string(),
    )
}

fn parse_pem(
    chain: &[u8],
    key: &[u8],
    chain_name: &str,
    key_name: &str,
) -> io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format_args!("{chain_name}: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(format_args!("{chain_name}: no certificate in the PEM")));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid(format_args!("{key_name}: {e}")))?;
    Ok((chain, key))
}

/// What a [`Tls`] transport is bound to: the inner transport's address and the
/// configuration. `bind((address, config), handler)` makes one.
#[derive(Debug, Clone)]
pub struct TlsAddr<A> {
    /// The inner transport's address.
    pub address: A,
    /// The TLS configuration.
    pub config: TlsConfig,
}

impl<A, X: ToAddress<A>> ToAddress<TlsAddr<A>> for (X, TlsConfig) {
    fn to_address(self) -> io::Result<TlsAddr<A>> {
        Ok(TlsAddr {
            address: self.0.to_address()?,
            config: self.1,
        })
    }
}

impl<A> ToAddress<TlsAddr<A>> for TlsAddr<A> {
    fn to_address(self) -> io::Result<TlsAddr<A>> {
        Ok(self)
    }
}

/// TLS over the stream transport `T` (Python's `ssl.SSLContext.wrap_socket` on a server's
/// socket). See the [module documentation](self).
pub struct Tls<T> {
    inner: T,
    config: TlsConfig,
}

impl<T: fmt::Debug> fmt::Debug for Tls<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<T: StreamTransport> Tls<T> {
    /// Wraps a transport, for instance one adopted with `Tcp::from_std`.
    pub fn new(inner: T, config: TlsConfig) -> Self {
        Tls { inner, config }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The configuration, shared: reloading it changes what new connections get.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }
}

impl<T> Transport for Tls<T>
where
    T: StreamTransport,
{
    type Request = TlsStream<T::Request>;
    type Address = T::Address;
    type ServerAddress = T::ServerAddress;
    type BindAddress = TlsAddr<T::BindAddress>;
    type Kind = StreamKind;
    const PREPARES: bool = true;
    super::delegate_to_inner!();

    fn open(address: TlsAddr<T::BindAddress>, options: &Options) -> io::Result<Self> {
        Ok(Tls {
            inner: T::open(address.address, options)?,
            config: address.config,
        })
    }
    fn get_request(&self) -> io::Result<Option<(Self::Request, T::Address)>> {
        let Some((sock, address)) = self.inner.get_request()? else {
            return Ok(None);
        };
        // The configuration is taken now: a reload after this does not change the connection.
        // Creating the connection only allocates; the handshake waits for `prepare`.
        let conn = ServerConnection::new(self.config.current()).map_err(io::Error::other)?;
        Ok(Some((
            TlsStream {
                sock,
                state: Mutex::new(State {
                    conn,
                    pending: Vec::new(),
                    broken: None,
                }),
                info: TlsInfo::default(),
                handshake_timeout: self.config.handshake_timeout(),
            },
            address,
        )))
    }
    fn shutdown_request(&self, request: Self::Request) {
        request.send_close_notify();
        self.inner.shutdown_request(request.sock)
    }
    fn close_request(&self, request: Self::Request) {
        self.inner.close_request(request.sock)
    }
    fn prepare(&self, request: &mut Self::Request, client_address: &mut T::Address) -> io::Result<()> {
        if T::PREPARES {
            self.inner.prepare(&mut request.sock, client_address)?;
        }
        request.handshake()
    }
    fn prepare_nowait(
        &self,
        request: &mut Self::Request,
        client_address: &mut T::Address,
        mut progress: PrepareProgress<'_>,
    ) -> io::Result<bool> {
        // The stage of the transport underneath first (this layer's mark: it is done), then
        // the handshake, whose own progress is rustls'.
        if T::PREPARES && !progress.is_marked() {
            if !self
                .inner
                .prepare_nowait(&mut request.sock, client_address, progress.inner())?
            {
                return Ok(false);
            }
            progress.mark();
        }
        request.handshake_nowait()
    }
    /// The inner transport's own listener for a worker, under the same (shared, reloadable)
    /// configuration.
    fn worker_listener(&self, options: &Options) -> Option<io::Result<Self>> {
        let listener = self.inner.worker_listener(options)?;
        Some(listener.map(|inner| Tls {
            inner,
            config: self.config.clone(),
        }))
    }
    fn prepare_timeout(&self) -> Duration {
        let inner = if T::PREPARES {
            self.inner.prepare_timeout()
        } else {
            Duration::ZERO
        };
        inner + self.config.handshake_timeout()
    }
}

impl<T: StreamTransport> StreamTransport for Tls<T> {}

/// What the handshake of a [`TlsStream`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The application protocol agreed through ALPN.
    pub alpn_protocol: Option<Vec<u8>>,
    /// The host name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The client's certificate chain (its own certificate first), verified against the
    /// client CA; `None` without mutual TLS or when an optional certificate was not sent.
    pub peer_certificates: Option<Vec<CertificateDer<'static>>>,
    /// The protocol version, such as `TLSv1_3`.
    pub protocol_version: Option<rustls::ProtocolVersion>,
    /// The cipher suite.
    pub cipher_suite: Option<rustls::CipherSuite>,
}

impl TlsInfo {
    /// What a finished handshake agreed on.
    fn of(conn: &ServerConnection) -> TlsInfo {
        TlsInfo {
            alpn_protocol: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name: conn.server_name().map(str::to_owned),
            peer_certificates: conn
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect()),
            protocol_version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        }
    }

    /// The client's own certificate (DER), when it presented a verified one.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.peer_certificates.as_ref().and_then(|chain| chain.first())
    }

    /// The common name (CN) in the subject of the client's verified certificate, the usual
    /// client identity of mutual TLS.
    pub fn peer_common_name(&self) -> Option<String> {
        let cert = webpki::EndEntityCert::try_from(self.peer_certificate()?).ok()?;
        common_name(cert.subject())
    }
}

/// The first common name (OID 2.5.4.3) in a DER `Name` body (a sequence of sets of
/// attribute type-and-value sequences). Returns `None` on anything malformed.
fn common_name(mut name: &[u8]) -> Option<String> {
    /// Splits one DER element off `input`: (tag, contents, rest).
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (bytes, after) = rest.split_at(count);
            rest = after;
            bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (contents, rest) = rest.split_at(len);
        Some((tag, contents, rest))
    }
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while !name.is_empty() {
        let (_set, mut set, rest) = element(name)?;
        name = rest;
        while !set.is_empty() {
            let (_seq, attribute, rest) = element(set)?;
            set = rest;
            let (oid_tag, oid, value) = element(attribute)?;
            if oid_tag == 0x06 && oid == CN {
                let (_string, text, _) = element(value)?;
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

struct State {
    conn: ServerConnection,
    /// Bytes read from the socket that rustls has not taken yet.
    pending: Vec<u8>,
    /// The peer broke the protocol (what rustls said): every later read reports it again,
    /// since rustls has taken the bytes that caused it and the socket will not show them.
    broken: Option<String>,
}

impl State {
    /// Remembers a protocol failure among `e`, and hands `e` on.
    fn failed(&mut self, e: io::Error) -> io::Error {
        let protocol = e
            .get_ref()
            .is_some_and(|inner| inner.is::<crate::handler::PeerProtocolError>());
        if protocol && self.broken.is_none() {
            self.broken = Some(e.to_string());
        }
        e
    }

    /// The remembered protocol failure, if any.
    fn check(&self) -> io::Result<()> {
        match &self.broken {
            Some(message) => Err(crate::handler::PeerProtocolError::io(message.clone())),
            None => Ok(()),
        }
    }
}

/// A TLS connection over the stream connection `S`: the request of a [`Tls`] transport.
///
/// Its reader and writer (`rfile`, `wfile`) carry plaintext. [`info`](TlsStream::info) says
/// what the handshake found.
pub struct TlsStream<S> {
    sock: S,
    state: Mutex<State>,
    info: TlsInfo,
    handshake_timeout: Duration,
}

/// The socket under the TLS session. Reading or writing it directly bypasses TLS: it is for
/// what comes before the handshake (a PROXY protocol header read by
/// [`Proxied`](super::Proxied) in front of `Tls`) and for socket options.
impl<S: std::os::fd::AsFd> std::os::fd::AsFd for TlsStream<S> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl<S: fmt::Debug> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The socket as rustls' raw input and output.
struct Raw<'a, S: Connection>(&'a S);

impl<S: Connection> Read for Raw<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.reader().read(buf)
    }
}

impl<S: Connection> Write for Raw<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.writer().write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.writer().write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The socket as rustls' raw input and output, without waiting (an event loop's).
struct RawNowait<'a, S: Connection>(&'a S);

impl<S: Connection> Read for RawNowait<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_nowait(buf)
    }
}

impl<S: Connection> Write for RawNowait<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_nowait(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TLS failure caused by the peer's bytes: a peer event
/// ([`RequestError::Protocol`](crate::RequestError::Protocol) once the connection is served).
fn tls_error(error: rustls::Error) -> io::Error {
    crate::handler::PeerProtocolError::io(format!("TLS: {error}"))
}

impl<S> TlsStream<S> {
    /// The underlying connection (the socket). Reading or writing it directly bypasses TLS.
    pub fn get_ref(&self) -> &S {
        &self.sock
    }

    /// What the handshake found: ALPN protocol, SNI name, client certificates. Empty before
    /// the handshake (which is done by the time `verify_request` runs).
    pub fn info(&self) -> &TlsInfo {
        &self.info
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: Connection> TlsStream<S> {
    /// Sends all TLS output rustls holds.
    fn flush_tls(&self, conn: &mut ServerConnection) -> io::Result<()> {
        while conn.wants_write() {
            if conn.write_tls(&mut Raw(&self.sock))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Sends what rustls holds as far as the socket takes it now; `Ok(true)` when all went.
    fn flush_tls_nowait(&self, conn: &mut ServerConnection) -> io::Result<bool> {
        while conn.wants_write() {
            match conn.write_tls(&mut RawNowait(&self.sock)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Hands `input` to rustls and processes it; returns how much it took, which is less than
    /// all when rustls' plaintext buffer is full (the reader drains it first).
    fn feed_from(&self, conn: &mut ServerConnection, input: &[u8]) -> io::Result<usize> {
        let mut rest = input;
        let mut failed = None;
        while !rest.is_empty() {
            if let Err(e) = conn.read_tls(&mut rest) {
                failed = Some(e);
                break;
            }
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why (an alert), if its socket takes it now: never wait on a
                // peer that misbehaves (an event loop must not, and a thread need not).
                let _ = self.flush_tls_nowait(conn);
                return Err(tls_error(e));
            }
        }
        let consumed = input.len() - rest.len();
        match failed {
            // The plaintext buffer is full: the rest waits until the reader drained it.
            Some(_)
                if conn
                    .process_new_packets()
                    .is_ok_and(|s| s.plaintext_bytes_to_read() > 0) =>
            {
                Ok(consumed)
            }
            Some(e) => Err(e),
            None => Ok(consumed),
        }
    }

    /// Hands the pending raw bytes to rustls, keeping what it does not take yet.
    fn feed(&self, state: &mut State) -> io::Result<()> {
        if state.pending.is_empty() {
            return Ok(());
        }
        let fed = self.feed_from(&mut state.conn, &state.pending);
        let consumed = fed.map_err(|e| state.failed(e))?;
        state.pending.drain(..consumed);
        if state.pending.is_empty() {
            // Held only while rustls' plaintext buffer was full: an idle connection keeps no
            // raw buffer.
            state.pending = Vec::new();
        }
        Ok(())
    }

    /// Reads raw bytes from the socket and hands them to rustls (what it does not take yet
    /// waits in `state.pending`); at the socket's end rustls is told.
    fn read_raw(&self, state: &mut State) -> io::Result<usize> {
        self.read_raw_with(state, |sock, buf| sock.reader().read(buf))
    }

    /// [`read_raw`](Self::read_raw) without waiting: a `WouldBlock` error when nothing came.
    fn read_raw_nowait(&self, state: &mut State) -> io::Result<usize> {
        self.read_raw_with(state, |sock, buf| sock.read_nowait(buf))
    }

    /// Reads into the thread's raw buffer (shared by every connection a worker or thread
    /// serves, so a connection holds no read buffer of its own between reads), then feeds.
    fn read_raw_with(
        &self,
        state: &mut State,
        read: impl FnOnce(&S, &mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        thread_local! {
            static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        RAW.with(|raw| {
            // Never re-entered (rustls calls nothing of ours); a fresh buffer if it were.
            let mut own = Vec::new();
            let mut borrowed = raw.try_borrow_mut();
            let buf = match borrowed.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => &mut own,
            };
            if buf.len() < RAW_READ {
                buf.resize(RAW_READ, 0);
            }
            let n = read(&self.sock, &mut buf[..RAW_READ])?;
            if n == 0 {
                let _ = state.conn.read_tls(&mut io::empty());
                let ended = state.conn.process_new_packets().map(drop).map_err(tls_error);
                ended.map_err(|e| state.failed(e))?;
                return Ok(0);
            }
            if state.pending.is_empty() {
                let fed = self.feed_from(&mut state.conn, &buf[..n]);
                let took = fed.map_err(|e| state.failed(e))?;
                state.pending.extend_from_slice(&buf[took..n]);
            } else {
                state.pending.extend_from_slice(&buf[..n]);
                self.feed(state)?;
            }
            Ok(n)
        })
    }

    /// Runs the handshake within the handshake timeout (the whole of it), then records what
    /// it found.
    fn handshake(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + self.handshake_timeout;
        let timeout = self.handshake_timeout;
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        let timed_out = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake not done within {timeout:?}"),
            )
        };
        let remaining = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
        };
        // What rustls has to send once the handshake is done (TLS 1.3 session tickets, TLS
        // 1.2's final flight) waits for the connection's first read or write, which sends it
        // with the reply: written on its own, it would leave unacknowledged data in flight
        // and Nagle would hold the first reply for the peer's delayed ACK (40 ms).
        while state.conn.is_handshaking() {
            let left = remaining().ok_or_else(timed_out)?;
            self.sock.set_timeouts(Some(left))?;
            self.flush_tls(&mut state.conn)
                .map_err(|e| on_timeout(e, &timed_out))?;
            if !state.pending.is_empty() {
                self.feed(state)?;
                if !state.conn.is_handshaking() || state.conn.wants_write() {
                    continue;
                }
            }
            let n = self.read_raw(state).map_err(|e| on_timeout(e, &timed_out))?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            self.feed(state)?;
        }
        self.sock.set_timeouts(None)?;
        let info = TlsInfo::of(&state.conn);
        drop(guard);
        self.info = info;
        Ok(())
    }

    /// One step of the handshake on an event loop: reads and writes what the socket allows
    /// now; `Ok(true)` once the handshake is done (what it found is recorded), `Ok(false)`
    /// after a read or write that would have blocked. What rustls has left to send once it is
    /// done goes out with the connection's first flush, as in [`handshake`](Self::handshake).
    fn handshake_nowait(&mut self) -> io::Result<bool> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        while state.conn.is_handshaking() {
            if !self.flush_tls_nowait(&mut state.conn)? {
                // The socket is full: the worker calls again when it is writable.
                return Ok(false);
            }
            if !state.pending.is_empty() {
                self.feed(state)?;
                if !state.conn.is_handshaking() || state.conn.wants_write() {
                    continue;
                }
            }
            match self.read_raw_nowait(state) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ))
                }
                Ok(_) => self.feed(state)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let info = TlsInfo::of(&state.conn);
        drop(guard);
        self.info = info;
        Ok(true)
    }

    /// Sends `close_notify`, as far as the socket takes it now: never waits on a peer that
    /// does not read (an event loop must not; a closing thread need not).
    fn send_close_notify(&self) {
        let mut state = self.lock();
        if state.conn.is_handshaking() {
            return;
        }
        state.conn.send_close_notify();
        let _ = self.flush_tls_nowait(&mut state.conn);
    }

    /// Plaintext that has arrived, without waiting: fills `buf` while rustls has plaintext
    /// or the socket has bytes; returns less only once the socket said it had nothing more
    /// (or ended), as [`Connection::read_nowait`] requires.
    fn read_plain_nowait(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.lock();
        state.check()?;
        let mut filled = 0;
        let mut ended = false;
        // The socket said end of input: rustls has been told, so its reader says so now.
        let mut raw_ended = false;
        loop {
            match state.conn.reader().read(&mut buf[filled..]) {
                // close_notify: the end.
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && raw_ended => {
                    ended = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: end of file (Python's suppress_ragged_eofs).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    ended = true;
                    break;
                }
                Err(e) if filled > 0 => {
                    log::debug!("TLS: {e} after {filled} bytes of plaintext; reported on the next read");
                    break;
                }
                Err(e) => return Err(e),
            }
            if !state.pending.is_empty() {
                let before = state.pending.len();
                self.feed(&mut state)?;
                if state.pending.len() < before {
                    continue;
                }
            }
            // Key updates or tickets rustls wants to send go out as the socket allows.
            self.flush_tls_nowait(&mut state.conn)?;
            match self.read_raw_nowait(&mut state) {
                // rustls is told of the end; the reader says so on the next turn.
                Ok(0) => raw_ended = true,
                Ok(_) => self.feed(&mut state)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) if filled > 0 => break,
                Err(e) => return Err(e),
            }
        }
        match filled {
            0 if ended => Ok(0),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// Plaintext written as far as rustls' buffer and the socket take it now.
    fn write_plain_nowait(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.lock();
        // Records rustls still holds go first: its buffer is bounded, and the socket decides.
        let flushed = self.flush_tls_nowait(&mut state.conn)?;
        let n = state.conn.writer().write(buf)?;
        if flushed {
            self.flush_tls_nowait(&mut state.conn)?;
        }
        match n {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn read_plain(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let mut state = self.lock();
            state.check()?;
            match state.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: end of file (Python's suppress_ragged_eofs).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if !state.pending.is_empty() {
                let before = state.pending.len();
                self.feed(&mut state)?;
                if state.pending.len() < before {
                    continue;
                }
            }
            // Key updates or tickets rustls wants to send go out before we wait.
            self.flush_tls(&mut state.conn)?;
            // The wait for the socket holds the lock: a writer on another thread waits too.
            // Handlers read and write from one thread; rfile and wfile are not split.
            self.read_raw(&mut state)?;
            self.feed(&mut state)?;
        }
    }

    fn write_plain(&self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.lock();
        let n = state.conn.writer().write(buf)?;
        self.flush_tls(&mut state.conn)?;
        Ok(n)
    }
}

fn on_timeout(e: io::Error, timed_out: &impl Fn() -> io::Error) -> io::Error {
    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        timed_out()
    } else {
        e
    }
}

/// The plaintext reader of a [`TlsStream`] (what `rfile` buffers).
pub struct TlsReader<'a, S>(&'a TlsStream<S>);

/// The plaintext writer of a [`TlsStream`] (what `wfile` writes to).
pub struct TlsWriter<'a, S>(&'a TlsStream<S>);

impl<S: Connection> Read for TlsReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_plain(buf)
    }
}

impl<S: Connection> Write for TlsWriter<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_plain(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        let mut state = self.0.lock();
        self.0.flush_tls(&mut state.conn)
    }
}

impl<S: Connection> Connection for TlsStream<S> {
    type Reader<'a> = TlsReader<'a, S>;
    type Writer<'a> = TlsWriter<'a, S>;
    fn reader(&self) -> TlsReader<'_, S> {
        TlsReader(self)
    }
    fn writer(&self) -> TlsWriter<'_, S> {
        TlsWriter(self)
    }
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_timeouts(timeout)
    }
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.sock.set_nodelay(nodelay)
    }
    fn read_side(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.sock.read_side()
    }
    fn read_nowait(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_plain_nowait(buf)
    }
    fn write_nowait(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_plain_nowait(buf)
    }
    fn flush_nowait(&self) -> io::Result<bool> {
        let mut state = self.lock();
        self.flush_tls_nowait(&mut state.conn)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.send_close_notify();
        self.sock.shutdown_write()
    }
    fn wait_input(&self, timeout: Option<Duration>) -> io::Result<Incoming> {
        {
            let mut state = self.lock();
            // A broken connection: the read reports it at once.
            if state.broken.is_some() {
                return Ok(Incoming::Ready);
            }
            // The peer may be waiting for what the handshake left to send.
            self.flush_tls(&mut state.conn)?;
            if !state.pending.is_empty() {
                return Ok(Incoming::Ready);
            }
            if state
                .conn
                .process_new_packets()
                .map_or(true, |s| s.plaintext_bytes_to_read() > 0 || s.peer_has_closed())
            {
                return Ok(Incoming::Ready);
            }
        }
        self.sock.wait_input(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::common_name;

    /// `SET { SEQUENCE { OID 2.5.4.3, UTF8String "abc" } }`, a subject with one CN.
    const SUBJECT: &[u8] = &[
        0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'a', b'b', b'c',
    ];

    #[test]
    fn the_common_name_is_found() {
        assert_eq!(common_name(SUBJECT).as_deref(), Some("abc"));
        assert_eq!(common_name(&[]), None);
    }

    #[test]
    fn malformed_subjects_give_none_and_never_panic() {
        for cut in 0..SUBJECT.len() {
            assert_eq!(common_name(&SUBJECT[..cut]), None, "cut at {cut}");
        }
        // Every single-byte corruption, including long-form lengths that overrun.
        for at in 0..SUBJECT.len() {
            for byte in [0x00, 0x7f, 0x80, 0x81, 0x84, 0x85, 0xff] {
                let mut bad = SUBJECT.to_vec();
                bad[at] = byte;
                let _ = common_name(&bad);
            }
        }
    }
}
