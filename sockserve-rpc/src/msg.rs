//! ONC RPC v2 messages (RFC 5531): the call header, credentials, and the replies.
//!
//! A server reads a call with [`parse_call`] and answers with [`reply_success`],
//! [`reply_accepted`] or [`reply_denied`]. What cannot be a call (fewer than 8 bytes, a
//! message type other than CALL) gets no reply at all, as libtirpc drops it.

use std::fmt;

use crate::xdr::{put_u32, Decoder, XdrError};

/// The RPC protocol version this crate speaks.
pub const RPC_VERSION: u32 = 2;
/// `msg_type` CALL.
pub const CALL: u32 = 0;
/// `msg_type` REPLY.
pub const REPLY: u32 = 1;
/// The most bytes of an `opaque_auth` body (RFC 5531).
pub const MAX_AUTH_BYTES: u32 = 400;
/// AUTH_NONE.
pub const AUTH_NONE: u32 = 0;
/// AUTH_SYS (also known as AUTH_UNIX).
pub const AUTH_SYS: u32 = 1;

/// `accept_stat` of an accepted reply that is not SUCCESS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// PROG_UNAVAIL: the program is not served here.
    ProgUnavail,
    /// PROG_MISMATCH: the program is, but not this version.
    ProgMismatch {
        /// The lowest version served.
        low: u32,
        /// The highest version served.
        high: u32,
    },
    /// PROC_UNAVAIL: the program has no such procedure.
    ProcUnavail,
    /// GARBAGE_ARGS: the arguments could not be decoded.
    GarbageArgs,
    /// SYSTEM_ERR: the server failed (a procedure panicked, a result could not be encoded).
    SystemErr,
}

impl AcceptError {
    /// The `accept_stat` value.
    pub fn code(self) -> u32 {
        match self {
            AcceptError::ProgUnavail => 1,
            AcceptError::ProgMismatch { .. } => 2,
            AcceptError::ProcUnavail => 3,
            AcceptError::GarbageArgs => 4,
            AcceptError::SystemErr => 5,
        }
    }
}

/// `auth_stat` of an AUTH_ERROR reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum AuthStat {
    /// Bad credential (seal broken): a malformed AUTH_SYS body, say.
    BadCred = 1,
    /// The client must begin a new session: an authentication flavor this server rejects.
    RejectedCred = 2,
    /// Bad verifier.
    BadVerf = 3,
    /// Verifier expired or replayed.
    RejectedVerf = 4,
    /// Rejected for security reasons (a procedure may refuse a caller with it).
    TooWeak = 5,
}

/// Why a call is refused (MSG_DENIED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// RPC_MISMATCH: the RPC version is not 2.
    RpcMismatch,
    /// AUTH_ERROR with its `auth_stat`.
    AuthError(AuthStat),
}

/// AUTH_SYS credentials (RFC 5531, appendix A).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSys {
    /// Arbitrary id the caller generated.
    pub stamp: u32,
    /// The caller's host name (at most 255 bytes).
    pub machine_name: String,
    /// The caller's effective user id.
    pub uid: u32,
    /// The caller's effective group id.
    pub gid: u32,
    /// Supplementary groups (at most 16).
    pub gids: Vec<u32>,
}

/// The credentials of a call, as a procedure sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// AUTH_NONE.
    None,
    /// AUTH_SYS.
    Sys(AuthSys),
}

/// The kind of transport a call came over (and, for rpcbind, UDP or TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A datagram transport (UDP): one call per datagram.
    Datagram,
    /// A stream transport (TCP): record-marked calls.
    Stream,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Datagram => "udp",
            Protocol::Stream => "tcp",
        })
    }
}

/// One call, as a procedure sees it.
#[derive(Clone, Debug)]
pub struct Call {
    /// The transaction id.
    pub xid: u32,
    /// The program number.
    pub program: u32,
    /// The program version.
    pub version: u32,
    /// The procedure number.
    pub procedure: u32,
    /// Who called.
    pub credentials: Credentials,
    /// Over which transport.
    pub protocol: Protocol,
}

