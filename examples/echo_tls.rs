//! Line echo over TLS (Python's `ssl.SSLContext.wrap_socket` on a `ThreadingTCPServer`):
//! `echo_tcp`'s protocol, encrypted.
//!
//! ```sh
//! cargo run --example echo_tls -- --bind 127.0.0.1:9443 --cert cert.pem --key key.pem
//! printf 'hello\n' | openssl s_client -quiet -connect 127.0.0.1:9443 -CAfile ca.pem
//! ```
//!
//! `--bind PATH` (with a `/`) serves a Unix stream socket instead. `--client-ca PEM` turns on
//! mutual TLS: a client without a certificate issued by that CA is refused in the handshake;
//! each client's certificate name is logged. SIGHUP reloads the certificate and key: new
//! connections get them, live ones keep theirs. SIGTERM/SIGINT: stop accepting, answer the
//! lines already received, exit 0.

#[path = "support/mod.rs"]
mod support;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use sockserve::transport::{StreamTransport, Tls};
use support::Connection as _;

/// The handler over TCP.
#[server(tcp, threading, tls)]
struct Echo;

/// The same handler over a Unix stream socket.
#[server(unix_stream, threading, tls)]
struct UnixEcho;

/// One connection: name the client (mutual TLS), then echo lines.
fn serve<T: StreamTransport>(req: &mut StreamRequest<'_, Tls<T>>) -> io::Result<()>
where
    T::Request: support::Connection,
{
    req.request.poll_reads()?;
    let info = req.request.info();
    match info.peer_common_name() {
        Some(name) => log::info!("{}: client {name}", req.client_address),
        None => log::debug!("{}: anonymous client", req.client_address),
    }
    support::serve_lines(&mut req.rfile, &mut req.wfile, IDLE, support::echo)
}

impl StreamHandler<Tls<Tcp>> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Tcp>>) -> io::Result<()> {
        serve(req)
    }
}

impl StreamHandler<Tls<Unix>> for UnixEcho {
    fn handle(&self, req: &mut StreamRequest<'_, Tls<Unix>>) -> io::Result<()> {
        serve(req)
    }
}

/// How long a silent client keeps its connection.
const IDLE: Duration = Duration::from_secs(300);

const SPEC: support::Spec = support::Spec {
    about: "Line echo over TLS, one thread per connection.",
    default_bind: "127.0.0.1:9443",
    bind_value: "HOST:PORT|PATH",
    options: &[
        support::Opt {
            name: "cert",
            value: Some("PEM"),
            help: "the certificate chain, server certificate first (required)",
        },
        support::Opt {
            name: "key",
            value: Some("PEM"),
            help: "the private key (required)",
        },
        support::Opt {
            name: "client-ca",
            value: Some("PEM"),
            help: "mutual TLS: require a client certificate issued by this CA",
        },
        support::MAX_THREADS,
        support::CONNECTION_TIMEOUT,
    ],
};

fn main() -> ExitCode {
    // SIGHUP reloads the certificate in place (support::tls_config), not the process.
    let graceful = sockserve::signals::Graceful::DEFAULT.reload(false);
    let served = support::start_with(graceful).and_then(|stopper| {
        let args = support::parse_args(&SPEC);
        let config = support::tls_config(
            args.value("cert"),
            args.value("key"),
            args.value("client-ca"),
            &[],
        );
        if args.bind.contains('/') {
            let server = UnixEcho.bind_with(
                (args.bind.as_str(), config),
                args.server_options(UnixEcho::OPTIONS),
            )?;
            support::serve(server, stopper)
        } else {
            let server = Echo.bind_with((args.bind.as_str(), config), args.server_options(Echo::OPTIONS))?;
            support::serve(server, stopper)
        }
    });
    support::report(served)
}
