//! Admission control with `verify_request`: only listed client addresses are served.
//!
//! ```sh
//! cargo run --example allowlist -- --bind 127.0.0.1:9005 --allow 127.0.0.1,::1
//! printf 'hi\n' | nc -N 127.0.0.1 9005                    # welcome 127.0.0.1:NNNN, then hi
//! cargo run --example allowlist -- --bind 127.0.0.1:9005 --allow 127.0.0.2
//! printf 'hi\n' | nc -N 127.0.0.1 9005                    # nothing: closed without a reply
//! printf 'hi\n' | nc -N -s 127.0.0.2 127.0.0.1 9005       # served
//! cargo run --example allowlist -- --bind 127.0.0.1:9005 --allow 127.0.0.2 --proxy-protocol
//! ```
//!
//! With `--proxy-protocol` every connection must start with a PROXY protocol header (v1 or
//! v2), as HAProxy sends with `send-proxy`/`send-proxy-v2`: the header is read before
//! `verify_request` (on the handler thread), so the list is matched against the original
//! client, not the proxy; a connection without a valid header is logged and closed.
//!
//! `verify_request` runs before the handler, with the
//! accepted connection and the client's address. Returning `false` makes the server close the
//! connection at once (`shutdown_request`): the client reads end of file, no byte of reply. IPv4
//! clients of an IPv6 socket (`::ffff:a.b.c.d`) are matched as their IPv4 address. Admitted
//! clients get `welcome ADDR` and then a line echo.

#[path = "support/mod.rs"]
mod support;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use sockserve::transport::{Proxied, ProxyProtocol};
use support::Connection as _;

/// `proxy_protocol` makes the transport `Proxied<Tcp>`: with `--proxy-protocol` every
/// connection must start with a PROXY header (v1 or v2), read before `verify_request`.
#[server(tcp, threading, proxy_protocol = "any")]
struct Gate {
    allowed: Vec<IpAddr>,
}

/// An address as compared against the list: IPv4-mapped IPv6 becomes IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl StreamHandler<Proxied<Tcp>> for Gate {
    fn verify_request(&self, _request: &TcpStream, client_address: &SocketAddr) -> bool {
        let admitted = self.allowed.contains(&canonical(client_address.ip()));
        if !admitted {
            log::info!("refused {client_address}: not in the allow list");
        }
        admitted
    }

    fn setup(&self, req: &mut StreamRequest<'_, Proxied<Tcp>>) -> io::Result<()> {
        req.request.poll_reads()
    }

    fn handle(&self, req: &mut StreamRequest<'_, Proxied<Tcp>>) -> io::Result<()> {
        writeln!(req.wfile, "welcome {}", req.client_address)?;
        support::serve_lines(&mut req.rfile, &mut req.wfile, IDLE, support::echo)
    }

    /// A connection without a valid PROXY header is refused like one not on the list, and
    /// said so at the same level (the default reports failed prepare stages at debug level
    /// only, so that a port scan does not flood the log; behind a proxy a bad header means a
    /// misconfiguration worth seeing).
    fn handle_error(&self, client_address: &SocketAddr, error: &RequestError) {
        match error {
            RequestError::Prepare(e) => log::info!("refused {client_address}: {e}"),
            other => sockserve::log_request_error(client_address, other),
        }
    }
}

/// How long a silent client keeps its connection.
const IDLE: Duration = Duration::from_secs(300);

/// Parses `--allow`: IP addresses separated by commas.
fn parse_allow(list: &str) -> Result<Vec<IpAddr>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .map(canonical)
                .map_err(|_| format!("`{s}` is not an IP address"))
        })
        .collect()
}

const SPEC: support::Spec = support::Spec {
    about: "Line echo for listed client addresses only; others are closed without a reply.",
    default_bind: "127.0.0.1:9005",
    bind_value: "HOST:PORT",
    options: &[
        support::Opt {
            name: "allow",
            value: Some("IP,IP..."),
            help: "client addresses to serve [default: 127.0.0.1,::1]",
        },
        support::Opt {
            name: "proxy-protocol",
            value: None,
            help: "connections start with a PROXY v1 or v2 header (behind HAProxy)",
        },
    ],
};

fn main() -> ExitCode {
    support::run(&SPEC, |args| {
        let allowed = match parse_allow(args.value("allow").unwrap_or("127.0.0.1,::1")) {
            Ok(allowed) => allowed,
            Err(message) => {
                log::error!("--allow: {message}");
                std::process::exit(2);
            }
        };
        log::info!("allowing {allowed:?}");
        // The attribute declares the PROXY header; without the flag none is expected.
        let mut options = Gate::OPTIONS;
        if !args.flag("proxy-protocol") {
            options.proxy_protocol = ProxyProtocol::Off;
        }
        support::bind_declared(Gate { allowed }, args, options)
    })
}
