//! Handler kinds over real sockets: the stream handler's rfile/wfile buffering, timeout,
//! Nagle and FIN; the datagram handler's packet, socket, rfile, wfile and truncation.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sockserve::prelude::*;
use util::{eventually, Running, LIMIT};

fn fast(options: Options) -> Options {
    options.poll_interval(Duration::from_millis(20))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    conn
}

/// Reports what the handler observed, through a shared log.
#[derive(Default)]
struct Observe {
    seen: Mutex<Vec<String>>,
}

impl Observe {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Writes three pieces with pauses between them: unbuffered, the client sees the first
/// before the last is written; buffered, it sees everything at once after finish.
struct Pieces(Observe);

impl StreamHandler for Pieces {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        for piece in ["one ", "two ", "three"] {
            req.wfile.write_all(piece.as_bytes())?;
            thread::sleep(Duration::from_millis(150));
        }
        Ok(())
    }
    fn finish(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.0.seen.lock().unwrap().push("finish".into());
        Ok(())
    }
}

/// Time until the first byte arrives, and everything that arrived.
fn first_byte_and_all(addr: SocketAddr) -> (Duration, String) {
    let mut conn = connect(addr);
    let started = Instant::now();
    let mut first = [0u8; 1];
    conn.read_exact(&mut first).unwrap();
    let waited = started.elapsed();
    let mut rest = String::new();
    conn.read_to_string(&mut rest).unwrap();
    (waited, format!("{}{rest}", first[0] as char))
}

#[test]
fn unbuffered_wfile_sends_each_write_at_once() {
    let server =
        TcpServer::with_options("127.0.0.1:0", Pieces(Observe::default()), fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let _running = Running::start(server);
    let (waited, all) = first_byte_and_all(addr);
    assert_eq!(all, "one two three");
    assert!(waited < Duration::from_millis(300), "first byte after {waited:?}");
}

#[test]
fn buffered_wfile_is_flushed_after_finish() {
    let options = fast(Options::DEFAULT.wbufsize(64 * 1024));
    let server = TcpServer::with_options("127.0.0.1:0", Pieces(Observe::default()), options).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let (waited, all) = first_byte_and_all(addr);
    assert_eq!(all, "one two three");
    assert!(
        waited >= Duration::from_millis(450),
        "buffered output came early, after {waited:?}"
    );
    assert_eq!(running.server.handler().0.seen(), ["finish"]);
}

/// Reads one line, then reports how much more rfile holds in its buffer.
struct LineThenBuffered;

impl StreamHandler for LineThenBuffered {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        writeln!(req.wfile, "{} {}", line.trim(), req.rfile.buffer().len())
    }
}

fn buffered_after_first_line(rbufsize: usize) -> String {
    let options = fast(Options::DEFAULT.rbufsize(rbufsize));
    let server = TcpServer::with_options("127.0.0.1:0", LineThenBuffered, options).unwrap();
    // The whole request is in the socket before the server accepts it, so what rfile
    // buffers depends on rbufsize alone.
    let mut conn = connect(server.server_address());
    conn.write_all(b"first\nsecond line that stays in the socket\n")
        .unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(50));
    server.handle_request().unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn rbufsize_sets_the_read_buffer() {
    // Buffered (default 8192): rfile read the whole second line ahead.
    assert_eq!(buffered_after_first_line(8192), "first 37\n");
    // A 4-byte buffer read "firs", then "t\nse": two bytes are left over.
    assert_eq!(buffered_after_first_line(4), "first 2\n");
    // Unbuffered: never reads past what the handler consumed.
    assert_eq!(buffered_after_first_line(0), "first 0\n");
}

/// Echo that reports errors to a shared log.
struct SlowReader(Arc<Mutex<Vec<String>>>);

impl StreamHandler for SlowReader {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        req.wfile.write_all(line.as_bytes())
    }
    fn handle_error(&self, _client: &SocketAddr, error: &RequestError) {
        self.0.lock().unwrap().push(error.to_string());
    }
}

