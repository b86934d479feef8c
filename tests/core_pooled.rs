//! The pooled model over real loopback sockets: one message per `handle` with blocking
//! `rfile`/`wfile`, connections parked in the event loop between messages, pipelined and
//! split messages, timeouts, panics, `verify_request` once per connection, and the drain of
//! `server_close`.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sockserve::concurrency::{AfterMessage, MessageHandler};
use sockserve::prelude::*;
use sockserve::transport::Tcp;
use sockserve::RequestError;
use util::eventually;

const LIMIT: Duration = Duration::from_secs(10);

/// Counters a test reads while the server runs.
#[derive(Default)]
struct Seen {
    verified: AtomicUsize,
    closed: AtomicUsize,
    messages: AtomicUsize,
    /// Messages whose first bytes were not yet all there when `handle` began.
    errors: Mutex<Vec<String>>,
    /// The pool threads that ran messages, by name and id.
    threads: Mutex<Vec<thread::ThreadId>>,
}

/// A line protocol, one line per message: echoes it; `panic` panics, `slow` sleeps 300 ms
/// before answering, `quit` answers and closes, `stop` asks the server to shut down.
struct Lines {
    seen: Arc<Seen>,
}

impl MessageHandler<Tcp> for Lines {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<AfterMessage> {
        self.seen.messages.fetch_add(1, Ordering::SeqCst);
        self.seen.threads.lock().unwrap().push(thread::current().id());
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(AfterMessage::Close);
        }
        if !line.ends_with('\n') {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "line cut short"));
        }
        match line.as_str() {
            "panic\n" => panic!("asked to panic"),
            "slow\n" => thread::sleep(Duration::from_millis(300)),
            "stop\n" => req.server.shutdown(),
            "quit\n" => {
                req.wfile.write_all(b"bye\n")?;
                return Ok(AfterMessage::Close);
            }
            _ => {}
        }
        req.wfile.write_all(line.as_bytes())?;
        Ok(AfterMessage::KeepOpen)
    }

    fn verify_request(&self, _request: &TcpStream, _client_address: &SocketAddr) -> bool {
        self.seen.verified.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn closed(&self, _client_address: &SocketAddr) {
        self.seen.closed.fetch_add(1, Ordering::SeqCst);
    }

    fn handle_error(&self, _client_address: &SocketAddr, error: &RequestError) {
        let what = match error {
            RequestError::Panic(message) => format!("panic: {message}"),
            RequestError::TimedOut(_) => "timed out".to_string(),
            RequestError::Disconnected(_) => "disconnected".to_string(),
            other => format!("io: {other}"),
        };
        self.seen.errors.lock().unwrap().push(what);
    }
}

/// A pooled server serving in a background thread.
struct Serving {
    server: Arc<PooledTcpServer<Lines>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    address: SocketAddr,
    seen: Arc<Seen>,
}

impl Serving {
    fn start(options: Options) -> Self {
        let seen = Arc::new(Seen::default());
        let handler = Lines {
            seen: Arc::clone(&seen),
        };
        let server = Arc::new(PooledTcpServer::with_options("127.0.0.1:0", handler, options).unwrap());
        let address = server.server_address();
        let serving = Arc::clone(&server);
        let thread = Some(thread::spawn(move || serving.serve_forever()));
        Serving {
            server,
            thread,
            address,
            seen,
        }
    }

    fn connect(&self) -> BufReader<TcpStream> {
        let stream = TcpStream::connect(self.address).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        BufReader::new(stream)
    }

    fn stop(&mut self) {
        self.server.shutdown();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap().unwrap();
        }
    }

    fn errors(&self) -> Vec<String> {
        self.seen.errors.lock().unwrap().clone()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop();
        self.server.server_close();
    }
}

fn options() -> Options {
    Options::DEFAULT.workers(Some(1)).max_threads(Some(4))
}

fn send(client: &mut BufReader<TcpStream>, text: &str) {
    client.get_mut().write_all(text.as_bytes()).unwrap();
}

fn read_line(client: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    client.read_line(&mut line).unwrap();
    line
}

