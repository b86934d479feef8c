//! HTTP benchmark: `examples/http_server` in its pooled mode (`--pooled`, HTTP/1.1
//! keep-alive: idle connections parked in epoll, requests on a bounded pool) and in its
//! default threading mode (a thread per connection, `Connection: close` after every response,
//! so the client reconnects for each request), against CPython's `http.server` with HTTP/1.1
//! keep-alive (`ThreadingHTTPServer`, a thread per connection), all in the same run, each
//! serving the same small static file from a temporary directory, driven by `wrk` over
//! 127.0.0.1.
//!
//! CPython runs twice: `py-http` is `benches/peers/http_server.py`, the stock server with
//! TCP_NODELAY and a listen backlog of 1024 (the settings every server of the echo benchmark
//! gets; the script says why each matters), and `py-http-stock` is the stock command itself,
//! `python3 -m http.server --protocol HTTP/1.1`.
//!
//! ```sh
//! cargo bench --bench http              # full run: 3 repeats of 5 s per server
//! cargo bench --bench http -- --quick   # quick check: 1 repeat of 2 s per server
//! cargo bench --bench http -- --help    # options
//! ```
//!
//! `wrk` must be installed (Debian: `apt-get install -y wrk`). The harness builds the example
//! (`cargo build --release --example http_server`, with the cargo and target directory of this
//! bench) unless `--http-server PATH` names a binary. Every server runs in a process group of
//! its own, killed at the end of its run (and with the harness, `PR_SET_PDEATHSIG`). Each run
//! is bounded: `wrk -d` fixes its length, and a `wrk` still running well past it is killed.
//!
//! Without `--bench` in its arguments (as under `cargo test --benches`) the binary only prints
//! how to run it, so tests never generate load.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The static file every server serves, and its size by default.
const FILE: &str = "file.txt";
const FILE_SIZE: usize = 1024;
/// How long a server may take to print its address.
const STARTUP: Duration = Duration::from_secs(20);
/// Bound on each read and write of the check request.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `wrk` may run past its `-d` before it is killed.
const WRK_GRACE: Duration = Duration::from_secs(20);
/// A run is noisy when the rest of the machine used more than this share of a core.
const NOISY: f64 = 0.25;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// `http_server --pooled`.
    Pooled,
    /// `http_server` (threading, the default).
    Threading,
    /// `benches/peers/http_server.py`: the stock server with TCP_NODELAY and backlog 1024.
    Python,
    /// `python3 -m http.server --protocol HTTP/1.1`.
    PythonStock,
}

const SERVERS: [Server; 4] = [
    Server::Pooled,
    Server::Threading,
    Server::Python,
    Server::PythonStock,
];

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Pooled => "ss-pooled",
            Server::Threading => "ss-threading",
            Server::Python => "py-http",
            Server::PythonStock => "py-http-stock",
        }
    }
}

fn python_script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/http_server.py")
}

struct Config {
    quick: bool,
    repeat: usize,
    /// `wrk -d`, whole seconds.
    duration: u64,
    /// An unmeasured `wrk` run on each fresh server first, whole seconds (0: none).
    warmup: u64,
    connections: usize,
    threads: usize,
    size: usize,
    servers: Vec<Server>,
    http_server: Option<PathBuf>,
    /// Total time the harness may wait for a quiet machine before runs.
    wait_budget: Duration,
}

/// One measured `wrk` run.
#[derive(Clone, Debug)]
struct Sample {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx responses.
    errors: u64,
    /// Server CPU per request, µs.
    srv_cpu_us: f64,
    /// Server and `wrk` CPU, fractions of one core.
    srv_util: f64,
    wrk_util: f64,
    /// The rest of the machine's busy CPU, fraction of one core: the noise indicator.
    other_util: f64,
}

impl Sample {
    fn quiet(&self) -> bool {
        self.other_util <= NOISY
    }
}

// ---------------------------------------------------------------------------
// Servers.

