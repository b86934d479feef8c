//! Production deployment, black box: the gallery's `allowlist` behind a real HAProxy speaking
//! the PROXY protocol (v2 and v1), PROXY headers sent by hand (valid, garbled, missing), and
//! `echo_tcp` socket-activated by `systemd-socket-activate`. Real tools on loopback: haproxy,
//! nc, socat (HAProxy's stats socket), systemd-socket-activate (`scripts/test` installs them).

mod examples_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use examples_support::*;

/// A loopback port nobody listens on right now (for the tools that take a port number).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `nc -N [-s SOURCE] 127.0.0.1 PORT` with `input`; what it read.
fn nc(source: Option<&str>, port: u16, input: &[u8]) -> String {
    let port = port.to_string();
    let mut args = vec!["-N"];
    if let Some(source) = source {
        args.extend(["-s", source]);
    }
    args.extend(["127.0.0.1", port.as_str()]);
    let out = run_tool("nc", &args, input, IO_TIMEOUT);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running HAProxy with its own configuration, killed on drop.
struct Haproxy {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl Haproxy {
    /// Balances `127.0.0.1:PORT` over `backends`, each sent the PROXY header `send` (`send-proxy`
    /// or `send-proxy-v2`), with health checks every 100 ms.
    fn start(backends: &[&str], send: &str) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let port = free_port();
        let mut config = format!(
            "global\n    stats socket {}/stats.sock mode 600 level admin\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n    retries 3\n    option redispatch 1\n\
             listen allow\n    bind 127.0.0.1:{port}\n    balance roundrobin\n",
            dir.path().display()
        );
        for (i, backend) in backends.iter().enumerate() {
            config.push_str(&format!(
                "    server s{i} {backend} {send} check check-send-proxy inter 100ms fall 1 rise 1\n"
            ));
        }
        Haproxy::run(dir, port, config, backends.len())
    }

    /// DEPLOY.md's HAProxy configuration, on a free port, with its stats socket in a temporary
    /// directory and `backends` in place of its two servers' addresses.
    fn from_deploy_md(backends: [&str; 2]) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let port = free_port();
        let config = deploy_block("# /etc/haproxy/haproxy.cfg")
            .replace(
                "/run/haproxy/sockserve.sock",
                &format!("{}/stats.sock", dir.path().display()),
            )
            .replace("127.0.0.1:9005", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:9101", backends[0])
            .replace("127.0.0.1:9102", backends[1])
            .replace("listen sockserve", "listen allow");
        Haproxy::run(dir, port, config, 2)
    }

    fn run(dir: TempDir, port: u16, config: String, backends: usize) -> Haproxy {
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (apt-get install haproxy)");
        let haproxy = Haproxy { child, dir, port };
        let deadline = Instant::now() + STARTUP;
        while haproxy.up_servers() < backends {
            assert!(Instant::now() < deadline, "HAProxy did not see its servers up");
            thread::sleep(Duration::from_millis(50));
        }
        haproxy
    }

    /// `show stat` on the stats socket: (server name, status, total sessions) per server.
    fn servers(&self) -> Vec<(String, String, u64)> {
        let socket = format!("UNIX-CONNECT:{}/stats.sock", self.dir.path().display());
        let out = run_tool("socat", &["-", socket.as_str()], b"show stat\n", IO_TIMEOUT);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("allow,s"))
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[1].to_string(), f[17].to_string(), f[7].parse().unwrap_or(0))
            })
            .collect()
    }

    fn up_servers(&self) -> usize {
        self.servers()
            .iter()
            .filter(|(_, status, _)| status == "UP")
            .count()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two `allowlist --proxy-protocol --allow 127.0.0.2` behind HAProxy sending `send`: a client
/// from 127.0.0.2 is served (and seen as itself), one from 127.0.0.1 refused, and the
/// connections spread over both instances.
fn allowlist_behind_haproxy(send: &str) {
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--allow",
        "127.0.0.2",
    ];
    let a = Server::start("allowlist", &args);
    let b = Server::start("allowlist", &args);
    let haproxy = match send {
        // DEPLOY.md's configuration as it stands.
        "send-proxy-v2" => Haproxy::from_deploy_md([&a.addr, &b.addr]),
        _ => Haproxy::start(&[&a.addr, &b.addr], send),
    };

    let served = nc(Some("127.0.0.2"), haproxy.port, b"hi\n");
    assert!(served.starts_with("welcome 127.0.0.2:"), "{served:?}");
    assert!(served.ends_with("hi\n"), "{served:?}");
    let refused = nc(None, haproxy.port, b"hi\n");
    assert_eq!(refused, "", "a client from 127.0.0.1 gets no byte");

    let before: Vec<u64> = haproxy.servers().iter().map(|s| s.2).collect();
    for i in 0..20 {
        let line = format!("ping {i}\n");
        let reply = nc(Some("127.0.0.2"), haproxy.port, line.as_bytes());
        assert!(reply.ends_with(&line), "{reply:?}");
    }
    let after: Vec<u64> = haproxy.servers().iter().map(|s| s.2).collect();
    let spread: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(spread.len(), 2);
    assert!(
        spread.iter().all(|&n| n >= 5),
        "sessions per instance: {spread:?}"
    );
    for server in [&a, &b] {
        assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
    }
}

