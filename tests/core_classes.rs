//! All twelve Python server classes round-trip real data over real sockets, as CPython's own
//! test suite does for every class.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::transport::{DatagramTransport, StreamTransport};
use util::{Running, TempDir};

/// Echoes lines, prefixed with the process id so forking servers can be told apart.
struct LineEcho;

impl<T: StreamTransport> StreamHandler<T> for LineEcho {
    fn handle(&self, req: &mut StreamRequest<'_, T>) -> io::Result<()> {
        let mut line = Vec::new();
        while req.rfile.read_until(b'\n', &mut line)? > 0 {
            write!(req.wfile, "{}:", std::process::id())?;
            req.wfile.write_all(&line)?;
            line.clear();
        }
        Ok(())
    }
}

struct PacketEcho;

impl<T: DatagramTransport> DatagramHandler<T> for PacketEcho {
    fn handle(&self, req: &mut DatagramRequest<'_, T>) -> io::Result<()> {
        write!(req.wfile, "{}:", std::process::id())?;
        let mut body = Vec::new();
        req.rfile.read_to_end(&mut body)?;
        req.wfile.write_all(&body)
    }
}

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

/// Sends two lines, half-closes, and returns the pids that answered each line; the server
/// must answer both and then close.
fn stream_round_trip<S: Read + Write>(mut conn: S, half_close: impl FnOnce(&S)) -> Vec<u32> {
    conn.write_all(b"hello\nworld\n").unwrap();
    half_close(&conn);
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "reply {out:?}");
    lines
        .iter()
        .zip(["hello", "world"])
        .map(|(line, expected)| {
            let (pid, body) = line.split_once(':').expect("pid prefix");
            assert_eq!(body, expected);
            pid.parse().unwrap()
        })
        .collect()
}

fn check_tcp<C>(server: Server<Tcp, C, LineEcho>) -> u32
where
    C: sockserve::concurrency::ProcessRequest<Tcp, LineEcho> + Send + Sync,
{
    let addr = server.server_address();
    assert_ne!(addr.port(), 0);
    let running = Running::start(server);
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(TIMEOUT).unwrap();
    let pids = stream_round_trip(conn, |c| c.shutdown(std::net::Shutdown::Write).unwrap());
    drop(running);
    pids[0]
}

fn check_unix_stream<C>(server: Server<sockserve::transport::Unix, C, LineEcho>) -> u32
where
    C: sockserve::concurrency::ProcessRequest<sockserve::transport::Unix, LineEcho> + Send + Sync,
{
    let path = server.server_address().as_pathname().unwrap().to_path_buf();
    let running = Running::start(server);
    let conn = UnixStream::connect(&path).unwrap();
    conn.set_read_timeout(TIMEOUT).unwrap();
    let pids = stream_round_trip(conn, |c| c.shutdown(std::net::Shutdown::Write).unwrap());
    drop(running);
    pids[0]
}

fn check_udp<C>(server: Server<Udp, C, PacketEcho>) -> u32
where
    C: sockserve::concurrency::ProcessRequest<Udp, PacketEcho> + Send + Sync,
{
    let addr = server.server_address();
    let running = Running::start(server);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(TIMEOUT).unwrap();
    client.send_to(b"ping", addr).unwrap();
    let mut buf = [0; 256];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(from, addr);
    let reply = std::str::from_utf8(&buf[..n]).unwrap();
    let (pid, body) = reply.split_once(':').unwrap();
    assert_eq!(body, "ping");
    drop(running);
    pid.parse().unwrap()
}

