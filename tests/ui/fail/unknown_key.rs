#[sockserve::server(tcp, timout = "5s")]
struct Echo;

fn main() {}
