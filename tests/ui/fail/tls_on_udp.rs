// TLS runs over connections: `tls` with a datagram transport is one error, on the word.
use sockserve::server;

#[server(udp, tls)]
struct Echo;

fn main() {}
