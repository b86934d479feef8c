#[sockserve::server(tcp, name = "Echo Server")]
struct Echo;

fn main() {}
