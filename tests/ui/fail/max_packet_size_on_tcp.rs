#[sockserve::server(tcp, max_packet_size = 1024)]
struct Echo;

fn main() {}