#[test]
fn connection_timeout_drops_idle_clients() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let options = fast(Options::DEFAULT.connection_timeout(Some(Duration::from_millis(200))));
    let server =
        ThreadingTcpServer::with_options("127.0.0.1:0", SlowReader(errors.clone()), options).unwrap();
    let addr = server.server_address();
    let _running = Running::start(server);
    let mut idle = connect(addr);
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    let waited = started.elapsed();
    assert_eq!(n, 0, "the server closes an idle connection");
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "after {waited:?}"
    );
    assert!(eventually(LIMIT, || errors.lock().unwrap().len() == 1));
    let error = errors.lock().unwrap()[0].clone();
    // Reported in words, not as the socket's EAGAIN.
    assert_eq!(error, "idle for 200ms (connection_timeout), closed");
    // A prompt client is served normally.
    let mut ok = connect(addr);
    ok.write_all(b"quick\n").unwrap();
    let mut line = String::new();
    io::BufReader::new(ok).read_line(&mut line).unwrap();
    assert_eq!(line, "quick\n");
}

/// Reports TCP_NODELAY as the handler sees it.
struct NoDelay;

impl StreamHandler for NoDelay {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        writeln!(req.wfile, "{}", req.request.nodelay()?)
    }
}

#[test]
fn disable_nagle_algorithm_sets_tcp_nodelay() {
    for disable in [false, true] {
        let options = fast(Options::DEFAULT.disable_nagle_algorithm(disable));
        let server = TcpServer::with_options("127.0.0.1:0", NoDelay, options).unwrap();
        let addr = server.server_address();
        let _running = Running::start(server);
        let mut out = String::new();
        connect(addr).read_to_string(&mut out).unwrap();
        assert_eq!(out.trim(), disable.to_string());
    }
}

/// Hands the connection to a thread that outlives the request, writes a line and returns:
/// the client must see EOF right after the line, because shutdown_request sends FIN even
/// though another copy of the descriptor is still open.
struct KeepsACopy(Mutex<Vec<TcpStream>>);

impl StreamHandler for KeepsACopy {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.0.lock().unwrap().push(req.request.try_clone()?);
        req.wfile.write_all(b"bye\n")
    }
}

#[test]
fn tcp_shutdown_request_sends_fin_even_when_the_descriptor_is_shared() {
    let server = TcpServer::with_options(
        "127.0.0.1:0",
        KeepsACopy(Mutex::default()),
        fast(Options::DEFAULT),
    )
    .unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let mut out = String::new();
    connect(addr).read_to_string(&mut out).unwrap();
    assert_eq!(out, "bye\n");
    assert_eq!(
        running.server.handler().0.lock().unwrap().len(),
        1,
        "the copy is still open"
    );
}

/// A datagram handler that reports what it got and answers through wfile.
#[derive(Default)]
struct Datagrams {
    errors: Mutex<Vec<String>>,
    handled: Mutex<Vec<usize>>,
}

impl DatagramHandler for Datagrams {
    fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        self.handled.lock().unwrap().push(req.packet.len());
        let mut body = Vec::new();
        req.rfile.read_to_end(&mut body)?;
        assert_eq!(body, req.packet);
        assert_eq!(req.socket.local_addr()?, req.server.server_address());
        if body == b"direct" {
            // The socket is there for replies of the handler's own.
            req.socket.send_to(b"sent directly", req.client_address)?;
            return Ok(());
        }
        write!(req.wfile, "{} bytes", body.len())
    }
    fn handle_error(&self, _client: &SocketAddr, error: &RequestError) {
        self.errors.lock().unwrap().push(error.to_string());
    }
}

fn udp_client() -> UdpSocket {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    client
}

