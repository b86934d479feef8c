#[sockserve::server(tcp, threading, daemon_threads)]
struct Echo;

fn main() {}
