//! The TLS gallery with real clients: `echo_tls` against `openssl s_client` and `socat
//! OPENSSL:` (over TCP, and over a Unix stream socket), mutual TLS, certificate reload on
//! SIGHUP, and `http_server` over HTTPS against `curl --cacert`. Every certificate is made
//! here (rcgen); no key is committed.

mod examples_support;
mod tls_support;

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use examples_support::*;
use tls_support::{client_config, connect, round_trip, tcp, Ca};

struct Pki {
    dir: TempDir,
    ca: Ca,
    ca_pem: String,
    cert: String,
    key: String,
}

fn pki(tag: &str) -> Pki {
    let dir = TempDir::new(tag);
    let ca = Ca::new("sockserve test CA");
    let ca_pem = ca.write(dir.path(), "ca");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    Pki {
        ca_pem: s(ca_pem),
        cert: s(cert),
        key: s(key),
        dir,
        ca,
    }
}

/// Runs `program` with `args`, sends each line and reads one line of answer (None: the
/// connection ended), then closes its input. Every read is bounded by `IO_TIMEOUT`.
fn converse(program: &str, args: &[&str], lines: &[&str]) -> Vec<Option<String>> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}` ({e}): install it (apt-get install openssl socat)")
        });
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.ok()).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    let mut answers = Vec::new();
    for line in lines {
        let _ = writeln!(stdin, "{line}");
        let _ = stdin.flush();
        answers.push(rx.recv_timeout(IO_TIMEOUT).ok().flatten());
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    answers
}

/// Runs `program` with `args`, sends `line` and closes its input; returns what it printed
/// before it exited (bounded by `IO_TIMEOUT`).
fn refused(program: &str, args: &[&str], line: &str) -> String {
    let out = run_tool(program, args, format!("{line}\n").as_bytes(), IO_TIMEOUT);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn some(lines: &[&str]) -> Vec<Option<String>> {
    lines.iter().map(|l| Some(l.to_string())).collect()
}

fn s_client(addr: &str, pki: &Pki, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "s_client",
        "-quiet",
        "-servername",
        "localhost",
        "-verify_return_error",
    ];
    args.extend(["-CAfile", &pki.ca_pem]);
    args.extend(extra);
    let mut out: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if addr.contains('/') {
        out.extend(["-unix".into(), addr.into()]);
    } else {
        out.extend(["-connect".into(), addr.into()]);
    }
    out
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn openssl_s_client_round_trips_against_echo_tls() {
    let pki = pki("tls-openssl");
    let mut server = Server::start(
        "echo_tls",
        &["--bind", "127.0.0.1:0", "--cert", &pki.cert, "--key", &pki.key],
    );
    let args = s_client(&server.addr, &pki, &[]);
    assert_eq!(
        converse("openssl", &strs(&args), &["hello", "world"]),
        some(&["hello", "world"])
    );
    // TLS 1.2 too (the floor).
    let args = s_client(&server.addr, &pki, &["-tls1_2"]);
    assert_eq!(
        converse("openssl", &strs(&args), &["tls 1.2"]),
        some(&["tls 1.2"])
    );
    assert_no_panic(&server);
    server.stop_with(libc::SIGTERM);
}

#[test]
fn socat_and_s_client_round_trip_over_tcp_and_a_unix_socket() {
    let pki = pki("tls-socat");
    let mut tcp = Server::start(
        "echo_tls",
        &["--bind", "127.0.0.1:0", "--cert", &pki.cert, "--key", &pki.key],
    );
    let socat_args = |addr: &str| {
        vec![
            "-t".to_string(),
            "10".into(),
            "-".into(),
            format!("OPENSSL:{addr},cafile={},commonname=localhost", pki.ca_pem),
        ]
    };
    let out = run_tool("socat", &strs(&socat_args(&tcp.addr)), b"one\ntwo\n", IO_TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    tcp.stop_with(libc::SIGTERM);

    // The Unix stream server: openssl s_client -unix directly; socat (whose OPENSSL address
    // is TCP) through a byte relay, TLS ending at the Unix server.
    let path = pki.dir.join("echo_tls.sock");
    let path = path.to_str().unwrap();
    let mut unix = Server::start(
        "echo_tls",
        &["--bind", path, "--cert", &pki.cert, "--key", &pki.key],
    );
    assert_eq!(unix.addr, path);
    let args = s_client(path, &pki, &[]);
    assert_eq!(
        converse("openssl", &strs(&args), &["over unix"]),
        some(&["over unix"])
    );
    let relay = relay_to_unix(path);
    let out = run_tool("socat", &strs(&socat_args(&relay)), b"relayed\n", IO_TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "relayed\n");
    assert_no_panic(&unix);
    unix.stop_with(libc::SIGTERM);
}

/// The multiplex model over TLS (`echo_multiplex --cert --key`): the handshake driven by the
/// event loop, with OpenSSL's client (TLS 1.3 and 1.2) and socat; a client that stalls its
/// handshake on the one worker does not hold up the others.
#[test]
fn s_client_and_socat_round_trip_against_echo_multiplex_over_tls() {
    let pki = pki("tls-multiplex");
    let mut server = Server::start(
        "echo_multiplex",
        &[
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--cert",
            &pki.cert,
            "--key",
            &pki.key,
        ],
    );
    // Connected, half a handshake at most: it waits on the worker, holding nothing up.
    let mut stalled = std::net::TcpStream::connect(&server.addr).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let args = s_client(&server.addr, &pki, &[]);
    assert_eq!(
        converse("openssl", &strs(&args), &["hello", "multiplexed"]),
        some(&["hello", "multiplexed"])
    );
    let args = s_client(&server.addr, &pki, &["-tls1_2"]);
    assert_eq!(
        converse("openssl", &strs(&args), &["tls 1.2"]),
        some(&["tls 1.2"])
    );
    let socat = [
        "-t".to_string(),
        "10".into(),
        "-".into(),
        format!(
            "OPENSSL:{},cafile={},commonname=localhost",
            server.addr, pki.ca_pem
        ),
    ];
    let out = run_tool("socat", &strs(&socat), b"one\ntwo\n", IO_TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    drop(stalled);
    assert_no_panic(&server);
    server.stop_with(libc::SIGTERM);
}

/// A TCP listener on loopback whose one connection is copied both ways to the Unix socket
/// `path`; returns its address.
fn relay_to_unix(path: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let path = path.to_string();
    thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let unix = UnixStream::connect(&path).unwrap();
        let (mut tcp_r, mut unix_w) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
        let up = thread::spawn(move || {
            let _ = io::copy(&mut tcp_r, &mut unix_w);
            let _ = unix_w.shutdown(std::net::Shutdown::Write);
        });
        let (mut unix_r, mut tcp_w) = (unix, tcp);
        let _ = io::copy(&mut unix_r, &mut tcp_w);
        let _ = tcp_w.shutdown(std::net::Shutdown::Write);
        let _ = up.join();
    });
    addr
}

#[test]
fn mutual_tls_refuses_strangers_and_names_the_client() {
    let pki = pki("tls-mutual");
    let (alice_cert, alice_key) = pki.ca.client("alice").write(pki.dir.path(), "alice");
    let other = Ca::new("another CA");
    let (mallory_cert, mallory_key) = other.client("mallory").write(pki.dir.path(), "mallory");
    let mut server = Server::start(
        "echo_tls",
        &[
            "--bind",
            "127.0.0.1:0",
            "--cert",
            &pki.cert,
            "--key",
            &pki.key,
            "--client-ca",
            &pki.ca_pem,
        ],
    );
    let (ac, ak) = (alice_cert.to_str().unwrap(), alice_key.to_str().unwrap());
    let args = s_client(&server.addr, &pki, &["-cert", ac, "-key", ak]);
    assert_eq!(
        converse("openssl", &strs(&args), &["it is alice"]),
        some(&["it is alice"])
    );
    assert!(
        wait_until(IO_TIMEOUT, || server.stderr().contains("client alice")),
        "the client's name reaches the handler; stderr:\n{}",
        server.stderr()
    );

    // No certificate; a certificate from another CA: no echo.
    let args = s_client(&server.addr, &pki, &[]);
    assert_eq!(refused("openssl", &strs(&args), "anonymous"), "");
    let (mc, mk) = (mallory_cert.to_str().unwrap(), mallory_key.to_str().unwrap());
    let args = s_client(&server.addr, &pki, &["-cert", mc, "-key", mk]);
    assert_eq!(refused("openssl", &strs(&args), "it is mallory"), "");
    assert!(!server.stderr().contains("client mallory"));
    // Still serving the right client.
    let args = s_client(&server.addr, &pki, &["-cert", ac, "-key", ak]);
    assert_eq!(converse("openssl", &strs(&args), &["again"]), some(&["again"]));
    assert_no_panic(&server);
    server.stop_with(libc::SIGTERM);
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_only() {
    let pki = pki("tls-reload");
    let mut server = Server::start(
        "echo_tls",
        &["--bind", "127.0.0.1:0", "--cert", &pki.cert, "--key", &pki.key],
    );
    let config = client_config(&pki.ca, None, &[]);
    let mut live = connect(&config, tcp(&server.addr)).unwrap();
    live.sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let old = live.conn.peer_certificates().unwrap()[0].clone();

    // Rotate: new files in place, then SIGHUP.
    let fresh = pki.ca.server();
    fresh.write(pki.dir.path(), "server");
    server.signal(libc::SIGHUP);
    assert!(
        wait_until(IO_TIMEOUT, || {
            let conn = connect(&config, tcp(&server.addr)).unwrap();
            conn.conn.peer_certificates().unwrap()[0] == fresh.der()
        }),
        "new connections get the new certificate; stderr:\n{}",
        server.stderr()
    );
    assert_ne!(old, fresh.der());
    assert_eq!(
        round_trip(&mut live, "old certificate, still served\n").unwrap(),
        "old certificate, still served\n"
    );
    let stderr = server.stderr();
    assert!(stderr.contains("SIGHUP: reloaded"), "{stderr}");
    // SIGHUP means a certificate reload here, not a process reload as well.
    assert!(!stderr.contains("new process"), "{stderr}");
    assert_no_panic(&server);
    server.stop_with(libc::SIGTERM);
}

/// `http_server` over HTTPS (with `extra` flags) serving `files` (name, contents) from a
/// directory of its own; returns the server and its port.
fn https_server(pki: &Pki, extra: &[&str], files: &[(&str, &str)]) -> (Server, String) {
    let www = pki.dir.join("www");
    std::fs::create_dir(&www).unwrap();
    for (name, text) in files {
        std::fs::write(www.join(name), text).unwrap();
    }
    let mut args = extra.to_vec();
    args.extend([
        "--bind",
        "127.0.0.1:0",
        "--directory",
        www.to_str().unwrap(),
        "--tls-cert",
        &pki.cert,
        "--tls-key",
        &pki.key,
    ]);
    let server = Server::start("http_server", &args);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    (server, port)
}

/// `curl` with `args` then `urls` (bounded by 10 s); `trusting` adds the test CA and the
/// `localhost` name for `port`.
fn curl(pki: &Pki, port: &str, trusting: bool, args: &[&str], urls: &[String]) -> std::process::Output {
    let resolve = format!("localhost:{port}:127.0.0.1");
    let mut all = vec!["--silent", "--max-time", "10"];
    if trusting {
        all.extend(["--cacert", &pki.ca_pem]);
    }
    all.extend(["--resolve", &resolve]);
    all.extend(args);
    all.extend(urls.iter().map(String::as_str));
    run_tool("curl", &all, b"", IO_TIMEOUT)
}

/// `http_server --pooled` over HTTPS: the handshake on the event loop, and keep-alive: curl
/// fetches two files over one TLS connection (its second transfer makes no new connection),
/// parked in the event loop between them.
#[test]
fn curl_keeps_one_https_connection_for_two_files_from_the_pooled_http_server() {
    let pki = pki("tls-https-pooled");
    let files = [("a.txt", "first over https\n"), ("b.txt", "second over https\n")];
    let (mut server, port) = https_server(&pki, &["--pooled"], &files);
    let (a, b) = (
        format!("https://localhost:{port}/a.txt"),
        format!("https://localhost:{port}/b.txt"),
    );
    let counted = [
        "--show-error",
        "--fail",
        "--write-out",
        "[connects=%{num_connects} alpn=%{http_version}]\n",
    ];
    let out = curl(&pki, &port, true, &counted, &[a, b.clone()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "first over https\n[connects=1 alpn=1.1]\nsecond over https\n[connects=0 alpn=1.1]\n",
        "the second file comes over the first connection"
    );
    // Plain HTTP on the HTTPS port gets no page, and the server goes on.
    let out = curl(
        &pki,
        &port,
        false,
        &[],
        &[format!("http://127.0.0.1:{port}/a.txt")],
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("over https"));
    let out = curl(&pki, &port, true, &["--fail"], &[b]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second over https\n");
    assert_no_panic(&server);
    server.stop_with(libc::SIGTERM);
}

#[test]
fn curl_fetches_a_file_over_https_from_http_server() {
    let pki = pki("tls-https");
    let (mut server, port) = https_server(&pki, &[], &[("hello.txt", "hello over https\n")]);
    let url = format!("https://localhost:{port}/hello.txt");
    let out = curl(
        &pki,
        &port,
        true,
        &["--show-error", "--fail"],
        std::slice::from_ref(&url),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over https\n");
    // Plain HTTP on the HTTPS port gets no page.
    let out = curl(
        &pki,
        &port,
        false,
        &[],
        &[format!("http://127.0.0.1:{port}/hello.txt")],
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hello over https"));
    // And a client that does not trust the CA is refused by curl itself.
    let out = curl(&pki, &port, false, &[], &[url]);
    assert!(!out.status.success());
    assert_no_panic(&server);
    server.stop_with(libc::SIGTERM);
}
