#[sockserve::server(tcp, forking, max_children = 300u8)]
struct Echo;

fn main() {}
