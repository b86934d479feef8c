//! Black-box tests of the example gallery (all but `http_server`, which has
//! `tests/examples_http.rs`).
//!
//! Each test runs an example as a child process, reads its `listening on ADDR` line, and talks
//! to it as a user would: std sockets, and `nc`/`socat` where a user would reach for them. For
//! every example: the happy path, bad input (garbage, oversized lines, early disconnects), and a
//! graceful stop (SIGTERM or SIGINT with a request in flight: it completes, exit 0 within 2 s).
//! The tests of `echo_tcp` and `kv_store` run once per mode ([`MODES`]: threading, `--pooled`).

mod examples_support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::{Duration, Instant};

use examples_support::*;

/// The longest line the line examples accept (`support::MAX_LINE`).
const MAX_LINE: usize = 4096;

/// Bytes 0 to 255 except the newline, then a newline: one line of garbage.
fn garbage_line() -> Vec<u8> {
    let mut line: Vec<u8> = (0..=255u8).filter(|&b| b != b'\n').collect();
    line.push(b'\n');
    line
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().expect("host:port")
}

/// Starts a request, signals the server while it is being worked on, and checks that the
/// reply still arrives and the server exits 0 within 2 s.
fn stop_in_flight<S: Read + Write>(
    server: &mut Server,
    client: &mut Client<S>,
    request: &[u8],
    signal: i32,
) -> Vec<u8> {
    client.send(request);
    // The example runs with --delay 700: the request is now in the handler.
    thread::sleep(Duration::from_millis(200));
    server.stop_with(signal);
    client.line_bytes()
}

// ---------------------------------------------------------------- command line, all examples

const ALL: [&str; 13] = [
    "echo_tcp",
    "echo_multiplex",
    "echo_udp",
    "echo_unix_stream",
    "echo_unix_datagram",
    "forking_tcp",
    "http_server",
    "chat",
    "kv_store",
    "daytime",
    "sql_queue",
    "allowlist",
    "rpc_calc",
];

#[test]
fn every_example_has_help_and_rejects_unknown_options() {
    for name in ALL {
        let out = run_tool(example(name).to_str().unwrap(), &["--help"], b"", IO_TIMEOUT);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} --help: {:?}", out.status);
        assert!(
            text.contains("--bind") && text.contains("--delay"),
            "{name}: {text}"
        );

        let out = run_tool(
            example(name).to_str().unwrap(),
            &["--no-such-option"],
            b"",
            IO_TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(2), "{name} with an unknown option");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unknown option"), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    for name in ["echo_tcp", "kv_store", "http_server"] {
        let out = run_tool(example(name).to_str().unwrap(), &["--help"], b"", IO_TIMEOUT);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("--pooled"), "{name}: {text}");
    }
}

#[test]
fn every_server_stops_on_sigterm_and_sigint() {
    let dir = TempDir::new("stop-all");
    let stream = dir.join("stream.sock");
    let datagram = dir.join("datagram.sock");
    let db = dir.join("queue.db");
    let cases: [(&str, &str); 12] = [
        ("echo_tcp", "127.0.0.1:0"),
        ("echo_multiplex", "127.0.0.1:0"),
        ("echo_udp", "127.0.0.1:0"),
        ("echo_unix_stream", stream.to_str().unwrap()),
        ("echo_unix_datagram", datagram.to_str().unwrap()),
        ("forking_tcp", "127.0.0.1:0"),
        ("http_server", "127.0.0.1:0"),
        ("chat", "127.0.0.1:0"),
        ("kv_store", "127.0.0.1:0"),
        ("daytime", "127.0.0.1:0"),
        ("sql_queue", db.to_str().unwrap()),
        ("allowlist", "[::1]:0"),
    ];
    for (name, bind) in cases {
        let modes: &[&[&str]] = match name {
            "echo_tcp" | "kv_store" | "http_server" => &MODES,
            _ => &[&[]],
        };
        for mode in modes {
            for signal in [libc::SIGTERM, libc::SIGINT] {
                let mut server = Server::start_mode(name, &["--bind", bind], mode);
                server.stop_with(signal);
                assert_no_panic(&server);
            }
        }
    }
}

#[test]
fn http_server_defaults_to_port_8000() {
    // The README's first command relies on it; the port itself may be taken on a test host.
    let out = run_tool(
        example("http_server").to_str().unwrap(),
        &["--help"],
        b"",
        IO_TIMEOUT,
    );
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[default: 127.0.0.1:8000]"), "{help}");
    assert!(help.contains("[default: the current directory]"), "{help}");
}

#[test]
fn a_bind_failure_is_an_error_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut server = Server::spawn("echo_tcp", &["--bind", &addr], None);
    let status = server.wait_exit(STARTUP).expect("exits");
    assert!(!status.success());
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("in use"),
        "stderr says why: {stderr}"
    );
}

// ---------------------------------------------------------------------------------- echo_tcp

/// Starts `echo_tcp` on a free loopback port in `mode`.
fn echo_tcp(mode: &[&str]) -> Server {
    Server::start_mode("echo_tcp", &["--bind", "127.0.0.1:0"], mode)
}

#[test]
fn echo_tcp_echoes_lines_for_concurrent_clients() {
    for mode in MODES {
        let server = echo_tcp(mode);
        assert!(server.addr.starts_with("127.0.0.1:") && !server.addr.ends_with(":0"));
        let mut clients: Vec<_> = (0..4).map(|_| tcp_client(&server.addr)).collect();
        for round in 0..3 {
            for (i, client) in clients.iter_mut().enumerate() {
                let line = format!("client {i} round {round}");
                assert_eq!(client.ask(&line), line, "{mode:?}");
            }
        }
        // A last line without a newline is echoed too, then the server closes.
        let mut last = clients.pop().unwrap();
        last.send(b"no newline");
        last.stream().shutdown(Shutdown::Write).unwrap();
        assert_eq!(last.read_to_end(), b"no newline", "{mode:?}");
        assert_no_panic(&server);
    }
}

