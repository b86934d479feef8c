//! The servers under test, each run as its own child process.
//!
//! Rust servers are the bench binary itself re-executed with
//! `--serve <name> --bind 127.0.0.1:0`; CPython peers run
//! `benches/peers/socketserver_echo.py`. Every server prints
//! `listening on ADDR` as its first stdout line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Which workloads a server takes part in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// TCP, one connection at a time (no persistent-connection or idle workloads).
    TcpSync,
    /// TCP, concurrent connections.
    TcpConcurrent,
    Udp,
}

#[derive(Clone, Copy, Debug)]
pub struct ServerSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub python: Option<&'static str>,
    /// A forking server: its memory is summed over the process group.
    pub forking: bool,
}

const fn rust(name: &'static str, kind: Kind, forking: bool) -> ServerSpec {
    ServerSpec {
        name,
        kind,
        python: None,
        forking,
    }
}

const fn py(name: &'static str, kind: Kind, class: &'static str, forking: bool) -> ServerSpec {
    ServerSpec {
        name,
        kind,
        python: Some(class),
        forking,
    }
}

pub const ALL: &[ServerSpec] = &[
    rust("tokio", Kind::TcpConcurrent, false),
    rust("raw-threaded", Kind::TcpConcurrent, false),
    rust("raw-sync", Kind::TcpSync, false),
    rust("raw-udp", Kind::Udp, false),
    py("py-threading", Kind::TcpConcurrent, "threading", false),
    py("py-forking", Kind::TcpConcurrent, "forking", true),
    py("py-sync", Kind::TcpSync, "sync", false),
    py("py-udp", Kind::Udp, "udp", false),
    rust("ss-sync", Kind::TcpSync, false),
    rust("ss-threading", Kind::TcpConcurrent, false),
    rust("ss-forking", Kind::TcpConcurrent, true),
    rust("ss-udp", Kind::Udp, false),
    rust("ss-multiplex", Kind::TcpConcurrent, false),
    rust("ss-pooled", Kind::TcpConcurrent, false),
    rust("ss-multiplex-rp", Kind::TcpConcurrent, false),
];

/// Forking servers get a child cap above every workload's connection count
/// (Python's default of 40 would block `collect_children` with 64 persistent
/// connections); the same value for CPython and sockserve.
pub const MAX_CHILDREN: usize = 12_000;

pub fn python_script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/socketserver_echo.py")
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
        rl.rlim_cur as u64
    }
}

/// The bench binary, for re-executing it as a server. `/proc/self/exe` still
/// names the running binary when its file has been replaced by a rebuild during
/// the run (the path from `current_exe()` would then be gone or newer).
pub fn own_exe() -> io::Result<std::path::PathBuf> {
    let proc_exe = std::path::PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        Ok(proc_exe)
    } else {
        std::env::current_exe()
    }
}

/// A running server child. Dropping it kills its whole process group
/// (forked children included) and reaps it.
pub struct ServerProc {
    pub spec: &'static ServerSpec,
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProc {
    pub fn start(spec: &'static ServerSpec) -> io::Result<ServerProc> {
        let mut cmd = match spec.python {
            Some(class) => {
                let mut c = Command::new("python3");
                c.arg(python_script()).arg(class);
                c
            }
            None => {
                let mut c = Command::new(own_exe()?);
                c.arg("--serve").arg(spec.name);
                c
            }
        };
        cmd.arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--max-children")
            .arg(MAX_CHILDREN.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; the server dies with the harness.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so a chatty server never blocks on a full pipe.
            let _ = io::copy(&mut r, &mut io::sink());
        });
        let mut proc = ServerProc {
            spec,
            addr: "0.0.0.0:0".parse().unwrap(),
            child,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| io::Error::other(format!("{}: no 'listening on' line", spec.name)))?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| io::Error::other(format!("{}: bad first line {line:?}", spec.name)))?;
        if !addr.ip().is_loopback() {
            return Err(io::Error::other(format!("{}: not loopback: {addr}", spec.name)));
        }
        proc.addr = addr;
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: signals our own child's process group.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// /proc accounting.

struct Stat {
    pgrp: i32,
    /// utime + stime + cutime + cstime, clock ticks
    cpu_ticks: u64,
    own_ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces).
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] = state (field 3); field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let own = num(14)? + num(15)?;
    Some(Stat {
        pgrp: f.get(5 - 3)?.parse().ok()?,
        cpu_ticks: own + num(16)? + num(17)?,
        own_ticks: own,
    })
}

