//! `transport::Proxied` composes with another preparing transport: the PROXY header is read
//! from the raw socket first, then the inner transport's own prepare stage runs (a TLS
//! handshake in real life; here a toy `HELLO`/`OK` handshake), then `verify_request` sees the
//! original client and the handler the proxy as the connection's peer. On the multiplex and
//! pooled models the header is read on the worker's event loop as it arrives, never waiting.

mod tls_support;
mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::sync::Mutex;

use sockserve::concurrency::{
    AfterMessage, Concurrency, MessageHandler, Multiplex, Pooled, ProcessRequest, Threading,
};
use sockserve::prelude::*;
use sockserve::transport::{Proxied, ProxyProtocol, StreamKind, StreamTransport, Tls, Transport};
use sockserve::{ConnIo, ConnectionHandler};
use util::{Running, LIMIT};

/// TCP whose connections start with `HELLO\n`, answered `OK\n` in `prepare`.
struct Handshake(Tcp);

impl Transport for Handshake {
    type Request = TcpStream;
    type Address = SocketAddr;
    type ServerAddress = SocketAddr;
    type BindAddress = SocketAddr;
    type Kind = StreamKind;
    const PREPARES: bool = true;

    fn open(address: SocketAddr, options: &Options) -> io::Result<Self> {
        Tcp::open(address, options).map(Handshake)
    }
    fn server_bind(&mut self, options: &Options) -> io::Result<()> {
        self.0.server_bind(options)
    }
    fn server_activate(&mut self, options: &Options) -> io::Result<()> {
        self.0.server_activate(options)
    }
    fn server_address(&self) -> SocketAddr {
        self.0.server_address()
    }
    fn fileno(&self) -> Option<BorrowedFd<'_>> {
        self.0.fileno()
    }
    fn get_request(&self) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        self.0.get_request()
    }
    fn prepare(&self, request: &mut TcpStream, _client_address: &mut SocketAddr) -> io::Result<()> {
        request.set_read_timeout(Some(LIMIT))?;
        let mut hello = [0u8; 6];
        request.read_exact(&mut hello)?;
        if &hello != b"HELLO\n" {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "no HELLO"));
        }
        request.write_all(b"OK\n")
    }
}

impl StreamTransport for Handshake {}

#[derive(Default)]
struct Who {
    verified: Mutex<Vec<SocketAddr>>,
}

impl StreamHandler<Proxied<Handshake>> for Who {
    fn verify_request(&self, _request: &TcpStream, client_address: &SocketAddr) -> bool {
        self.verified.lock().unwrap().push(*client_address);
        client_address.ip() != "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
    }

    fn handle(&self, req: &mut StreamRequest<'_, Proxied<Handshake>>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        write!(
            req.wfile,
            "{} via {}: {line}",
            req.client_address,
            req.request.peer_addr()?
        )
    }
}

fn v2(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&source);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&9000u16.to_be_bytes());
    h
}

fn talk(address: SocketAddr, bytes: &[u8]) -> (String, SocketAddr) {
    let mut stream = TcpStream::connect(address).unwrap();
    let local = stream.local_addr().unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    (reply, local)
}

#[test]
fn proxy_header_then_inner_handshake_then_verify_with_the_original_client() {
    let options = Options::DEFAULT.proxy_protocol(ProxyProtocol::V2);
    let server: Server<Proxied<Handshake>, Threading, Who> =
        Server::with_options("127.0.0.1:0", Who::default(), options).unwrap();
    let address = server.server_address();
    let running = Running::start(server);

    let mut bytes = v2([192, 0, 2, 7], 40000);
    bytes.extend_from_slice(b"HELLO\nline\n");
    let (reply, local) = talk(address, &bytes);
    assert_eq!(reply, format!("OK\n192.0.2.7:40000 via {local}: line\n"));

    // Refused by verify_request, after both prepare stages.
    let mut bytes = v2([10, 0, 0, 1], 40001);
    bytes.extend_from_slice(b"HELLO\nline\n");
    assert_eq!(talk(address, &bytes).0, "OK\n");

    // The handshake without a PROXY header first: closed before the handshake, never verified.
    assert_eq!(talk(address, b"HELLO\nline\n").0, "");
    // A v1 header where v2 is required: refused the same way.
    assert_eq!(
        talk(address, b"PROXY TCP4 192.0.2.9 127.0.0.1 1 2\r\nHELLO\n").0,
        ""
    );

    let verified = running.server.handler().verified.lock().unwrap().clone();
    assert_eq!(
        verified,
        [
            "192.0.2.7:40000".parse().unwrap(),
            "10.0.0.1:40001".parse().unwrap()
        ]
    );
}

