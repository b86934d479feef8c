//! Line echo over TCP on the multiplex model: a few event-loop threads serve every connection.
//!
//! ```sh
//! cargo run --example echo_multiplex -- --bind 127.0.0.1:9000 --workers 2
//! printf 'hello\nworld\n' | nc -N 127.0.0.1 9000
//! ```
//!
//! The protocol of `echo_tcp`: every line a client sends comes back unchanged; a line longer
//! than 4096 bytes gets `error: line too long` and the connection is closed; a last line
//! without a newline is echoed when the client half-closes; a client idle for 5 minutes is
//! dropped. Where `echo_tcp` blocks a thread per connection in `read`, this one keeps a
//! small state per connection and reacts to input. `--delay MS` holds each reply on a timer
//! (a callback must not sleep: it would stall every connection of its worker).
//! SIGTERM/SIGINT: stop accepting, send the replies in flight, exit 0.
//!
//! `--cert PEM --key PEM` serves the same protocol over TLS (`Server<Tls<Tcp>, Multiplex, _>`):
//! each handshake is driven by the event loop without blocking it, before the connection's
//! first callback. SIGHUP then reloads the certificate and key in place (as `echo_tls`);
//! without TLS it hands the listening socket to a new process.
//!
//! ```sh
//! cargo run --example echo_multiplex -- --cert cert.pem --key key.pem
//! printf 'hello\n' | openssl s_client -quiet -connect 127.0.0.1:9000 -CAfile ca.pem
//! ```

#[path = "support/mod.rs"]
mod support;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use sockserve::transport::{Tls, Transport};

/// The handler: the server-wide state is nothing; each connection's state is [`Held`].
#[server(tcp, multiplex, idle_timeout = "300s")]
struct Echo;

/// One connection's state.
#[derive(Default)]
struct Held {
    /// Replies waiting for the `--delay` timer.
    replies: Vec<u8>,
    /// The client half-closed: close once the held replies are sent.
    eof: bool,
    /// A line was too long: the error is sent, and input is read and dropped until the client
    /// closes (or a short grace period ends), so that closing does not reset the connection
    /// and destroy the error before the client reads it.
    discarding: bool,
}

/// One handler for plain TCP and for TLS over TCP.
impl<T: Transport> ConnectionHandler<T> for Echo {
    type Conn = Held;

    fn connected(&self, _io: &mut ConnIo<'_, T>) -> io::Result<Held> {
        Ok(Held::default())
    }

    fn input(&self, held: &mut Held, io: &mut ConnIo<'_, T>, input: &[u8]) -> io::Result<usize> {
        if held.discarding {
            return Ok(input.len());
        }
        let mut consumed = 0;
        while let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line = &input[consumed..consumed + end + 1];
            if line.len() > support::MAX_LINE {
                too_long(held, io);
                return Ok(input.len());
            }
            reply(held, io, line);
            consumed += end + 1;
        }
        if input.len() - consumed >= support::MAX_LINE {
            too_long(held, io);
            return Ok(input.len());
        }
        Ok(consumed)
    }

    fn read_closed(&self, held: &mut Held, io: &mut ConnIo<'_, T>, rest: &[u8]) -> io::Result<()> {
        // A last line without a newline is echoed too.
        if !rest.is_empty() && !held.discarding {
            reply(held, io, rest);
        }
        held.eof = true;
        if held.replies.is_empty() {
            io.close();
        }
        Ok(())
    }

    fn timer(&self, held: &mut Held, io: &mut ConnIo<'_, T>) -> io::Result<()> {
        io.write(&std::mem::take(&mut held.replies));
        if held.eof || held.discarding {
            io.close();
        }
        Ok(())
    }
}

/// Sends `line` back now, or when the `--delay` timer fires.
fn reply<T: Transport>(held: &mut Held, io: &mut ConnIo<'_, T>, line: &[u8]) {
    let delay = support::delay();
    if delay.is_zero() {
        io.write(line);
        return;
    }
    if held.replies.is_empty() {
        io.set_timer(delay);
    }
    held.replies.extend_from_slice(line);
}

fn too_long<T: Transport>(held: &mut Held, io: &mut ConnIo<'_, T>) {
    io.write(&std::mem::take(&mut held.replies));
    io.write(b"error: line too long\n");
    io.shutdown_write();
    held.discarding = true;
    io.set_timer(Duration::from_millis(250));
}

/// `--workers N`: the event-loop threads.
const WORKERS: support::Opt = support::Opt {
    name: "workers",
    value: Some("N"),
    help: "event-loop threads [default: one per CPU] (workers)",
};

const SPEC: support::Spec = support::Spec {
    about: "Line echo over TCP (or TLS), many connections per event-loop thread.",
    default_bind: "127.0.0.1:9000",
    bind_value: "HOST:PORT",
    options: &[
        WORKERS,
        support::Opt {
            name: "cert",
            value: Some("PEM"),
            help: "serve TLS with this certificate chain (with --key; SIGHUP reloads both)",
        },
        support::Opt {
            name: "key",
            value: Some("PEM"),
            help: "the private key of --cert",
        },
    ],
};

fn main() -> ExitCode {
    // With TLS, SIGHUP reloads the certificate in place (support::tls_config), not the process.
    let tls = std::env::args().any(|a| a == "--cert" || a == "--key");
    let graceful = sockserve::signals::Graceful::DEFAULT.reload(!tls);
    let served = support::start_with(graceful).and_then(|stopper| {
        let args = support::parse_args(&SPEC);
        let mut options = args.server_options(Echo::OPTIONS);
        if let Some(value) = args.value(WORKERS.name) {
            match value.parse::<usize>() {
                Ok(n) if n > 0 => options.workers = Some(n),
                _ => {
                    eprintln!("error: `--workers` takes a whole number above 0, not `{value}`");
                    std::process::exit(2);
                }
            }
        }
        if tls {
            let config = support::tls_config(args.value("cert"), args.value("key"), None, &[]);
            let server: Server<Tls<Tcp>, Multiplex, Echo> =
                Server::with_options((args.bind.as_str(), config), Echo, options)?;
            return support::serve(server, stopper);
        }
        // `--bind systemd`, or the socket handed over by a SIGHUP reload.
        support::serve(support::bind_declared(Echo, &args, options)?, stopper)
    });
    support::report(served)
}
