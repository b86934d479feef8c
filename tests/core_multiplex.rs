//! The multiplex model over real loopback sockets: every callback and hook of
//! `ConnectionHandler`, backpressure, limits, cross-connection sends, shutdown and drain.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::transport::Tcp;
use sockserve::RequestError;

use util::eventually;

const LIMIT: Duration = Duration::from_secs(10);
const BIG: usize = 1 << 20;

/// Counters a test reads while the server runs.
#[derive(Default)]
struct Seen {
    connected: AtomicUsize,
    input_calls: AtomicUsize,
    most_lines_per_call: AtomicUsize,
    drained: AtomicUsize,
    errors: Mutex<Vec<String>>,
    closed: Mutex<Vec<CloseReason>>,
    bigs: AtomicUsize,
    most_pending: AtomicUsize,
}

/// A line protocol: echoes each line, with commands `panic`, `big` (1 MiB of output), `stop`
/// (shutdown from a callback), `bye` (half-close), `timer`, `all <text>` (to every
/// connection, through handles).
struct Lines {
    seen: Arc<Seen>,
    peers: Mutex<Vec<ConnHandle>>,
}

impl Lines {
    fn new() -> (Self, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let handler = Lines {
            seen: Arc::clone(&seen),
            peers: Mutex::new(Vec::new()),
        };
        (handler, seen)
    }
}

impl ConnectionHandler<Tcp> for Lines {
    type Conn = u64;

    fn connected(&self, io: &mut ConnIo<'_, Tcp>) -> io::Result<u64> {
        self.seen.connected.fetch_add(1, Ordering::SeqCst);
        self.peers.lock().unwrap().push(io.handle());
        Ok(0)
    }

    fn input(&self, lines: &mut u64, io: &mut ConnIo<'_, Tcp>, input: &[u8]) -> io::Result<usize> {
        self.seen.input_calls.fetch_add(1, Ordering::SeqCst);
        let mut consumed = 0;
        let mut this_call = 0;
        // Consumes whole lines while the output is below the high-water mark.
        while io.pending_output() <= Multiplex::HIGH_WATER {
            let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = &input[consumed..consumed + end + 1];
            consumed += end + 1;
            this_call += 1;
            *lines += 1;
            match line {
                b"panic\n" => panic!("asked to panic"),
                b"big\n" => {
                    self.seen.bigs.fetch_add(1, Ordering::SeqCst);
                    io.write(&vec![b'x'; BIG]);
                }
                b"stop\n" => io.server().shutdown(),
                b"bye\n" => {
                    io.write(b"bye\n");
                    io.shutdown_write();
                }
                b"timer\n" => io.set_timer(Duration::from_millis(20)),
                _ if line.starts_with(b"all ") => {
                    for peer in self.peers.lock().unwrap().iter() {
                        peer.send(&line[4..]);
                    }
                }
                _ => io.write(line),
            }
            self.seen
                .most_pending
                .fetch_max(io.pending_output(), Ordering::SeqCst);
        }
        self.seen
            .most_lines_per_call
            .fetch_max(this_call, Ordering::SeqCst);
        Ok(consumed)
    }

