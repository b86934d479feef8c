#[sockserve::server(unix_datagram, rbufsize = 0)]
struct Echo;

fn main() {}
