//! Echo benchmark: sockserve against tokio, CPython's socketserver and the
//! simplest std-only loops, each server a separate child process driven by
//! the same event-driven load generator over 127.0.0.1.
//!
//! ```sh
//! cargo bench --bench echo              # full run (about 6 minutes)
//! cargo bench --bench echo -- --quick   # quick check (under a minute)
//! cargo bench --bench echo -- --help    # options (servers, workloads, repeats)
//! ```
//!
//! Without `--bench` in its arguments (as under `cargo test --benches`) the
//! binary only prints how to run it, so tests never generate load.

#[path = "echo/loadgen.rs"]
mod loadgen;
#[path = "echo/servers.rs"]
mod servers;
#[path = "echo/sockserve_servers.rs"]
mod sockserve_servers;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use loadgen::Bounds;
use servers::{Kind, ServerProc, ServerSpec};

const MSG: usize = 64;
const PING_CONNS: usize = 64;
const CHURN_CLIENTS: usize = 16;
const UDP_SOCKETS: usize = 4;
const UDP_WINDOW: usize = 8;
const UDP_LOSS_TIMEOUT: Duration = Duration::from_millis(100);
const IDLE_HANDSHAKES: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
enum Workload {
    PingPong = 1,
    Churn = 2,
    Udp = 3,
    Idle = 4,
}

impl Workload {
    fn all() -> [Workload; 4] {
        [Workload::PingPong, Workload::Churn, Workload::Udp, Workload::Idle]
    }
    fn applies(self, s: &ServerSpec) -> bool {
        match self {
            Workload::PingPong | Workload::Idle => s.kind == Kind::TcpConcurrent,
            Workload::Churn => s.kind != Kind::Udp,
            Workload::Udp => s.kind == Kind::Udp,
        }
    }
    fn is_tcp(self) -> bool {
        self != Workload::Udp
    }
}

struct Config {
    quick: bool,
    repeat: usize,
    servers: Vec<&'static ServerSpec>,
    workloads: Vec<Workload>,
    ping: Bounds,
    churn: Bounds,
    udp: Bounds,
    idle_conns: usize,
    /// Idle connections for CPython's ForkingTCPServer (one CPython process each).
    idle_conns_py_forking: usize,
    /// Extra runs allowed in all to replace noisy ones.
    retry_budget: usize,
    /// A command run over each measured window (`{pid}`: the server's pid).
    profile: Option<String>,
    /// Total time the harness may wait for a quiet machine before runs.
    wait_budget: Duration,
}

impl Config {
    fn new(quick: bool) -> Config {
        let stall = Duration::from_secs(5);
        let b = |warmup_ms, secs_ms, max_ops| Bounds {
            warmup: Duration::from_millis(warmup_ms),
            duration: Duration::from_millis(secs_ms),
            max_ops,
            stall,
        };
        if quick {
            Config {
                quick,
                repeat: 1,
                servers: Vec::new(),
                workloads: Workload::all().to_vec(),
                ping: b(300, 1500, 2_000_000),
                churn: b(200, 1200, 12_000),
                udp: b(200, 1500, 2_000_000),
                idle_conns: 2_000,
                idle_conns_py_forking: 200,
                retry_budget: 4,
                profile: None,
                wait_budget: Duration::from_secs(5),
            }
        } else {
            Config {
                quick,
                repeat: 3,
                servers: Vec::new(),
                workloads: Workload::all().to_vec(),
                ping: b(1000, 5000, 10_000_000),
                churn: b(500, 3000, 40_000),
                udp: b(500, 5000, 10_000_000),
                idle_conns: 10_000,
                idle_conns_py_forking: 1_000,
                retry_budget: 24,
                profile: None,
                wait_budget: Duration::from_secs(600),
            }
        }
    }
    fn bounds(&self, w: Workload) -> Bounds {
        match w {
            Workload::PingPong => self.ping,
            Workload::Churn => self.churn,
            Workload::Udp => self.udp,
            Workload::Idle => unreachable!(),
        }
    }
    fn idle_conns_for(&self, s: &ServerSpec) -> usize {
        if s.python.is_some() && s.forking {
            self.idle_conns_py_forking
        } else {
            self.idle_conns
        }
    }
}