    fn drained(&self, _: &mut u64, _: &mut ConnIo<'_, Tcp>) -> io::Result<()> {
        self.seen.drained.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn timer(&self, _: &mut u64, io: &mut ConnIo<'_, Tcp>) -> io::Result<()> {
        io.write(b"tick\n");
        Ok(())
    }

    fn closed(&self, _: u64, _: &SocketAddr, reason: CloseReason) {
        self.seen.closed.lock().unwrap().push(reason);
    }

    fn verify_request(&self, request: &std::net::TcpStream, _: &SocketAddr) -> bool {
        // Every connection is served unless it comes from 127.0.0.3.
        request
            .peer_addr()
            .is_ok_and(|a| a.ip() != std::net::Ipv4Addr::new(127, 0, 0, 3))
    }

    fn handle_error(&self, _: &SocketAddr, error: &RequestError) {
        let what = match error {
            RequestError::Panic(message) => format!("panic: {message}"),
            RequestError::TimedOut(_) => "timed out".to_string(),
            RequestError::Disconnected(_) => "disconnected".to_string(),
            other => format!("io: {other}"),
        };
        self.seen.errors.lock().unwrap().push(what);
    }
}

/// A multiplex server serving in a background thread.
struct Serving {
    server: Arc<MultiplexTcpServer<Lines>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    address: SocketAddr,
}

impl Serving {
    fn start(options: Options) -> (Self, Arc<Seen>) {
        let (handler, seen) = Lines::new();
        let server = Arc::new(MultiplexTcpServer::with_options("127.0.0.1:0", handler, options).unwrap());
        let address = server.server_address();
        let serving = Arc::clone(&server);
        let thread = Some(thread::spawn(move || serving.serve_forever()));
        (
            Serving {
                server,
                thread,
                address,
            },
            seen,
        )
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.address).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

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
    Options::DEFAULT.workers(Some(2))
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

fn round_trip(serving: &Serving, text: &str) -> String {
    let stream = serving.connect();
    (&stream).write_all(text.as_bytes()).unwrap();
    read_line(&mut BufReader::new(stream))
}

#[test]
fn a_message_split_across_reads_is_handed_whole() {
    let (serving, seen) = Serving::start(options());
    let stream = serving.connect();
    (&stream).write_all(b"hel").unwrap();
    assert!(eventually(LIMIT, || seen.input_calls.load(Ordering::SeqCst) >= 1));
    (&stream).write_all(b"lo\n").unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_line(&mut reader), "hello\n");
    assert!(
        seen.input_calls.load(Ordering::SeqCst) >= 2,
        "the halves came in two reads"
    );
}

#[test]
fn pipelined_messages_in_one_read_are_all_answered() {
    let (serving, seen) = Serving::start(options());
    let stream = serving.connect();
    (&stream).write_all(b"a\nb\nc\n").unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_line(&mut reader), "a\n");
    assert_eq!(read_line(&mut reader), "b\n");
    assert_eq!(read_line(&mut reader), "c\n");
    assert_eq!(seen.most_lines_per_call.load(Ordering::SeqCst), 3);
}

#[test]
fn a_client_that_does_not_read_is_paused_and_others_are_served() {
    let (serving, seen) = Serving::start(options());
    const ASKED: usize = 64;
    let hog = serving.connect();
    (&hog).write_all(&b"big\n".repeat(ASKED)).unwrap();
    assert!(eventually(LIMIT, || seen.bigs.load(Ordering::SeqCst) >= 1));
    // Another client is served while the hog's output is stuck.
    assert_eq!(round_trip(&serving, "ping\n"), "ping\n");
    // The hog's requests are not all taken: its output stays bounded.
    assert!(seen.bigs.load(Ordering::SeqCst) < ASKED);
    assert!(seen.most_pending.load(Ordering::SeqCst) <= Multiplex::HIGH_WATER + BIG);
    // Once it reads, every answer arrives: reading resumed after the output drained.
    let mut total = 0;
    let mut buf = vec![0; 1 << 16];
    while total < ASKED * BIG {
        let n = (&hog).read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "{e} after {total} bytes, {} bigs, {} drained",
                seen.bigs.load(Ordering::SeqCst),
                seen.drained.load(Ordering::SeqCst)
            )
        });
        assert!(n > 0, "closed after {total} bytes");
        total += n;
    }
    assert_eq!(total, ASKED * BIG);
    assert_eq!(seen.bigs.load(Ordering::SeqCst), ASKED);
    assert!(seen.drained.load(Ordering::SeqCst) >= 1);
}