/// Several lines on one connection in one write (answered in order), a line split across two
/// writes with a pause between them, and a connection silent for a while between lines (in
/// `--pooled` mode it is parked then, and the next line is served all the same).
#[test]
fn echo_tcp_pipelined_and_split_lines() {
    for mode in MODES {
        let server = echo_tcp(mode);
        let mut client = tcp_client(&server.addr);
        client.send(b"one\ntwo\nthree\n");
        for expected in ["one", "two", "three"] {
            assert_eq!(client.line(), expected, "{mode:?}");
        }
        client.send(b"split ac");
        thread::sleep(Duration::from_millis(150));
        client.send(b"ross two writes\n");
        assert_eq!(client.line(), "split across two writes", "{mode:?}");
        thread::sleep(Duration::from_millis(300));
        assert_eq!(client.ask("after a pause"), "after a pause", "{mode:?}");
        // Lines of every length up to the limit, in pieces that do not end at line ends.
        let mut all = Vec::new();
        for len in [1, 100, 1000, MAX_LINE - 1] {
            all.extend(std::iter::repeat_n(b'x', len - 1));
            all.push(b'\n');
        }
        for piece in all.chunks(777) {
            client.send(piece);
        }
        for len in [1, 100, 1000, MAX_LINE - 1] {
            assert_eq!(client.line_bytes().len(), len, "{mode:?}");
        }
        assert_no_panic(&server);
    }
}

#[test]
fn echo_tcp_with_nc() {
    for mode in MODES {
        let server = echo_tcp(mode);
        let out = run_tool(
            "nc",
            &["-N", "127.0.0.1", port_of(&server.addr)],
            b"hello\nworld\n",
            IO_TIMEOUT,
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n", "{mode:?}");
    }
}

#[test]
fn echo_tcp_survives_bad_input() {
    for mode in MODES {
        echo_tcp_survives_bad_input_in(mode);
    }
}

fn echo_tcp_survives_bad_input_in(mode: &[&str]) {
    let mut server = echo_tcp(mode);
    // Garbage: every byte value, CR and NUL included, comes back unchanged.
    let mut client = tcp_client(&server.addr);
    client.send(&garbage_line());
    assert_eq!(client.line_bytes(), garbage_line());
    // Exactly the limit is fine; one byte more is refused and the connection closed.
    let mut ok = vec![b'a'; MAX_LINE - 1];
    ok.push(b'\n');
    client.send(&ok);
    assert_eq!(client.line_bytes(), ok);
    client.send(&vec![b'x'; MAX_LINE + 1000]);
    assert_eq!(client.line(), "error: line too long");
    client.expect_eof();
    // Early disconnects: at once, mid-line, and before reading the reply.
    drop(tcp_client(&server.addr));
    let mut half = tcp_client(&server.addr);
    half.send(b"half a li");
    drop(half);
    let mut rude = tcp_client(&server.addr);
    rude.send(b"reply to nobody\n");
    drop(rude);
    // Still serving.
    assert_eq!(tcp_client(&server.addr).ask("still here"), "still here");
    server.assert_alive();
    assert_no_panic(&server);
}

#[test]
fn echo_tcp_sigterm_finishes_the_request_in_flight() {
    for mode in MODES {
        let mut server = Server::start_mode("echo_tcp", &["--bind", "127.0.0.1:0", "--delay", "700"], mode);
        let addr = server.addr.clone();
        let mut client = tcp_client(&addr);
        let reply = stop_in_flight(&mut server, &mut client, b"slow one\n", libc::SIGTERM);
        assert_eq!(reply, b"slow one\n", "{mode:?}");
        client.expect_eof();
        assert!(TcpStream::connect(&addr).is_err(), "nothing listens after exit");
    }
}

/// A stop with clients connected: one idle since it connected, one idle after a line, one
/// silent in the middle of a line. All are closed and the server exits within 2 s (the part of
/// a line already sent is answered first).
#[test]
fn echo_tcp_sigint_with_idle_clients_exits_promptly() {
    for mode in MODES {
        let mut server = echo_tcp(mode);
        let mut idle = tcp_client(&server.addr);
        let mut busy = tcp_client(&server.addr);
        assert_eq!(busy.ask("hi"), "hi");
        let mut partial = tcp_client(&server.addr);
        partial.send(b"half a li");
        thread::sleep(Duration::from_millis(200));
        server.stop_with(libc::SIGINT);
        idle.expect_eof();
        busy.expect_eof();
        assert_eq!(partial.read_to_end(), b"half a li", "{mode:?}");
    }
}

/// `--pooled --max-threads 1`: one pool thread serves many open connections, since a
/// connection between two lines holds no thread (the threading server would serve one at a
/// time: `echo_tcp_max_threads_from_the_command_line`). A line that takes long holds the
/// only thread; the others' lines wait for it, then are answered.
#[test]
fn echo_tcp_pooled_serves_more_connections_than_threads() {
    let server = Server::start(
        "echo_tcp",
        &["--bind", "127.0.0.1:0", "--pooled", "--max-threads", "1"],
    );
    let mut clients: Vec<_> = (0..20).map(|_| tcp_client(&server.addr)).collect();
    for round in 0..3 {
        for (i, client) in clients.iter_mut().enumerate() {
            let line = format!("client {i} round {round}");
            assert_eq!(client.ask(&line), line);
        }
    }
    // Every connection sends first, then every reply is read: all served by the one thread.
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(format!("together {i}\n").as_bytes());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.line(), format!("together {i}"));
    }
    assert_no_panic(&server);
}

// ---------------------------------------------------------------------------- echo_multiplex