#[test]
fn allowlist_behind_haproxy_proxy_v2() {
    allowlist_behind_haproxy("send-proxy-v2");
}

#[test]
fn allowlist_behind_haproxy_proxy_v1() {
    allowlist_behind_haproxy("send-proxy");
}

/// Sends `bytes` to `addr`, then reads until the server closes (or [`IO_TIMEOUT`]); a reset
/// counts as the end.
fn exchange(addr: &str, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // A server that refuses the connection may close (even reset) it before all is sent.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

#[test]
fn proxy_headers_by_hand_valid_garbled_missing() {
    let mut server = Server::start(
        "allowlist",
        &[
            "--bind",
            "127.0.0.1:0",
            "--proxy-protocol",
            "--allow",
            "192.0.2.7,2001:db8::7",
        ],
    );
    // v1, an allowed original client: welcomed as that client; the bytes after the header are
    // the client's.
    let reply = exchange(&server.addr, b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 9005\r\nhi\n");
    assert_eq!(reply, "welcome 192.0.2.7:40000\nhi\n");
    let reply = exchange(&server.addr, b"PROXY TCP6 2001:db8::7 ::1 40001 9005\r\nsix\n");
    assert_eq!(reply, "welcome [2001:db8::7]:40001\nsix\n");
    // v2, IPv4, allowed.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[192, 0, 2, 7, 127, 0, 0, 1, 0x9c, 0x41, 0x23, 0x2d]);
    v2.extend_from_slice(b"two\n");
    assert_eq!(exchange(&server.addr, &v2), "welcome 192.0.2.7:40001\ntwo\n");
    // v2, a client not on the list: refused by verify_request.
    let mut other = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    other.extend_from_slice(&[10, 9, 9, 9, 127, 0, 0, 1, 0x9c, 0x41, 0x23, 0x2d]);
    other.extend_from_slice(b"no\n");
    assert_eq!(exchange(&server.addr, &other), "");
    // Missing, garbled, too long: closed without a byte, reported to handle_error.
    assert_eq!(exchange(&server.addr, b"hi there, no header\n"), "");
    assert_eq!(
        exchange(&server.addr, b"PROXY TCP4 300.1.1.1 1.1.1.1 1 2\r\nx\n"),
        ""
    );
    assert_eq!(exchange(&server.addr, &[b'A'; 200]), "");
    let mut long = b"PROXY TCP4 ".to_vec();
    long.extend_from_slice(&[b'1'; 150]);
    assert_eq!(exchange(&server.addr, &long), "");
    server.stop_with(libc::SIGTERM);
    let stderr = server.stderr();
    assert!(
        stderr.contains("does not start with a PROXY protocol header"),
        "{stderr}"
    );
    assert!(stderr.contains("garbled PROXY v1 header"), "{stderr}");
    assert!(stderr.contains("longer than 107 bytes"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The fenced block of DEPLOY.md whose first line is `first`.
fn deploy_block(first: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/DEPLOY.md")).unwrap();
    let mut blocks = text.split("```").skip(1).step_by(2);
    let block = blocks
        .find(|b| b.lines().nth(1) == Some(first))
        .unwrap_or_else(|| panic!("DEPLOY.md has no block starting with {first:?}"));
    block.split_once('\n').unwrap().1.to_string()
}

/// The value of `key=` in a unit file.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {unit}"))
        .to_string()
}

#[test]
fn deploy_md_systemd_units_verify_and_serve() {
    let dir = TempDir::new("units");
    let echo = example("echo_tcp");
    let socket = deploy_block("# /etc/systemd/system/sockserve-echo.socket");
    let service = deploy_block("# /etc/systemd/system/sockserve-echo.service")
        .replace("/usr/local/bin/echo_tcp", echo.to_str().unwrap());
    let socket_path = dir.join("sockserve-echo.socket");
    let service_path = dir.join("sockserve-echo.service");
    std::fs::write(&socket_path, &socket).unwrap();
    std::fs::write(&service_path, &service).unwrap();
    let out = run_tool(
        "systemd-analyze",
        &[
            "verify",
            socket_path.to_str().unwrap(),
            service_path.to_str().unwrap(),
        ],
        b"",
        IO_TIMEOUT,
    );
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );

    // Started as systemd starts it: the socket's address and name, the service's command line,
    // a notification socket for Type=notify.
    assert_eq!(unit_value(&service, "Type"), "notify");
    let listen = unit_value(&socket, "ListenStream");
    let port = free_port();
    let listen = listen.replace(":9000", &format!(":{port}"));
    let fdname = format!("--fdname={}", unit_value(&socket, "FileDescriptorName"));
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let setenv = format!("NOTIFY_SOCKET={}", notify_path.display());
    let watchdog_secs: u64 = unit_value(&service, "WatchdogSec").parse().unwrap();
    let watchdog = format!("WATCHDOG_USEC={}", watchdog_secs * 1_000_000);
    let exec_start = unit_value(&service, "ExecStart");
    let mut args = vec![
        "-l",
        listen.as_str(),
        fdname.as_str(),
        "-E",
        setenv.as_str(),
        "-E",
        watchdog.as_str(),
    ];
    args.extend(exec_start.split_whitespace());
    let mut child = Command::new("systemd-socket-activate")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (apt-get install systemd)");
    let deadline = Instant::now() + STARTUP;
    let reply = loop {
        let reply = nc(None, port, b"unit\n");
        if !reply.is_empty() || Instant::now() > deadline {
            break reply;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(reply, "unit\n");
    let mut buf = [0u8; 128];
    let n = notify.recv(&mut buf).unwrap();
    // Ready, on the socket it was given (systemd ignores the X_ variable).
    assert_eq!(&buf[..n], b"READY=1\nX_SOCKSERVE_ADOPTED=1\n");
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"WATCHDOG=1\n", "the watchdog is fed from READY on");
    // SAFETY: kill(2) with the pid of the child started above, not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let stopping = (0..10).any(|_| {
        let n = notify.recv(&mut buf).unwrap();
        &buf[..n] == b"STOPPING=1\n"
    });
    assert!(stopping, "STOPPING=1 after SIGTERM");
    let status = wait_child(&mut child, STOP).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("echo_tcp did not stop on SIGTERM");
    });
    assert!(status.success(), "{status}");
}