#[test]
fn a_panic_closes_only_its_connection() {
    let (serving, seen) = Serving::start(options());
    let other = serving.connect();
    (&other).write_all(b"one\n").unwrap();
    let mut other_reader = BufReader::new(other.try_clone().unwrap());
    assert_eq!(read_line(&mut other_reader), "one\n");

    let victim = serving.connect();
    (&victim).write_all(b"panic\n").unwrap();
    let mut rest = Vec::new();
    (&victim).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the panicking connection is closed");
    assert!(seen
        .errors
        .lock()
        .unwrap()
        .iter()
        .any(|e| e == "panic: asked to panic"));
    assert!(eventually(LIMIT, || seen
        .closed
        .lock()
        .unwrap()
        .contains(&CloseReason::Error)));

    (&other).write_all(b"two\n").unwrap();
    assert_eq!(read_line(&mut other_reader), "two\n");
}

#[test]
fn half_close_both_ways() {
    let (serving, seen) = Serving::start(options());
    // The client half-closes: its last message is answered, then the server closes.
    let stream = serving.connect();
    (&stream).write_all(b"last\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut all = String::new();
    (&stream).read_to_string(&mut all).unwrap();
    assert_eq!(all, "last\n");
    assert!(eventually(LIMIT, || seen
        .closed
        .lock()
        .unwrap()
        .contains(&CloseReason::PeerClosed)));

    // The server half-closes: the client reads EOF and may still send.
    let stream = serving.connect();
    (&stream).write_all(b"bye\n").unwrap();
    let mut all = String::new();
    (&stream).read_to_string(&mut all).unwrap();
    assert_eq!(all, "bye\n");
    // Counted before the write: the server may read it before this thread looks again.
    let calls = seen.input_calls.load(Ordering::SeqCst);
    (&stream).write_all(b"after\n").unwrap();
    assert!(eventually(LIMIT, || seen.input_calls.load(Ordering::SeqCst) > calls));
}

#[test]
fn timer_and_cross_connection_sends() {
    let (serving, _seen) = Serving::start(options());
    let stream = serving.connect();
    (&stream).write_all(b"timer\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    assert_eq!(read_line(&mut reader), "tick\n");

    let clients: Vec<TcpStream> = (0..4).map(|_| serving.connect()).collect();
    // Every client is known to the handler once it has answered.
    for mut c in &clients {
        (c).write_all(b"hi\n").unwrap();
        assert_eq!(read_line(&mut BufReader::new(c.try_clone().unwrap())), "hi\n");
    }
    (&clients[0]).write_all(b"all news\n").unwrap();
    for c in &clients {
        assert_eq!(read_line(&mut BufReader::new(c.try_clone().unwrap())), "news\n");
    }
    assert_eq!(read_line(&mut reader), "news\n");
}

#[test]
fn verify_request_refuses_at_accept() {
    let (serving, seen) = Serving::start(options());
    let refused = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    refused
        .bind(&"127.0.0.3:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    refused.connect(&serving.address.into()).unwrap();
    let refused: TcpStream = refused.into();
    refused.set_read_timeout(Some(LIMIT)).unwrap();
    let mut rest = Vec::new();
    let _ = (&refused).read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert_eq!(round_trip(&serving, "ok\n"), "ok\n");
    assert_eq!(
        seen.connected.load(Ordering::SeqCst),
        1,
        "the refused one never connected"
    );
}

#[test]
fn idle_timeout_and_max_input_close_the_connection() {
    let (serving, seen) = Serving::start(
        options()
            .idle_timeout(Some(Duration::from_millis(100)))
            .max_input(1024),
    );
    let idle = serving.connect();
    let mut rest = Vec::new();
    (&idle).read_to_end(&mut rest).unwrap();
    assert!(seen.errors.lock().unwrap().iter().any(|e| e == "timed out"));

    let flood = serving.connect();
    let _ = (&flood).write_all(&[b'y'; 4096]);
    let mut rest = Vec::new();
    let _ = (&flood).read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(eventually(LIMIT, || seen
        .errors
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.contains("max_input"))));
}

#[test]
fn max_connections_pauses_accepting() {
    let (serving, seen) = Serving::start(options().max_connections(Some(2)));
    let first = serving.connect();
    let second = serving.connect();
    for mut c in [&first, &second] {
        c.write_all(b"x\n").unwrap();
        assert_eq!(read_line(&mut BufReader::new(c.try_clone().unwrap())), "x\n");
    }
    // The third waits in the backlog until one of the first two closes.
    let third = serving.connect();
    (&third).write_all(b"third\n").unwrap();
    assert_eq!(serving.server.concurrency().open_connections(), 2);
    drop(first);
    assert_eq!(read_line(&mut BufReader::new(third)), "third\n");
    assert_eq!(seen.connected.load(Ordering::SeqCst), 3);
}

#[test]
fn shutdown_from_a_callback_stops_the_loop() {
    let (mut serving, _seen) = Serving::start(options());
    let stream = serving.connect();
    (&stream).write_all(b"stop\n").unwrap();
    let thread = serving.thread.take().unwrap();
    thread.join().unwrap().unwrap();
    // Connections are still served after the loop stopped, until server_close.
    (&stream).write_all(b"still\n").unwrap();
    assert_eq!(read_line(&mut BufReader::new(stream)), "still\n");
}

#[test]
fn shutdown_and_server_close_with_100_connections_mid_message() {
    let (mut serving, seen) = Serving::start(options());
    let clients: Vec<TcpStream> = (0..100).map(|_| serving.connect()).collect();
    for mut c in &clients {
        (c).write_all(b"whole\nhalf a mess").unwrap();
    }
    for c in &clients {
        assert_eq!(read_line(&mut BufReader::new(c.try_clone().unwrap())), "whole\n");
    }
    // One more has 1 MiB of output pending and reads it only while the server closes.
    let slow = serving.connect();
    (&slow).write_all(b"big\n").unwrap();
    assert!(eventually(LIMIT, || seen.bigs.load(Ordering::SeqCst) == 1));
    let reader = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        let mut all = Vec::new();
        (&slow).read_to_end(&mut all).unwrap();
        all.len()
    });

    serving.stop();
    serving.server.server_close();
    assert_eq!(
        reader.join().unwrap(),
        BIG,
        "pending output was flushed before the close"
    );
    for mut c in &clients {
        let mut rest = Vec::new();
        (c).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    let closed = seen.closed.lock().unwrap();
    assert_eq!(closed.len(), 101);
    assert!(
        closed.iter().all(|r| *r == CloseReason::ServerClose),
        "{closed:?}"
    );
    assert_eq!(serving.server.concurrency().open_connections(), 0);
}

/// Echoes whatever arrives, on any stream transport.
struct Echo;

impl<T: sockserve::transport::Transport> ConnectionHandler<T> for Echo {
    type Conn = ();

    fn connected(&self, _io: &mut ConnIo<'_, T>) -> io::Result<()> {
        Ok(())
    }

    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, T>, input: &[u8]) -> io::Result<usize> {
        io.write(input);
        Ok(input.len())
    }
}

#[test]
fn a_unix_stream_server_multiplexes_too() {
    let dir = std::env::temp_dir().join(format!("sockserve-mux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let server = Arc::new(MultiplexUnixStreamServer::with_options(path.as_path(), Echo, options()).unwrap());
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever());
    let clients: Vec<std::os::unix::net::UnixStream> = (0..8)
        .map(|_| {
            let c = std::os::unix::net::UnixStream::connect(&path).unwrap();
            c.set_read_timeout(Some(LIMIT)).unwrap();
            c
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        let mut c = c;
        c.write_all(format!("unix {i}\n").as_bytes()).unwrap();
        let mut reader = BufReader::new(c);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("unix {i}\n"));
    }
    server.shutdown();
    thread.join().unwrap().unwrap();
    server.server_close();
    for mut c in clients {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    assert!(!path.exists(), "server_close removes the socket file");
    let _ = std::fs::remove_dir_all(&dir);
}
