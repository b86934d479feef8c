//! `worker_listeners` over real loopback sockets: each multiplex (and pooled) worker accepts on
//! a `SO_REUSEPORT` listener of its own, beside the server's, which still hands off what the
//! kernel gives it.
//!
//! Which worker (or the serve loop) took a connection is seen from the thread that ran
//! `verify_request`: the serve loop's thread for a connection of the server's listener, a
//! worker (`sockserve-mux-N`) for one of its own listener.

mod util;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sockserve::concurrency::{AfterMessage, MessageHandler};
use sockserve::prelude::*;
use sockserve::transport::Tcp;
use sockserve::{PooledTcpServer, RequestError, StreamRequest};

use util::{eventually, listening};

const LIMIT: Duration = Duration::from_secs(10);
const WORKERS: usize = 2;
/// Connections from this address are refused by `verify_request`.
const MARKED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// What the handlers saw, by thread name.
#[derive(Default)]
struct Seen {
    /// `verify_request` calls per thread name (`-` for an unnamed thread).
    verified: Mutex<BTreeMap<String, usize>>,
    /// `connected` calls per thread name.
    connected: Mutex<BTreeMap<String, usize>>,
    refused: AtomicUsize,
    open: AtomicUsize,
    most_open: AtomicUsize,
}

impl Seen {
    fn count(map: &Mutex<BTreeMap<String, usize>>) {
        let name = thread::current().name().unwrap_or("-").to_string();
        *map.lock().unwrap().entry(name).or_default() += 1;
    }

    fn verify(&self, request: &TcpStream) -> bool {
        Seen::count(&self.verified);
        let ok = request.peer_addr().is_ok_and(|a| a.ip() != MARKED);
        if !ok {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        ok
    }

    /// Calls per worker thread of `map`, in worker order.
    fn on_workers(map: &Mutex<BTreeMap<String, usize>>) -> Vec<usize> {
        let map = map.lock().unwrap();
        (0..WORKERS)
            .map(|i| map.get(&format!("sockserve-mux-{i}")).copied().unwrap_or(0))
            .collect()
    }

    fn total(map: &Mutex<BTreeMap<String, usize>>) -> usize {
        map.lock().unwrap().values().sum()
    }
}

/// Line echo on the multiplex model.
struct Echo {
    seen: Arc<Seen>,
}

impl ConnectionHandler<Tcp> for Echo {
    type Conn = ();

    fn connected(&self, _io: &mut ConnIo<'_, Tcp>) -> io::Result<()> {
        Seen::count(&self.seen.connected);
        let open = self.seen.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen.most_open.fetch_max(open, Ordering::SeqCst);
        Ok(())
    }

    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tcp>, input: &[u8]) -> io::Result<usize> {
        let Some(end) = input.iter().rposition(|&b| b == b'\n') else {
            return Ok(0);
        };
        io.write(&input[..=end]);
        Ok(end + 1)
    }

    fn closed(&self, _conn: (), _client_address: &SocketAddr, _reason: CloseReason) {
        self.seen.open.fetch_sub(1, Ordering::SeqCst);
    }

    fn verify_request(&self, request: &TcpStream, _client_address: &SocketAddr) -> bool {
        self.seen.verify(request)
    }

    fn handle_error(&self, _client_address: &SocketAddr, _error: &RequestError) {}
}

/// A multiplex server with `worker_listeners`, serving in a background thread.
struct Serving {
    server: Arc<MultiplexTcpServer<Echo>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    address: SocketAddr,
    seen: Arc<Seen>,
}

impl Serving {
    fn start(options: Options) -> Self {
        let seen = Arc::new(Seen::default());
        let handler = Echo {
            seen: Arc::clone(&seen),
        };
        let server = Arc::new(MultiplexTcpServer::with_options("127.0.0.1:0", handler, options).unwrap());
        let address = server.server_address();
        let serving = Arc::clone(&server);
        let thread = Some(thread::spawn(move || serving.serve_forever()));
        // The workers open their listeners when serving starts.
        assert!(
            eventually(LIMIT, || listening(address) == WORKERS + 1),
            "{} listening sockets on {address}",
            listening(address)
        );
        Serving {
            server,
            thread,
            address,
            seen,
        }
    }

    /// Stops the serve loop (the workers serve on until `server_close`).
    fn stop(&mut self) {
        self.server.shutdown();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap().unwrap();
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop();
        self.server.server_close();
    }
}

fn options() -> Options {
    Options::DEFAULT.workers(Some(WORKERS)).worker_listeners(true)
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream
}

/// A connection from `MARKED`.
fn connect_marked(address: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((MARKED, 0)).into()).unwrap();
    socket.connect(&address.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream
}

fn round_trip(stream: &TcpStream, line: &str) -> String {
    let mut writer = stream;
    writer.write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    reply
}

#[test]
fn two_hundred_connections_are_served_and_land_on_every_worker() {
    const CLIENTS: usize = 200;
    let serving = Serving::start(options());
    // All open at once, so the kernel spreads them over the three listeners.
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(serving.address)).collect();
    for (i, client) in clients.iter().enumerate() {
        assert_eq!(
            round_trip(client, &format!("hello {i}\n")),
            format!("hello {i}\n")
        );
    }
    let seen = &serving.seen;
    assert_eq!(Seen::total(&seen.verified), CLIENTS);
    assert_eq!(Seen::total(&seen.connected), CLIENTS);
    // Each worker accepted (and verified) some on its own listener...
    let verified = Seen::on_workers(&seen.verified);
    assert!(
        verified.iter().all(|&n| n > 0),
        "verified on the workers: {verified:?}"
    );
    // ...and the serve loop the rest, on the server's listener.
    let on_loop = CLIENTS - verified.iter().sum::<usize>();
    assert!(on_loop > 0, "the server's listener took none");
    let connected = Seen::on_workers(&seen.connected);
    assert_eq!(
        connected.iter().sum::<usize>(),
        CLIENTS,
        "connected: {connected:?}"
    );
    assert!(connected.iter().all(|&n| n > 0), "connected: {connected:?}");
    drop(clients);
    assert!(eventually(LIMIT, || serving
        .server
        .concurrency()
        .open_connections()
        == 0));
}

