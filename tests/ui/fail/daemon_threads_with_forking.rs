#[sockserve::server(udp, forking, daemon_threads = true)]
struct Echo;

fn main() {}
