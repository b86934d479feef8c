#[sockserve::server(tcp, udp)]
struct Echo;

fn main() {}