/// Whether the server closed `client` (EOF or reset) within [`LIMIT`].
fn closed_by_server(client: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn a_keep_alive_connection_is_served_message_by_message_and_verified_once() {
    let serving = Serving::start(options());
    let mut client = serving.connect();
    for i in 0..20 {
        send(&mut client, &format!("message {i}\n"));
        assert_eq!(read_line(&mut client), format!("message {i}\n"));
        // Between messages the connection is parked: nothing holds a pool thread for it,
        // so the client can wait as long as it likes.
        if i == 10 {
            thread::sleep(Duration::from_millis(200));
        }
    }
    send(&mut client, "quit\n");
    assert_eq!(read_line(&mut client), "bye\n");
    assert!(closed_by_server(&mut client));
    assert_eq!(serving.seen.verified.load(Ordering::SeqCst), 1);
    assert_eq!(serving.seen.messages.load(Ordering::SeqCst), 21);
    assert!(serving.errors().is_empty(), "{:?}", serving.errors());
}

#[test]
fn pipelined_messages_in_one_write_are_all_answered_in_order() {
    let serving = Serving::start(options());
    let mut client = serving.connect();
    let batch: String = (0..50).map(|i| format!("p{i}\n")).collect();
    send(&mut client, &batch);
    for i in 0..50 {
        assert_eq!(read_line(&mut client), format!("p{i}\n"));
    }
    // Then a normal exchange on the same connection: it was parked again.
    send(&mut client, "after\n");
    assert_eq!(read_line(&mut client), "after\n");
    assert_eq!(serving.seen.messages.load(Ordering::SeqCst), 51);
}

#[test]
fn a_message_split_across_reads_is_read_whole_on_the_pool_thread() {
    let serving = Serving::start(options());
    let mut client = serving.connect();
    for piece in ["he", "ll", "o, wor", "ld\n"] {
        send(&mut client, piece);
        thread::sleep(Duration::from_millis(60));
    }
    assert_eq!(read_line(&mut client), "hello, world\n");
    // One message, one `handle`: the handler did not see it was parked in pieces.
    assert_eq!(serving.seen.messages.load(Ordering::SeqCst), 1);
    assert!(serving.errors().is_empty(), "{:?}", serving.errors());
}

#[test]
fn a_slow_sender_times_out_and_the_others_are_served() {
    let serving = Serving::start(options().connection_timeout(Some(Duration::from_millis(300))));
    let mut slow = serving.connect();
    send(&mut slow, "half a li");
    let mut other = serving.connect();
    send(&mut other, "meanwhile\n");
    assert_eq!(read_line(&mut other), "meanwhile\n");
    let started = Instant::now();
    assert!(closed_by_server(&mut slow), "the slow sender was not closed");
    assert!(started.elapsed() < LIMIT);
    assert!(
        eventually(LIMIT, || serving.errors() == ["timed out"]),
        "{:?}",
        serving.errors()
    );
    // The pool thread is free again.
    send(&mut other, "after\n");
    assert_eq!(read_line(&mut other), "after\n");
}

#[test]
fn a_panic_in_one_message_closes_only_its_connection() {
    let serving = Serving::start(options());
    let mut bystander = serving.connect();
    send(&mut bystander, "before\n");
    assert_eq!(read_line(&mut bystander), "before\n");
    let mut victim = serving.connect();
    send(&mut victim, "panic\n");
    assert!(closed_by_server(&mut victim));
    assert!(
        eventually(LIMIT, || serving.errors() == ["panic: asked to panic"]),
        "{:?}",
        serving.errors()
    );
    send(&mut bystander, "after\n");
    assert_eq!(read_line(&mut bystander), "after\n");
    let mut fresh = serving.connect();
    send(&mut fresh, "fresh\n");
    assert_eq!(read_line(&mut fresh), "fresh\n");
}

#[test]
fn a_client_that_closes_while_parked_is_closed_without_a_message() {
    let serving = Serving::start(options());
    let mut client = serving.connect();
    send(&mut client, "one\n");
    assert_eq!(read_line(&mut client), "one\n");
    client.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut client));
    assert!(eventually(LIMIT, || serving
        .server
        .concurrency()
        .open_connections()
        == 0));
    assert_eq!(serving.seen.messages.load(Ordering::SeqCst), 1);
    assert!(serving.errors().is_empty(), "{:?}", serving.errors());
}

#[test]
fn more_busy_connections_than_pool_threads_all_get_answers_from_at_most_max_threads() {
    let serving = Serving::start(options().max_threads(Some(2)));
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let mut client = serving.connect();
            send(&mut client, "slow\n");
            (i, client)
        })
        .collect();
    for (_, mut client) in clients {
        assert_eq!(read_line(&mut client), "slow\n");
    }
    let mut threads = serving.seen.threads.lock().unwrap().clone();
    threads.sort_by_key(|t| format!("{t:?}"));
    threads.dedup();
    assert!(threads.len() <= 2, "{} pool threads ran messages", threads.len());
}

