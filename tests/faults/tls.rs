//! Faults on the TLS layer (`Tls<Tcp>`): clients that stall mid-handshake, speak plaintext
//! HTTP to the TLS port, or reset the connection mid-handshake. Each one's handshake runs on
//! its own thread (never the accept loop), so a live client is served meanwhile; each
//! failure is a peer event, logged at debug level only (no flood); descriptors and threads
//! come back to their baseline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use sockserve::concurrency::Threading;
use sockserve::transport::{Tls, TlsConfig};
use sockserve::{Options, Server, StreamHandler, StreamRequest};

use crate::harness::{self, isolated_tests, Usage, CLIENT_TIMEOUT};
use crate::tls_support::{client_config, connect, Ca};

/// Echoes one line.
struct OneLine;

impl StreamHandler<Tls<sockserve::transport::Tcp>> for OneLine {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<sockserve::transport::Tcp>>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        req.wfile.write_all(line.as_bytes())
    }
}

type TlsServer = Server<Tls<sockserve::transport::Tcp>, Threading, OneLine>;

fn server(handshake_timeout: Duration) -> (TlsServer, Ca) {
    let ca = Ca::new("faults CA");
    let leaf = ca.server();
    let config = TlsConfig::from_pem(leaf.cert.pem().as_bytes(), leaf.key.serialize_pem().as_bytes())
        .unwrap()
        .handshake_timeout(handshake_timeout)
        .build()
        .unwrap();
    let options = Options::DEFAULT.poll_interval(Duration::from_millis(50));
    let server = Server::with_options(("127.0.0.1:0", config), OneLine, options).expect("bind");
    (server, ca)
}

/// A TLS round trip by a well-behaved client.
fn live_client(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, line: &str) -> String {
    let sock = harness::connect_tcp(addr).unwrap();
    let mut stream = connect(config, sock).unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut reply = String::new();
    BufReader::new(&mut stream).read_line(&mut reply).unwrap();
    reply
}

/// The first bytes a real client sends: half of its ClientHello.
fn half_a_client_hello(config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let mut conn =
        rustls::ClientConnection::new(Arc::clone(config), "localhost".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello.truncate(hello.len() / 2);
    hello
}

fn debug_lines_containing(text: &str) -> usize {
    harness::debug_text().iter().filter(|l| l.contains(text)).count()
}

/// 400 clients send half a ClientHello and stall; a live client is served meanwhile; each
/// stalled one is dropped at the handshake timeout (it reads end of input) and holds nothing
/// afterwards.
fn stalled_handshakes() {
    const STALLED: usize = 400;
    let (server, ca) = server(Duration::from_secs(1));
    let addr = server.server_address();
    let config = client_config(&ca, None, &[]);
    harness::serving(&server, || {
        let baseline = Usage::now();
        assert_eq!(live_client(addr, &config, "warm-up"), "warm-up\n");
        let hello = half_a_client_hello(&config);
        let stalled: Vec<TcpStream> = (0..STALLED)
            .map(|_| {
                let mut s = harness::connect_tcp(addr).unwrap();
                s.write_all(&hello).unwrap();
                s
            })
            .collect();
        assert_eq!(
            live_client(addr, &config, "served meanwhile"),
            "served meanwhile\n"
        );
        for mut s in stalled {
            let mut buf = [0u8; 64];
            // Dropped by the server: end of input (or a reset), never a timeout here.
            match s.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                other => panic!("a stalled handshake was not dropped: {other:?}"),
            }
        }
        baseline.settles("after 400 stalled handshakes");
        assert!(harness::eventually(CLIENT_TIMEOUT, || debug_lines_containing(
            "TLS handshake not done"
        ) == STALLED));
        assert_eq!(harness::errors(), 0, "peer events are not errors");
        assert_eq!(harness::warnings(), 0);
    });
}

/// A plaintext HTTP request to the TLS port: no HTTP answer, the connection is closed, the
/// failure is a debug line; the next TLS client is served.
fn plaintext_http() {
    let (server, ca) = server(Duration::from_secs(5));
    let addr = server.server_address();
    let config = client_config(&ca, None, &[]);
    harness::serving(&server, || {
        let baseline = Usage::now();
        assert_eq!(live_client(addr, &config, "warm-up"), "warm-up\n");
        let mut plain = harness::connect_tcp(addr).unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let _ = plain.read_to_end(&mut reply);
        assert!(!reply.starts_with(b"HTTP/"), "{reply:?}");
        drop(plain);
        baseline.settles("after a plaintext request");
        assert!(harness::eventually(CLIENT_TIMEOUT, || debug_lines_containing(
            "prepare stage: TLS"
        ) == 1));
        assert_eq!(harness::errors(), 0);
        assert_eq!(live_client(addr, &config, "still serving"), "still serving\n");
    });
}

/// A reset in the middle of the handshake: a disconnect (peer event); the next TLS client
/// is served.
fn reset_mid_handshake() {
    let (server, ca) = server(Duration::from_secs(5));
    let addr = server.server_address();
    let config = client_config(&ca, None, &[]);
    harness::serving(&server, || {
        let baseline = Usage::now();
        assert_eq!(live_client(addr, &config, "warm-up"), "warm-up\n");
        for _ in 0..20 {
            let mut s = harness::connect_tcp(addr).unwrap();
            s.write_all(&half_a_client_hello(&config)).unwrap();
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s); // RST
        }
        baseline.settles("after 20 resets mid-handshake");
        assert_eq!(harness::errors(), 0);
        assert_eq!(harness::warnings(), 0);
        assert_eq!(live_client(addr, &config, "still serving"), "still serving\n");
    });
}

isolated_tests! {
    fn tls_stalled_handshakes_hold_nothing() {
        stalled_handshakes();
    }

    fn tls_plaintext_http_on_the_tls_port() {
        plaintext_http();
    }

    fn tls_reset_mid_handshake() {
        reset_mid_handshake();
    }
}