/// What [`parse_call`] makes of a message that is not a call to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// Not an RPC call, or a call whose header does not decode: no reply.
    NotACall(XdrError),
    /// A call that must be refused with a MSG_DENIED reply to `xid`.
    Denied {
        /// The transaction id to answer.
        xid: u32,
        /// Why.
        denied: Denied,
    },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NotACall(e) => write!(f, "not an RPC call: {e}"),
            CallError::Denied { xid, denied } => write!(f, "call {xid:#x} denied: {denied:?}"),
        }
    }
}

fn auth_sys(body: &[u8]) -> Result<AuthSys, XdrError> {
    let mut d = Decoder::new(body);
    let stamp = d.u32()?;
    let machine_name = d.string(255)?.to_owned();
    let uid = d.u32()?;
    let gid = d.u32()?;
    let n = d.count(16, 4)?;
    let mut gids = Vec::with_capacity(n);
    for _ in 0..n {
        gids.push(d.u32()?);
    }
    if d.remaining() != 0 {
        return Err(XdrError::TooLong {
            len: body.len(),
            max: d.position(),
        });
    }
    Ok(AuthSys {
        stamp,
        machine_name,
        uid,
        gid,
        gids,
    })
}

/// Reads a call header from the start of `message`; the rest of the decoder holds the
/// procedure's arguments.
pub fn parse_call<'a>(message: &'a [u8], protocol: Protocol) -> Result<(Call, Decoder<'a>), CallError> {
    let mut d = Decoder::new(message);
    let xid = d.u32().map_err(CallError::NotACall)?;
    let msg_type = d.u32().map_err(CallError::NotACall)?;
    if msg_type != CALL {
        return Err(CallError::NotACall(XdrError::InvalidDiscriminant {
            type_name: "msg_type CALL",
            value: msg_type as i32,
        }));
    }
    let denied = |denied| CallError::Denied { xid, denied };
    // A header that does not decode gets no reply, as libtirpc drops it.
    let rpcvers = d.u32().map_err(CallError::NotACall)?;
    if rpcvers != RPC_VERSION {
        return Err(denied(Denied::RpcMismatch));
    }
    let program = d.u32().map_err(CallError::NotACall)?;
    let version = d.u32().map_err(CallError::NotACall)?;
    let procedure = d.u32().map_err(CallError::NotACall)?;
    let flavor = d.u32().map_err(CallError::NotACall)?;
    let body = d.opaque(MAX_AUTH_BYTES).map_err(CallError::NotACall)?;
    let verf_flavor = d.u32().map_err(CallError::NotACall)?;
    let _verf = d.opaque(MAX_AUTH_BYTES).map_err(CallError::NotACall)?;
    let bad_cred = |_| denied(Denied::AuthError(AuthStat::BadCred));
    let credentials = match flavor {
        AUTH_NONE => Credentials::None,
        AUTH_SYS => Credentials::Sys(auth_sys(body).map_err(bad_cred)?),
        _ => return Err(denied(Denied::AuthError(AuthStat::RejectedCred))),
    };
    if verf_flavor != AUTH_NONE {
        return Err(denied(Denied::AuthError(AuthStat::BadVerf)));
    }
    let call = Call {
        xid,
        program,
        version,
        procedure,
        credentials,
        protocol,
    };
    Ok((call, d))
}

/// Appends the header of an accepted reply (up to and including `accept_stat`).
fn accepted_header(out: &mut Vec<u8>, xid: u32, accept_stat: u32) {
    // xid, REPLY, MSG_ACCEPTED, verifier AUTH_NONE with an empty body, accept_stat.
    let words = [xid, REPLY, 0, AUTH_NONE, 0, accept_stat];
    out.reserve(24);
    for w in words {
        put_u32(out, w);
    }
}

/// Appends the header of a SUCCESS reply to `xid`; the results follow.
pub fn reply_success(out: &mut Vec<u8>, xid: u32) {
    accepted_header(out, xid, 0);
}

