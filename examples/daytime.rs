//! The Daytime Protocol (RFC 867) over TCP and UDP, both servers in one process.
//!
//! ```sh
//! cargo run --example daytime -- --bind 127.0.0.1:8013
//! nc -d 127.0.0.1 8013                                 # TCP: the time, then the server closes
//! echo | socat -t1 - UDP:127.0.0.1:8013               # UDP: any datagram gets the time back
//! ```
//!
//! The reply is one line in the format RFC 867 suggests, in UTC:
//! `Tuesday, February 22, 1982 17:37:43-UTC` followed by CR LF. Over TCP, whatever the client
//! sends is ignored and the server closes after the line; over UDP, every datagram (its content
//! ignored) gets one datagram back.
//!
//! Addresses: `--bind HOST:PORT` is the TCP address (default 127.0.0.1:8013, since the
//! well-known port 13 needs privileges). The UDP server binds `--udp-bind HOST:PORT` if given,
//! otherwise the same host and the same *real* port as the TCP server (so with `--bind
//! 127.0.0.1:0` both end up on one port number). stdout says:
//!
//! ```text
//! listening on 127.0.0.1:8013
//! listening on 127.0.0.1:8013 (udp)
//! ```
//!
//! Each server runs `serve_forever` on a thread of its own; SIGTERM/SIGINT shuts both down.

#[path = "support/mod.rs"]
mod support;

use std::io::{self, Write};
use std::process::ExitCode;
use std::thread;

use sockserve::prelude::*;
use sockserve::server;
use support::Connection as _;

/// The daytime line, with the CR LF the RFC's examples use.
fn daytime() -> String {
    format!("{}\r\n", support::Utc::now().daytime())
}

#[server(tcp)]
struct DaytimeTcp;

impl StreamHandler for DaytimeTcp {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        support::simulate_work();
        req.wfile.write_all(daytime().as_bytes())?;
        // The RFC throws away what the client sends; read it so closing does not reset.
        req.request.close_gently();
        Ok(())
    }
}

#[server(udp)]
struct DaytimeUdp;

impl DatagramHandler for DaytimeUdp {
    fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        support::simulate_work();
        req.wfile.extend_from_slice(daytime().as_bytes());
        Ok(())
    }
}

const SPEC: support::Spec = support::Spec {
    about: "The Daytime Protocol (RFC 867) over TCP and UDP.",
    default_bind: "127.0.0.1:8013",
    bind_value: "HOST:PORT",
    options: &[support::Opt {
        name: "udp-bind",
        value: Some("HOST:PORT"),
        help: "UDP address [default: the TCP server's host and real port]",
    }],
};

fn main() -> ExitCode {
    support::report(run())
}

fn run() -> io::Result<()> {
    let stopper = support::start()?;
    let args = support::parse_args(&SPEC);
    let tcp = DaytimeTcp.bind(args.bind.as_str())?;
    let tcp_address = tcp.server_address();
    let udp = match args.value("udp-bind") {
        Some(address) => DaytimeUdp.bind(address)?,
        None => DaytimeUdp.bind(tcp_address)?,
    };
    support::announce(tcp_address);
    println!("listening on {} (udp)", udp.server_address());
    io::stdout().flush()?;

    let (tcp_handle, udp_handle) = (tcp.shutdown_handle(), udp.shutdown_handle());
    let _stop = stopper.on_stop(move || {
        tcp_handle.shutdown();
        udp_handle.shutdown();
    });
    thread::scope(|scope| {
        let udp_thread = scope.spawn(|| udp.serve_forever());
        let served = tcp.serve_forever();
        // If one server fails, stop the other too.
        udp.shutdown();
        let udp_served = udp_thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the UDP serving thread panicked")));
        served.and(udp_served)
    })
}
