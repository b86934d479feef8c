//! TLS as a transport wrapper (`Tls<T>`): the handshake runs in the prepare stage on the
//! connection's own thread or child, or on a multiplex worker's event loop without blocking
//! it, with every concurrency model and stream transport;
//! handlers read and write plaintext and see ALPN, SNI and the client's identity; mutual
//! TLS refuses the wrong clients; a certificate reload reaches new connections only;
//! failed handshakes are peer events.

mod tls_support;
mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use sockserve::concurrency::{AfterMessage, Concurrency, MessageHandler, Multiplex, Pooled, ProcessRequest};
use sockserve::prelude::*;
use sockserve::transport::{StreamTransport, Tls, TlsConfig, TlsStream, Transport};
use sockserve::{ConnIo, ConnectionHandler};
use tls_support::{client_config, connect, read_to_close_notify, round_trip, tcp, Ca};
use util::{eventually, Running, TempDir, LIMIT};

/// Answers `who` with what the handshake found, echoes every other line; the same protocol
/// as a stream handler (sync, threading, forking), a connection handler (multiplex) and a
/// message handler (pooled).
#[derive(Default)]
struct Echo {
    errors: Mutex<Vec<(String, bool)>>,
}

fn answer<S>(request: &TlsStream<S>, line: &[u8]) -> Vec<u8> {
    if line != b"who\n" {
        return line.to_vec();
    }
    let info = request.info();
    format!(
        "alpn={} sni={} cn={}\n",
        info.alpn_protocol
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default(),
        info.server_name.as_deref().unwrap_or("-"),
        info.peer_common_name().as_deref().unwrap_or("-"),
    )
    .into_bytes()
}

impl Echo {
    /// Identity checks after the handshake: "eve" has a good certificate but is refused.
    fn allowed<S>(request: &TlsStream<S>) -> bool {
        request.info().peer_common_name().as_deref() != Some("eve")
    }
    fn record(&self, error: &RequestError) {
        let mut errors = self.errors.lock().unwrap();
        errors.push((error.to_string(), error.is_peer_event()));
    }
}

impl<T: StreamTransport> StreamHandler<Tls<T>> for Echo {
    fn verify_request(&self, request: &<Tls<T> as Transport>::Request, _: &T::Address) -> bool {
        Echo::allowed(request)
    }
    fn handle(&self, req: &mut StreamRequest<'_, Tls<T>>) -> io::Result<()> {
        let mut line = Vec::new();
        while req.rfile.read_until(b'\n', &mut line)? > 0 {
            req.wfile.write_all(&answer(req.request, &line))?;
            line.clear();
        }
        Ok(())
    }
    fn handle_error(&self, _: &T::Address, error: &RequestError) {
        self.record(error)
    }
}

impl<T> ConnectionHandler<Tls<T>> for Echo
where
    T: StreamTransport + Send + Sync,
    T::Request: AsFd,
{
    type Conn = ();
    fn verify_request(&self, request: &<Tls<T> as Transport>::Request, _: &T::Address) -> bool {
        Echo::allowed(request)
    }
    fn connected(&self, _io: &mut ConnIo<'_, Tls<T>>) -> io::Result<()> {
        Ok(())
    }
    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tls<T>>, input: &[u8]) -> io::Result<usize> {
        let mut consumed = 0;
        while let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') {
            let reply = answer(io.request(), &input[consumed..=consumed + end]);
            io.write(&reply);
            consumed += end + 1;
        }
        Ok(consumed)
    }
    fn handle_error(&self, _: &T::Address, error: &RequestError) {
        self.record(error)
    }
}

impl<T: StreamTransport> MessageHandler<Tls<T>> for Echo {
    fn verify_request(&self, request: &<Tls<T> as Transport>::Request, _: &T::Address) -> bool {
        Echo::allowed(request)
    }
    fn handle(&self, req: &mut StreamRequest<'_, Tls<T>>) -> io::Result<AfterMessage> {
        let mut line = Vec::new();
        if req.rfile.read_until(b'\n', &mut line)? == 0 {
            return Ok(AfterMessage::Close);
        }
        req.wfile.write_all(&answer(req.request, &line))?;
        Ok(AfterMessage::KeepOpen)
    }
    fn handle_error(&self, _: &T::Address, error: &RequestError) {
        self.record(error)
    }
}

