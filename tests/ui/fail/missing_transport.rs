#[sockserve::server(threading, timeout = "1s")]
struct Echo;

#[sockserve::server]
struct Bare;

fn main() {}
