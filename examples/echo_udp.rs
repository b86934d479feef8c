//! Datagram echo over UDP (Python's `UDPServer`): each datagram comes back to its sender.
//!
//! ```sh
//! cargo run --example echo_udp -- --bind 127.0.0.1:9001
//! echo hello | socat -t1 - UDP:127.0.0.1:9001
//! ```
//!
//! A synchronous server: datagrams are answered one at a time, in the serving thread. A
//! datagram larger than `max_packet_size` (8192 bytes) is dropped with a logged error rather
//! than answered truncated. SIGTERM/SIGINT: answer the datagram in hand, exit 0.

#[path = "support/mod.rs"]
mod support;

use std::io;
use std::process::ExitCode;

use sockserve::prelude::*;
use sockserve::server;

#[server(udp)]
struct Echo;

impl DatagramHandler for Echo {
    fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        support::simulate_work();
        req.wfile.extend_from_slice(req.packet);
        Ok(())
    }
}

const SPEC: support::Spec = support::Spec {
    about: "Datagram echo over UDP.",
    default_bind: "127.0.0.1:9001",
    bind_value: "HOST:PORT",
    options: &[],
};

fn main() -> ExitCode {
    support::run(&SPEC, |args| Echo.bind(args.bind.as_str()))
}