struct Pki {
    dir: TempDir,
    ca: Ca,
    config: TlsConfig,
}

fn pki(client_auth: Option<bool>) -> Pki {
    let dir = TempDir::new("tls");
    let ca = Ca::new("sockserve test CA");
    let (cert, key) = ca.server().write(&dir.0, "server");
    let ca_pem = ca.write(&dir.0, "ca");
    let mut builder = TlsConfig::from_pem_files(&cert, &key)
        .unwrap()
        .alpn(["echo/1", "http/1.1"])
        .handshake_timeout(Duration::from_millis(500));
    if let Some(required) = client_auth {
        builder = builder.client_ca_pem_file(&ca_pem, required).unwrap();
    }
    Pki {
        config: builder.build().unwrap(),
        dir,
        ca,
    }
}

fn options() -> Options {
    Options::DEFAULT.poll_interval(Duration::from_millis(20))
}

fn serve_tcp<C>(pki: &Pki) -> Running<Tls<Tcp>, C, Echo>
where
    C: Concurrency + sockserve::concurrency::ProcessRequest<Tls<Tcp>, Echo> + Send + Sync,
{
    let server: Server<Tls<Tcp>, C, Echo> =
        Server::with_options(("127.0.0.1:0", pki.config.clone()), Echo::default(), options()).unwrap();
    Running::start(server)
}

fn serve_unix<C>(pki: &Pki, name: &str) -> Running<Tls<Unix>, C, Echo>
where
    C: Concurrency + sockserve::concurrency::ProcessRequest<Tls<Unix>, Echo> + Send + Sync,
{
    let path = pki.dir.path(name);
    let server: Server<Tls<Unix>, C, Echo> =
        Server::with_options((path, pki.config.clone()), Echo::default(), options()).unwrap();
    Running::start(server)
}

/// One client over `sock`: greeting, an echoed line, then the server's close_notify after
/// the client's own end of stream.
fn exchange<S: Read + Write + ReadTimeout>(
    pki: &Pki,
    sock: S,
    shut: impl FnOnce(&S),
) -> (String, String, String) {
    let config = client_config(&pki.ca, None, &["echo/1"]);
    let mut stream = connect(&config, sock).unwrap();
    stream.get_ref().set_read_timeout_any(LIMIT);
    let greeting = round_trip(&mut stream, "who\n").unwrap();
    let echoed = round_trip(&mut stream, "ping over tls\n").unwrap();
    stream.conn.send_close_notify();
    stream.conn.complete_io(&mut stream.sock).unwrap();
    shut(&stream.sock);
    let rest = read_to_close_notify(&mut stream).expect("the server ends with close_notify");
    (greeting, echoed, rest)
}

trait ReadTimeout {
    fn set_read_timeout_any(&self, limit: Duration);
}
impl ReadTimeout for TcpStream {
    fn set_read_timeout_any(&self, limit: Duration) {
        self.set_read_timeout(Some(limit)).unwrap();
    }
}
impl ReadTimeout for UnixStream {
    fn set_read_timeout_any(&self, limit: Duration) {
        self.set_read_timeout(Some(limit)).unwrap();
    }
}

fn check_model<C>(name: &str)
where
    C: Concurrency
        + Send
        + Sync
        + sockserve::concurrency::ProcessRequest<Tls<Tcp>, Echo>
        + sockserve::concurrency::ProcessRequest<Tls<Unix>, Echo>,
{
    let pki = pki(None);
    let running = serve_tcp::<C>(&pki);
    let addr = running.server.server_address();
    let (greeting, echoed, rest) = exchange(&pki, tcp(addr), |s| {
        let _ = s.shutdown(Shutdown::Write);
    });
    assert_eq!(greeting, "alpn=echo/1 sni=localhost cn=-\n", "{name} over TCP");
    assert_eq!(echoed, "ping over tls\n", "{name} over TCP");
    assert_eq!(rest, "", "{name} over TCP");
    drop(running);

    let running = serve_unix::<C>(&pki, &format!("{name}.sock"));
    let path = pki.dir.path(&format!("{name}.sock"));
    let (greeting, echoed, rest) = exchange(&pki, UnixStream::connect(&path).unwrap(), |s| {
        let _ = s.shutdown(Shutdown::Write);
    });
    assert_eq!(greeting, "alpn=echo/1 sni=localhost cn=-\n", "{name} over Unix");
    assert_eq!(echoed, "ping over tls\n", "{name} over Unix");
    assert_eq!(rest, "", "{name} over Unix");
    drop(running);
}

