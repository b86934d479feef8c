//! A Sun RPC calculator over UDP and TCP (Python's `socketserver` names Sun RPC as the reason
//! for having both): exactly the interface of `examples/rpc_calc/calc.x`, so any client
//! `rpcgen` generates from that file works.
//!
//! ```sh
//! cargo run --example rpc_calc -- --bind 127.0.0.1:0
//! rpcinfo -p | grep 536892243          # registered over tcp and udp
//! rpcinfo -t 127.0.0.1 536892243 1     # program 536892243 version 1 ready and waiting
//! ```
//!
//! - `CALC_ADD` adds two ints (wrapping), `CALC_ECHO` returns its text (at most 1024 bytes),
//!   `CALC_COUNT` returns how many `CALC_ADD`, `CALC_ECHO` and `CALC_COUNT` calls the server
//!   has served, this one included, over both transports (NULL pings are not counted).
//! - TCP and UDP listen on the same port (`--bind` port 0: any free port that is free for
//!   both); the `listening on` line gives the TCP address. TCP is threaded and drops a client
//!   silent for `--idle-timeout` seconds; UDP answers one datagram at a time.
//! - The program is registered with the system's rpcbind at start and unregistered on
//!   SIGTERM/SIGINT; without rpcbind the server refuses to start unless `--no-rpcbind`.

#[path = "../support/mod.rs"]
mod support;

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sockserve::rpc::{RpcOptions, RpcServer, RpcService, XdrString};
use sockserve::{rpc_program, Xdr};

/// `struct pair`.
#[derive(Xdr, Debug, Clone, Copy)]
struct Pair {
    a: i32,
    b: i32,
}

/// `typedef string text<1024>;`
type Text = XdrString<1024>;

/// The calculator's state: calls served, shared by both transports.
#[derive(Default)]
struct Calc {
    served: AtomicU64,
}

impl Calc {
    /// Counts one call; returns the count including it.
    fn served(&self) -> u64 {
        support::simulate_work();
        self.served.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[rpc_program(program = 0x2000_5353, version = 1)]
impl Calc {
    /// `int CALC_ADD(pair) = 1;`
    #[proc(1)]
    fn add(&self, p: Pair) -> i32 {
        self.served();
        p.a.wrapping_add(p.b)
    }

    /// `text CALC_ECHO(text) = 2;`
    #[proc(2)]
    fn echo(&self, text: Text) -> Text {
        self.served();
        text
    }

    /// `unsigned hyper CALC_COUNT(void) = 3;`
    #[proc(3)]
    fn count(&self) -> u64 {
        self.served()
    }
}

const SPEC: support::Spec = support::Spec {
    about: "Sun RPC calculator (calc.x: CALC_ADD, CALC_ECHO, CALC_COUNT) over UDP and TCP, registered with rpcbind.",
    default_bind: "127.0.0.1:0",
    bind_value: "HOST:PORT",
    options: &[
        support::Opt {
            name: "no-rpcbind",
            value: None,
            help: "do not register with rpcbind",
        },
        support::Opt {
            name: "idle-timeout",
            value: Some("SECS"),
            help: "drop a TCP client silent that long [default: 60]",
        },
    ],
};

fn main() -> ExitCode {
    support::report(run())
}

fn run() -> io::Result<()> {
    let stopper = support::start()?;
    let args = support::parse_args(&SPEC);
    let idle: u64 = match args.value("idle-timeout") {
        None => 60,
        Some(v) => v.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`--idle-timeout` takes seconds, not `{v}`"),
            )
        })?,
    };
    let mut options = RpcOptions::default();
    options.tcp.connection_timeout = Some(Duration::from_secs(idle.max(1)));
    if args.flag("no-rpcbind") {
        options.rpcbind = None;
    }
    let service = RpcService::new().with(Calc::default());
    let server: RpcServer = RpcServer::bind(args.bind.as_str(), service, options)?;
    support::announce(server.tcp_address());
    let handle = server.shutdown_handle();
    let _stop = stopper.on_stop(move || handle.shutdown());
    server.serve_forever()
    // Dropping the server unregisters from rpcbind and closes both sockets.
}