#[test]
fn a_stalled_proxy_header_is_given_up() {
    let options = Options::DEFAULT.proxy_protocol(ProxyProtocol::Any);
    let server: Server<Proxied<Tcp>, Threading, Echo> =
        Server::with_options("127.0.0.1:0", Echo::default(), options).unwrap();
    let address = server.server_address();
    let _running = Running::start(server);
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(b"PROXY TCP4 ").unwrap();
    // The server closes the connection once HEADER_TIMEOUT has passed, without a reply.
    stream
        .set_read_timeout(Some(sockserve::transport::HEADER_TIMEOUT + LIMIT))
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0);
    // A complete header after it is served as usual.
    let (reply, _) = talk(address, b"PROXY TCP4 192.0.2.1 127.0.0.1 5 6\r\nhi\n");
    assert_eq!(reply, "192.0.2.1:5 hi\n");
}

/// Answers one line with the client's address; the same as a stream handler (threading), a
/// connection handler (multiplex) and a message handler (pooled).
#[derive(Default)]
struct Echo {
    errors: Mutex<Vec<String>>,
}

impl StreamHandler<Proxied<Tcp>> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Proxied<Tcp>>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        write!(req.wfile, "{} {line}", req.client_address)
    }
}

impl ConnectionHandler<Proxied<Tcp>> for Echo {
    type Conn = ();
    fn connected(&self, _io: &mut ConnIo<'_, Proxied<Tcp>>) -> io::Result<()> {
        Ok(())
    }
    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Proxied<Tcp>>, input: &[u8]) -> io::Result<usize> {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return Ok(0);
        };
        let reply = format!(
            "{} {}",
            io.client_address(),
            String::from_utf8_lossy(&input[..=end])
        );
        io.write(reply.as_bytes());
        io.close();
        Ok(end + 1)
    }
    fn handle_error(&self, _: &SocketAddr, error: &RequestError) {
        self.errors.lock().unwrap().push(error.to_string());
    }
}

impl MessageHandler<Proxied<Tcp>> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Proxied<Tcp>>) -> io::Result<AfterMessage> {
        StreamHandler::handle(self, req)?;
        Ok(AfterMessage::Close)
    }
    fn handle_error(&self, _: &SocketAddr, error: &RequestError) {
        self.errors.lock().unwrap().push(error.to_string());
    }
}

