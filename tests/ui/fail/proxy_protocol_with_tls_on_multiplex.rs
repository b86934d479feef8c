#[sockserve::server(tcp, multiplex, tls, proxy_protocol = "v2")]
struct Echo;

fn main() {}
