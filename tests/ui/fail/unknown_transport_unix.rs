#[sockserve::server(unix)]
struct Echo;

fn main() {}
