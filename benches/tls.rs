//! TLS benchmark: sockserve's `Tls<Tcp>` (synchronous, threading, forking, multiplex, pooled)
//! against a tokio-rustls server with the same rustls configuration, measured in the same run.
//!
//! ```sh
//! cargo bench --bench tls                       # every server, both workloads
//! cargo bench --bench tls -- --servers tokio-rustls,threading --workloads 1
//! ```
//!
//! Workloads:
//! - T1 ping-pong: `CONNS` clients, each on one TLS connection, send 64 bytes and wait for
//!   them back, `ROUNDS` times (at most `LIMIT` seconds); round trips per second.
//! - T2 handshakes: `CONNS` clients, each connecting `HANDSHAKES` times: TCP connect, full TLS
//!   1.3 handshake (no resumption), one 64-byte round trip, close; connections per second.
//! - T3 idle memory: `IDLE` TLS connections opened one after another (handshake and one round
//!   trip each), then left idle; the growth of the server's resident memory (VmRSS) over the
//!   same server with none, per connection, in KiB (lower is better). Not for `sockserve-sync`
//!   (one connection at a time) nor `sockserve-forking` (a process each).
//!
//! Every server runs in a process of its own (this binary, `--serve NAME`); the clients are
//! threads of this process, the same for every server. The certificate (ECDSA P-256) is
//! made at start with rcgen. Ratios are against tokio-rustls measured in the same run.

#[path = "../tests/tls_support/mod.rs"]
mod tls_support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sockserve::concurrency::{
    AfterMessage, Forking, MessageHandler, Multiplex, Pooled, Synchronous, Threading,
};
use sockserve::transport::{Tcp, Tls, TlsConfig};
use sockserve::{ConnIo, ConnectionHandler, Options, Server, StreamHandler, StreamRequest};

const CONNS: usize = 8;
const ROUNDS: usize = 5_000;
const HANDSHAKES: usize = 150;
const LIMIT: Duration = Duration::from_secs(20);
const IDLE: usize = 2_000;
const SERVERS: &[&str] = &[
    "tokio-rustls",
    "sockserve-sync",
    "sockserve-threading",
    "sockserve-forking",
    "sockserve-multiplex",
    "sockserve-pooled",
];

struct Echo;

impl StreamHandler<Tls<Tcp>> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Tcp>>) -> io::Result<()> {
        loop {
            let n = {
                let buf = req.rfile.fill_buf()?;
                if buf.is_empty() {
                    return Ok(());
                }
                req.wfile.write_all(buf)?;
                buf.len()
            };
            req.rfile.consume(n);
        }
    }
}

/// The multiplex model's echo: what arrives is written back.
impl ConnectionHandler<Tls<Tcp>> for Echo {
    type Conn = ();
    fn connected(&self, _io: &mut ConnIo<'_, Tls<Tcp>>) -> io::Result<()> {
        Ok(())
    }
    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tls<Tcp>>, input: &[u8]) -> io::Result<usize> {
        io.write(input);
        Ok(input.len())
    }
}

/// The pooled model's echo: one message is what has arrived.
impl MessageHandler<Tls<Tcp>> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Tcp>>) -> io::Result<AfterMessage> {
        let n = {
            let buf = req.rfile.fill_buf()?;
            if buf.is_empty() {
                return Ok(AfterMessage::Close);
            }
            req.wfile.write_all(buf)?;
            buf.len()
        };
        req.rfile.consume(n);
        Ok(AfterMessage::KeepOpen)
    }
}

fn serve(name: &str, cert: &str, key: &str) -> io::Result<()> {
    let config = TlsConfig::from_pem_files(cert, key)?.build()?;
    // TCP_NODELAY, as the tokio peer sets it.
    // Threads enough for T3's idle connections (threading holds one per connection; pooled
    // starts them only for messages).
    let options = Options::DEFAULT
        .max_children(256)
        .max_threads(Some(2 * IDLE))
        .disable_nagle_algorithm(true);
    macro_rules! run {
        ($c:ty) => {{
            let server: Server<Tls<Tcp>, $c, Echo> =
                Server::with_options(("127.0.0.1:0", config), Echo, options)?;
            println!("listening on {}", server.server_address());
            server.serve_forever()
        }};
    }
    match name {
        "sockserve-sync" => run!(Synchronous),
        "sockserve-threading" => run!(Threading),
        "sockserve-forking" => run!(Forking),
        "sockserve-multiplex" => run!(Multiplex),
        "sockserve-pooled" => run!(Pooled),
        "tokio-rustls" => serve_tokio(config.current()),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no server {other}"),
        )),
    }
}

/// The peer: tokio's multi-threaded runtime (one worker per core), tokio-rustls with the very
/// `ServerConfig` sockserve builds.
fn serve_tokio(config: Arc<rustls::ServerConfig>) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                // 4 KiB: ample for 64-byte messages, and the per-connection memory T3 counts.
                let mut buf = vec![0u8; 4 * 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    })
}

struct Running {
    child: Child,
    addr: String,
    name: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, cert: &str, key: &str) -> Running {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--serve", name, "--cert", cert, "--key", key])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    Running {
        child,
        addr,
        name: name.to_string(),
    }
}