/// A temporary directory (the served `www/` and the servers' logs), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(size: usize) -> io::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("sockserve-http-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www"))?;
        std::fs::create_dir_all(dir.join("logs"))?;
        // Printable, so every server sends it as text/plain without surprises.
        let body: Vec<u8> = (0..size)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n"[i % 37])
            .collect();
        std::fs::write(dir.join("www").join(FILE), body)?;
        Ok(Scratch(dir))
    }
    fn www(&self) -> PathBuf {
        self.0.join("www")
    }
    fn log(&self, server: Server) -> PathBuf {
        self.0.join("logs").join(format!("{}.log", server.name()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server. Dropping it kills its process group and reaps it.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: signals our own child's process group.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn command(server: Server, exe: &Path, www: &Path) -> Command {
    match server {
        Server::Pooled | Server::Threading => {
            let mut c = Command::new(exe);
            if server == Server::Pooled {
                c.arg("--pooled");
            }
            c.arg("--bind").arg("127.0.0.1:0").arg("--directory").arg(www);
            // The default level, set so that a RUST_LOG of the caller does not change the
            // work per request: one access-log line each, as CPython's server writes.
            c.env("RUST_LOG", "info");
            c
        }
        Server::Python => {
            let mut c = Command::new("python3");
            c.arg(python_script())
                .arg("--bind")
                .arg("127.0.0.1:0")
                .arg("--directory")
                .arg(www);
            c
        }
        Server::PythonStock => {
            let mut c = Command::new("python3");
            // -u: the "Serving HTTP on" line is not held in a pipe buffer.
            c.args([
                "-u",
                "-m",
                "http.server",
                "--protocol",
                "HTTP/1.1",
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(www)
            .arg("0");
            c
        }
    }
}

/// The address in a server's first stdout line: `listening on ADDR` (the examples) or
/// `Serving HTTP on HOST port PORT (...) ...` (CPython).
fn parse_address(line: &str) -> Option<SocketAddr> {
    let line = line.trim();
    if let Some(addr) = line.strip_prefix("listening on ") {
        return addr.parse().ok();
    }
    let rest = line.strip_prefix("Serving HTTP on ")?;
    let mut words = rest.split_whitespace();
    let host = words.next()?;
    if words.next()? != "port" {
        return None;
    }
    let port: u16 = words.next()?.parse().ok()?;
    let host: std::net::IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(host, port))
}

/// The first lines of a server's log (where a server that refuses its command line says
/// why), for an error message.
fn log_head(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let head: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).take(3).collect();
    if head.is_empty() {
        "(nothing on stderr)".into()
    } else {
        head.join(" | ")
    }
}

fn start(server: Server, exe: &Path, scratch: &Scratch) -> Result<Running, String> {
    let log = scratch.log(server);
    let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = command(server, exe, &scratch.www());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; the server dies with the harness.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so a chatty server never blocks on a full pipe.
        let _ = io::copy(&mut r, &mut io::sink());
    });
    let mut running = Running {
        child,
        addr: "127.0.0.1:0".parse().expect("address"),
    };
    let line = rx.recv_timeout(STARTUP).unwrap_or_default();
    match parse_address(&line) {
        Some(addr) if addr.ip().is_loopback() => {
            running.addr = addr;
            Ok(running)
        }
        Some(addr) => Err(format!("not loopback: {addr}")),
        None => {
            // Give a failing server a moment to finish writing its complaint.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = running.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(format!(
                "did not start (first stdout line {:?}); stderr: {}",
                line.trim(),
                log_head(&scratch.log(server))
            ))
        }
    }
}

/// What one response of the check looked like.
struct Response {
    status: u16,
    /// The server said `Connection: close`.
    close: bool,
    body: Vec<u8>,
}

/// Reads one response (head, then a body of `Content-Length` bytes); `None` on a clean EOF
/// before any byte.
fn read_response(conn: &mut BufReader<TcpStream>) -> Result<Option<Response>, String> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = conn
            .by_ref()
            .take(8192)
            .read_until(b'\n', &mut head)
            .map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return match before {
                0 => Ok(None),
                _ => Err("the connection closed in the middle of a response head".into()),
            };
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
        if head.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let length = length.ok_or("no Content-Length")?;
    if length > 16 * 1024 * 1024 {
        return Err(format!("Content-Length {length} is too large"));
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok(Some(Response { status, close, body }))
}

