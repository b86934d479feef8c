//! sockserve's servers (placeholder until sockserve-core compiles).

use std::io;

use super::servers::ServeArgs;

pub fn serve(name: &str, args: &ServeArgs) -> io::Result<()> {
    let _ = args.max_children;
    Err(io::Error::other(format!("unknown server {name:?}")))
}

pub const AVAILABLE: bool = false;
