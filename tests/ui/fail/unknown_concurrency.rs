#[sockserve::server(tcp, threding)]
struct Echo;

fn main() {}
