#[sockserve::server(udp, pooled)]
struct Echo;

fn main() {}
