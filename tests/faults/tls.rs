//! Faults on the TLS layer (`Tls<Tcp>`): clients that stall mid-handshake, speak plaintext
//! HTTP to the TLS port, or reset the connection mid-handshake, with the threading model (the
//! handshake on the connection's own thread), the multiplex model and the pooled model (the
//! handshake driven by an event loop without blocking it). The accept loop never waits on a
//! handshake, so a live client is served meanwhile; each failure is a peer event, logged at
//! debug level only (no flood); descriptors and threads come back to their baseline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockserve::concurrency::{
    AfterMessage, Concurrency, MessageHandler, Multiplex, Pooled, ProcessRequest, Threading,
};
use sockserve::transport::{Tcp, Tls};
use sockserve::{ConnIo, ConnectionHandler, Options, Server, StreamHandler, StreamRequest};

use crate::harness::{self, isolated_tests, Usage, CLIENT_TIMEOUT};
use crate::tls_support::{client_config, connect, Ca};

/// Echoes one line, then closes: as a stream handler (threading), a connection handler
/// (multiplex) and a message handler (pooled).
struct OneLine;

impl StreamHandler<Tls<Tcp>> for OneLine {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Tcp>>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        req.wfile.write_all(line.as_bytes())
    }
}

impl ConnectionHandler<Tls<Tcp>> for OneLine {
    type Conn = ();
    fn connected(&self, _io: &mut ConnIo<'_, Tls<Tcp>>) -> io::Result<()> {
        Ok(())
    }
    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tls<Tcp>>, input: &[u8]) -> io::Result<usize> {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return Ok(0);
        };
        io.write(&input[..=end]);
        io.close();
        Ok(end + 1)
    }
}

impl MessageHandler<Tls<Tcp>> for OneLine {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Tcp>>) -> io::Result<AfterMessage> {
        StreamHandler::handle(self, req)?;
        Ok(AfterMessage::Close)
    }
}

type TlsServer<C> = Server<Tls<Tcp>, C, OneLine>;

/// What each scenario needs of a concurrency model.
trait Model: Concurrency + ProcessRequest<Tls<Tcp>, OneLine> + Send + Sync {}
impl<C: Concurrency + ProcessRequest<Tls<Tcp>, OneLine> + Send + Sync> Model for C {}

/// The process's usage once it has stopped changing for longer than a threading server's
/// idle handler thread waits for more work (within 5 s): the baseline after a warm-up
/// connection started a model's workers, and a thread that served it has gone.
fn steady_usage() -> Usage {
    let quiet = Threading::IDLE_TIMEOUT + Duration::from_millis(300);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = Usage::now();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = Usage::now();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

fn server<C: Model>(handshake_timeout: Duration) -> (TlsServer<C>, Ca) {
    let ca = Ca::new("faults CA");
    let leaf = ca.server();
    let config = leaf
        .tls_config()
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
fn stalled_handshakes<C: Model>() {
    const STALLED: usize = 400;
    let (server, ca) = server::<C>(Duration::from_secs(1));
    let addr = server.server_address();
    let config = client_config(&ca, None, &[]);
    harness::serving(&server, || {
        assert_eq!(live_client(addr, &config, "warm-up"), "warm-up\n");
        let baseline = steady_usage();
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
        // "TLS handshake not done within 1s" (on its thread), "not done within 1s" (on an
        // event loop, which times the whole prepare stage).
        assert!(harness::eventually(CLIENT_TIMEOUT, || debug_lines_containing(
            "not done within 1s"
        ) == STALLED));
        assert_eq!(harness::errors(), 0, "peer events are not errors");
        assert_eq!(harness::warnings(), 0);
    });
}

/// A plaintext HTTP request to the TLS port: no HTTP answer, the connection is closed, the
/// failure is a debug line; the next TLS client is served.
fn plaintext_http<C: Model>() {
    let (server, ca) = server::<C>(Duration::from_secs(5));
    let addr = server.server_address();
    let config = client_config(&ca, None, &[]);
    harness::serving(&server, || {
        assert_eq!(live_client(addr, &config, "warm-up"), "warm-up\n");
        let baseline = steady_usage();
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
fn reset_mid_handshake<C: Model>() {
    let (server, ca) = server::<C>(Duration::from_secs(5));
    let addr = server.server_address();
    let config = client_config(&ca, None, &[]);
    harness::serving(&server, || {
        assert_eq!(live_client(addr, &config, "warm-up"), "warm-up\n");
        let baseline = steady_usage();
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
        stalled_handshakes::<Threading>();
    }

    fn tls_plaintext_http_on_the_tls_port() {
        plaintext_http::<Threading>();
    }

    fn tls_reset_mid_handshake() {
        reset_mid_handshake::<Threading>();
    }

    fn tls_multiplex_stalled_handshakes_hold_nothing() {
        stalled_handshakes::<Multiplex>();
    }

    fn tls_multiplex_plaintext_http_on_the_tls_port() {
        plaintext_http::<Multiplex>();
    }

    fn tls_multiplex_reset_mid_handshake() {
        reset_mid_handshake::<Multiplex>();
    }

    fn tls_pooled_stalled_handshakes_hold_nothing() {
        stalled_handshakes::<Pooled>();
    }

    fn tls_pooled_plaintext_http_on_the_tls_port() {
        plaintext_http::<Pooled>();
    }

    fn tls_pooled_reset_mid_handshake() {
        reset_mid_handshake::<Pooled>();
    }
}
