// No concurrency word means `sync`, which has no threads to make daemons of.
#[sockserve::server(tcp, daemon_threads = true)]
struct Echo;

fn main() {}
