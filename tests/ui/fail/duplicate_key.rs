#[sockserve::server(tcp, timeout = "1s", timeout = "2s")]
struct Echo;

fn main() {}
