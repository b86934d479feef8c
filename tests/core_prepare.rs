//! The per-connection prepare stage (`Transport::PREPARES`/`prepare`): it runs where the
//! request is processed, before `verify_request`, and may replace the client address (as a
//! PROXY header does); a client that stalls in it holds up nobody else. And sockets adopted
//! from elsewhere (`from_std`) are served as they are.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::BorrowedFd;
use std::sync::Mutex;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::transport::{StreamKind, StreamTransport, Transport};
use util::{eventually, Running, TempDir, LIMIT};

/// TCP whose connections start with a greeting line `FROM ADDR`, read in `prepare`: the
/// address becomes the client address (a toy PROXY protocol).
struct Greeted(Tcp);

impl Transport for Greeted {
    type Request = TcpStream;
    type Address = SocketAddr;
    type ServerAddress = SocketAddr;
    type BindAddress = SocketAddr;
    type Kind = StreamKind;
    const PREPARES: bool = true;

    fn open(address: SocketAddr, options: &Options) -> io::Result<Self> {
        Tcp::open(address, options).map(Greeted)
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
    fn shutdown_request(&self, request: TcpStream) {
        self.0.shutdown_request(request)
    }
    fn prepare(&self, request: &mut TcpStream, client_address: &mut SocketAddr) -> io::Result<()> {
        request.set_read_timeout(Some(Duration::from_secs(5)))?;
        // One byte at a time: nothing after the greeting is read here.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') && line.len() < 64 {
            if request.read(&mut byte)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no greeting"));
            }
            line.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&line);
        let from = text
            .trim_end()
            .strip_prefix("FROM ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad greeting {text:?}")))?;
        *client_address = from;
        Ok(())
    }
}

impl StreamTransport for Greeted {}

/// Greets the (original) client; refuses 10.0.0.0/8; records what verify and handle_error saw.
#[derive(Default)]
struct Hello {
    verified: Mutex<Vec<SocketAddr>>,
    errors: Mutex<Vec<String>>,
}

impl StreamHandler<Greeted> for Hello {
    fn verify_request(&self, _request: &TcpStream, client_address: &SocketAddr) -> bool {
        self.verified.lock().unwrap().push(*client_address);
        !matches!(client_address.ip(), std::net::IpAddr::V4(ip) if ip.octets()[0] == 10)
    }
    fn handle(&self, req: &mut StreamRequest<'_, Greeted>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        writeln!(req.wfile, "hello {} ({})", req.client_address, line.trim())
    }
    fn handle_error(&self, client_address: &SocketAddr, error: &RequestError) {
        self.errors
            .lock()
            .unwrap()
            .push(format!("{client_address}: {error}"));
    }
}

fn ask(addr: SocketAddr, text: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    conn.write_all(text).unwrap();
    let _ = conn.shutdown(Shutdown::Write);
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    reply
}

#[test]
fn prepare_runs_on_the_worker_before_verify_request() {
    let options = Options::DEFAULT.poll_interval(Duration::from_millis(20));
    let server: Server<Greeted, Threading, Hello> =
        Server::with_options("127.0.0.1:0", Hello::default(), options).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    // A client that stalls in the prepare stage holds its own thread only.
    let stalled = TcpStream::connect(addr).unwrap();
    assert_eq!(
        ask(addr, b"FROM 192.0.2.7:1234\nping\n"),
        "hello 192.0.2.7:1234 (ping)\n",
        "the handler sees the address prepare found"
    );
    // verify_request sees it too, and refuses 10/8 before the handler runs.
    assert_eq!(ask(addr, b"FROM 10.1.2.3:99\nping\n"), "");
    // A bad greeting goes to handle_error; the connection is closed.
    assert_eq!(ask(addr, b"HELLO\nping\n"), "");
    let handler = running.server.handler();
    assert!(eventually(LIMIT, || handler.errors.lock().unwrap().len() == 1));
    assert!(
        handler.errors.lock().unwrap()[0].contains("bad greeting"),
        "{:?}",
        handler.errors
    );
    let verified = handler.verified.lock().unwrap().clone();
    assert_eq!(
        verified,
        [
            "192.0.2.7:1234".parse().unwrap(),
            "10.1.2.3:99".parse::<SocketAddr>().unwrap()
        ]
    );
    drop(stalled);
}

#[test]
fn adopted_sockets_are_served_as_they_are() {
    // TCP: a listener bound and listening elsewhere (as systemd hands one over).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server: ThreadingTcpServer<Echo> =
        Server::from_transport(Tcp::from_std(listener).unwrap(), Echo, Options::DEFAULT).unwrap();
    server.server_bind().unwrap();
    server.server_activate().unwrap();
    assert_eq!(server.server_address(), addr);
    let running = Running::start(server);
    assert_eq!(echo_tcp(addr, b"adopted\n"), "adopted\n");
    drop(running);

    // Unix: served, and its socket file (not the server's) left in place at close.
    let dir = TempDir::new("adopt");
    let path = dir.path("inherited.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server: ThreadingUnixStreamServer<Echo> =
        Server::from_transport(Unix::from_std(listener).unwrap(), Echo, Options::DEFAULT).unwrap();
    assert_eq!(server.server_address(), UnixAddr::Path(path.clone()));
    let running = Running::start(server);
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.write_all(b"unix\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "unix\n");
    let (result, server) = running.stop();
    result.unwrap();
    server.server_close();
    assert!(
        path.exists(),
        "an adopted socket's file belongs to whoever made it"
    );
}

struct Echo;

impl<T: StreamTransport> StreamHandler<T> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, T>) -> io::Result<()> {
        io::copy(&mut req.rfile, &mut req.wfile).map(drop)
    }
}

fn echo_tcp(addr: SocketAddr, text: &[u8]) -> String {
    ask(addr, text)
}