#[test]
fn verify_request_refuses_a_marked_client_on_every_listener() {
    const MARKED_CLIENTS: usize = 30;
    let serving = Serving::start(options());
    for _ in 0..MARKED_CLIENTS {
        let refused = connect_marked(serving.address);
        let _ = (&refused).write_all(b"let me in\n");
        let mut rest = Vec::new();
        let _ = (&refused).read_to_end(&mut rest);
        assert!(rest.is_empty(), "a refused client got {rest:?}");
    }
    let seen = &serving.seen;
    assert_eq!(seen.refused.load(Ordering::SeqCst), MARKED_CLIENTS);
    assert_eq!(Seen::total(&seen.connected), 0, "a refused client was connected");
    let verified = Seen::on_workers(&seen.verified);
    assert!(
        verified.iter().sum::<usize>() > 0,
        "no refusal on a worker's listener: {verified:?}"
    );
    // Others are served.
    let client = connect(serving.address);
    assert_eq!(round_trip(&client, "ok\n"), "ok\n");
    assert_eq!(Seen::total(&seen.connected), 1);
}

#[test]
fn server_close_closes_the_workers_listeners() {
    let mut serving = Serving::start(options());
    let address = serving.address;
    let client = connect(address);
    assert_eq!(round_trip(&client, "before\n"), "before\n");
    serving.stop();
    serving.server.server_close();
    // The workers are joined: their listeners are closed, as is the server's.
    assert_eq!(listening(address), 0);
    for _ in 0..20 {
        match TcpStream::connect(address) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
            Ok(stream) => panic!("a connection after server_close: {stream:?}"),
        }
    }
    // The connection served before was drained: end of file.
    let mut rest = Vec::new();
    (&client).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn max_connections_holds_across_the_listeners() {
    const CAP: usize = 2;
    const CLIENTS: usize = 12;
    let serving = Serving::start(options().max_connections(Some(CAP)));
    let address = serving.address;
    // Every client connects at once and waits for its answer; each closes once answered, so
    // the others are taken up one by one as places free.
    let clients: Vec<JoinHandle<String>> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let stream = connect(address);
                round_trip(&stream, &format!("client {i}\n"))
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert_eq!(client.join().unwrap(), format!("client {i}\n"));
    }
    let seen = &serving.seen;
    assert_eq!(Seen::total(&seen.connected), CLIENTS);
    let most = seen.most_open.load(Ordering::SeqCst);
    assert!(
        most <= CAP,
        "{most} connections open at once, above the cap of {CAP}"
    );
    assert!(eventually(LIMIT, || serving
        .server
        .concurrency()
        .open_connections()
        == 0));
}

#[test]
fn without_the_option_only_the_serve_loop_accepts() {
    let seen = Arc::new(Seen::default());
    let handler = Echo {
        seen: Arc::clone(&seen),
    };
    let server = Arc::new(
        MultiplexTcpServer::with_options("127.0.0.1:0", handler, Options::DEFAULT.workers(Some(WORKERS)))
            .unwrap(),
    );
    let address = server.server_address();
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever());
    let clients: Vec<TcpStream> = (0..20).map(|_| connect(address)).collect();
    for client in &clients {
        assert_eq!(round_trip(client, "x\n"), "x\n");
    }
    assert_eq!(listening(address), 1);
    assert_eq!(Seen::on_workers(&seen.verified), vec![0; WORKERS]);
    server.shutdown();
    thread.join().unwrap().unwrap();
    server.server_close();
}

/// Line echo on the pooled model, which runs on the same workers.
struct PooledEcho {
    seen: Arc<Seen>,
}

impl MessageHandler for PooledEcho {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<AfterMessage> {
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(AfterMessage::Close);
        }
        req.wfile.write_all(line.as_bytes())?;
        Ok(AfterMessage::KeepOpen)
    }

    fn verify_request(&self, request: &TcpStream, _client_address: &SocketAddr) -> bool {
        self.seen.verify(request)
    }

    fn handle_error(&self, _client_address: &SocketAddr, _error: &RequestError) {}
}

#[test]
fn a_pooled_server_accepts_on_its_workers_listeners_too() {
    const CLIENTS: usize = 100;
    let seen = Arc::new(Seen::default());
    let handler = PooledEcho {
        seen: Arc::clone(&seen),
    };
    let server = Arc::new(PooledTcpServer::with_options("127.0.0.1:0", handler, options()).unwrap());
    let address = server.server_address();
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever());
    assert!(eventually(LIMIT, || listening(address) == WORKERS + 1));
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(address)).collect();
    for (i, client) in clients.iter().enumerate() {
        assert_eq!(round_trip(client, &format!("m{i}\n")), format!("m{i}\n"));
        // A second message on the same connection, after it was parked again.
        assert_eq!(round_trip(client, "again\n"), "again\n");
    }
    let refused = connect_marked(address);
    let mut rest = Vec::new();
    let _ = (&refused).read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert_eq!(seen.refused.load(Ordering::SeqCst), 1);
    let verified = Seen::on_workers(&seen.verified);
    assert!(
        verified.iter().all(|&n| n > 0),
        "verified on the workers: {verified:?}"
    );
    drop(clients);
    server.shutdown();
    thread.join().unwrap().unwrap();
    server.server_close();
    assert_eq!(listening(address), 0);
}
