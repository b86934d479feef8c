//! `transport::Proxied` composes with another preparing transport: the PROXY header is read
//! from the raw socket first, then the inner transport's own prepare stage runs (a TLS
//! handshake in real life; here a toy `HELLO`/`OK` handshake), then `verify_request` sees the
//! original client and the handler the proxy as the connection's peer.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::sync::Mutex;

use sockserve::concurrency::Threading;
use sockserve::prelude::*;
use sockserve::transport::{Proxied, ProxyProtocol, StreamKind, StreamTransport, Transport};
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
        Server::with_options("127.0.0.1:0", Echo, options).unwrap();
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

struct Echo;

impl StreamHandler<Proxied<Tcp>> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Proxied<Tcp>>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        write!(req.wfile, "{} {line}", req.client_address)
    }
}
