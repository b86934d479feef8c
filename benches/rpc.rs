//! RPC benchmark: NULL and CALC_ADD calls per second over UDP and TCP, sockserve's RPC server
//! against the C server `rpcgen` generates from the same `examples/rpc_calc/calc.x` (its
//! `main` and `svc_run` from libtirpc, the procedures in `benches/rpc/calc_server.c`), each a
//! child process, driven by the same clients over 127.0.0.1 in the same run.
//!
//! ```sh
//! cargo bench --bench rpc              # full run (about 2 minutes)
//! cargo bench --bench rpc -- --quick   # quick check (about 30 s)
//! ```
//!
//! Each client is a thread with one call outstanding (send, wait for the reply, repeat),
//! with a socket or connection of its own; every window is bounded in calls and in time.
//! The C server is found through rpcbind (it registers itself, as rpcgen's `main` does, and
//! is unregistered when it is stopped); the sockserve server is this binary re-run with
//! `--serve`, registering nothing.
//!
//! Without `--bench` in its arguments (as under `cargo test --benches`) the binary only
//! prints how to run it, so tests never generate load. Needs rpcgen, cc, libtirpc and a
//! running rpcbind (`scripts/test` installs and starts them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use sockserve::rpc::{Protocol, RpcOptions, RpcServer, RpcService, Rpcbind, XdrString};
use sockserve::{rpc_program, Xdr};

const PROG: u32 = 0x2000_5353;

/// `struct pair`.
#[derive(Xdr)]
struct Pair {
    a: i32,
    b: i32,
}

/// The same program as the rpc_calc example.
#[derive(Default)]
struct Calc {
    served: std::sync::atomic::AtomicU64,
}

#[rpc_program(program = 0x2000_5353, version = 1)]
impl Calc {
    #[proc(1)]
    fn add(&self, p: Pair) -> i32 {
        self.served.fetch_add(1, Ordering::Relaxed);
        p.a.wrapping_add(p.b)
    }

    #[proc(2)]
    fn echo(&self, text: XdrString<1024>) -> XdrString<1024> {
        self.served.fetch_add(1, Ordering::Relaxed);
        text
    }

