#[sockserve::server(tcp, threading, forking)]
struct Echo;

fn main() {}