/// One measured run of a throughput workload.
#[derive(Clone, Debug)]
struct Sample {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// Server CPU per operation, µs.
    srv_cpu_us: f64,
    /// Server CPU, fraction of one core.
    srv_util: f64,
    /// Load generator CPU, fraction of one core.
    lg_util: f64,
    /// CPU used by everything else on the machine (other users' work, kernel
    /// threads), fraction of one core: the noise indicator.
    other_util: f64,
    errors: u64,
    lost: u64,
}

/// A run is noisy when the rest of the machine used more than this share of a
/// core during its measured window (other users' builds on a shared machine).
const NOISY: f64 = 0.25;

impl Sample {
    fn quiet(&self) -> bool {
        self.other_util <= NOISY
    }
}

struct Median {
    sample: Sample,
    spread: f64,
    used: usize,
    total: usize,
}

#[derive(Clone, Debug)]
struct IdleSample {
    conns: usize,
    base: servers::Memory,
    loaded: servers::Memory,
    setup: Duration,
}

impl IdleSample {
    fn per_conn(&self, f: impl Fn(&servers::Memory) -> u64) -> f64 {
        (f(&self.loaded) as f64 - f(&self.base) as f64) / self.conns as f64
    }
}

#[derive(Default)]
struct Results {
    runs: HashMap<(Workload, &'static str), Vec<Result<Sample, String>>>,
    idle: HashMap<&'static str, Result<IdleSample, String>>,
}

impl Results {
    /// The run with the median rate (its latencies and CPU figures go with it),
    /// the spread (max - min) / median, and how many runs were used of how many.
    /// Only quiet runs (see [`NOISY`]) are used when there is at least one.
    fn median(&self, w: Workload, name: &str) -> Option<Result<Median, String>> {
        let runs = self.runs.get(&(w, name))?;
        let ok: Vec<&Sample> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
        if ok.is_empty() {
            let err = runs.iter().find_map(|r| r.as_ref().err()).cloned();
            return Some(Err(err.unwrap_or_default()));
        }
        let quiet: Vec<&Sample> = ok.iter().copied().filter(|s| s.quiet()).collect();
        let mut used = if quiet.is_empty() { ok.clone() } else { quiet };
        used.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let sample = used[used.len() / 2].clone();
        let spread = (used[used.len() - 1].rate - used[0].rate) / sample.rate;
        Some(Ok(Median {
            sample,
            spread,
            used: used.len(),
            total: runs.len(),
        }))
    }
    fn quiet_runs(&self, w: Workload, name: &str) -> usize {
        self.runs.get(&(w, name)).map_or(0, |runs| {
            runs.iter()
                .filter(|r| r.as_ref().is_ok_and(|s| s.quiet()))
                .count()
        })
    }
    fn rate(&self, w: Workload, name: &str) -> Option<f64> {
        match self.median(w, name)? {
            Ok(m) => Some(m.sample.rate),
            Err(_) => None,
        }
    }
}

fn run_throughput(cfg: &Config, w: Workload, spec: &'static ServerSpec) -> io::Result<Sample> {
    let srv = ServerProc::start(spec)?;
    let bounds = cfg.bounds(w);
    let mut cpu: Vec<(Instant, f64, f64)> = Vec::with_capacity(2);
    let mut profiler: Option<std::process::Child> = None;
    // Called at the start and at the end of the measured window: the profiler (if
    // any) attaches before the first sample and stops after the second.
    let mut probe = || {
        if cpu.is_empty() {
            if let Some(cmd) = &cfg.profile {
                profiler = start_profiler(cmd, &srv);
            }
        }
        cpu.push((Instant::now(), servers::server_cpu(&srv), servers::machine_busy()));
        if cpu.len() == 2 {
            if let Some(child) = profiler.take() {
                stop_profiler(child);
            }
        }
    };
    // Each run gets a fresh generator thread: the scheduler keeps per-thread
    // wake-up history (wakee flips), and a generator thread that has just driven
    // one server places the next server's threads differently (seen here: 20x
    // more CPU migrations and 8% fewer requests/s for whichever thread-per-
    // connection server ran second, whatever the server).
    let addr = srv.addr;
    let r = std::thread::scope(|scope| {
        scope
            .spawn(|| match w {
                Workload::PingPong => loadgen::ping_pong(addr, PING_CONNS, MSG, bounds, &mut probe),
                Workload::Churn => loadgen::churn(addr, CHURN_CLIENTS, MSG, bounds, &mut probe),
                Workload::Udp => loadgen::udp_echo(
                    addr,
                    UDP_SOCKETS,
                    UDP_WINDOW,
                    MSG,
                    UDP_LOSS_TIMEOUT,
                    bounds,
                    &mut probe,
                ),
                Workload::Idle => unreachable!(),
            })
            .join()
            .map_err(|_| io::Error::other("load generator panicked"))?
    })?;
    drop(srv);
    let srv_cpu = cpu[1].1 - cpu[0].1;
    let busy = cpu[1].2 - cpu[0].2;
    let wall = (cpu[1].0 - cpu[0].0).as_secs_f64();
    let (p50_us, p99_us) = r.latencies.clone().percentiles();
    Ok(Sample {
        rate: r.rate(),
        p50_us,
        p99_us,
        srv_cpu_us: srv_cpu * 1e6 / r.ops.max(1) as f64,
        srv_util: srv_cpu / wall,
        lg_util: r.loadgen_util(),
        other_util: ((busy - srv_cpu - r.loadgen_cpu.as_secs_f64()) / wall).max(0.0),
        errors: r.errors,
        lost: r.lost,
    })
}

/// Starts `--profile CMD` (through `sh -c`, `{pid}` replaced by the server's pid)
/// for the measured window.
fn start_profiler(cmd: &str, srv: &ServerProc) -> Option<std::process::Child> {
    let cmd = cmd.replace("{pid}", &srv.pid().to_string());
    eprintln!("  profiling: {cmd}");
    match std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .spawn()
    {
        Ok(c) => {
            // Let the profiler attach before the window starts counting.
            std::thread::sleep(Duration::from_millis(200));
            Some(c)
        }
        Err(e) => {
            eprintln!("  profiler failed to start: {e}");
            None
        }
    }
}

/// Stops the profiler with SIGINT (perf writes its data or counts then) and reaps it.
fn stop_profiler(mut child: std::process::Child) {
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run_idle(cfg: &Config, spec: &'static ServerSpec) -> io::Result<IdleSample> {
    let srv = ServerProc::start(spec)?;
    let n = cfg.idle_conns_for(spec);
    // Warm up lazily initialised state (runtime, allocator) before the baseline.
    let warm = loadgen::open_idle(srv.addr, 4, 4, MSG, Duration::from_secs(20))?;
    loadgen::close_idle(warm);
    std::thread::sleep(Duration::from_millis(600));
    let base = servers::memory(&srv);
    let profiler = cfg.profile.as_deref().and_then(|cmd| start_profiler(cmd, &srv));
    let t0 = Instant::now();
    let conns = loadgen::open_idle(
        srv.addr,
        n,
        IDLE_HANDSHAKES,
        MSG,
        Duration::from_secs(if cfg.quick { 30 } else { 120 }),
    )?;
    let setup = t0.elapsed();
    if let Some(p) = profiler {
        stop_profiler(p);
    }
    std::thread::sleep(Duration::from_millis(500));
    let loaded = servers::memory(&srv);
    loadgen::close_idle(conns);
    drop(srv);
    Ok(IdleSample {
        conns: n,
        base,
        loaded,
        setup,
    })
}

/// Waits (bounded by what is left of `budget`) until the rest of the machine
/// uses less than half of [`NOISY`] of a core, sampled over 300 ms while the
/// harness itself is idle. Returns whether it is quiet.
fn wait_quiet(budget: &mut Duration) -> bool {
    let t0 = Instant::now();
    let quiet = loop {
        let b0 = servers::machine_busy();
        let s0 = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        let busy = (servers::machine_busy() - b0) / s0.elapsed().as_secs_f64();
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

fn measure(cfg: &Config, res: &mut Results, w: Workload, s: &'static ServerSpec, wait: &mut Duration) {
    wait_quiet(wait);
    let r = run_throughput(cfg, w, s).map_err(|e| e.to_string());
    match &r {
        Ok(m) => eprintln!(
            "  {:.0}/s (other CPU {:.0}%{})",
            m.rate,
            m.other_util * 100.0,
            if m.quiet() { "" } else { ", noisy" }
        ),
        Err(e) => eprintln!("  {}: {e}", s.name),
    }
    res.runs.entry((w, s.name)).or_default().push(r);
}

// ---------------------------------------------------------------------------
// Output.

fn fmt_rate(v: f64) -> String {
    let v = v.round() as u64;
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_kib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1024.0)
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
    let kernel = read("/proc/sys/kernel/osrelease");
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn spread(s: f64, used: usize) -> String {
    if used > 1 {
        format!("{:>5.0}%", s * 100.0)
    } else {
        format!("{:>6}", "-")
    }
}

fn throughput_table(out: &mut String, cfg: &Config, res: &Results, w: Workload) {
    let (title, unit) = match w {
        Workload::PingPong => (
            format!("Workload 1: persistent ping-pong, {PING_CONNS} connections, {MSG}-byte messages"),
            "req/s",
        ),
        Workload::Churn => (
            format!("Workload 2: connection churn, {CHURN_CLIENTS} concurrent clients (connect, send {MSG} B, receive, close with RST)"),
            "conn/s",
        ),
        Workload::Udp => (
            format!(
                "Workload 3: UDP echo, {UDP_SOCKETS} sockets x {UDP_WINDOW} outstanding {MSG}-byte datagrams, loss timeout {} ms",
                UDP_LOSS_TIMEOUT.as_millis()
            ),
            "dgram/s",
        ),
        Workload::Idle => unreachable!(),
    };
    let _ = writeln!(out, "\n{title}");
    let _ = writeln!(
        out,
        "{:<14} {:>12} {:>7} {:>5} {:>9} {:>9} {:>11} {:>8} {:>7} {:>7} {:>7}",
        "server",
        unit,
        "spread",
        "runs",
        "p50 us",
        "p99 us",
        "srv us/op",
        "srv CPU",
        "lg CPU",
        "other",
        "lost"
    );
    for s in &cfg.servers {
        match res.median(w, s.name) {
            None if !w.applies(s) && w.is_tcp() == (s.kind != Kind::Udp) => {
                let _ = writeln!(
                    out,
                    "{:<14} {:>12}   (serves one connection at a time: 64 persistent connections do not apply)",
                    s.name, "n/a"
                );
            }
            None => {}
            Some(Err(e)) => {
                let _ = writeln!(out, "{:<14} {:>12}   {e}", s.name, "error");
            }
            Some(Ok(med)) => {
                let m = &med.sample;
                let _ = writeln!(
                    out,
                    "{:<14} {:>12} {:>7} {:>5} {:>9.1} {:>9.1} {:>11.2} {:>7.0}% {:>6.0}% {:>6.0}% {:>7}",
                    s.name,
                    fmt_rate(m.rate),
                    spread(med.spread, med.used),
                    format!("{}/{}", med.used, med.total),
                    m.p50_us,
                    m.p99_us,
                    m.srv_cpu_us,
                    m.srv_util * 100.0,
                    m.lg_util * 100.0,
                    m.other_util * 100.0,
                    m.lost + m.errors
                );
            }
        }
    }
}

fn idle_table(out: &mut String, cfg: &Config, res: &Results) {
    let _ = writeln!(
        out,
        "\nWorkload 4: idle memory, connections held open after one {MSG}-byte echo each (KiB per connection = (after - before) / connections)"
    );
    let _ = writeln!(
        out,
        "{:<14} {:>7} {:>11} {:>11} {:>11} {:>11} {:>7} {:>8} {:>8}",
        "server", "conns", "RSS before", "RSS after", "RSS/conn", "PSS/conn", "procs", "threads", "setup s"
    );
    for s in &cfg.servers {
        if s.kind == Kind::Udp {
            continue;
        }
        match res.idle.get(s.name) {
            None if s.kind == Kind::TcpSync => {
                let _ = writeln!(
                    out,
                    "{:<14} {:>7}   (serves one connection at a time: cannot hold idle connections)",
                    s.name, "n/a"
                );
            }
            None => {}
            Some(Err(e)) => {
                let _ = writeln!(out, "{:<14} {:>7}   {e}", s.name, "error");
            }
            Some(Ok(m)) => {
                let _ = writeln!(
                    out,
                    "{:<14} {:>7} {:>9}Ki {:>9}Ki {:>11} {:>11} {:>7} {:>8} {:>8.1}",
                    s.name,
                    m.conns,
                    m.base.rss / 1024,
                    m.loaded.rss / 1024,
                    fmt_kib(m.per_conn(|x| x.rss)),
                    fmt_kib(m.per_conn(|x| x.pss)),
                    m.loaded.processes,
                    m.loaded.threads,
                    m.setup.as_secs_f64()
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "RSS = VmRSS from /proc/PID/status; for forking servers the sum over every process of the \
         server's process group (parent + one child per connection), which counts pages shared \
         copy-on-write once per process; PSS = Pss from /proc/PID/smaps_rollup summed the same \
         way (shared pages divided among sharers). Kernel memory (socket buffers, thread stacks \
         in the kernel, page tables) is in neither."
    );
}

struct Target {
    label: &'static str,
    workload: Workload,
    ours: &'static str,
    peer: &'static str,
    min: f64,
}

const TARGETS: &[Target] = &[
    Target {
        label: "W1 ping-pong: ss-threading vs tokio",
        workload: Workload::PingPong,
        ours: "ss-threading",
        peer: "tokio",
        min: 1.0,
    },
    Target {
        label: "W1 ping-pong: ss-threading vs raw-threaded",
        workload: Workload::PingPong,
        ours: "ss-threading",
        peer: "raw-threaded",
        min: 0.95,
    },
    Target {
        label: "W1 ping-pong: ss-threading vs py-threading",
        workload: Workload::PingPong,
        ours: "ss-threading",
        peer: "py-threading",
        min: 4.0,
    },
    Target {
        label: "W2 churn: ss-threading vs tokio",
        workload: Workload::Churn,
        ours: "ss-threading",
        peer: "tokio",
        min: 0.75,
    },
    Target {
        label: "W1 ping-pong: ss-multiplex vs tokio",
        workload: Workload::PingPong,
        ours: "ss-multiplex",
        peer: "tokio",
        min: 1.1,
    },
    Target {
        label: "W2 churn: ss-multiplex vs tokio",
        workload: Workload::Churn,
        ours: "ss-multiplex",
        peer: "tokio",
        min: 1.0,
    },
    Target {
        label: "W2 churn: ss-forking vs py-forking",
        workload: Workload::Churn,
        ours: "ss-forking",
        peer: "py-forking",
        min: 4.0,
    },
    Target {
        label: "W3 UDP: ss-udp vs raw-udp",
        workload: Workload::Udp,
        ours: "ss-udp",
        peer: "raw-udp",
        min: 0.95,
    },
    Target {
        label: "W1 ping-pong: ss-pooled vs ss-threading",
        workload: Workload::PingPong,
        ours: "ss-pooled",
        peer: "ss-threading",
        min: 1.0,
    },
];

/// A workload-4 target: our RSS per idle connection over the peer's, at most `max`.
struct IdleTarget {
    label: &'static str,
    ours: &'static str,
    peer: &'static str,
    max: f64,
}

const IDLE_TARGETS: &[IdleTarget] = &[IdleTarget {
    label: "W4 memory per idle connection: ss-pooled vs tokio",
    ours: "ss-pooled",
    peer: "tokio",
    max: 2.0,
}];

/// Server CPU per operation of the peer over ours: how much cheaper each
/// request is for our server, whatever bounds the throughput.
fn cpu_ratio(res: &Results, w: Workload, ours: &str, peer: &str) -> String {
    match (res.median(w, ours), res.median(w, peer)) {
        (Some(Ok(a)), Some(Ok(b))) => format!(
            "ours {:.2} us, peer {:.2} us, peer/ours {:.2}",
            a.sample.srv_cpu_us,
            b.sample.srv_cpu_us,
            b.sample.srv_cpu_us / a.sample.srv_cpu_us
        ),
        _ => "-".into(),
    }
}

/// RSS per idle connection of a workload-4 run, bytes.
fn idle_rss(res: &Results, name: &str) -> Option<f64> {
    match res.idle.get(name)? {
        Ok(m) => Some(m.per_conn(|x| x.rss)),
        Err(_) => None,
    }
}

fn ratios(out: &mut String, res: &Results) {
    let _ = writeln!(
        out,
        "\nRatios (throughput of the medians of this run; server CPU per operation alongside)"
    );
    for t in TARGETS {
        match (res.rate(t.workload, t.ours), res.rate(t.workload, t.peer)) {
            (Some(a), Some(b)) => {
                let r = a / b;
                let verdict = if r >= t.min { "PASS" } else { "MISS" };
                let _ = writeln!(
                    out,
                    "{:<50} {:>6.2}x  (target >= {:.2}x)  {verdict}   server CPU/op: {}",
                    t.label,
                    r,
                    t.min,
                    cpu_ratio(res, t.workload, t.ours, t.peer)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "{:<50} {:>7}  (target >= {:.2}x)  not measured",
                    t.label, "-", t.min
                );
            }
        }
    }
    for t in IDLE_TARGETS {
        match (idle_rss(res, t.ours), idle_rss(res, t.peer)) {
            (Some(a), Some(b)) => {
                // A per-connection figure at or below zero (memory freed meanwhile) has no
                // meaningful ratio; it is shown, and counts as within the target.
                let r = if b > 0.0 { a / b } else { f64::NAN };
                let verdict = if a <= 0.0 || r <= t.max { "PASS" } else { "MISS" };
                let _ = writeln!(
                    out,
                    "{:<50} {:>6.2}x  (target <= {:.2}x)  {verdict}   RSS/conn: ours {} KiB, peer {} KiB",
                    t.label,
                    r,
                    t.max,
                    fmt_kib(a),
                    fmt_kib(b)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "{:<50} {:>7}  (target <= {:.2}x)  not measured",
                    t.label, "-", t.max
                );
            }
        }
    }
    // Other ratios worth seeing, no target.
    let extra: &[(&str, Workload, &str, &str)] = &[
        (
            "W2 churn: ss-sync vs raw-sync",
            Workload::Churn,
            "ss-sync",
            "raw-sync",
        ),
        (
            "W2 churn: ss-sync vs py-sync",
            Workload::Churn,
            "ss-sync",
            "py-sync",
        ),
        (
            "W2 churn: ss-threading vs raw-threaded",
            Workload::Churn,
            "ss-threading",
            "raw-threaded",
        ),
        (
            "W1 ping-pong: ss-forking vs py-forking",
            Workload::PingPong,
            "ss-forking",
            "py-forking",
        ),
        ("W3 UDP: ss-udp vs py-udp", Workload::Udp, "ss-udp", "py-udp"),
        (
            "W1 ping-pong: ss-pooled vs tokio",
            Workload::PingPong,
            "ss-pooled",
            "tokio",
        ),
        (
            "W1 ping-pong: ss-pooled vs ss-multiplex",
            Workload::PingPong,
            "ss-pooled",
            "ss-multiplex",
        ),
        (
            "W1 ping-pong: ss-multiplex-rp vs tokio",
            Workload::PingPong,
            "ss-multiplex-rp",
            "tokio",
        ),
        (
            "W2 churn: ss-multiplex-rp vs tokio",
            Workload::Churn,
            "ss-multiplex-rp",
            "tokio",
        ),
        (
            "W1 ping-pong: ss-multiplex-rp vs ss-multiplex",
            Workload::PingPong,
            "ss-multiplex-rp",
            "ss-multiplex",
        ),
        (
            "W2 churn: ss-multiplex-rp vs ss-multiplex",
            Workload::Churn,
            "ss-multiplex-rp",
            "ss-multiplex",
        ),
    ];
    for (label, w, a, b) in extra {
        if let (Some(x), Some(y)) = (res.rate(*w, a), res.rate(*w, b)) {
            let _ = writeln!(out, "{label:<50} {:>6.2}x  (no target)", x / y);
        }
    }
}

/// The load generator's ceiling, estimated from its own CPU use against the
/// raw loop: rate / (fraction of a core the generator used).
fn ceiling(out: &mut String, res: &Results) {
    let _ = writeln!(out, "\nLoad generator ceiling (single thread; estimated as rate / generator CPU fraction, against the raw loop)");
    for (w, name) in [
        (Workload::PingPong, "raw-threaded"),
        (Workload::Churn, "raw-threaded"),
        (Workload::Churn, "raw-sync"),
        (Workload::Udp, "raw-udp"),
    ] {
        if let Some(Ok(Median { sample: m, .. })) = res.median(w, name) {
            let _ = writeln!(
                out,
                "W{} vs {name:<13}: {} ops/s using {:.0}% of a core -> ceiling ~{} ops/s ({:.1}x the raw loop)",
                w as u8,
                fmt_rate(m.rate),
                m.lg_util * 100.0,
                fmt_rate(m.rate / m.lg_util.max(1e-9)),
                1.0 / m.lg_util.max(1e-9)
            );
        }
    }
}

/// Bare costs of the concurrency primitives, measured in a small fresh process
/// (`--costs`, the bench binary re-executed) and in python3: what a per-connection
/// thread or process costs before any socket work.
fn reference_costs(out: &mut String) {
    let _ = writeln!(
        out,
        "\nReference costs (per operation, wall time, best of 3 batches)"
    );
    let run = |cmd: &mut std::process::Command| -> String {
        cmd.stdin(std::process::Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("failed: {e}\n"))
    };
    if let Ok(exe) = servers::own_exe() {
        out.push_str(&run(std::process::Command::new(exe).arg("--costs")));
    }
    out.push_str(&run(std::process::Command::new("python3")
        .arg("-c")
        .arg(PY_COSTS)));
}

const PY_COSTS: &str = "
import os, threading, time
def best(f, n):
    b = 1e9
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            f()
        b = min(b, (time.perf_counter() - t) / n)
    return b * 1e6
def spawn_join():
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
def fork_wait():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print('python3 threading.Thread start+join        %8.1f us' % best(spawn_join, 1000))
print('python3 os.fork + os._exit + waitpid       %8.1f us' % best(fork_wait, 200))
";

/// `--costs`: bare thread and process costs of a small Rust process.
fn print_costs() {
    fn best(n: u32, mut f: impl FnMut()) -> f64 {
        let mut b = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            b = b.min(t.elapsed().as_secs_f64() / n as f64);
        }
        b * 1e6
    }
    let spawn = best(2000, || std::thread::spawn(|| {}).join().unwrap());
    let named = best(2000, || {
        std::thread::Builder::new()
            .name("sockserve-handler".into())
            .spawn(|| {})
            .unwrap()
            .join()
            .unwrap()
    });
    let fork = best(300, || {
        // SAFETY: the child only calls _exit; the parent reaps it.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(0);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
    });
    println!("rust std::thread::spawn + join              {spawn:8.1} us");
    println!("rust thread::Builder::name().spawn + join   {named:8.1} us");
    println!("rust fork + _exit + waitpid (small process) {fork:8.1} us");
}

// ---------------------------------------------------------------------------

const USAGE: &str = "\
echo benchmark harness

  cargo bench --bench echo [-- OPTIONS]

OPTIONS
  --quick                 short runs (under a minute in all), one repeat
  --repeat N              repeats per measurement, interleaved across servers (default 3, quick 1)
  --servers a,b,...       only these servers (default: all); names:
                          tokio raw-threaded raw-sync raw-udp py-threading py-forking py-sync
                          py-udp ss-sync ss-threading ss-forking ss-udp ss-multiplex ss-pooled
                          ss-multiplex-rp
  --workloads 1,2,3,4     only these workloads (1 ping-pong, 2 churn, 3 UDP, 4 idle memory)
  --idle-conns N          idle connections for workload 4 (default 10000, quick 2000)
  --wait-budget SECS       total time to wait for other work on the machine to stop before runs
                          (default 600, quick 5; 0 = never wait)
  --profile CMD           run CMD over each measured window ({pid} = server pid; workload 4: while
                          the idle connections are set up),
                          stopped with SIGINT, e.g. 'perf stat -e context-switches -p {pid}'
                          or 'perf record -g -o /tmp/x.data -p {pid}'

Server mode (used by the harness itself):
  --serve NAME --bind 127.0.0.1:0 [--max-children N]
";

fn parse_list(v: Option<String>) -> Vec<String> {
    v.map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let has = |k: &str| args.iter().any(|a| a == k);

    if let Some(name) = get("--serve") {
        let a = servers::ServeArgs {
            name,
            bind: get("--bind").unwrap_or_else(|| "127.0.0.1:0".into()),
            max_children: get("--max-children")
                .and_then(|v| v.parse().ok())
                .unwrap_or(servers::MAX_CHILDREN),
        };
        if let Err(e) = servers::serve(&a) {
            eprintln!("server {}: {e}", a.name);
            std::process::exit(1);
        }
        return;
    }
    if has("--costs") {
        print_costs();
        return;
    }
    if has("--help") || has("-h") {
        print!("{USAGE}");
        return;
    }
    if !has("--bench") {
        // `cargo test --benches` runs bench targets without `--bench`.
        println!("echo bench: not run without --bench (use `cargo bench --bench echo`)");
        return;
    }

    let mut cfg = Config::new(has("--quick"));
    if let Some(r) = get("--repeat").and_then(|v| v.parse().ok()) {
        cfg.repeat = r;
    }
    if let Some(secs) = get("--wait-budget").and_then(|v| v.parse().ok()) {
        cfg.wait_budget = Duration::from_secs(secs);
    }
    cfg.profile = get("--profile");
    if cfg.profile.is_some() {
        // Profiled runs are for looking inside, not for the table's medians.
        cfg.retry_budget = 0;
    }
    if let Some(n) = get("--idle-conns").and_then(|v| v.parse().ok()) {
        cfg.idle_conns = n;
    }
    let wanted = parse_list(get("--servers"));
    cfg.servers = servers::ALL
        .iter()
        .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == s.name))
        .filter(|s| sockserve_servers::AVAILABLE || !s.name.starts_with("ss-"))
        .collect();
    let ws = parse_list(get("--workloads"));
    if !ws.is_empty() {
        cfg.workloads = Workload::all()
            .into_iter()
            .filter(|w| ws.iter().any(|x| x == &(*w as u8).to_string()))
            .collect();
    }
    let nofile = servers::raise_nofile();

    let started = Instant::now();
    let mut header = String::new();
    let _ = writeln!(
        header,
        "sockserve echo benchmark ({} mode, {} repeat(s), medians shown)",
        if cfg.quick { "quick" } else { "full" },
        cfg.repeat
    );
    let _ = writeln!(header, "machine: {}", machine());
    let _ = writeln!(
        header,
        "load average at start: {}; RLIMIT_NOFILE {nofile}",
        loadavg()
    );
    if !sockserve_servers::AVAILABLE {
        let _ = writeln!(
            header,
            "sockserve servers: not built (sockserve-core not available)"
        );
    }
    print!("{header}");

    let mut res = Results::default();
    let mut retries = 0;
    // Total time the harness may wait for other work on the machine to finish.
    let mut wait_budget = cfg.wait_budget;
    for &w in &cfg.workloads {
        if w == Workload::Idle {
            for s in cfg.servers.iter().copied().filter(|s| w.applies(s)) {
                eprintln!("[{:>5.1}s] W4 {}", started.elapsed().as_secs_f64(), s.name);
                wait_quiet(&mut wait_budget);
                let r = run_idle(&cfg, s).map_err(|e| e.to_string());
                if let Err(e) = &r {
                    eprintln!("  {}: {e}", s.name);
                }
                res.idle.insert(s.name, r);
            }
            continue;
        }
        for rep in 0..cfg.repeat {
            for s in cfg.servers.iter().copied().filter(|s| w.applies(s)) {
                eprintln!(
                    "[{:>5.1}s] W{} {} (repeat {}/{})",
                    started.elapsed().as_secs_f64(),
                    w as u8,
                    s.name,
                    rep + 1,
                    cfg.repeat
                );
                measure(&cfg, &mut res, w, s, &mut wait_budget);
            }
        }
        // Runs disturbed by other work on the machine are repeated (bounded:
        // at most `repeat` extra runs per server, `retry_budget` in all).
        for s in cfg.servers.iter().copied().filter(|s| w.applies(s)) {
            let mut extra = 0;
            while res.quiet_runs(w, s.name) < cfg.repeat && retries < cfg.retry_budget && extra < cfg.repeat {
                retries += 1;
                extra += 1;
                eprintln!(
                    "[{:>5.1}s] W{} {} (extra run: earlier ones were noisy)",
                    started.elapsed().as_secs_f64(),
                    w as u8,
                    s.name
                );
                measure(&cfg, &mut res, w, s, &mut wait_budget);
            }
        }
    }

    let mut out = String::new();
    for &w in &cfg.workloads {
        if w == Workload::Idle {
            idle_table(&mut out, &cfg, &res);
        } else {
            throughput_table(&mut out, &cfg, &res, w);
        }
    }
    let _ = writeln!(
        out,
        "\nColumns: spread = (max - min) / median over the runs used; runs = runs used / runs made (a run \
         is used when other <= {:.0}% of a core, or all runs are when none is; noisy runs are \
         repeated within a bounded budget); srv us/op = server CPU time \
         (utime+stime of the server's processes, /proc/PID/stat) per operation; srv CPU / lg CPU = \
         server / load generator CPU as a share of one core; other = the rest of the machine's busy \
         CPU (/proc/stat less server and generator: other users' work, and kernel time not charged \
         to either, e.g. softirq), the noise indicator; lost = UDP datagrams unanswered \
         within the loss timeout, or failed TCP connections.",
        NOISY * 100.0
    );
    ratios(&mut out, &res);
    ceiling(&mut out, &res);
    if !wait_quiet(&mut wait_budget) {
        out.push_str("\n(the machine was busy while the reference costs below were measured)");
    }
    reference_costs(&mut out);
    let _ = writeln!(
        out,
        "\ntotal {:.1}s; load average at end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    print!("{out}");
}
