use sockserve::server;

#[server(udp, proxy_protocol = "v2")]
struct Gate;

fn main() {}
