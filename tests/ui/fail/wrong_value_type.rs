#[sockserve::server(tcp, threading, daemon_threads = "yes")]
struct Echo;

#[sockserve::server(udp, forking, max_children = "40")]
struct Fork;

fn main() {}
