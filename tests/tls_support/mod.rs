//! Certificates made at run time (rcgen; no key is committed) and a rustls client, for the
//! TLS tests.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    pub cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key.
pub struct Leaf {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate whose subject CN is `name`.
    pub fn client(&self, name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert, key }
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

impl Leaf {
    /// Writes `NAME.pem` and `NAME.key`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, self.cert.pem()).unwrap();
        std::fs::write(&key, self.key.serialize_pem()).unwrap();
        (cert, key)
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server configuration presenting this certificate, from its PEM.
    pub fn tls_config(&self) -> sockserve::transport::tls::TlsConfigBuilder {
        sockserve::transport::TlsConfig::from_pem(
            self.cert.pem().as_bytes(),
            self.key.serialize_pem().as_bytes(),
        )
        .unwrap()
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::try_from(self.key.serialize_der()).unwrap()
    }
}

/// A client configuration trusting `ca`, presenting `identity` if given, offering `alpn`.
pub fn client_config(ca: &Ca, identity: Option<&Leaf>, alpn: &[&str]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der()], leaf.key_der())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// How long any one client read or write may block: a server that stops answering fails the
/// test instead of hanging it.
pub const CLIENT_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A TCP connection to `addr` whose reads and writes give up after [`CLIENT_IO_TIMEOUT`].
pub fn tcp(addr: impl ToSocketAddrs) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(CLIENT_IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_IO_TIMEOUT)).unwrap();
    stream
}

/// A TLS client over `sock` (TCP or Unix), asking for `localhost`.
pub fn connect<S: Read + Write>(
    config: &Arc<ClientConfig>,
    sock: S,
) -> io::Result<StreamOwned<ClientConnection, S>> {
    let conn = ClientConnection::new(Arc::clone(config), ServerName::try_from("localhost").unwrap())
        .map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Sends `line`, reads one line back.
pub fn round_trip<S: Read + Write>(
    stream: &mut StreamOwned<ClientConnection, S>,
    line: &str,
) -> io::Result<String> {
    stream.write_all(line.as_bytes())?;
    stream.flush()?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Reads everything up to the server's close_notify; an error if the connection ends
/// without one.
pub fn read_to_close_notify<S: Read + Write>(
    stream: &mut StreamOwned<ClientConnection, S>,
) -> io::Result<String> {
    let mut text = String::new();
    BufReader::new(stream).read_to_string(&mut text)?;
    Ok(text)
}

/// Reads lines until end of file.
pub fn lines(reader: impl Read) -> Vec<String> {
    BufReader::new(reader).lines().map_while(Result::ok).collect()
}
