#[sockserve::server(tcp, multiplex, max_threads = 8)]
struct Echo;

fn main() {}