fn group_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some(st) = read_stat(pid) {
                    if st.pgrp == pgid as i32 {
                        pids.push(pid);
                    }
                }
            }
        }
    }
    pids
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// CPU seconds used by the server: the leader's own and reaped children's time
/// plus the live members of its process group (forked children not yet reaped).
pub fn server_cpu(proc: &ServerProc) -> f64 {
    let leader = proc.pid();
    let mut ticks = read_stat(leader).map(|s| s.cpu_ticks).unwrap_or(0);
    if proc.spec.forking {
        for pid in group_members(leader) {
            if pid != leader {
                ticks += read_stat(pid).map(|s| s.own_ticks).unwrap_or(0);
            }
        }
    }
    ticks as f64 / clock_ticks()
}

/// Busy CPU seconds of the whole machine (all cores) from /proc/stat:
/// user + nice + system + irq + softirq + steal.
pub fn machine_busy() -> f64 {
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
    // user nice system idle iowait irq softirq steal
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) as f64 / clock_ticks()
}

fn status_kb(pid: u32, file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Sum of VmRSS over the process group, bytes.
    pub rss: u64,
    /// Sum of Pss (smaps_rollup) over the process group, bytes.
    pub pss: u64,
    pub processes: usize,
    pub threads: u64,
}

pub fn memory(proc: &ServerProc) -> Memory {
    let leader = proc.pid();
    let pids = if proc.spec.forking {
        group_members(leader)
    } else {
        vec![leader]
    };
    let mut m = Memory::default();
    for pid in pids {
        m.rss += status_kb(pid, "status", "VmRSS:").unwrap_or(0) * 1024;
        m.pss += status_kb(pid, "smaps_rollup", "Pss:").unwrap_or(0) * 1024;
        m.threads += status_kb(pid, "status", "Threads:").unwrap_or(0);
        m.processes += 1;
    }
    m
}

// ---------------------------------------------------------------------------
// Server side (`--serve`).

pub struct ServeArgs {
    pub name: String,
    pub bind: String,
    pub max_children: usize,
}

pub fn serve(args: &ServeArgs) -> io::Result<()> {
    raise_nofile();
    match args.name.as_str() {
        "tokio" => tokio_echo(&args.bind),
        "raw-threaded" => raw_threaded(&args.bind),
        "raw-sync" => raw_sync(&args.bind),
        "raw-udp" => raw_udp(&args.bind),
        other => super::sockserve_servers::serve(other, args),
    }
}

pub fn announce(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// tokio's canonical echo server on the multi-threaded runtime
/// (one task per connection, 1 KiB heap buffer per task).
fn tokio_echo(bind: &str) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        announce(listener.local_addr()?);
        loop {
            let (mut s, _) = match listener.accept().await {
                Ok(c) => c,
                Err(_) => continue,
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}

fn echo_loop(mut s: std::net::TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// The simplest std-only server: one thread per connection.
fn raw_threaded(bind: &str) -> io::Result<()> {
    let l = TcpListener::bind(bind)?;
    announce(l.local_addr()?);
    for s in l.incoming().flatten() {
        std::thread::spawn(move || echo_loop(s));
    }
    Ok(())
}

/// The simplest std-only synchronous server: one connection at a time.
fn raw_sync(bind: &str) -> io::Result<()> {
    let l = TcpListener::bind(bind)?;
    announce(l.local_addr()?);
    for s in l.incoming().flatten() {
        echo_loop(s);
    }
    Ok(())
}

/// A recv_from/send_to loop.
fn raw_udp(bind: &str) -> io::Result<()> {
    let s = UdpSocket::bind(bind)?;
    announce(s.local_addr()?);
    let mut buf = [0u8; 8192];
    loop {
        let (n, peer) = s.recv_from(&mut buf)?;
        let _ = s.send_to(&buf[..n], peer);
    }
}
