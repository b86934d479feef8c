#[sockserve::server(tcp, poll_interval = "0ms")]
struct Echo;

fn main() {}
