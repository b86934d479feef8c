#[sockserve::server(unix_stream, socket_mode = 660)]
struct Decimal;

#[sockserve::server(unix_stream, socket_mode = 0o1777)]
struct Sticky;

fn main() {}
