//! sockserve: Python's `socketserver`, composed at compile time.
//!
//! Annotate a handler struct with [`server`], implement the handler trait of its transport,
//! bind, serve:
//!
//! ```no_run
//! use std::io::{self, BufRead, Write};
//! use sockserve::prelude::*;
//! use sockserve::server;
//!
//! #[server(tcp, threading, connection_timeout = "30s")]
//! struct Echo;
//!
//! impl StreamHandler for Echo {
//!     fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
//!         let mut line = Vec::new();
//!         while req.rfile.read_until(b'\n', &mut line)? > 0 {
//!             req.wfile.write_all(&line)?;
//!             line.clear();
//!         }
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> io::Result<()> {
//!     let server: EchoServer = Echo.bind("127.0.0.1:9000")?; // = ThreadingTcpServer<Echo>
//!     println!("listening on {}", server.server_address());
//!     server.serve_forever()
//! }
//! ```
//!
//! This crate re-exports the runtime, [`sockserve_core`] (transports, concurrency mix-ins,
//! handler kinds, hooks: its documentation explains the design and which server to pick), and
//! the [`server`] attribute macro from `sockserve-macros`, which only names core's types.
#![forbid(unsafe_code)]

pub use sockserve_core::*;
pub use sockserve_macros::server;
pub use sockserve_macros::{rpc_program, Xdr};
/// ONC RPC (Sun RPC) servers over UDP and TCP: the `sockserve-rpc` crate.
pub use sockserve_rpc as rpc;