#[test]
fn idle_timeout_closes_a_parked_connection() {
    let serving = Serving::start(options().idle_timeout(Some(Duration::from_millis(200))));
    let mut client = serving.connect();
    send(&mut client, "one\n");
    assert_eq!(read_line(&mut client), "one\n");
    assert!(closed_by_server(&mut client));
    assert!(
        eventually(LIMIT, || serving.errors() == ["timed out"]),
        "{:?}",
        serving.errors()
    );
}

#[test]
fn server_close_finishes_messages_in_progress_and_closes_parked_connections_at_once() {
    let mut serving = Serving::start(options().max_threads(Some(8)));
    let mut parked: Vec<_> = (0..20)
        .map(|i| {
            let mut client = serving.connect();
            send(&mut client, &format!("hello {i}\n"));
            assert_eq!(read_line(&mut client), format!("hello {i}\n"));
            client
        })
        .collect();
    let mut busy: Vec<_> = (0..4)
        .map(|_| {
            let mut client = serving.connect();
            send(&mut client, "slow\n");
            client
        })
        .collect();
    // The slow messages are running.
    assert!(eventually(LIMIT, || serving.seen.messages.load(Ordering::SeqCst) == 24));
    serving.stop();
    let started = Instant::now();
    serving.server.server_close();
    let took = started.elapsed();
    for client in &mut busy {
        assert_eq!(read_line(client), "slow\n", "a message in progress was cut");
        assert!(closed_by_server(client));
    }
    for client in &mut parked {
        assert!(closed_by_server(client));
    }
    assert_eq!(serving.server.concurrency().open_connections(), 0);
    // Parked connections did not wait for anything: the close took about one slow message.
    assert!(took < Duration::from_secs(5), "server_close took {took:?}");
    assert!(serving.errors().is_empty(), "{:?}", serving.errors());
}

#[test]
fn shutdown_from_a_message_stops_the_loop() {
    let mut serving = Serving::start(options());
    let mut client = serving.connect();
    send(&mut client, "stop\n");
    assert_eq!(read_line(&mut client), "stop\n");
    let thread = serving.thread.take().unwrap();
    assert!(eventually(LIMIT, || thread.is_finished()));
    thread.join().unwrap().unwrap();
}

#[test]
fn a_unix_stream_server_is_pooled_too() {
    struct Upper;
    impl MessageHandler<sockserve::transport::Unix> for Upper {
        fn handle(
            &self,
            req: &mut StreamRequest<'_, sockserve::transport::Unix>,
        ) -> io::Result<AfterMessage> {
            let mut line = String::new();
            req.rfile.read_line(&mut line)?;
            req.wfile.write_all(line.to_uppercase().as_bytes())?;
            Ok(AfterMessage::KeepOpen)
        }
    }
    let dir = std::env::temp_dir().join(format!("sockserve-pooled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("upper.sock");
    let server = Arc::new(PooledUnixStreamServer::bind(path.as_path(), Upper).unwrap());
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever());
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reader = BufReader::new(&stream);
    for word in ["abc\n", "def\n"] {
        (&stream).write_all(word.as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, word.to_uppercase());
    }
    server.shutdown();
    thread.join().unwrap().unwrap();
    server.server_close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn closed_is_called_once_per_verified_connection_whatever_ends_it() {
    let mut serving = Serving::start(options().idle_timeout(Some(Duration::from_millis(300))));
    // Ends: `quit` (handle says Close), the client closing while parked, a panic, idle timeout.
    let mut quits = serving.connect();
    send(&mut quits, "quit\n");
    assert_eq!(read_line(&mut quits), "bye\n");
    let mut leaves = serving.connect();
    send(&mut leaves, "one\n");
    assert_eq!(read_line(&mut leaves), "one\n");
    drop(leaves);
    let mut panics = serving.connect();
    send(&mut panics, "panic\n");
    assert!(closed_by_server(&mut panics));
    let mut idles = serving.connect();
    send(&mut idles, "one\n");
    assert_eq!(read_line(&mut idles), "one\n");
    assert!(closed_by_server(&mut idles));
    assert!(eventually(LIMIT, || serving.seen.closed.load(Ordering::SeqCst) == 4));
    // And server_close closes a parked one.
    let mut parked = serving.connect();
    send(&mut parked, "one\n");
    assert_eq!(read_line(&mut parked), "one\n");
    serving.stop();
    serving.server.server_close();
    assert_eq!(serving.seen.closed.load(Ordering::SeqCst), 5);
    assert_eq!(serving.seen.verified.load(Ordering::SeqCst), 5);
}