#[test]
fn every_model_serves_tls_over_tcp_and_unix() {
    check_model::<Synchronous>("synchronous");
    check_model::<Threading>("threading");
    check_model::<Forking>("forking");
    check_model::<Multiplex>("multiplex");
    check_model::<Pooled>("pooled");
}

/// What the per-model tests need of a model, over TCP.
trait Model: Concurrency + ProcessRequest<Tls<Tcp>, Echo> + Send + Sync {}
impl<C: Concurrency + ProcessRequest<Tls<Tcp>, Echo> + Send + Sync> Model for C {}

#[test]
fn a_stalled_handshake_holds_up_nobody_and_is_dropped() {
    stalled_handshake::<Threading>();
    stalled_handshake::<Multiplex>();
    stalled_handshake::<Pooled>();
}

fn stalled_handshake<C: Model>() {
    let pki = pki(None);
    let running = serve_tcp::<C>(&pki);
    let addr = running.server.server_address();
    // Connected, says nothing: it holds its own thread until the handshake timeout.
    let mut stalled = tcp(addr);
    let (greeting, echoed, _) = exchange(&pki, tcp(addr), |s| {
        let _ = s.shutdown(Shutdown::Write);
    });
    assert_eq!(
        (greeting.as_str(), echoed.as_str()),
        ("alpn=echo/1 sni=localhost cn=-\n", "ping over tls\n")
    );
    stalled.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        stalled.read(&mut buf).unwrap(),
        0,
        "dropped after the handshake timeout"
    );
    let handler = running.server.handler();
    assert!(eventually(LIMIT, || !handler.errors.lock().unwrap().is_empty()));
    let errors = handler.errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    // "TLS handshake not done within 500ms" on a thread; on an event loop the whole prepare
    // stage is timed.
    assert!(errors[0].0.contains("not done within 500ms"), "{errors:?}");
    assert!(errors[0].1, "a stalled handshake is a peer event");
}

#[test]
fn plaintext_on_the_tls_port_is_a_peer_event() {
    plaintext::<Threading>();
    plaintext::<Multiplex>();
    plaintext::<Pooled>();
}

fn plaintext<C: Model>() {
    let pki = pki(None);
    let running = serve_tcp::<C>(&pki);
    let addr = running.server.server_address();
    let mut plain = tcp(addr);
    plain.set_read_timeout(Some(LIMIT)).unwrap();
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(!reply.starts_with(b"HTTP"), "no plaintext answer");
    let handler = running.server.handler();
    assert!(eventually(LIMIT, || !handler.errors.lock().unwrap().is_empty()));
    let errors = handler.errors.lock().unwrap().clone();
    assert!(errors[0].0.contains("TLS"), "{errors:?}");
    assert!(errors[0].1, "{errors:?}");
    // Still serving.
    let (_, echoed, _) = exchange(&pki, tcp(addr), |s| {
        let _ = s.shutdown(Shutdown::Write);
    });
    assert_eq!(echoed, "ping over tls\n");
}

/// After a good handshake and a served line, a record that does not decrypt: the connection
/// ends, and `handle_error` hears of it as a peer event (`RequestError::Protocol`, debug level
/// by default), not an error of the server; the next client is served. At once and after a
/// pause: a pooled connection is then parked on its worker, not lingering on a pool thread.
#[test]
fn a_corrupt_record_after_the_handshake_is_a_peer_event() {
    for pause in [Duration::ZERO, Duration::from_millis(100)] {
        corrupt_record::<Threading>(pause);
        corrupt_record::<Multiplex>(pause);
        corrupt_record::<Pooled>(pause);
    }
}

