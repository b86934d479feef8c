//! Datagram echo over a Unix datagram socket (Python's `UnixDatagramServer`).
//!
//! ```sh
//! cargo run --example echo_unix_datagram -- --bind /tmp/echo.dgram
//! echo hello | socat -t1 - UNIX-SENDTO:/tmp/echo.dgram,bind=/tmp/client.dgram
//! ```
//!
//! A reply needs an address to go to: a client must bind its socket to a path (socat's
//! `bind=`), as with any Unix datagram service. Datagrams from unnamed sockets are logged and
//! not answered. The socket file is removed when the server stops (SIGTERM/SIGINT).

#[path = "support/mod.rs"]
mod support;

use std::io;
use std::process::ExitCode;

use sockserve::prelude::*;
use sockserve::server;

#[server(unix_datagram)]
struct Echo;

impl DatagramHandler<UnixDgram> for Echo {
    fn handle(&self, req: &mut DatagramRequest<'_, UnixDgram>) -> io::Result<()> {
        if *req.client_address == UnixAddr::Unnamed {
            log::warn!(
                "datagram of {} bytes from an unnamed socket: no address to answer",
                req.packet.len()
            );
            return Ok(());
        }
        support::simulate_work();
        req.wfile.extend_from_slice(req.packet);
        Ok(())
    }
}

const SPEC: support::Spec = support::Spec {
    about: "Datagram echo over a Unix datagram socket.",
    default_bind: "/tmp/sockserve-echo-datagram.sock",
    bind_value: "PATH",
    options: &[],
};

fn main() -> ExitCode {
    support::run(&SPEC, |args| Echo.bind(args.bind.as_str()))
}