fn check_unix_datagram<C>(
    server: Server<sockserve::transport::UnixDgram, C, PacketEcho>,
    dir: &TempDir,
) -> u32
where
    C: sockserve::concurrency::ProcessRequest<sockserve::transport::UnixDgram, PacketEcho> + Send + Sync,
{
    let server_path = server.server_address().as_pathname().unwrap().to_path_buf();
    let running = Running::start(server);
    let client = UnixDatagram::bind(dir.path("client.sock")).unwrap();
    client.set_read_timeout(TIMEOUT).unwrap();
    client.send_to(b"ping", &server_path).unwrap();
    let mut buf = [0; 256];
    let n = client.recv(&mut buf).unwrap();
    let reply = std::str::from_utf8(&buf[..n]).unwrap();
    let (pid, body) = reply.split_once(':').unwrap();
    assert_eq!(body, "ping");
    drop(running);
    pid.parse().unwrap()
}

const ME: fn() -> u32 = std::process::id;

#[test]
fn tcp_server() {
    assert_eq!(check_tcp(TcpServer::bind("127.0.0.1:0", LineEcho).unwrap()), ME());
}

#[test]
fn tcp_server_ipv6() {
    let server = TcpServer::bind("[::1]:0", LineEcho).unwrap();
    assert!(server.server_address().is_ipv6());
    assert_eq!(check_tcp(server), ME());
}

#[test]
fn threading_tcp_server() {
    assert_eq!(
        check_tcp(ThreadingTcpServer::bind("127.0.0.1:0", LineEcho).unwrap()),
        ME()
    );
}

#[test]
fn forking_tcp_server() {
    assert_ne!(
        check_tcp(ForkingTcpServer::bind("127.0.0.1:0", LineEcho).unwrap()),
        ME()
    );
}

#[test]
fn udp_server() {
    assert_eq!(
        check_udp(UdpServer::bind("127.0.0.1:0", PacketEcho).unwrap()),
        ME()
    );
}

#[test]
fn udp_server_ipv6() {
    let server = UdpServer::bind("[::1]:0", PacketEcho).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let client = UdpSocket::bind("[::1]:0").unwrap();
    client.set_read_timeout(TIMEOUT).unwrap();
    client.send_to(b"six", addr).unwrap();
    let mut buf = [0; 64];
    let n = client.recv(&mut buf).unwrap();
    assert!(buf[..n].ends_with(b":six"));
    drop(running);
}

#[test]
fn threading_udp_server() {
    assert_eq!(
        check_udp(ThreadingUdpServer::bind("127.0.0.1:0", PacketEcho).unwrap()),
        ME()
    );
}

#[test]
fn forking_udp_server() {
    assert_ne!(
        check_udp(ForkingUdpServer::bind("127.0.0.1:0", PacketEcho).unwrap()),
        ME()
    );
}

#[test]
fn unix_stream_server() {
    let dir = TempDir::new("classes");
    let server = UnixStreamServer::bind(dir.path("s.sock"), LineEcho).unwrap();
    assert_eq!(check_unix_stream(server), ME());
}

#[test]
fn threading_unix_stream_server() {
    let dir = TempDir::new("classes");
    let server = ThreadingUnixStreamServer::bind(dir.path("s.sock"), LineEcho).unwrap();
    assert_eq!(check_unix_stream(server), ME());
}

#[test]
fn forking_unix_stream_server() {
    let dir = TempDir::new("classes");
    let server = ForkingUnixStreamServer::bind(dir.path("s.sock"), LineEcho).unwrap();
    assert_ne!(check_unix_stream(server), ME());
}

#[test]
fn unix_datagram_server() {
    let dir = TempDir::new("classes");
    let server = UnixDatagramServer::bind(dir.path("s.sock"), PacketEcho).unwrap();
    assert_eq!(check_unix_datagram(server, &dir), ME());
}

#[test]
fn threading_unix_datagram_server() {
    let dir = TempDir::new("classes");
    let server = ThreadingUnixDatagramServer::bind(dir.path("s.sock"), PacketEcho).unwrap();
    assert_eq!(check_unix_datagram(server, &dir), ME());
}

#[test]
fn forking_unix_datagram_server() {
    let dir = TempDir::new("classes");
    let server = ForkingUnixDatagramServer::bind(dir.path("s.sock"), PacketEcho).unwrap();
    assert_ne!(check_unix_datagram(server, &dir), ME());
}
