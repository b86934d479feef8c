#[sockserve::server(tcp, pooled, daemon_threads = false)]
struct Echo;

fn main() {}