fn ask(client: &UdpSocket, addr: SocketAddr, payload: &[u8]) -> String {
    client.send_to(payload, addr).unwrap();
    let mut buf = vec![0; 70_000];
    let n = client.recv(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn datagram_handler_gets_packet_socket_rfile_and_replies_with_wfile() {
    let server =
        UdpServer::with_options("127.0.0.1:0", Datagrams::default(), fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let client = udp_client();
    assert_eq!(ask(&client, addr, b"hello"), "5 bytes");
    assert_eq!(ask(&client, addr, b"direct"), "sent directly");
    // The default max_packet_size is 8192: exactly that much is whole.
    assert_eq!(ask(&client, addr, &[7u8; 8192]), "8192 bytes");
    assert!(running.server.handler().errors.lock().unwrap().is_empty());
}

#[test]
fn oversized_datagrams_are_reported_as_truncated_not_handled() {
    let server =
        UdpServer::with_options("127.0.0.1:0", Datagrams::default(), fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let client = udp_client();
    client.send_to(&[1u8; 8193], addr).unwrap();
    let handler = running.server.handler();
    assert!(eventually(LIMIT, || handler.errors.lock().unwrap().len() == 1));
    let error = handler.errors.lock().unwrap()[0].clone();
    assert!(error.contains("8193") && error.contains("truncated"), "{error}");
    assert!(
        handler.handled.lock().unwrap().is_empty(),
        "the handler never saw it"
    );
    // The server goes on.
    assert_eq!(ask(&client, addr, b"next"), "4 bytes");
}

#[test]
fn max_packet_size_is_configurable() {
    let options = fast(Options::DEFAULT.max_packet_size(16));
    let server = UdpServer::with_options("127.0.0.1:0", Datagrams::default(), options).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let client = udp_client();
    assert_eq!(ask(&client, addr, &[0u8; 16]), "16 bytes");
    client.send_to(&[0u8; 17], addr).unwrap();
    assert!(eventually(LIMIT, || running
        .server
        .handler()
        .errors
        .lock()
        .unwrap()
        .len()
        == 1));
}

/// Echoes the packet back as it is.
struct Mirror;

impl DatagramHandler for Mirror {
    fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        req.wfile.extend_from_slice(req.packet);
        Ok(())
    }
}

#[test]
fn reused_packet_and_reply_buffers_never_show_stale_bytes() {
    let server = UdpServer::with_options("127.0.0.1:0", Mirror, fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let _running = Running::start(server);
    let client = udp_client();
    let mut buf = vec![0; 9000];
    for payload in [
        vec![b'a'; 8000],
        b"xyz".to_vec(),
        Vec::new(),
        vec![b'b'; 100],
        b"q".to_vec(),
    ] {
        client.send_to(&payload, addr).unwrap();
        if payload.is_empty() {
            continue; // an empty reply is not sent
        }
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &payload[..]);
    }
}

/// Per-request state (Python's handler instance): `setup` creates it, `handle` and `finish`
/// own it, with no lock; each connection has its own.
struct LineCounter {
    finished: Mutex<Vec<u64>>,
}

impl StatefulStreamHandler for LineCounter {
    type State = u64;

    fn setup(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<u64> {
        Ok(0)
    }

    fn handle(&self, lines: &mut u64, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            *lines += 1;
            writeln!(req.wfile, "{lines}")?;
            line.clear();
        }
        Ok(())
    }

    fn finish(&self, lines: &mut u64, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.finished.lock().unwrap().push(*lines);
        Ok(())
    }
}

#[test]
fn per_request_state_is_owned_by_each_connection() {
    let handler = LineCounter {
        finished: Mutex::new(Vec::new()),
    };
    let server = ThreadingTcpServer::with_options("127.0.0.1:0", handler, fast(Options::DEFAULT)).unwrap();
    let addr = server.server_address();
    let running = Running::start(server);
    let mut a = io::BufReader::new(connect(addr));
    let mut b = io::BufReader::new(connect(addr));
    let ask = |client: &mut io::BufReader<TcpStream>| {
        client.get_mut().write_all(b"x\n").unwrap();
        let mut answer = String::new();
        client.read_line(&mut answer).unwrap();
        answer.trim().parse::<u64>().unwrap()
    };
    // Interleaved: each connection counts its own lines.
    assert_eq!(ask(&mut a), 1);
    assert_eq!(ask(&mut a), 2);
    assert_eq!(ask(&mut b), 1);
    assert_eq!(ask(&mut a), 3);
    assert_eq!(ask(&mut b), 2);
    a.get_ref().shutdown(Shutdown::Write).unwrap();
    b.get_ref().shutdown(Shutdown::Write).unwrap();
    // finish() sees the state handle() left.
    assert!(eventually(LIMIT, || running
        .server
        .handler()
        .finished
        .lock()
        .unwrap()
        .len()
        == 2));
    let mut finished = running.server.handler().finished.lock().unwrap().clone();
    finished.sort();
    assert_eq!(finished, vec![2, 3]);
}

/// Answers each line with `line=TEXT urgent=BYTES`, BYTES being the urgent bytes
/// `handle_urgent` received since the previous line.
#[derive(Default)]
struct UrgentProbe {
    urgent: Mutex<Vec<u8>>,
}

impl StreamHandler for UrgentProbe {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            let urgent = std::mem::take(&mut *self.urgent.lock().unwrap());
            writeln!(
                req.wfile,
                "line={} urgent={}",
                line.trim_end(),
                String::from_utf8_lossy(&urgent)
            )?;
            line.clear();
        }
        Ok(())
    }

    fn handle_urgent(&self, byte: u8, _client_address: &SocketAddr) {
        self.urgent.lock().unwrap().push(byte);
    }
}

/// A Python client that sends `hello`, then `!` as TCP urgent data, then `world`, in one
/// go or waiting for each answer; prints the server's answers.
fn urgent_client(addr: SocketAddr, wait_between: bool) -> Vec<String> {
    let script = format!(
        r#"
import socket
s = socket.create_connection(("127.0.0.1", {port}), timeout=10)
f = s.makefile("rb")
wait = {wait}
s.sendall(b"hello\n")
if wait: print(f.readline().decode().strip())
s.send(b"!", socket.MSG_OOB)
s.sendall(b"world\n")
if not wait: print(f.readline().decode().strip())
print(f.readline().decode().strip())
"#,
        port = addr.port(),
        wait = if wait_between { "True" } else { "False" },
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 is needed for the urgent-data tests (scripts/test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn check_urgent<C>(make: impl Fn(Options) -> Server<Tcp, C, UrgentProbe>)
where
    C: sockserve::concurrency::ProcessRequest<Tcp, UrgentProbe> + Send + Sync,
{
    for wait in [true, false] {
        // oob_inline off: the urgent byte goes to handle_urgent, not into the stream.
        let mut options = fast(Options::DEFAULT);
        options.oob_inline = false;
        let server = make(options);
        let addr = server.server_address();
        let _running = Running::start(server);
        let answers = urgent_client(addr, wait);
        if wait {
            assert_eq!(answers, ["line=hello urgent=", "line=world urgent=!"]);
        } else {
            // Sent at once, the urgent byte is out of band: it may be handed over before
            // `hello` is read (as SIGURG/POLLPRI signal it on arrival), never after `world`.
            let (lines, urgent): (Vec<&str>, String) = answers
                .iter()
                .map(|a| a.split_once(" urgent=").expect("an answer"))
                .fold((Vec::new(), String::new()), |(mut l, mut u), (line, urg)| {
                    l.push(line);
                    u.push_str(urg);
                    (l, u)
                });
            assert_eq!(
                lines,
                ["line=hello", "line=world"],
                "in-band stream intact: {answers:?}"
            );
            assert_eq!(urgent, "!", "delivered exactly once: {answers:?}");
        }
        // The default: the urgent byte stays in the stream where it was sent.
        let server = make(fast(Options::DEFAULT));
        let addr = server.server_address();
        let _running = Running::start(server);
        assert_eq!(
            urgent_client(addr, wait),
            ["line=hello urgent=", "line=!world urgent="],
            "inline, wait={wait}"
        );
    }
}

#[test]
fn urgent_data_reaches_handle_urgent_or_stays_inline_in_every_model() {
    check_urgent(|o| TcpServer::with_options("127.0.0.1:0", UrgentProbe::default(), o).unwrap());
    check_urgent(|o| ThreadingTcpServer::with_options("127.0.0.1:0", UrgentProbe::default(), o).unwrap());
    check_urgent(|o| ForkingTcpServer::with_options("127.0.0.1:0", UrgentProbe::default(), o).unwrap());
}