/// Fetches the file twice on one HTTP/1.1 connection and checks the answers; returns whether
/// the server kept the connection open for the second request.
fn check(addr: SocketAddr, expected: &[u8]) -> Result<bool, String> {
    let stream = TcpStream::connect_timeout(&addr, CHECK_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(CHECK_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CHECK_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let request = format!("GET /{FILE} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    for round in 0..2 {
        if writer.write_all(request.as_bytes()).is_err() && round > 0 {
            return Ok(false);
        }
        let response = match read_response(&mut reader) {
            Ok(Some(response)) => response,
            Ok(None) if round > 0 => return Ok(false),
            Ok(None) => return Err("closed without a response".into()),
            Err(_) if round > 0 => return Ok(false),
            Err(e) => return Err(e),
        };
        if response.status != 200 {
            return Err(format!("GET /{FILE}: status {}", response.status));
        }
        if response.body != expected {
            return Err(format!(
                "GET /{FILE}: {} bytes that are not the file ({} bytes)",
                response.body.len(),
                expected.len()
            ));
        }
        if response.close {
            return Ok(false);
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------
// wrk.

struct WrkOutput {
    rate: f64,
    requests: u64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// A latency as wrk prints it (`635.00us`, `2.02ms`, `1.10s`), in µs.
fn parse_latency(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

fn parse_wrk(out: &str) -> Result<WrkOutput, String> {
    let mut rate = None;
    let mut requests = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0;
    for line in out.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rate = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = parse_latency(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = parse_latency(v.trim());
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse::<u64>().ok());
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // connect A, read B, write C, timeout D
            errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    match (rate, requests, p50, p99) {
        (Some(rate), Some(requests), Some(p50_us), Some(p99_us)) => Ok(WrkOutput {
            rate,
            requests,
            p50_us,
            p99_us,
            errors,
        }),
        _ => Err(format!("cannot read wrk's output: {out:?}")),
    }
}

/// Runs `wrk` for `secs` seconds against the file; killed if it runs [`WRK_GRACE`] longer.
fn wrk(cfg: &Config, addr: SocketAddr, secs: u64) -> Result<WrkOutput, String> {
    let url = format!("http://{addr}/{FILE}");
    let mut child = Command::new("wrk")
        .arg("-t")
        .arg(cfg.threads.to_string())
        .arg("-c")
        .arg(cfg.connections.to_string())
        .arg("-d")
        .arg(format!("{secs}s"))
        .args(["--timeout", "2s", "--latency"])
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("wrk: {e} (Debian: apt-get install -y wrk)"))?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + Duration::from_secs(secs) + WRK_GRACE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        None => Err(format!(
            "wrk ran over {}s and was killed",
            secs + WRK_GRACE.as_secs()
        )),
        Some(s) if !s.success() => Err(format!("wrk failed ({s}): {}", err.trim())),
        Some(_) => parse_wrk(&out),
    }
}

// ---------------------------------------------------------------------------
// CPU accounting.

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// CPU seconds of a process (utime + stime + reaped children's), from /proc/PID/stat.
fn process_cpu(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0.0;
    };
    // rest[0] is field 3 (state): field n is f[n - 3].
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    let at = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    (at(14) + at(15) + at(16) + at(17)) as f64 / clock_ticks()
}

/// CPU seconds of this process's reaped children (`wrk`, once waited for).
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills a local struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Busy CPU seconds of the whole machine from /proc/stat:
/// user + nice + system + irq + softirq + steal.
fn machine_busy() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) as f64 / clock_ticks()
}

/// Waits (bounded by what is left of `budget`) until the rest of the machine uses less than
/// half of [`NOISY`] of a core, sampled over 300 ms. Returns whether it is quiet.
fn wait_quiet(budget: &mut Duration) -> bool {
    let t0 = Instant::now();
    let quiet = loop {
        let b0 = machine_busy();
        let s0 = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        let busy = (machine_busy() - b0) / s0.elapsed().as_secs_f64();
        if busy <= NOISY / 2.0 {
            break true;
        }
        if t0.elapsed() >= *budget {
            break false;
        }
        std::thread::sleep(Duration::from_millis(700));
    };
    let waited = t0.elapsed();
    *budget = budget.saturating_sub(waited);
    if waited > Duration::from_secs(1) {
        eprintln!(
            "  waited {:.0}s for the machine to quiet down ({})",
            waited.as_secs_f64(),
            if quiet { "quiet" } else { "gave up" }
        );
    }
    quiet
}

// ---------------------------------------------------------------------------
// Runs.

/// One run: a fresh server, the check, an unmeasured warm-up, the measured `wrk`.
fn run(
    cfg: &Config,
    server: Server,
    exe: &Path,
    scratch: &Scratch,
    expected: &[u8],
) -> Result<(Sample, bool), String> {
    let srv = start(server, exe, scratch)?;
    let keep_alive = check(srv.addr, expected).map_err(|e| format!("check request: {e}"))?;
    if cfg.warmup > 0 {
        wrk(cfg, srv.addr, cfg.warmup)?;
    }
    let (t0, srv0, wrk0, busy0) = (
        Instant::now(),
        process_cpu(srv.pid()),
        children_cpu(),
        machine_busy(),
    );
    let out = wrk(cfg, srv.addr, cfg.duration)?;
    let (wall, srv_cpu, wrk_cpu, busy) = (
        t0.elapsed().as_secs_f64(),
        process_cpu(srv.pid()) - srv0,
        children_cpu() - wrk0,
        machine_busy() - busy0,
    );
    drop(srv);
    Ok((
        Sample {
            rate: out.rate,
            p50_us: out.p50_us,
            p99_us: out.p99_us,
            errors: out.errors,
            srv_cpu_us: srv_cpu * 1e6 / out.requests.max(1) as f64,
            srv_util: srv_cpu / wall,
            wrk_util: wrk_cpu / wall,
            other_util: ((busy - srv_cpu - wrk_cpu) / wall).max(0.0),
        },
        keep_alive,
    ))
}

#[derive(Default)]
struct Runs {
    samples: Vec<Sample>,
    /// Runs that failed, and the last failure.
    failed: usize,
    error: Option<String>,
    keep_alive: Option<bool>,
}

impl Runs {
    /// The run with the median rate among the quiet ones (all runs when none is quiet), the
    /// spread (max - min) / median, and how many runs were used.
    fn median(&self) -> Option<(&Sample, f64, usize)> {
        let quiet: Vec<&Sample> = self.samples.iter().filter(|s| s.quiet()).collect();
        let mut used = if quiet.is_empty() {
            self.samples.iter().collect()
        } else {
            quiet
        };
        if used.is_empty() {
            return None;
        }
        used.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let m = used[used.len() / 2];
        let spread = (used[used.len() - 1].rate - used[0].rate) / m.rate;
        Some((m, spread, used.len()))
    }
}

fn fmt_rate(v: f64) -> String {
    let s = (v.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report(out: &mut String, cfg: &Config, results: &[(Server, Runs)]) {
    let _ = writeln!(
        out,
        "\nGET /{FILE} ({} bytes), wrk -t {} -c {} -d {}s --latency, keep-alive where the server keeps it",
        cfg.size, cfg.threads, cfg.connections, cfg.duration
    );
    let _ = writeln!(
        out,
        "{:<15} {:>10} {:>7} {:>5} {:>9} {:>9} {:>11} {:>8} {:>8} {:>7} {:>7} {:>11}",
        "server",
        "req/s",
        "spread",
        "runs",
        "p50 us",
        "p99 us",
        "srv us/req",
        "srv CPU",
        "wrk CPU",
        "other",
        "errors",
        "keep-alive"
    );
    for (server, runs) in results {
        match runs.median() {
            None => {
                let _ = writeln!(
                    out,
                    "{:<15} {:>10}   {}",
                    server.name(),
                    "error",
                    runs.error.as_deref().unwrap_or("no run")
                );
            }
            Some((m, spread, used)) => {
                let _ = writeln!(
                    out,
                    "{:<15} {:>10} {:>7} {:>5} {:>9.1} {:>9.1} {:>11.2} {:>7.0}% {:>7.0}% {:>6.0}% {:>7} {:>11}",
                    server.name(),
                    fmt_rate(m.rate),
                    if used > 1 {
                        format!("{:.0}%", spread * 100.0)
                    } else {
                        "-".into()
                    },
                    format!("{used}/{}", runs.samples.len() + runs.failed),
                    m.p50_us,
                    m.p99_us,
                    m.srv_cpu_us,
                    m.srv_util * 100.0,
                    m.wrk_util * 100.0,
                    m.other_util * 100.0,
                    m.errors,
                    match runs.keep_alive {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "-",
                    }
                );
                if let Some(e) = &runs.error {
                    let _ = writeln!(out, "{:<15} ({} run(s) failed, the last: {e})", "", runs.failed);
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "Columns: medians by req/s over the runs used (quiet runs, other <= {:.0}% of a core, when \
         there are any); spread = (max - min) / median; p50/p99 = wrk's latency distribution \
         (from writing a request to its complete response; a reconnect is not in it); srv us/req \
         = server CPU (utime+stime, /proc/PID/stat) per request; srv / wrk CPU as a share of one \
         core; other = the rest of the machine's busy CPU (/proc/stat), the noise indicator; \
         errors = wrk's socket errors and non-2xx/3xx responses; keep-alive = whether the server \
         answered a second request on one connection in the check before the run.",
        NOISY * 100.0
    );

    let _ = writeln!(out, "\nRatios (medians of this run; no targets)");
    let get = |s: Server| {
        results
            .iter()
            .find(|(x, _)| *x == s)
            .and_then(|(_, r)| r.median())
            .map(|(m, ..)| m.clone())
    };
    for peer in [Server::Threading, Server::Python, Server::PythonStock] {
        let label = format!("HTTP: {} vs {}", Server::Pooled.name(), peer.name());
        match (get(Server::Pooled), get(peer)) {
            (Some(a), Some(b)) => {
                let _ = writeln!(
                    out,
                    "{label:<36} req/s {:>6.2}x   p99 {:>6.2}x (lower is better)   server CPU/req {:>6.2}x",
                    a.rate / b.rate,
                    a.p99_us / b.p99_us,
                    a.srv_cpu_us / b.srv_cpu_us
                );
            }
            _ => {
                let _ = writeln!(out, "{label:<36} not measured");
            }
        }
    }
}

// ---------------------------------------------------------------------------

/// Builds `examples/http_server` with the cargo, profile and target directory of this bench;
/// returns the binary's path.
fn build_http_server() -> Result<PathBuf, String> {
    // This bench runs as <target>[/<triple>]/<profile>/deps/http-<hash>.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("bench binary not in <target>/<profile>/deps")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("profile directory name")?;
    let above = profile_dir.parent().ok_or("target directory")?;
    let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
        (above, None)
    } else {
        (
            above.parent().ok_or("target directory")?,
            above.file_name().and_then(|n| n.to_str()),
        )
    };
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "--example", "http_server", "-p", "sockserve"])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    if let Some(triple) = triple {
        cargo.args(["--target", triple]);
    }
    let status = cargo
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --example http_server: {status}"));
    }
    let path = profile_dir.join("examples").join("http_server");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} missing after the build", path.display()))
    }
}

fn version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_else(|e| format!("{cmd}: {e}"))
}

fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!(
        "{cores} cores, {cpu}, Linux {}",
        read("/proc/sys/kernel/osrelease").trim()
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

const USAGE: &str = "\
HTTP benchmark harness: examples/http_server (pooled and threading) against python3 -m http.server

  cargo bench --bench http [-- OPTIONS]

OPTIONS
  --quick                 one repeat of 2 s per server (default: 3 repeats of 5 s, interleaved)
  --repeat N              repeats per server
  --duration SECS         wrk -d of each measured run (1 to 60)
  --connections N         wrk -c (default 64)
  --threads N             wrk -t (default 2)
  --size BYTES            size of the served file (default 1024)
  --servers a,b,...       only these servers (default: all): ss-pooled ss-threading py-http py-http-stock
  --http-server PATH      use this http_server binary instead of building the example
  --wait-budget SECS      total time to wait for other work on the machine to stop before runs
                          (default 300, quick 5; 0 = never wait)
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let has = |k: &str| args.iter().any(|a| a == k);
    let num = |k: &str, default: u64, max: u64| -> u64 {
        get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(default, |v| v.clamp(1, max))
    };
    if has("--help") || has("-h") {
        print!("{USAGE}");
        return;
    }
    if !has("--bench") {
        // `cargo test --benches` runs bench targets without `--bench`.
        println!("http bench: not run without --bench (use `cargo bench --bench http`)");
        return;
    }
    let quick = has("--quick");
    let wanted: Vec<String> = get("--servers")
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    let cfg = Config {
        quick,
        repeat: num("--repeat", if quick { 1 } else { 3 }, 20) as usize,
        duration: num("--duration", if quick { 2 } else { 5 }, 60),
        warmup: 1,
        connections: num("--connections", 64, 1000) as usize,
        threads: num("--threads", 2, 64) as usize,
        size: num("--size", FILE_SIZE as u64, 16 * 1024 * 1024) as usize,
        servers: SERVERS
            .into_iter()
            .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == s.name()))
            .collect(),
        http_server: get("--http-server").map(PathBuf::from),
        wait_budget: Duration::from_secs(
            get("--wait-budget")
                .and_then(|v| v.parse().ok())
                .unwrap_or(if quick { 5 } else { 300 }),
        ),
    };
    if cfg.servers.is_empty() {
        eprintln!("no server selected (names: ss-pooled ss-threading py-http py-http-stock)");
        std::process::exit(2);
    }
    if cfg.threads > cfg.connections {
        eprintln!("--threads must not exceed --connections (wrk needs a connection per thread)");
        std::process::exit(2);
    }
    let wrk_version = version("wrk", "--version");
    if !wrk_version.starts_with("wrk") {
        eprintln!("wrk not found ({wrk_version}); Debian: apt-get install -y wrk");
        std::process::exit(1);
    }
    let exe = match cfg.http_server.clone().map_or_else(build_http_server, Ok) {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("http_server: {e}");
            std::process::exit(1);
        }
    };
    let scratch = match Scratch::new(cfg.size) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("temporary directory: {e}");
            std::process::exit(1);
        }
    };
    let expected = std::fs::read(scratch.www().join(FILE)).unwrap_or_default();

    let started = Instant::now();
    let mut header = String::new();
    let _ = writeln!(
        header,
        "sockserve HTTP benchmark ({} mode, {} repeat(s) of {}s, medians shown)",
        if cfg.quick { "quick" } else { "full" },
        cfg.repeat,
        cfg.duration
    );
    let _ = writeln!(header, "machine: {}", machine());
    let _ = writeln!(
        header,
        "{}; {}; http_server: {}",
        wrk_version,
        version("python3", "--version"),
        exe.display()
    );
    let _ = writeln!(header, "load average at start: {}", loadavg());
    print!("{header}");

    let mut results: Vec<(Server, Runs)> = cfg.servers.iter().map(|&s| (s, Runs::default())).collect();
    let mut wait_budget = cfg.wait_budget;
    for rep in 0..cfg.repeat {
        for (server, runs) in results.iter_mut() {
            eprintln!(
                "[{:>5.1}s] {} (repeat {}/{})",
                started.elapsed().as_secs_f64(),
                server.name(),
                rep + 1,
                cfg.repeat
            );
            wait_quiet(&mut wait_budget);
            match run(&cfg, *server, &exe, &scratch, &expected) {
                Ok((sample, keep_alive)) => {
                    eprintln!(
                        "  {:.0} req/s, p99 {:.0} us (other CPU {:.0}%{})",
                        sample.rate,
                        sample.p99_us,
                        sample.other_util * 100.0,
                        if sample.quiet() { "" } else { ", noisy" }
                    );
                    runs.keep_alive = Some(keep_alive);
                    runs.samples.push(sample);
                }
                Err(e) => {
                    eprintln!("  {}: {e}", server.name());
                    runs.failed += 1;
                    runs.error = Some(e);
                }
            }
        }
    }

    let mut out = String::new();
    report(&mut out, &cfg, &results);
    let _ = writeln!(
        out,
        "\ntotal {:.1}s; load average at end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    print!("{out}");
}
