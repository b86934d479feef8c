use sockserve::server;

#[server(tcp, threading, proxy_protocol = "v3")]
struct Gate;

fn main() {}
