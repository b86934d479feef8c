//! ONC RPC (Sun RPC, RFC 5531) servers for sockserve, over UDP and TCP.
//!
//! The pieces, bottom up:
//!
//! - [`xdr`]: the XDR encoding (RFC 4506), the [`Xdr`] trait and the bounded types;
//!   `#[derive(Xdr)]` (re-exported by `sockserve`) implements it for structs, enums and
//!   discriminated unions;
//! - [`msg`]: call and reply messages, AUTH_NONE and AUTH_SYS credentials;
//! - [`record`]: record marking, how messages travel over TCP;
//! - [`service`]: [`Program`] (what `#[rpc_program]` implements for an impl block),
//!   [`RpcService`] (the programs offered, dispatching calls and answering errors), and
//!   [`RpcHandler`], a stream and datagram handler for any sockserve server;
//! - [`rpcbind`]: registration with the system's rpcbind (portmapper v2);
//! - [`RpcServer`]: one service over UDP and TCP on one port, registered with rpcbind, with
//!   the concurrency models of sockserve.
//!
//! Python's `socketserver` names "Sun RPC" as the reason for having both UDP and TCP
//! servers; this crate is that use, with the C world (rpcgen and libtirpc's `svc_run`) as the
//! reference: any client rpcgen generates from the same `.x` file works.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod msg;
pub mod record;
pub mod rpcbind;
mod server;
pub mod service;
pub mod xdr;

pub use msg::{AcceptError, AuthStat, AuthSys, Call, Credentials, Protocol};
pub use rpcbind::{Registration, Rpcbind};
pub use server::{RpcOptions, RpcServer, RpcShutdownHandle};
pub use service::{decode_args, Outcome, ProcError, ProcResult, Program, RpcHandler, RpcService};
pub use xdr::{Decoder, FixedOpaque, Opaque, VarArray, Xdr, XdrError, XdrString};
