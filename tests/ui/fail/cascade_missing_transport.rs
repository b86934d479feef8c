// A missing transport is one error, even where the program binds and serves.
use std::io;

use sockserve::Declared;

#[sockserve::server(threading, timeout = "1s")]
struct Echo;

fn main() -> io::Result<()> {
    let server = Echo.bind("127.0.0.1:0")?;
    println!("{}", server.server_address());
    server.serve_forever()
}