/// The PROXY header on an event loop: a header that stalls holds up nobody and is given up
/// at `HEADER_TIMEOUT`; one that arrives in pieces is put together; the client's first bytes
/// after it are the handler's; a connection without a header is refused through
/// `handle_error`.
fn header_on_the_event_loop<C>()
where
    C: Concurrency + ProcessRequest<Proxied<Tcp>, Echo> + Send + Sync,
{
    let options = Options::DEFAULT
        .proxy_protocol(ProxyProtocol::Any)
        .workers(Some(1));
    let server: Server<Proxied<Tcp>, C, Echo> =
        Server::with_options("127.0.0.1:0", Echo::default(), options).unwrap();
    let address = server.server_address();
    let running = Running::start(server);
    let mut stalled = TcpStream::connect(address).unwrap();
    stalled.write_all(b"PROXY TCP4 ").unwrap();
    // Meanwhile, on the same worker: v1 in pieces, v2 with the request in the same write.
    let mut pieces = TcpStream::connect(address).unwrap();
    pieces.set_read_timeout(Some(LIMIT)).unwrap();
    for piece in [
        &b"PROXY TCP4 192.0"[..],
        b".2.9 127.0.0.1 4000 9000\r",
        b"\nin pieces\n",
    ] {
        pieces.write_all(piece).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    let mut reply = String::new();
    pieces.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "192.0.2.9:4000 in pieces\n");
    let mut v2_request = v2([198, 51, 100, 7], 7000);
    v2_request.extend_from_slice(b"right after\n");
    let (reply, _) = talk(address, &v2_request);
    assert_eq!(reply, "198.51.100.7:7000 right after\n");
    // No header: refused, reported, nothing answered.
    let (reply, _) = talk(address, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(reply, "");
    let handler = running.server.handler();
    assert!(reported(
        &handler.errors,
        "does not start with a PROXY protocol header"
    ));
    // The stalled one is closed at the header timeout, without a reply.
    given_up(stalled, &handler.errors, "not done within 5s");
}

/// Whether `handle_error` heard, within `LIMIT`, of an error whose text contains `text`.
fn reported(errors: &Mutex<Vec<String>>, text: &str) -> bool {
    util::eventually(LIMIT, || errors.lock().unwrap().iter().any(|e| e.contains(text)))
}

/// A client that stalled its prepare stage is closed without a reply (within
/// `HEADER_TIMEOUT` and `LIMIT`), and `handle_error` hears of it (`within`: the limit's text).
fn given_up(mut stalled: TcpStream, errors: &Mutex<Vec<String>>, within: &str) {
    stalled
        .set_read_timeout(Some(sockserve::transport::HEADER_TIMEOUT + LIMIT))
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(stalled.read_to_end(&mut rest).unwrap_or(0), 0);
    assert!(reported(errors, within), "{:?}", errors.lock().unwrap());
}

#[test]
fn the_header_is_read_on_the_multiplex_event_loop() {
    header_on_the_event_loop::<Multiplex>();
}

#[test]
fn the_header_is_read_on_the_pooled_event_loop() {
    header_on_the_event_loop::<Pooled>();
}

/// A PROXY header, then TLS: answers one line with the original client, the SNI name and the
/// client certificate's name, as a connection handler (multiplex) and a message handler
/// (pooled).
#[derive(Default)]
struct TlsWho {
    errors: Mutex<Vec<String>>,
}

type ProxiedTls = Proxied<Tls<Tcp>>;

fn tls_who(
    client_address: &SocketAddr,
    request: &sockserve::transport::TlsStream<TcpStream>,
    line: &[u8],
) -> String {
    let info = request.info();
    format!(
        "{client_address} sni={} cn={}: {}",
        info.server_name.as_deref().unwrap_or("-"),
        info.peer_common_name().as_deref().unwrap_or("-"),
        String::from_utf8_lossy(line)
    )
}

impl ConnectionHandler<ProxiedTls> for TlsWho {
    type Conn = ();
    fn verify_request(
        &self,
        request: &sockserve::transport::TlsStream<TcpStream>,
        client_address: &SocketAddr,
    ) -> bool {
        // After the header and the handshake: the original client and its certificate.
        client_address.ip() != "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
            && request.info().peer_common_name().as_deref() != Some("eve")
    }
    fn connected(&self, _io: &mut ConnIo<'_, ProxiedTls>) -> io::Result<()> {
        Ok(())
    }
    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, ProxiedTls>, input: &[u8]) -> io::Result<usize> {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return Ok(0);
        };
        let reply = tls_who(io.client_address(), io.request(), &input[..=end]);
        io.write(reply.as_bytes());
        Ok(end + 1)
    }
    fn handle_error(&self, _: &SocketAddr, error: &RequestError) {
        self.errors.lock().unwrap().push(error.to_string());
    }
}

impl MessageHandler<ProxiedTls> for TlsWho {
    fn verify_request(
        &self,
        request: &sockserve::transport::TlsStream<TcpStream>,
        client_address: &SocketAddr,
    ) -> bool {
        ConnectionHandler::verify_request(self, request, client_address)
    }
    fn handle(&self, req: &mut StreamRequest<'_, ProxiedTls>) -> io::Result<AfterMessage> {
        let mut line = Vec::new();
        if req.rfile.read_until(b'\n', &mut line)? == 0 {
            return Ok(AfterMessage::Close);
        }
        req.wfile
            .write_all(tls_who(req.client_address, req.request, &line).as_bytes())?;
        Ok(AfterMessage::KeepOpen)
    }
    fn handle_error(&self, _: &SocketAddr, error: &RequestError) {
        self.errors.lock().unwrap().push(error.to_string());
    }
}

