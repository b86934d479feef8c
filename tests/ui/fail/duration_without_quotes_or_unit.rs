#[sockserve::server(tcp, timeout = 500ms)]
struct Quoted;

#[sockserve::server(tcp, timeout = 5)]
struct Unit;

fn main() {}
