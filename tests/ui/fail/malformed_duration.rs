#[sockserve::server(tcp, timeout = "5 seconds")]
struct Echo;

fn main() {}