    #[proc(3)]
    fn count(&self) -> u64 {
        self.served.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// `--serve`: the sockserve server, printing `listening on ADDR` (TCP and UDP share it).
fn serve() {
    let server: RpcServer = RpcServer::bind(
        "127.0.0.1:0",
        RpcService::new().with(Calc::default()),
        RpcOptions::unregistered(),
    )
    .expect("bind");
    println!("listening on {}", server.tcp_address());
    let _ = std::io::stdout().flush();
    server.serve_forever().expect("serve");
}

struct ServerProc {
    name: &'static str,
    child: Child,
    udp: SocketAddr,
    tcp: SocketAddr,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sockserve() -> ServerProc {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .stdout(Stdio::piped())
        .spawn()
        .expect("re-run the benchmark as a server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on")
        .parse()
        .unwrap();
    ServerProc {
        name: "sockserve",
        child,
        udp: addr,
        tcp: addr,
    }
}

/// Generates the C server from calc.x with rpcgen and builds it in `dir`.
fn build_c_server(dir: &Path) -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(format!("{root}/examples/rpc_calc/calc.x"), dir.join("calc.x")).unwrap();
    for (flag, file) in [("-h", "calc.h"), ("-m", "unused.c"), ("-c", "calc_xdr.c")] {
        let ok = Command::new("rpcgen")
            .args([flag, "calc.x", "-o", file])
            .current_dir(dir)
            .status()
            .expect("rpcgen");
        assert!(ok.success(), "rpcgen {flag}");
    }
    // The server with main (rpcgen's default for `-s`): UDP and TCP, registered with rpcbind.
    let ok = Command::new("rpcgen")
        .args(["-s", "udp", "-s", "tcp", "calc.x", "-o", "calc_svc.c"])
        .current_dir(dir)
        .status()
        .expect("rpcgen");
    assert!(ok.success(), "rpcgen -s");
    let exe = dir.join("calc_server");
    let out = Command::new("cc")
        .args(["-O2", "-I/usr/include/tirpc", "-I"])
        .arg(dir)
        .arg(dir.join("calc_svc.c"))
        .arg(dir.join("calc_xdr.c"))
        .arg(format!("{root}/benches/rpc/calc_server.c"))
        .args(["-ltirpc", "-o"])
        .arg(&exe)
        .output()
        .expect("cc");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

// The child is moved into a ServerProc at once, whose Drop kills and waits for it.
#[allow(clippy::zombie_processes)]
fn start_c(exe: &Path) -> ServerProc {
    let rpcbind = Rpcbind::local();
    let child = Command::new(exe)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the C server");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let udp = rpcbind.getport(PROG, 1, Protocol::Datagram).unwrap_or(0);
        let tcp = rpcbind.getport(PROG, 1, Protocol::Stream).unwrap_or(0);
        if udp != 0 && tcp != 0 {
            return ServerProc {
                name: "rpcgen C",
                child,
                udp: SocketAddr::from(([127, 0, 0, 1], udp)),
                tcp: SocketAddr::from(([127, 0, 0, 1], tcp)),
            };
        }
        assert!(
            Instant::now() < deadline,
            "the C server did not register with rpcbind"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn call(xid: u32, procedure: u32, args: &[u32]) -> Vec<u8> {
    [xid, 0, 2, PROG, 1, procedure, 0, 0, 0, 0]
        .iter()
        .chain(args)
        .flat_map(|w| w.to_be_bytes())
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
}

/// Runs `clients` threads calling `procedure` for `window` (at most `max_calls` each);
/// returns calls per second.
fn measure(
    server: &ServerProc,
    transport: Transport,
    procedure: u32,
    clients: usize,
    window: Duration,
    max_calls: u64,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(clients + 1));
    let addr = match transport {
        Transport::Udp => server.udp,
        Transport::Tcp => server.tcp,
    };
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, barrier) = (Arc::clone(&stop), Arc::clone(&barrier));
            thread::spawn(move || {
                let args: &[u32] = if procedure == 1 { &[20, 22] } else { &[] };
                let mut msg = call(c as u32 * 1_000_000_000, procedure, args);
                let mut framed = Vec::with_capacity(msg.len() + 4);
                let mut buf = [0u8; 256];
                let udp = (transport == Transport::Udp).then(|| {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    s.connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    s
                });
                let mut tcp = (transport == Transport::Tcp).then(|| {
                    let s = TcpStream::connect(addr).unwrap();
                    s.set_nodelay(true).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    s
                });
                barrier.wait();
                let mut done = 0u64;
                let mut lost = 0u64;
                while !stop.load(Ordering::Relaxed) && done < max_calls {
                    let xid = c as u32 * 1_000_000_000 + done as u32 + lost as u32;
                    msg[..4].copy_from_slice(&xid.to_be_bytes());
                    if let Some(s) = &udp {
                        s.send(&msg).unwrap();
                        match s.recv(&mut buf) {
                            Ok(n) if n >= 24 && buf[..4] == xid.to_be_bytes() => done += 1,
                            _ => lost += 1,
                        }
                    } else if let Some(s) = &mut tcp {
                        framed.clear();
                        framed.extend_from_slice(&(0x8000_0000u32 | msg.len() as u32).to_be_bytes());
                        framed.extend_from_slice(&msg);
                        s.write_all(&framed).unwrap();
                        let mut mark = [0u8; 4];
                        s.read_exact(&mut mark).unwrap();
                        let len = (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize;
                        s.read_exact(&mut buf[..len]).unwrap();
                        assert_eq!(buf[..4], xid.to_be_bytes());
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let deadline = started + window;
    while Instant::now() < deadline && !threads.iter().all(|t| t.is_finished()) {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

const USAGE: &str = "RPC benchmark: NULL and CALC_ADD calls/s, sockserve against rpcgen's C server.

  cargo bench --bench rpc              full run (3 repeats, 3 s windows)
  cargo bench --bench rpc -- --quick   quick check (1 repeat, 1 s windows)

  --transport udp|tcp    only this transport
  --procedure 0|1        only NULL (0) or CALC_ADD (1)
  --clients N            only N clients (default: 1 and 4)
  --repeat N             repeats (best one counts)
  --profile CMD          run CMD over each measured window of the sockserve server,
                         {pid} replaced by its pid (e.g. 'perf record -g -p {pid} -o rpc.data')
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--serve") {
        serve();
        return;
    }
    if args.iter().any(|a| a == "--help") || !args.iter().any(|a| a == "--bench") {
        print!("{USAGE}");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let (mut repeat, window) = if quick {
        (1, Duration::from_secs(1))
    } else {
        (3, Duration::from_secs(3))
    };
    if let Some(n) = get("--repeat").and_then(|v| v.parse().ok()) {
        repeat = n;
    }
    let only_transport = get("--transport");
    let only_procedure: Option<u32> = get("--procedure").and_then(|v| v.parse().ok());
    let only_clients: Option<usize> = get("--clients").and_then(|v| v.parse().ok());
    let profile = get("--profile");
    let max_calls = 5_000_000;
    let dir = std::env::temp_dir().join(format!("sockserve-rpc-bench-{}", std::process::id()));
    let c_exe = build_c_server(&dir);
    let c = start_c(&c_exe);
    let rust = start_sockserve();
    println!("{repeat} repeat(s), {window:?} windows, best of the repeats; calls/s\n");
    println!("| transport | procedure | clients | rpcgen C | sockserve | ratio |");
    println!("|---|---|---|---|---|---|");
    for transport in [Transport::Udp, Transport::Tcp] {
        let tname = if transport == Transport::Udp { "udp" } else { "tcp" };
        if only_transport.as_deref().is_some_and(|t| t != tname) {
            continue;
        }
        for (procedure, name) in [(0, "NULL"), (1, "CALC_ADD")] {
            if only_procedure.is_some_and(|p| p != procedure) {
                continue;
            }
            for clients in [1, 4] {
                if only_clients.is_some_and(|n| n != clients) {
                    continue;
                }
                let mut best = [0f64; 2];
                for _ in 0..repeat {
                    // Alternate the servers within a repeat, so drift hits both.
                    for (i, server) in [&c, &rust].into_iter().enumerate() {
                        let warmup = Duration::from_millis(200);
                        measure(server, transport, procedure, clients, warmup, max_calls);
                        let profiler = profile.as_ref().filter(|_| i == 1).map(|cmd| {
                            Command::new("sh")
                                .args(["-c", &cmd.replace("{pid}", &server.child.id().to_string())])
                                .spawn()
                                .expect("run the --profile command")
                        });
                        let rate = measure(server, transport, procedure, clients, window, max_calls);
                        if let Some(mut p) = profiler {
                            // SIGINT ends perf and friends cleanly.
                            let _ = Command::new("kill").args(["-INT", &p.id().to_string()]).status();
                            let _ = p.wait();
                        }
                        best[i] = best[i].max(rate);
                    }
                }
                println!(
                    "| {tname} | {name} | {clients} | {:.0} | {:.0} | {:.2}x |",
                    best[0],
                    best[1],
                    best[1] / best[0]
                );
            }
        }
    }
    let _ = (c.name, rust.name);
    drop(c);
    drop(rust);
    // rpcgen's server stays registered when killed. It registered through rpcbind's local
    // transport (owner "superuser"), which a portmapper v2 UNSET over TCP may not remove:
    // rpcinfo -d can.
    let _ = Command::new("rpcinfo")
        .args(["-d", &PROG.to_string(), "1"])
        .status();
    let _ = std::fs::remove_dir_all(&dir);
}
