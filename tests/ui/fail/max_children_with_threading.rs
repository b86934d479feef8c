#[sockserve::server(tcp, threading, max_children = 8)]
struct Echo;

fn main() {}
