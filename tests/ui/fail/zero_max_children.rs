#[sockserve::server(tcp, forking, max_children = 0)]
struct Echo;

fn main() {}