/// Appends an accepted reply that is not SUCCESS.
pub fn reply_accepted(out: &mut Vec<u8>, xid: u32, error: AcceptError) {
    accepted_header(out, xid, error.code());
    if let AcceptError::ProgMismatch { low, high } = error {
        put_u32(out, low);
        put_u32(out, high);
    }
}

/// Appends a MSG_DENIED reply.
pub fn reply_denied(out: &mut Vec<u8>, xid: u32, denied: Denied) {
    for w in [xid, REPLY, 1] {
        put_u32(out, w);
    }
    match denied {
        Denied::RpcMismatch => {
            for w in [0, RPC_VERSION, RPC_VERSION] {
                put_u32(out, w);
            }
        }
        Denied::AuthError(stat) => {
            put_u32(out, 1);
            put_u32(out, stat as u32);
        }
    }
}

/// Appends the header of a call with AUTH_NONE credentials (for clients: the rpcbind client
/// and tests); the arguments follow.
pub fn call_header(out: &mut Vec<u8>, xid: u32, program: u32, version: u32, procedure: u32) {
    for w in [
        xid,
        CALL,
        RPC_VERSION,
        program,
        version,
        procedure,
        AUTH_NONE,
        0,
        AUTH_NONE,
        0,
    ] {
        put_u32(out, w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn parses_a_call_with_auth_sys() {
        let mut msg = words(&[7, CALL, 2, 100, 1, 3, AUTH_SYS, 28, 9, 4]);
        msg.extend_from_slice(b"host");
        msg.extend(words(&[1000, 100, 1, 27, AUTH_NONE, 0, 42]));
        let (call, mut args) = parse_call(&msg, Protocol::Datagram).unwrap();
        assert_eq!(
            (call.xid, call.program, call.version, call.procedure),
            (7, 100, 1, 3)
        );
        let Credentials::Sys(sys) = call.credentials else {
            panic!("AUTH_SYS expected")
        };
        assert_eq!(
            (sys.stamp, sys.machine_name.as_str(), sys.uid, sys.gid, sys.gids),
            (9, "host", 1000, 100, vec![27])
        );
        assert_eq!(args.u32(), Ok(42));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            parse_call(&[1, 2, 3], Protocol::Datagram),
            Err(CallError::NotACall(_))
        ));
        assert!(matches!(
            parse_call(&words(&[1, REPLY, 0]), Protocol::Datagram),
            Err(CallError::NotACall(_))
        ));
        assert_eq!(
            parse_call(&words(&[5, CALL, 3]), Protocol::Datagram).unwrap_err(),
            CallError::Denied {
                xid: 5,
                denied: Denied::RpcMismatch
            }
        );
        assert_eq!(
            parse_call(&words(&[5, CALL, 2, 1, 1, 0, 99, 0, 0, 0]), Protocol::Datagram).unwrap_err(),
            CallError::Denied {
                xid: 5,
                denied: Denied::AuthError(AuthStat::RejectedCred)
            }
        );
        // An AUTH_SYS body that lies about its machine name length.
        assert_eq!(
            parse_call(
                &words(&[5, CALL, 2, 1, 1, 0, AUTH_SYS, 8, 0, 300, 0, 0]),
                Protocol::Datagram
            )
            .unwrap_err(),
            CallError::Denied {
                xid: 5,
                denied: Denied::AuthError(AuthStat::BadCred)
            }
        );
    }

    #[test]
    fn replies() {
        let mut out = Vec::new();
        reply_accepted(&mut out, 9, AcceptError::ProgMismatch { low: 1, high: 1 });
        assert_eq!(out, words(&[9, 1, 0, 0, 0, 2, 1, 1]));
        out.clear();
        reply_denied(&mut out, 9, Denied::RpcMismatch);
        assert_eq!(out, words(&[9, 1, 1, 0, 2, 2]));
        out.clear();
        reply_denied(&mut out, 9, Denied::AuthError(AuthStat::TooWeak));
        assert_eq!(out, words(&[9, 1, 1, 1, 5]));
    }
}