/// `Proxied<Tls<Tcp>>` on an event loop: the header (in pieces) from the raw socket, then the
/// handshake on the same worker, then `verify_request` with the original client and its
/// certificate; a client whose header names a refused address, or whose certificate is
/// refused by name, is closed; a header that never comes is given up.
fn header_then_tls_on_the_event_loop<C>()
where
    C: Concurrency + ProcessRequest<ProxiedTls, TlsWho> + Send + Sync,
{
    use tls_support::{client_config, connect, round_trip, Ca};
    let ca = Ca::new("proxy CA");
    let leaf = ca.server();
    let config = leaf
        .tls_config()
        .client_ca_pem(ca.cert.pem().as_bytes(), false)
        .unwrap()
        .handshake_timeout(std::time::Duration::from_secs(1))
        .build()
        .unwrap();
    let options = Options::DEFAULT
        .proxy_protocol(ProxyProtocol::Any)
        .workers(Some(1));
    let server: Server<ProxiedTls, C, TlsWho> =
        Server::with_options(("127.0.0.1:0", config), TlsWho::default(), options).unwrap();
    let address = server.server_address();
    let running = Running::start(server);
    // A header that stalls on the only worker holds up nobody.
    let mut stalled = TcpStream::connect(address).unwrap();
    stalled.write_all(b"PROXY TCP4 ").unwrap();

    let header = |source: [u8; 4], port: u16, pieces: bool| {
        let sock = TcpStream::connect(address).unwrap();
        sock.set_read_timeout(Some(LIMIT)).unwrap();
        let mut sock_w = &sock;
        let bytes = v2(source, port);
        if pieces {
            for part in bytes.chunks(7) {
                sock_w.write_all(part).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        } else {
            sock_w.write_all(&bytes).unwrap();
        }
        sock
    };
    let alice = ca.client("alice");
    let with_alice = client_config(&ca, Some(&alice), &[]);
    let mut stream = connect(&with_alice, header([192, 0, 2, 44], 4444, true)).unwrap();
    assert_eq!(
        round_trip(&mut stream, "hello\n").unwrap(),
        "192.0.2.44:4444 sni=localhost cn=alice: hello\n"
    );
    assert_eq!(
        round_trip(&mut stream, "again\n").unwrap(),
        "192.0.2.44:4444 sni=localhost cn=alice: again\n"
    );
    drop(stream);
    let anonymous = client_config(&ca, None, &[]);
    let mut stream = connect(&anonymous, header([198, 51, 100, 1], 1, false)).unwrap();
    assert_eq!(
        round_trip(&mut stream, "anonymous\n").unwrap(),
        "198.51.100.1:1 sni=localhost cn=-: anonymous\n"
    );
    drop(stream);
    // Refused after the handshake: by the header's address, by the certificate's name.
    let eve = ca.client("eve");
    let with_eve = client_config(&ca, Some(&eve), &[]);
    for (config, source) in [(&anonymous, [10, 0, 0, 1]), (&with_eve, [192, 0, 2, 45])] {
        let reply = connect(config, header(source, 5, false)).and_then(|mut s| round_trip(&mut s, "hi\n"));
        assert!(
            reply.as_deref().is_ok_and(str::is_empty) || reply.is_err(),
            "{reply:?}"
        );
    }
    // The stalled header is given up at the stage's limit: HEADER_TIMEOUT and the handshake's.
    given_up(stalled, &running.server.handler().errors, "not done within 6s");
}

#[test]
fn header_then_tls_on_the_multiplex_event_loop() {
    header_then_tls_on_the_event_loop::<Multiplex>();
}

#[test]
fn header_then_tls_on_the_pooled_event_loop() {
    header_then_tls_on_the_event_loop::<Pooled>();
}