fn corrupt_record<C: Model>(pause: Duration) {
    let pki = pki(None);
    let running = serve_tcp::<C>(&pki);
    let addr = running.server.server_address();
    let config = client_config(&pki.ca, None, &[]);
    let mut stream = connect(&config, tcp(addr)).unwrap();
    assert_eq!(round_trip(&mut stream, "fine\n").unwrap(), "fine\n");
    // An application-data record of 32 bytes that are no ciphertext of this session.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    record.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    std::thread::sleep(pause);
    stream.sock.write_all(&record).unwrap();
    let mut rest = Vec::new();
    let _ = stream.sock.read_to_end(&mut rest);
    let handler = running.server.handler();
    assert!(eventually(LIMIT, || !handler.errors.lock().unwrap().is_empty()));
    let errors = handler.errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].0.contains("broke the connection's protocol: TLS"),
        "{errors:?}"
    );
    assert!(errors[0].1, "a corrupt record is a peer event: {errors:?}");
    let mut next = connect(&config, tcp(addr)).unwrap();
    assert_eq!(round_trip(&mut next, "next\n").unwrap(), "next\n");
}

#[test]
fn mutual_tls_refuses_the_wrong_clients_and_names_the_right_one() {
    mutual::<Threading>();
    mutual::<Multiplex>();
    mutual::<Pooled>();
}

fn mutual<C: Model>() {
    let pki = pki(Some(true));
    let running = serve_tcp::<C>(&pki);
    let addr = running.server.server_address();
    let alice = pki.ca.client("alice");
    let eve = pki.ca.client("eve");
    let other_ca = Ca::new("another CA");
    let mallory = other_ca.client("mallory");

    // The right client is served and named.
    let config = client_config(&pki.ca, Some(&alice), &[]);
    let mut stream = connect(&config, tcp(addr)).unwrap();
    stream.sock.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(
        round_trip(&mut stream, "who\n").unwrap(),
        "alpn= sni=localhost cn=alice\n"
    );
    assert_eq!(round_trip(&mut stream, "hi\n").unwrap(), "hi\n");
    drop(stream);

    // No certificate, or one from another CA: refused in the handshake. (TLS 1.3 clients
    // learn it at their first read.)
    for (who, identity) in [("nobody", None), ("mallory", Some(&mallory))] {
        let config = client_config(&pki.ca, identity, &[]);
        let refused = connect(&config, tcp(addr)).and_then(|mut s| {
            s.sock.set_read_timeout(Some(LIMIT)).unwrap();
            round_trip(&mut s, "hi\n")
        });
        assert!(refused.is_err(), "{who}: {refused:?}");
    }
    // A good certificate that verify_request refuses: closed without a word.
    let config = client_config(&pki.ca, Some(&eve), &[]);
    let mut stream = connect(&config, tcp(addr)).unwrap();
    stream.sock.set_read_timeout(Some(LIMIT)).unwrap();
    let reply = round_trip(&mut stream, "hi\n");
    assert!(
        reply.as_deref().is_ok_and(str::is_empty) || reply.is_err(),
        "{reply:?}"
    );

    let handler = running.server.handler();
    assert!(eventually(LIMIT, || handler.errors.lock().unwrap().len() >= 2));
    let errors = handler.errors.lock().unwrap().clone();
    assert!(errors.iter().all(|(_, peer)| *peer), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|(e, _)| e.contains("UnknownIssuer") || e.contains("unknown issuer")),
        "{errors:?}"
    );
}

#[test]
fn a_reload_reaches_new_connections_and_spares_live_ones() {
    reload::<Threading>();
    reload::<Multiplex>();
    reload::<Pooled>();
}

fn reload<C: Model>() {
    let pki = pki(None);
    let running = serve_tcp::<C>(&pki);
    let addr = running.server.server_address();
    let config = client_config(&pki.ca, None, &[]);
    let first = pki.ca.server().der();
    let mut live = connect(&config, tcp(addr)).unwrap();
    live.sock.set_read_timeout(Some(LIMIT)).unwrap();
    let old = live.conn.peer_certificates().unwrap()[0].clone();
    assert_ne!(old, first, "each server() call makes a new certificate");

    let (cert, key) = pki.ca.server().write(&pki.dir.0, "rotated");
    let rotated = std::fs::read(&cert).unwrap();
    pki.config.reload_pem_files(&cert, &key).unwrap();
    // A key that does not match its certificate is refused; the rotated one stays.
    let (other_cert, _) = pki.ca.server().write(&pki.dir.0, "mismatched");
    assert!(pki.config.reload_pem_files(&other_cert, &key).is_err());

    let mut fresh = connect(&config, tcp(addr)).unwrap();
    let new = fresh.conn.peer_certificates().unwrap()[0].clone();
    let rotated_der = rustls::pki_types::CertificateDer::from_pem_slice_der(&rotated);
    assert_eq!(new, rotated_der, "new connections get the new certificate");
    assert_ne!(new, old);
    fresh.sock.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(
        round_trip(&mut fresh, "who\n").unwrap(),
        "alpn= sni=localhost cn=-\n"
    );
    // The live connection goes on with its own.
    assert_eq!(
        round_trip(&mut live, "who\n").unwrap(),
        "alpn= sni=localhost cn=-\n"
    );
    assert_eq!(round_trip(&mut live, "still here\n").unwrap(), "still here\n");
}

