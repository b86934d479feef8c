#[sockserve::server(tpc)]
struct Echo;

fn main() {}