fn client(
    addr: &str,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    tls_support::connect(config, sock)
}

/// Lifts the soft descriptor limit to the hard one (T3 holds thousands of connections).
fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// The server's resident memory (VmRSS), bytes.
fn rss(server: &Running) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// T3: KiB of server memory per idle TLS connection.
fn idle_memory(server: &Running, config: &Arc<rustls::ClientConfig>) -> f64 {
    let name = server.name.as_str();
    if matches!(name, "sockserve-sync" | "sockserve-forking") {
        return f64::NAN;
    }
    let payload = [b'z'; 64];
    // One connection first, so that what every server makes once (its workers, a thread
    // pool, the runtime's buffers) is in the baseline.
    let mut warm = client(&server.addr, config).expect("connect");
    round_trip(&mut warm, &payload).expect("round trip");
    thread::sleep(Duration::from_millis(300));
    let before = rss(server);
    let mut open = Vec::with_capacity(IDLE);
    let start = Instant::now();
    while open.len() < IDLE && start.elapsed() < LIMIT {
        let mut stream = client(&server.addr, config).expect("connect");
        round_trip(&mut stream, &payload).expect("round trip");
        open.push(stream);
    }
    thread::sleep(Duration::from_millis(500));
    let after = rss(server);
    let per = after.saturating_sub(before) as f64 / open.len() as f64 / 1024.0;
    drop(open);
    per
}

fn round_trip(stream: &mut impl ReadWrite, payload: &[u8; 64]) -> io::Result<()> {
    stream.write_all(payload)?;
    stream.flush()?;
    let mut back = [0u8; 64];
    stream.read_exact(&mut back)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// T1: round trips per second over `CONNS` long-lived connections.
fn ping_pong(server: &Running, config: &Arc<rustls::ClientConfig>) -> f64 {
    let addr = server.addr.as_str();
    let start = Instant::now();
    let done: usize = thread::scope(|s| {
        let workers: Vec<_> = (0..CONNS)
            .map(|_| {
                s.spawn(|| {
                    let mut stream = client(addr, config).expect("connect");
                    let payload = [b'x'; 64];
                    let mut n = 0;
                    while n < ROUNDS && start.elapsed() < LIMIT {
                        round_trip(&mut stream, &payload).expect("round trip");
                        n += 1;
                    }
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

/// T2: new connections (handshake + one round trip) per second.
fn handshakes(server: &Running, config: &Arc<rustls::ClientConfig>) -> f64 {
    let addr = server.addr.as_str();
    let start = Instant::now();
    let done: usize = thread::scope(|s| {
        let workers: Vec<_> = (0..CONNS)
            .map(|_| {
                s.spawn(|| {
                    let payload = [b'y'; 64];
                    let mut n = 0;
                    while n < HANDSHAKES && start.elapsed() < LIMIT {
                        let mut stream = client(addr, config).expect("connect");
                        round_trip(&mut stream, &payload).expect("round trip");
                        stream.conn.send_close_notify();
                        let _ = stream.flush();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    raise_nofile();
    if let Some(name) = get("--serve") {
        let (cert, key) = (get("--cert").unwrap(), get("--key").unwrap());
        if let Err(e) = serve(&name, &cert, &key) {
            eprintln!("server {name}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let servers: Vec<String> = get("--servers")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| SERVERS.iter().map(|s| s.to_string()).collect());
    let workloads = get("--workloads").unwrap_or_else(|| "1,2,3".into());

    let dir = std::env::temp_dir().join(format!("sockserve-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = tls_support::Ca::new("bench CA");
    let (cert, key) = ca.server().write(&dir, "server");
    let (cert, key) = (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    );
    // Fresh handshakes each time: no session resumption on the client side.
    let mut config = (*tls_support::client_config(&ca, None, &[])).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);

    println!("TLS bench: {CONNS} clients; T1 {ROUNDS} round trips of 64 B each; T2 {HANDSHAKES} connections each (TLS 1.3, ECDSA P-256, no resumption); T3 {IDLE} idle connections");
    for (id, label, run) in [
        (
            "1",
            "T1 ping-pong (round trips/s)",
            ping_pong as fn(&Running, &Arc<rustls::ClientConfig>) -> f64,
        ),
        ("2", "T2 handshakes (connections/s)", handshakes),
        (
            "3",
            "T3 idle memory (KiB per connection, lower is better)",
            idle_memory,
        ),
    ] {
        if !workloads.split(',').any(|w| w == id) {
            continue;
        }
        println!("\n{label}");
        let mut reference = None;
        for name in &servers {
            let server = start(name, &cert, &key);
            let rate = run(&server, &config);
            drop(server);
            if rate.is_nan() {
                println!("  {name:<22} {:>10}", "-");
                continue;
            }
            if name == "tokio-rustls" {
                reference = Some(rate);
            }
            let ratio = reference.map_or(String::from("-"), |r| format!("{:.2}x", rate / r));
            let shown = if id == "3" {
                format!("{rate:>10.1}")
            } else {
                format!("{rate:>10.0}")
            };
            println!("  {name:<22} {shown}   vs tokio-rustls {ratio}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
