#[sockserve::server(unix_stream, multiplex, max_children = 8)]
struct Echo;

fn main() {}
