#[sockserve::server(tcp, request_queue_size = -1)]
struct Echo;

fn main() {}