/// In both modes of `echo_tcp` (threading, `--pooled`): the declared server on the inherited
/// socket (`support::bind_declared`).
#[test]
fn echo_tcp_socket_activated_by_systemd_socket_activate() {
    for mode in MODES {
        socket_activated(mode);
    }
}

fn socket_activated(mode: &[&str]) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new("systemd-socket-activate")
        .args([
            "-l",
            listen.as_str(),
            example("echo_tcp").to_str().unwrap(),
            "--bind",
            "systemd",
        ])
        .args(mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (apt-get install systemd)");
    // systemd-socket-activate listens first and starts the server at the first connection.
    let deadline = Instant::now() + STARTUP;
    while TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate does not listen"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let reply = nc(None, port, b"activated\n");
    assert_eq!(reply, "activated\n", "{mode:?}");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(
        first.trim(),
        format!("listening on {listen}"),
        "the inherited socket's address"
    );
    // SIGTERM reaches the server (systemd-socket-activate execs it): a graceful exit.
    // SAFETY: kill(2) with the pid of the child started above, not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = wait_child(&mut child, STOP).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("echo_tcp did not stop on SIGTERM");
    });
    assert!(status.success(), "{status}");
}

/// One connection through the proxy from 127.0.0.2: sends `ping N`, reads to the end; whether
/// the reply was exactly the welcome and the echo (no reset, nothing lost).
fn ping_from_127_0_0_2(port: u16, n: usize) -> Result<(), String> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    socket
        .bind(&"127.0.0.2:0".parse::<std::net::SocketAddr>().unwrap().into())
        .map_err(|e| e.to_string())?;
    socket
        .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .map_err(|e| format!("connect: {e}"))?;
    let stream: TcpStream = socket.into();
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let line = format!("ping {n}\n");
    let reply = half_close_exchange(stream, &line)?;
    let expected = format!("welcome {local}\n{line}");
    if reply == expected {
        Ok(())
    } else {
        Err(format!("reply {reply:?}, expected {expected:?}"))
    }
}

/// Under load through HAProxy (v2), one of two instances is stopped with SIGTERM: it exits 0,
/// HAProxy moves to the other, and no client sees a reset, a refusal or a lost reply.
#[test]
fn sigterm_one_instance_under_load_behind_haproxy_loses_nothing() {
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--allow",
        "127.0.0.2",
    ];
    let mut a = Server::start("allowlist", &args);
    let b = Server::start("allowlist", &args);
    let haproxy = Haproxy::start(&[&a.addr, &b.addr], "send-proxy-v2");
    let port = haproxy.port;
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 150;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let done = std::sync::Arc::clone(&done);
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut failures = Vec::new();
                for i in 0..PER_CLIENT {
                    if Instant::now() > deadline {
                        break;
                    }
                    if let Err(e) = ping_from_127_0_0_2(port, c * PER_CLIENT + i) {
                        failures.push(e);
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();
    // A quarter of the way in, instance a is stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(std::sync::atomic::Ordering::SeqCst) < CLIENTS * PER_CLIENT / 4 {
        assert!(Instant::now() < deadline, "the load did not get going");
        thread::sleep(Duration::from_millis(5));
    }
    a.signal(libc::SIGTERM);
    let failures: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let total = done.load(std::sync::atomic::Ordering::SeqCst);
    let status = a.wait_exit(STOP).expect("instance a did not exit after SIGTERM");
    let sessions = haproxy.servers();
    println!(
        "connections: {total}, failed: {}, sessions per instance: {sessions:?}",
        failures.len()
    );
    assert!(status.success(), "{status}; {}", a.stderr());
    assert_eq!(total, CLIENTS * PER_CLIENT);
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(!b.stderr().contains("panicked"));
}