/// TLS with `worker_listeners`: each worker accepts on a TLS listener of its own (the
/// server's and two workers': three sockets listening on the port), shakes hands on its event
/// loop, then runs `verify_request`: clients are served, and "eve" is refused on whichever
/// listener took her.
#[test]
fn worker_listeners_accept_tls_on_every_worker() {
    let pki = pki(Some(false));
    let options = options().workers(Some(2)).worker_listeners(true);
    let server: Server<Tls<Tcp>, Multiplex, Echo> =
        Server::with_options(("127.0.0.1:0", pki.config.clone()), Echo::default(), options).unwrap();
    let addr = server.server_address();
    let _running = Running::start(server);
    assert!(eventually(LIMIT, || util::listening(addr) == 3));
    let anonymous = client_config(&pki.ca, None, &[]);
    for i in 0..40 {
        let mut stream = connect(&anonymous, tcp(addr)).unwrap();
        let line = format!("line {i}\n");
        assert_eq!(round_trip(&mut stream, &line).unwrap(), line);
        assert_eq!(
            round_trip(&mut stream, "who\n").unwrap(),
            "alpn= sni=localhost cn=-\n"
        );
    }
    let eve = pki.ca.client("eve");
    let eve = client_config(&pki.ca, Some(&eve), &[]);
    for _ in 0..10 {
        let reply = connect(&eve, tcp(addr)).and_then(|mut s| round_trip(&mut s, "hi\n"));
        assert!(
            reply.as_deref().is_ok_and(str::is_empty) || reply.is_err(),
            "{reply:?}"
        );
    }
}

trait FromPem {
    fn from_pem_slice_der(pem: &[u8]) -> Self;
}
impl FromPem for rustls::pki_types::CertificateDer<'static> {
    fn from_pem_slice_der(pem: &[u8]) -> Self {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem).unwrap()
    }
}

/// Names the peer of a TLS connection over a Unix socket, from the socket underneath
/// (`SO_PEERCRED`).
struct WhoTls;

impl StreamHandler<Tls<Unix>> for WhoTls {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Unix>>) -> io::Result<()> {
        use sockserve::transport::PeerCredentials;
        let peer = req.request.peer_credentials()?;
        writeln!(req.wfile, "uid={} pid={}", peer.uid, peer.pid)
    }
}

#[test]
fn peer_credentials_reach_through_tls_on_a_unix_socket() {
    let pki = pki(None);
    let path = pki.dir.path("who.sock");
    let server: Server<Tls<Unix>, Threading, WhoTls> =
        Server::with_options((path.clone(), pki.config.clone()), WhoTls, options()).unwrap();
    let _running = Running::start(server);
    let config = client_config(&pki.ca, None, &[]);
    let mut stream = connect(&config, UnixStream::connect(&path).unwrap()).unwrap();
    stream.sock.set_read_timeout(Some(LIMIT)).unwrap();
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        round_trip(&mut stream, "").unwrap(),
        format!("uid={uid} pid={}\n", std::process::id())
    );
}

/// A layer keeps what its inner transport says about graceful stops: a TLS server, like the
/// TCP or Unix one under it, serves the connections already in its listen backlog before it
/// closes on a stop signal (and so does a PROXY layer over TLS).
#[test]
fn layers_keep_the_inner_transports_backlog_behaviour() {
    // Checked when the test compiles: a layer that lost BACKLOG fails the build.
    const {
        assert!(<Tcp as Transport>::BACKLOG);
        assert!(<Tls<Tcp> as Transport>::BACKLOG);
        assert!(<Tls<Unix> as Transport>::BACKLOG);
        assert!(<sockserve::transport::Proxied<Tls<Tcp>> as Transport>::BACKLOG);
    }
}
