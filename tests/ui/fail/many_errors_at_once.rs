// All mistakes of one attribute are reported in one build.
#[sockserve::server(tcp, udp, threding, timout = "1s", max_packet_size = 0)]
struct Echo;

fn main() {}
