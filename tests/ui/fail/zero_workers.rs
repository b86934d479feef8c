#[sockserve::server(tcp, multiplex, workers = 0)]
struct Echo;

fn main() {}