#[test]
fn echo_multiplex_speaks_the_echo_tcp_protocol() {
    let mut server = Server::start("echo_multiplex", &["--bind", "127.0.0.1:0", "--workers", "2"]);
    let mut clients: Vec<_> = (0..4).map(|_| tcp_client(&server.addr)).collect();
    for round in 0..3 {
        for (i, client) in clients.iter_mut().enumerate() {
            let line = format!("client {i} round {round}");
            assert_eq!(client.ask(&line), line);
        }
    }
    let mut last = clients.pop().unwrap();
    last.send(b"no newline");
    last.stream().shutdown(Shutdown::Write).unwrap();
    assert_eq!(last.read_to_end(), b"no newline");

    let out = run_tool(
        "nc",
        &["-N", "127.0.0.1", port_of(&server.addr)],
        b"hello\nworld\n",
        IO_TIMEOUT,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");

    let mut client = tcp_client(&server.addr);
    client.send(&garbage_line());
    assert_eq!(client.line_bytes(), garbage_line());
    let mut ok = vec![b'a'; MAX_LINE - 1];
    ok.push(b'\n');
    client.send(&ok);
    assert_eq!(client.line_bytes(), ok);
    client.send(&vec![b'x'; MAX_LINE + 1000]);
    assert_eq!(client.line(), "error: line too long");
    client.expect_eof();
    let mut half = tcp_client(&server.addr);
    half.send(b"half a li");
    drop(half);
    let mut rude = tcp_client(&server.addr);
    rude.send(b"reply to nobody\n");
    drop(rude);
    assert_eq!(tcp_client(&server.addr).ask("still here"), "still here");
    server.assert_alive();
    assert_no_panic(&server);
}

#[test]
fn echo_multiplex_sigterm_sends_the_reply_in_flight() {
    let mut server = Server::start("echo_multiplex", &["--bind", "127.0.0.1:0", "--delay", "700"]);
    let addr = server.addr.clone();
    let mut client = tcp_client(&addr);
    let reply = stop_in_flight(&mut server, &mut client, b"slow one\n", libc::SIGTERM);
    assert_eq!(reply, b"slow one\n");
    client.expect_eof();
    assert!(TcpStream::connect(&addr).is_err(), "nothing listens after exit");
}

// ---------------------------------------------------------------------------------- echo_udp

#[test]
fn echo_udp_echoes_datagrams() {
    let server = Server::start("echo_udp", &["--bind", "127.0.0.1:0"]);
    let socket = udp_client();
    let mut buf = [0; 9000];
    for payload in [&b"hello\n"[..], b"x", &garbage_line(), &[0u8; 8192]] {
        socket.send_to(payload, &server.addr).unwrap();
        let (n, from) = socket.recv_from(&mut buf).expect("reply");
        assert_eq!(&buf[..n], payload);
        assert_eq!(from.to_string(), server.addr);
    }
}

#[test]
fn echo_udp_with_socat() {
    let server = Server::start("echo_udp", &["--bind", "127.0.0.1:0"]);
    let target = format!("UDP:{}", server.addr);
    let out = run_tool("socat", &["-t1", "-", &target], b"hello\n", IO_TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

#[test]
fn echo_udp_survives_oversized_and_empty_datagrams() {
    let mut server = Server::start("echo_udp", &["--bind", "127.0.0.1:0"]);
    let socket = udp_client();
    // Over max_packet_size (8192): dropped, not answered truncated.
    socket.send_to(&[b'z'; 9000], &server.addr).unwrap();
    socket.send_to(b"", &server.addr).unwrap();
    socket.send_to(b"after\n", &server.addr).unwrap();
    let mut buf = [0; 9000];
    let (n, _) = socket.recv_from(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"after\n", "neither bad datagram got a reply");
    server.assert_alive();
    // The log line was written before the reply; the reader of the server's stderr may still
    // be on its way to it.
    assert!(
        wait_until(IO_TIMEOUT, || server.stderr().contains("truncated")),
        "{}",
        server.stderr()
    );
    assert_no_panic(&server);
}

#[test]
fn echo_udp_sigterm_answers_the_datagram_in_hand() {
    let mut server = Server::start("echo_udp", &["--bind", "127.0.0.1:0", "--delay", "700"]);
    let socket = udp_client();
    socket.send_to(b"in flight\n", &server.addr).unwrap();
    thread::sleep(Duration::from_millis(200));
    server.stop_with(libc::SIGTERM);
    let mut buf = [0; 64];
    let (n, _) = socket.recv_from(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"in flight\n");
}

// -------------------------------------------------------------------------- echo_unix_stream

#[test]
fn echo_unix_stream_echoes_and_removes_its_socket() {
    let dir = TempDir::new("unix-stream");
    let path = dir.join("echo.sock");
    let path = path.to_str().unwrap();
    let mut server = Server::start("echo_unix_stream", &["--bind", path]);
    assert_eq!(server.addr, path);
    let mut a = unix_client(path);
    let mut b = unix_client(path);
    assert_eq!(a.ask("one"), "one");
    assert_eq!(b.ask("two"), "two");
    a.send(&garbage_line());
    assert_eq!(a.line_bytes(), garbage_line());
    drop((a, b));
    server.stop_with(libc::SIGTERM);
    assert!(!std::path::Path::new(path).exists(), "socket file removed");
}

#[test]
fn echo_unix_stream_with_socat_and_nc() {
    let dir = TempDir::new("unix-stream-tools");
    let path = dir.join("echo.sock");
    let path = path.to_str().unwrap();
    let _server = Server::start("echo_unix_stream", &["--bind", path]);
    let out = run_tool(
        "socat",
        &["-", &format!("UNIX-CONNECT:{path}")],
        b"via socat\n",
        IO_TIMEOUT,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via socat\n");
    let out = run_tool("nc", &["-N", "-U", path], b"via nc\n", IO_TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via nc\n");
}

#[test]
fn echo_unix_stream_replaces_a_stale_socket_and_survives_bad_input() {
    let dir = TempDir::new("unix-stream-stale");
    let path = dir.join("echo.sock");
    // A socket file nobody listens on, as a crashed server leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let path = path.to_str().unwrap();
    let mut server = Server::start("echo_unix_stream", &["--bind", path]);
    let mut client = unix_client(path);
    client.send(&vec![b'x'; MAX_LINE * 3]);
    assert_eq!(client.line(), "error: line too long");
    client.expect_eof();
    let mut half = unix_client(path);
    half.send(b"half");
    drop(half);
    assert_eq!(unix_client(path).ask("fine"), "fine");
    server.assert_alive();
    assert_no_panic(&server);
}

#[test]
fn echo_unix_stream_sigint_finishes_the_request_in_flight() {
    let dir = TempDir::new("unix-stream-stop");
    let path = dir.join("echo.sock");
    let path = path.to_str().unwrap();
    let mut server = Server::start("echo_unix_stream", &["--bind", path, "--delay", "700"]);
    let mut client = unix_client(path);
    let reply = stop_in_flight(&mut server, &mut client, b"slow\n", libc::SIGINT);
    assert_eq!(reply, b"slow\n");
    client.expect_eof();
}

// ------------------------------------------------------------------------ echo_unix_datagram

fn bound_datagram(dir: &TempDir, name: &str) -> UnixDatagram {
    let socket = UnixDatagram::bind(dir.join(name)).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

#[test]
fn echo_unix_datagram_echoes_to_named_clients() {
    let dir = TempDir::new("unix-dgram");
    let path = dir.join("echo.sock");
    let path = path.to_str().unwrap();
    let mut server = Server::start("echo_unix_datagram", &["--bind", path]);
    let client = bound_datagram(&dir, "client.sock");
    let mut buf = [0; 9000];
    for payload in [&b"hello\n"[..], &garbage_line()] {
        client.send_to(payload, path).unwrap();
        let n = client.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], payload);
    }
    server.stop_with(libc::SIGTERM);
    assert!(!std::path::Path::new(path).exists(), "socket file removed");
}

#[test]
fn echo_unix_datagram_with_socat() {
    let dir = TempDir::new("unix-dgram-socat");
    let path = dir.join("echo.sock");
    let path = path.to_str().unwrap();
    let _server = Server::start("echo_unix_datagram", &["--bind", path]);
    let client = dir.join("socat.sock");
    let address = format!("UNIX-SENDTO:{path},bind={}", client.display());
    let out = run_tool("socat", &["-t1", "-", &address], b"via socat\n", IO_TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via socat\n");
}

#[test]
fn echo_unix_datagram_survives_unnamed_and_oversized_datagrams() {
    let dir = TempDir::new("unix-dgram-bad");
    let path = dir.join("echo.sock");
    let path = path.to_str().unwrap();
    let mut server = Server::start("echo_unix_datagram", &["--bind", path]);
    let unnamed = UnixDatagram::unbound().unwrap();
    unnamed.send_to(b"who am I", path).unwrap();
    let client = bound_datagram(&dir, "client.sock");
    client.send_to(&[b'z'; 9000], path).unwrap();
    client.send_to(b"after\n", path).unwrap();
    let mut buf = [0; 9000];
    let n = client.recv(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"after\n");
    server.assert_alive();
    assert!(
        wait_until(IO_TIMEOUT, || server.stderr().contains("unnamed")),
        "{}",
        server.stderr()
    );
    assert_no_panic(&server);
}

#[test]
fn echo_unix_datagram_sigterm_answers_the_datagram_in_hand() {
    let dir = TempDir::new("unix-dgram-stop");
    let path = dir.join("echo.sock");
    let path = path.to_str().unwrap();
    let mut server = Server::start("echo_unix_datagram", &["--bind", path, "--delay", "700"]);
    let client = bound_datagram(&dir, "client.sock");
    client.send_to(b"in flight", path).unwrap();
    thread::sleep(Duration::from_millis(200));
    server.stop_with(libc::SIGTERM);
    let mut buf = [0; 64];
    let n = client.recv(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"in flight");
}

// ------------------------------------------------------------------------------- forking_tcp

fn pid_of(reply: &str) -> u32 {
    let rest = reply.strip_prefix("pid ").expect("reply starts with `pid `");
    rest.split(':').next().unwrap().parse().expect("a pid")
}

#[test]
fn forking_tcp_serves_each_connection_in_its_own_child() {
    let server = Server::start("forking_tcp", &["--bind", "127.0.0.1:0"]);
    let mut first = tcp_client(&server.addr);
    let a = first.ask("hello");
    let b = first.ask("again");
    assert!(a.ends_with(": hello"), "{a}");
    assert_eq!(pid_of(&a), pid_of(&b), "one connection, one child");
    let mut second = tcp_client(&server.addr);
    let c = second.ask("other");
    assert_ne!(pid_of(&a), pid_of(&c), "two connections, two children");
    for pid in [pid_of(&a), pid_of(&c)] {
        assert_ne!(pid, server.pid(), "served by a child, not the server");
    }
    assert_no_panic(&server);
}

#[test]
fn forking_tcp_with_nc() {
    let server = Server::start("forking_tcp", &["--bind", "127.0.0.1:0"]);
    let out = run_tool(
        "nc",
        &["-N", "127.0.0.1", port_of(&server.addr)],
        b"one\ntwo\n",
        IO_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with(": one") && lines[1].ends_with(": two"),
        "{text}"
    );
    assert_ne!(pid_of(lines[0]), server.pid());
}

#[test]
fn forking_tcp_survives_bad_input() {
    let mut server = Server::start("forking_tcp", &["--bind", "127.0.0.1:0"]);
    let mut client = tcp_client(&server.addr);
    let reply = client.line_bytes_after(&garbage_line());
    assert!(reply.starts_with(b"pid ") && reply.ends_with(&garbage_line()));
    client.send(&vec![b'x'; MAX_LINE + 1]);
    assert_eq!(client.line(), "error: line too long");
    client.expect_eof();
    for _ in 0..5 {
        let mut early = tcp_client(&server.addr);
        early.send(b"bye");
    }
    let reply = tcp_client(&server.addr).ask("ok");
    assert!(reply.ends_with(": ok"));
    server.assert_alive();
    assert_no_panic(&server);
}

#[test]
fn forking_tcp_sigterm_lets_the_child_finish() {
    let mut server = Server::start("forking_tcp", &["--bind", "127.0.0.1:0", "--delay", "700"]);
    let mut idle = tcp_client(&server.addr);
    // Make sure the idle connection has its child before the stop.
    idle.send(b"warm up\n");
    let mut client = tcp_client(&server.addr);
    thread::sleep(Duration::from_millis(100));
    let reply = stop_in_flight(&mut server, &mut client, b"slow\n", libc::SIGTERM);
    assert!(String::from_utf8_lossy(&reply).ends_with(": slow\n"));
    client.expect_eof();
    let warm = idle.line();
    assert!(warm.ends_with(": warm up"), "{warm}");
    idle.expect_eof();
}

// -------------------------------------------------------------------------------------- chat

#[test]
fn chat_relays_lines_to_the_other_members() {
    let server = Server::start("chat", &["--bind", "127.0.0.1:0"]);
    let mut alice = tcp_client(&server.addr);
    assert!(alice.line().starts_with("* welcome guest-1 (1 online)"));
    let mut bob = tcp_client(&server.addr);
    assert!(bob.line().starts_with("* welcome guest-2 (2 online)"));
    assert_eq!(alice.line(), "* guest-2 joined");

    assert_eq!(alice.ask("/nick alice"), "* guest-1 is now alice");
    assert_eq!(bob.line(), "* guest-1 is now alice");
    alice.send(b"hello bob\n");
    assert_eq!(bob.line(), "alice: hello bob");
    bob.send(b"hi alice\n");
    assert_eq!(alice.line(), "guest-2: hi alice");
    assert_eq!(bob.ask("/who"), "* online: alice guest-2");

    // The sender does not get its own line back: the next thing alice reads is bob leaving.
    bob.send(b"/quit\n");
    bob.expect_eof();
    assert_eq!(alice.line(), "* guest-2 left");
    assert_no_panic(&server);
}

#[test]
fn chat_multiplex_speaks_the_same_protocol() {
    let server = Server::start("chat", &["--bind", "127.0.0.1:0", "--multiplex"]);
    let mut alice = tcp_client(&server.addr);
    assert!(alice.line().starts_with("* welcome guest-1 (1 online)"));
    let mut bob = tcp_client(&server.addr);
    assert!(bob.line().starts_with("* welcome guest-2 (2 online)"));
    assert_eq!(alice.line(), "* guest-2 joined");
    assert_eq!(alice.ask("/nick alice"), "* guest-1 is now alice");
    assert_eq!(bob.line(), "* guest-1 is now alice");
    alice.send(b"hello bob\n");
    assert_eq!(bob.line(), "alice: hello bob");
    assert_eq!(bob.ask("/who"), "* online: alice guest-2");
    bob.send(b"/quit\n");
    bob.expect_eof();
    assert_eq!(alice.line(), "* guest-2 left");
    assert_no_panic(&server);
}

/// Raises this process's soft descriptor limit to its hard limit (servers started afterwards
/// inherit it); returns the new soft limit.
fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a live rlimit that getrlimit fills.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    rl.rlim_cur = rl.rlim_max;
    // SAFETY: `rl` is a valid rlimit whose soft limit equals its hard limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
    rl.rlim_cur
}

#[test]
fn chat_multiplex_broadcasts_to_5000_clients() {
    const CLIENTS: usize = 5000;
    let limit = raise_nofile();
    assert!(
        limit as usize > CLIENTS + 100,
        "the descriptor limit ({limit}) is too low"
    );
    let server = Server::start("chat", &["--bind", "127.0.0.1:0", "--multiplex"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut client = tcp_client(&server.addr);
        let welcome = client.line();
        assert!(
            welcome.starts_with(&format!("* welcome guest-{}", i + 1)),
            "{welcome}"
        );
        clients.push(client);
        assert!(Instant::now() < deadline, "connecting took too long");
    }
    clients[0].send(b"hello all\n");
    for (i, client) in clients.iter_mut().enumerate().skip(1) {
        // Join notices (the first 100 members get some) come before the broadcast.
        loop {
            let line = client.line();
            if line == "guest-1: hello all" {
                break;
            }
            assert!(line.starts_with("* "), "client {i}: {line}");
        }
        assert!(Instant::now() < deadline, "delivery took too long");
    }
    assert_no_panic(&server);
}

#[test]
fn chat_with_nc() {
    let server = Server::start("chat", &["--bind", "127.0.0.1:0"]);
    let mut listener = tcp_client(&server.addr);
    listener.line();
    let out = run_tool(
        "nc",
        &["-N", "127.0.0.1", port_of(&server.addr)],
        b"hi from nc\n",
        IO_TIMEOUT,
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("* welcome guest-2"));
    assert_eq!(listener.line(), "* guest-2 joined");
    assert_eq!(listener.line(), "guest-2: hi from nc");
    assert_eq!(listener.line(), "* guest-2 left");
}

#[test]
fn chat_survives_bad_input() {
    let mut server = Server::start("chat", &["--bind", "127.0.0.1:0"]);
    let mut watcher = tcp_client(&server.addr);
    watcher.line();
    let mut vandal = tcp_client(&server.addr);
    vandal.line();
    assert_eq!(watcher.line(), "* guest-2 joined");
    // Invalid UTF-8 is relayed as text with replacement characters.
    vandal.send(b"bad \xff\xfe bytes\n");
    assert_eq!(watcher.line(), "guest-2: bad \u{fffd}\u{fffd} bytes");
    assert_eq!(
        vandal.ask("/nick <script>"),
        "* nick: 1 to 32 letters, digits, - _ ."
    );
    assert_eq!(vandal.ask("/bogus"), "* commands: /nick NAME, /who, /quit");
    vandal.send(&vec![b'x'; MAX_LINE * 2]);
    assert_eq!(vandal.line(), "error: line too long");
    vandal.expect_eof();
    assert_eq!(watcher.line(), "* guest-2 left");
    // A member vanishing mid-line.
    let mut ghost = tcp_client(&server.addr);
    ghost.line();
    ghost.send(b"unfinished");
    drop(ghost);
    assert_eq!(watcher.line(), "* guest-3 joined");
    // The last line counts even without its newline, as with Python's readline().
    assert_eq!(watcher.line(), "guest-3: unfinished");
    assert_eq!(watcher.line(), "* guest-3 left");
    server.assert_alive();
    assert_no_panic(&server);
}

#[test]
fn chat_sigterm_answers_the_command_in_flight() {
    let mut server = Server::start("chat", &["--bind", "127.0.0.1:0", "--delay", "700"]);
    let mut alice = tcp_client(&server.addr);
    alice.line();
    let mut bob = tcp_client(&server.addr);
    bob.line();
    alice.line();
    let mut reply = stop_in_flight(&mut server, &mut bob, b"/who\n", libc::SIGTERM);
    // Alice, idle, leaves at the stop; bob may hear that before his answer.
    if reply == b"* guest-1 left\n" {
        reply = bob.line_bytes();
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.starts_with("* online: "), "{reply}");
    bob.expect_eof();
    alice.read_to_end();
}

// ---------------------------------------------------------------------------------- kv_store

/// Starts `kv_store` on a free loopback port in `mode`.
fn kv_store(mode: &[&str]) -> Server {
    Server::start_mode("kv_store", &["--bind", "127.0.0.1:0"], mode)
}

/// Threads, and the pool of `--pooled`, share one map: a SET on one connection is seen by a
/// GET on another.
#[test]
fn kv_store_shares_state_between_connections() {
    for mode in MODES {
        let server = kv_store(mode);
        let mut one = tcp_client(&server.addr);
        assert_eq!(one.ask("SET greeting hello world"), "OK");
        assert_eq!(one.ask("SET other 1"), "OK");
        let mut two = tcp_client(&server.addr);
        assert_eq!(two.ask("GET greeting"), "VALUE hello world", "{mode:?}");
        assert_eq!(two.ask("KEYS"), "KEYS greeting other");
        assert_eq!(two.ask("COUNT"), "COUNT 2");
        assert_eq!(two.ask("DEL other"), "DELETED");
        assert_eq!(one.ask("GET other"), "NOT_FOUND", "{mode:?}");
        assert_eq!(one.ask("del other"), "NOT_FOUND", "commands are case-insensitive");
        let pid_one = one.ask("PID");
        assert_eq!(pid_one, two.ask("PID"), "one process");
        assert_eq!(pid_one, format!("PID {}", server.pid()));
        assert_eq!(one.ask("QUIT"), "BYE");
        one.expect_eof();
        // Several commands in one write: answered in order.
        two.send(b"SET a 1\nSET b 2\nGET a\nGET b\nCOUNT\n");
        for expected in ["OK", "OK", "VALUE 1", "VALUE 2", "COUNT 3"] {
            assert_eq!(two.line(), expected, "{mode:?}");
        }
        assert_no_panic(&server);
    }
}

/// `STATS` counts the commands of one connection: per-connection state, not shared, in every
/// model.
#[test]
fn kv_store_counts_commands_per_connection() {
    for extra in [&[][..], &["--forking"][..], &["--pooled"][..]] {
        let mut args = vec!["--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let server = Server::start("kv_store", &args);
        let mut one = tcp_client(&server.addr);
        let mut two = tcp_client(&server.addr);
        assert_eq!(one.ask("SET a 1"), "OK");
        assert_eq!(one.ask("GET a"), "VALUE 1");
        assert_eq!(two.ask("STATS"), "STATS commands=1", "{extra:?}");
        assert_eq!(one.ask("STATS"), "STATS commands=3", "{extra:?}");
        assert_eq!(two.ask("STATS"), "STATS commands=2", "{extra:?}");
        assert_eq!(tcp_client(&server.addr).ask("STATS"), "STATS commands=1");
        assert_no_panic(&server);
    }
}

/// Run-time options on top of the declared ones: `--max-threads 1` serves one connection at a
/// time; a bad value is refused with status 2.
#[test]
fn echo_tcp_max_threads_from_the_command_line() {
    let server = Server::start("echo_tcp", &["--bind", "127.0.0.1:0", "--max-threads", "1"]);
    let mut first = tcp_client(&server.addr);
    assert_eq!(first.ask("one"), "one");
    let mut second = TcpStream::connect(&server.addr).unwrap();
    second.write_all(b"two\n").unwrap();
    second.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 8];
    let waiting = second.read(&mut buf);
    assert!(
        matches!(&waiting, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the only thread is taken: {waiting:?}"
    );
    drop(first);
    second.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut second = Client::from_stream(second);
    assert_eq!(second.line(), "two", "served once the first connection ends");

    let out = run_tool(
        example("echo_tcp").to_str().unwrap(),
        &["--max-threads", "0"],
        b"",
        IO_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-threads"));
}

#[test]
fn kv_store_forking_cannot_share_state() {
    let server = Server::start("kv_store", &["--bind", "127.0.0.1:0", "--forking"]);
    let mut one = tcp_client(&server.addr);
    assert_eq!(one.ask("SET greeting hello"), "OK");
    assert_eq!(
        one.ask("GET greeting"),
        "VALUE hello",
        "the child sees its own SET"
    );
    let pid_one = one.ask("PID");
    assert_eq!(one.ask("QUIT"), "BYE");
    one.expect_eof();
    let mut two = tcp_client(&server.addr);
    assert_eq!(
        two.ask("GET greeting"),
        "NOT_FOUND",
        "the next connection's child starts from the parent's untouched copy"
    );
    let pid_two = two.ask("PID");
    assert_ne!(pid_one, pid_two);
    assert_ne!(pid_one, format!("PID {}", server.pid()));
}

/// `--pooled` keeps sessions in a table by client address: connections that end in every way
/// (QUIT, closed by the client while parked, reset, over-long line) leave no session behind
/// for the next connection, and a long-lived connection keeps its count while 1,100 others
/// come and go (past the table's first sweep, at 1,024 entries).
#[test]
fn kv_store_pooled_sessions_survive_churn() {
    let server = kv_store(&["--pooled"]);
    let mut keeper = tcp_client(&server.addr);
    assert_eq!(keeper.ask("STATS"), "STATS commands=1");
    for i in 0..1100 {
        let mut client = tcp_client(&server.addr);
        assert_eq!(client.ask("STATS"), "STATS commands=1", "connection {i}");
        match i % 4 {
            0 => assert_eq!(client.ask("QUIT"), "BYE"),
            1 => drop(client),
            2 => {
                client.send(b"COUNT");
                client.stream().shutdown(Shutdown::Both).unwrap();
            }
            _ => {
                client.send(&vec![b'S'; MAX_LINE + 1]);
                assert_eq!(client.line(), "error: line too long");
            }
        }
    }
    assert_eq!(keeper.ask("STATS"), "STATS commands=2");
    assert_eq!(keeper.ask("SET still here"), "OK");
    assert_eq!(keeper.ask("STATS"), "STATS commands=4");
    assert_no_panic(&server);
}

#[test]
fn kv_store_refuses_forking_and_pooled_together() {
    let out = run_tool(
        example("kv_store").to_str().unwrap(),
        &["--bind", "127.0.0.1:0", "--forking", "--pooled"],
        b"",
        IO_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--forking") && err.contains("--pooled"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn kv_store_with_nc() {
    for mode in MODES {
        let server = kv_store(mode);
        let port = port_of(&server.addr);
        let out = run_tool("nc", &["-N", "127.0.0.1", port], b"SET a 1\nGET a\n", IO_TIMEOUT);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\nVALUE 1\n", "{mode:?}");
        let out = run_tool("nc", &["-N", "127.0.0.1", port], b"GET a\n", IO_TIMEOUT);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "VALUE 1\n", "{mode:?}");
    }
}

#[test]
fn kv_store_survives_bad_input() {
    for mode in MODES {
        kv_store_survives_bad_input_in(mode);
    }
}

fn kv_store_survives_bad_input_in(mode: &[&str]) {
    let mut server = kv_store(mode);
    let mut client = tcp_client(&server.addr);
    assert!(client.ask("FROB x").starts_with("ERR unknown command"));
    assert_eq!(client.ask(""), "ERR empty command");
    assert!(client.ask("GET").starts_with("ERR a key is"));
    assert!(client
        .ask(&format!("SET {} v", "k".repeat(300)))
        .starts_with("ERR a key is"));
    client.send(&garbage_line());
    assert!(client.line().starts_with("ERR"));
    client.send(b"SET bin \xff\xfe\n");
    assert_eq!(client.line(), "OK");
    assert_eq!(client.ask("GET bin"), "VALUE \u{fffd}\u{fffd}");
    client.send(&vec![b'S'; MAX_LINE + 1]);
    assert_eq!(client.line(), "error: line too long");
    client.expect_eof();
    let mut early = tcp_client(&server.addr);
    early.send(b"SET half");
    drop(early);
    drop(tcp_client(&server.addr));
    let mut after = tcp_client(&server.addr);
    assert!(after.ask("COUNT").starts_with("COUNT "));
    server.assert_alive();
    assert_no_panic(&server);
}

#[test]
fn kv_store_sigterm_finishes_the_command_in_flight() {
    for mode in [&[][..], &["--forking"][..], &["--pooled"][..]] {
        let mut args = vec!["--bind", "127.0.0.1:0", "--delay", "700"];
        args.extend_from_slice(mode);
        let mut server = Server::start("kv_store", &args);
        let mut client = tcp_client(&server.addr);
        let signal = if mode == ["--forking"] {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        let reply = stop_in_flight(&mut server, &mut client, b"SET k v\n", signal);
        assert_eq!(reply, b"OK\n", "{mode:?}");
        client.expect_eof();
    }
}

// ----------------------------------------------------------------------------------- daytime

/// Checks `Tuesday, February 22, 1982 17:37:43-UTC\r\n`.
fn assert_daytime(reply: &[u8]) {
    let text = std::str::from_utf8(reply).expect("ASCII");
    let line = text
        .strip_suffix("-UTC\r\n")
        .unwrap_or_else(|| panic!("{text:?}"));
    let (weekday, rest) = line.split_once(", ").expect("weekday");
    assert!(
        [
            "Sunday",
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday"
        ]
        .contains(&weekday),
        "{text:?}"
    );
    let parts: Vec<&str> = rest.split(' ').collect();
    assert_eq!(parts.len(), 4, "{text:?}");
    assert!(parts[1].ends_with(','), "{text:?}");
    let year: u32 = parts[2].parse().expect("year");
    assert!(year >= 2024, "{text:?}");
    let time: Vec<u32> = parts[3].split(':').map(|p| p.parse().unwrap()).collect();
    assert!(time.len() == 3 && time[0] < 24 && time[1] < 60 && time[2] < 61);
}

#[test]
fn daytime_answers_over_tcp_and_udp_on_one_port() {
    let mut server = Server::start("daytime", &["--bind", "127.0.0.1:0"]);
    let udp_line = server.stdout_line(IO_TIMEOUT).expect("second line");
    assert_eq!(udp_line, format!("listening on {} (udp)", server.addr));

    let mut tcp = tcp_client(&server.addr);
    assert_daytime(&tcp.read_to_end());

    let socket = udp_client();
    socket.send_to(b"what time is it?", &server.addr).unwrap();
    let mut buf = [0; 256];
    let (n, _) = socket.recv_from(&mut buf).expect("reply");
    assert_daytime(&buf[..n]);
    assert_no_panic(&server);
}

#[test]
fn daytime_with_nc_and_socat() {
    let server = Server::start("daytime", &["--bind", "127.0.0.1:0"]);
    let out = run_tool("nc", &["-d", "127.0.0.1", port_of(&server.addr)], b"", IO_TIMEOUT);
    assert_daytime(&out.stdout);
    let target = format!("UDP:{}", server.addr);
    let out = run_tool("socat", &["-t1", "-", &target], b"\n", IO_TIMEOUT);
    assert_daytime(&out.stdout);
}

#[test]
fn daytime_udp_bind_and_bad_input() {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = probe.local_addr().unwrap().to_string();
    drop(probe);
    let mut server = Server::start("daytime", &["--bind", "127.0.0.1:0", "--udp-bind", &udp_addr]);
    let second = server.stdout_line(IO_TIMEOUT).expect("second line");
    assert_eq!(second, format!("listening on {udp_addr} (udp)"));
    // Input is thrown away, however much of it: the line still arrives whole.
    let mut chatty = tcp_client(&server.addr);
    chatty.send(&vec![0xAB; 64 * 1024]);
    assert_daytime(&chatty.read_to_end());
    drop(tcp_client(&server.addr));
    let socket = udp_client();
    socket.send_to(&[0xFF; 9000], &udp_addr).unwrap();
    socket.send_to(b"", &udp_addr).unwrap();
    let mut buf = [0; 256];
    let (n, _) = socket
        .recv_from(&mut buf)
        .expect("the empty datagram is answered");
    assert_daytime(&buf[..n]);
    server.assert_alive();
    assert_no_panic(&server);
}

#[test]
fn daytime_sigterm_finishes_the_request_in_flight() {
    let mut server = Server::start("daytime", &["--bind", "127.0.0.1:0", "--delay", "700"]);
    let mut client = tcp_client(&server.addr);
    thread::sleep(Duration::from_millis(200));
    server.stop_with(libc::SIGTERM);
    assert_daytime(&client.read_to_end());
}

// --------------------------------------------------------------------------------- sql_queue

fn open_queue(path: &std::path::Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |row| row.get(0)).unwrap()
}

fn enqueue(db_path: &str, text: &str) -> String {
    let out = run_tool(
        example("sql_queue").to_str().unwrap(),
        &["--db", db_path, "--enqueue", text],
        b"",
        IO_TIMEOUT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sql_queue_processes_enqueued_rows() {
    let dir = TempDir::new("sql");
    let db_path = dir.join("queue.db");
    let db = db_path.to_str().unwrap();
    assert_eq!(enqueue(db, "hello world"), "enqueued job 1");
    assert_eq!(enqueue(db, "three little words"), "enqueued job 2");
    let mut server = Server::start("sql_queue", &["--db", db]);
    assert_eq!(server.addr, db);
    assert_eq!(
        server.stdout_line(IO_TIMEOUT).as_deref(),
        Some("processed job 1: 2 words, 11 bytes")
    );
    assert_eq!(
        server.stdout_line(IO_TIMEOUT).as_deref(),
        Some("processed job 2: 3 words, 18 bytes")
    );
    // A row added while serving is picked up too.
    assert_eq!(enqueue(db, "late"), "enqueued job 3");
    assert_eq!(
        server.stdout_line(IO_TIMEOUT).as_deref(),
        Some("processed job 3: 1 words, 4 bytes")
    );
    let conn = open_queue(&db_path);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM jobs WHERE status = 'done' AND attempts = 1"
        ),
        3
    );
    server.stop_with(libc::SIGTERM);
}

#[test]
fn sql_queue_two_servers_process_each_row_exactly_once() {
    let dir = TempDir::new("sql-once");
    let db_path = dir.join("queue.db");
    let db = db_path.to_str().unwrap();
    // The first enqueue creates the schema; the test then writes rows directly.
    enqueue(db, "row 1");
    let conn = open_queue(&db_path);
    const ROWS: i64 = 60;
    for i in 2..=ROWS {
        conn.execute("INSERT INTO jobs (payload) VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
    let mut a = Server::start("sql_queue", &["--db", db]);
    let mut b = Server::start("sql_queue", &["--db", db]);
    let done = wait_until(Duration::from_secs(30), || {
        count(&conn, "SELECT count(*) FROM jobs WHERE status = 'done'") == ROWS
    });
    assert!(done, "a: {}\nb: {}", a.stderr(), b.stderr());
    assert_eq!(
        count(&conn, "SELECT count(*) FROM jobs WHERE attempts != 1"),
        0,
        "every row claimed exactly once"
    );
    a.stop_with(libc::SIGTERM);
    b.stop_with(libc::SIGTERM);
    // The stdout of both servers names every job exactly once.
    let mut seen = Vec::new();
    for server in [&mut a, &mut b] {
        while let Some(line) = server.stdout_line(Duration::from_millis(100)) {
            let id = line
                .strip_prefix("processed job ")
                .and_then(|rest| rest.split(':').next())
                .unwrap_or_else(|| panic!("{line}"));
            seen.push(id.parse::<i64>().unwrap());
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=ROWS).collect::<Vec<_>>());
    let workers = count(&conn, "SELECT count(DISTINCT worker) FROM jobs");
    assert!((1..=2).contains(&workers));
}

#[test]
fn sql_queue_survives_odd_payloads_and_bad_paths() {
    let dir = TempDir::new("sql-bad");
    let db_path = dir.join("queue.db");
    let db = db_path.to_str().unwrap();
    enqueue(db, "");
    let conn = open_queue(&db_path);
    conn.execute("INSERT INTO jobs (payload) VALUES (NULL)", [])
        .unwrap();
    conn.execute("INSERT INTO jobs (payload) VALUES (X'FFFE00')", [])
        .unwrap();
    conn.execute("INSERT INTO jobs (payload) VALUES (42)", [])
        .unwrap();
    let mut server = Server::start("sql_queue", &["--db", db]);
    assert!(wait_until(Duration::from_secs(10), || {
        count(
            &conn,
            "SELECT count(*) FROM jobs WHERE status IN ('done', 'failed')",
        ) == 4
    }));
    let status: String = conn
        .query_row("SELECT status FROM jobs WHERE id = 3", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "failed", "a non-UTF-8 payload fails its row only");
    server.assert_alive();
    assert_no_panic(&server);
    server.stop_with(libc::SIGINT);

    // A database that cannot be created: an error exit, not a panic.
    let missing = dir.join("no/such/dir/queue.db");
    let mut bad = Server::spawn("sql_queue", &["--db", missing.to_str().unwrap()], None);
    let status = bad.wait_exit(STARTUP).expect("exits");
    assert!(!status.success());
    assert!(!bad.stderr().contains("panicked"), "{}", bad.stderr());
}

#[test]
fn sql_queue_sigterm_finishes_the_row_in_flight() {
    let dir = TempDir::new("sql-stop");
    let db_path = dir.join("queue.db");
    let db = db_path.to_str().unwrap();
    enqueue(db, "in flight");
    enqueue(db, "left for later");
    let mut server = Server::start("sql_queue", &["--db", db, "--delay", "700"]);
    thread::sleep(Duration::from_millis(200));
    server.stop_with(libc::SIGTERM);
    let conn = open_queue(&db_path);
    let statuses: Vec<String> = conn
        .prepare("SELECT status FROM jobs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(statuses, ["done", "pending"]);
}

// --------------------------------------------------------------------------------- allowlist

/// A TCP connection to `addr` from the local address `from`.
fn tcp_client_from(from: &str, addr: &str) -> Client<TcpStream> {
    let from: SocketAddr = from.parse().unwrap();
    let to: SocketAddr = addr.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None).unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect_timeout(&to.into(), IO_TIMEOUT).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    Client::from_stream(stream)
}

#[test]
fn allowlist_serves_listed_addresses_only() {
    let server = Server::start("allowlist", &["--bind", "127.0.0.1:0", "--allow", "127.0.0.2"]);
    let mut refused = tcp_client(&server.addr);
    refused.send(b"let me in\n");
    refused.expect_eof();
    let mut admitted = tcp_client_from("127.0.0.2:0", &server.addr);
    let welcome = admitted.line();
    assert!(welcome.starts_with("welcome 127.0.0.2:"), "{welcome}");
    assert_eq!(admitted.ask("echo"), "echo");
    assert!(server.stderr().contains("refused 127.0.0.1:"));
    assert_no_panic(&server);
}

#[test]
fn allowlist_default_admits_ipv4_and_ipv6_loopback() {
    let v4 = Server::start("allowlist", &["--bind", "127.0.0.1:0"]);
    assert!(tcp_client(&v4.addr).line().starts_with("welcome 127.0.0.1:"));
    let v6 = Server::start("allowlist", &["--bind", "[::1]:0"]);
    assert!(v6.addr.starts_with("[::1]:"), "{}", v6.addr);
    assert!(tcp_client(&v6.addr).line().starts_with("welcome [::1]:"));
    let v6_only = Server::start("allowlist", &["--bind", "[::1]:0", "--allow", "127.0.0.1"]);
    tcp_client(&v6_only.addr).expect_eof();
}

#[test]
fn allowlist_with_nc() {
    let server = Server::start("allowlist", &["--bind", "127.0.0.1:0", "--allow", "127.0.0.2"]);
    let port = port_of(&server.addr);
    let out = run_tool("nc", &["-N", "127.0.0.1", port], b"hi\n", IO_TIMEOUT);
    assert_eq!(out.stdout, b"", "refused without a reply");
    let out = run_tool(
        "nc",
        &["-N", "-s", "127.0.0.2", "127.0.0.1", port],
        b"hi\n",
        IO_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("welcome 127.0.0.2:") && text.ends_with("\nhi\n"),
        "{text}"
    );
}

#[test]
fn allowlist_rejects_a_bad_list_and_survives_bad_input() {
    let mut bad = Server::spawn("allowlist", &["--allow", "127.0.0.1,not-an-ip"], None);
    let status = bad.wait_exit(STARTUP).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(bad.stderr().contains("not-an-ip"), "{}", bad.stderr());

    let mut server = Server::start("allowlist", &["--bind", "127.0.0.1:0"]);
    let mut client = tcp_client(&server.addr);
    client.line();
    client.send(&garbage_line());
    assert_eq!(client.line_bytes(), garbage_line());
    client.send(&vec![b'x'; MAX_LINE + 1]);
    assert_eq!(client.line(), "error: line too long");
    client.expect_eof();
    drop(tcp_client(&server.addr));
    server.assert_alive();
    assert_no_panic(&server);
}

#[test]
fn allowlist_sigint_finishes_the_request_in_flight() {
    let mut server = Server::start("allowlist", &["--bind", "127.0.0.1:0", "--delay", "700"]);
    let mut client = tcp_client(&server.addr);
    client.line();
    let reply = stop_in_flight(&mut server, &mut client, b"bye\n", libc::SIGINT);
    assert_eq!(reply, b"bye\n");
    let started = Instant::now();
    client.expect_eof();
    assert!(started.elapsed() < STOP);
}
