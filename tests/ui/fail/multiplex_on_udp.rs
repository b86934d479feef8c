#[sockserve::server(udp, multiplex)]
struct Echo;

fn main() {}
