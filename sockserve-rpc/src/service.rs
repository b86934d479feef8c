//! Programs and the service that dispatches calls to them, over any stream or datagram
//! transport of sockserve.
//!
//! A [`Program`] is one version of one RPC program (`#[rpc_program]` implements it). An
//! [`RpcService`] holds the programs a server offers and answers calls: procedure 0 (NULL) of
//! every program and version it holds, the procedures of each program, and the error replies.
//! [`RpcHandler`] puts a service on sockserve's servers: it is a
//! [`StreamHandler`] (record-marked calls, many per connection) and a
//! [`DatagramHandler`] (one call per datagram). Clones share the service, so one service
//! served by a UDP server and a TCP server keeps one state.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::SockRef;
use sockserve_core::transport::{DatagramTransport, StreamTransport};
use sockserve_core::{DatagramHandler, DatagramRequest, StreamHandler, StreamRequest};

use crate::msg::{self, AcceptError, AuthStat, Call, CallError, Denied, Protocol};
use crate::record::{self, Wait};
use crate::xdr::{Decoder, Xdr};

/// Why a procedure did not succeed: an accepted reply other than SUCCESS, or an AUTH_ERROR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcError {
    /// An accepted reply with this `accept_stat` (usually [`AcceptError::SystemErr`]).
    Accept(AcceptError),
    /// A MSG_DENIED reply with AUTH_ERROR: the procedure refuses the caller's credentials.
    Auth(AuthStat),
}

impl From<AcceptError> for ProcError {
    fn from(e: AcceptError) -> Self {
        ProcError::Accept(e)
    }
}

impl From<AuthStat> for ProcError {
    fn from(e: AuthStat) -> Self {
        ProcError::Auth(e)
    }
}

impl fmt::Display for ProcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcError::Accept(e) => write!(f, "{e:?}"),
            ProcError::Auth(e) => write!(f, "AUTH_ERROR {e:?}"),
        }
    }
}

impl std::error::Error for ProcError {}

/// What a procedure returns: an XDR value (SUCCESS), or `Result<T, ProcError>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the result of a procedure: it has no XDR mapping",
    label = "not an XDR type",
    note = "a procedure returns an XDR type (`()` for void) or `Result<T, ProcError>` with T an XDR type"
)]
pub trait ProcResult {
    /// Appends the results of a SUCCESS reply, or says which error reply to send.
    fn encode_result(self, out: &mut Vec<u8>) -> Result<(), ProcError>;
}

impl<T: Xdr> ProcResult for T {
    fn encode_result(self, out: &mut Vec<u8>) -> Result<(), ProcError> {
        self.encode(out).map_err(|e| {
            log::error!("cannot encode the result of a procedure: {e}");
            ProcError::Accept(AcceptError::SystemErr)
        })
    }
}

impl<T: Xdr> ProcResult for Result<T, ProcError> {
    fn encode_result(self, out: &mut Vec<u8>) -> Result<(), ProcError> {
        self?.encode_result(out)
    }
}

/// Decodes the arguments of a procedure: GARBAGE_ARGS when they do not decode.
pub fn decode_args<T: Xdr>(call: &Call, args: &mut Decoder<'_>) -> Result<T, ProcError> {
    T::decode(args).map_err(|e| {
        log::debug!(
            "garbage arguments to procedure {} of program {} version {}: {e}",
            call.procedure,
            call.program,
            call.version
        );
        ProcError::Accept(AcceptError::GarbageArgs)
    })
}

/// One version of one RPC program: what `#[rpc_program(program = .., version = ..)]`
/// implements for an impl block.
pub trait Program: Send + Sync + 'static {
    /// The program number.
    const PROGRAM: u32;
    /// The version number.
    const VERSION: u32;
    /// The procedure numbers served, without procedure 0 (which the service answers).
    const PROCEDURES: &'static [u32];
    /// Runs procedure `call.procedure` with the arguments in `args`, appending its results to
    /// `out`. An unknown procedure is [`AcceptError::ProcUnavail`].
    fn call(&self, call: &Call, args: &mut Decoder<'_>, out: &mut Vec<u8>) -> Result<(), ProcError>;
}

/// A shared program is the program.
impl<P: Program> Program for Arc<P> {
    const PROGRAM: u32 = P::PROGRAM;
    const VERSION: u32 = P::VERSION;
    const PROCEDURES: &'static [u32] = P::PROCEDURES;
    fn call(&self, call: &Call, args: &mut Decoder<'_>, out: &mut Vec<u8>) -> Result<(), ProcError> {
        (**self).call(call, args, out)
    }
}

/// [`Program`] as an object.
trait DynProgram: Send + Sync {
    fn call(&self, call: &Call, args: &mut Decoder<'_>, out: &mut Vec<u8>) -> Result<(), ProcError>;
}

impl<P: Program> DynProgram for P {
    fn call(&self, call: &Call, args: &mut Decoder<'_>, out: &mut Vec<u8>) -> Result<(), ProcError> {
        Program::call(self, call, args, out)
    }
}

struct Entry {
    program: u32,
    version: u32,
    procedures: &'static [u32],
    imp: Arc<dyn DynProgram>,
}

/// What [`RpcService::dispatch`] did with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A reply was appended.
    Replied,
    /// Not an RPC call (or a call whose header does not decode): no reply. Says why, for
    /// the log.
    Dropped(String),
}

/// The largest record a stream connection accepts by default: 1 MiB.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1 << 20;

/// How often a stream connection's reads wake up to look for a stop request.
const STOP_POLL: Duration = Duration::from_millis(200);

/// A duplicate-request cache for datagram calls (as NFS servers keep): a retransmitted call
/// (same client, same xid, same bytes) gets the reply of the first one instead of running the
/// procedure again; one that arrives while the first is still running is dropped.
struct Drc {
    capacity: usize,
    inner: Mutex<DrcInner>,
}

#[derive(Default)]
struct DrcInner {
    replies: HashMap<DrcKey, Option<Vec<u8>>>,
    order: VecDeque<DrcKey>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct DrcKey {
    client: String,
    xid: u32,
    digest: u64,
}

enum DrcLookup {
    Miss,
    InProgress,
    Hit(Vec<u8>),
}

impl Drc {
    fn lock(&self) -> std::sync::MutexGuard<'_, DrcInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self, key: &DrcKey) -> DrcLookup {
        let mut inner = self.lock();
        match inner.replies.get(key) {
            Some(Some(reply)) => return DrcLookup::Hit(reply.clone()),
            Some(None) => return DrcLookup::InProgress,
            None => {}
        }
        while inner.order.len() >= self.capacity.max(1) {
            if let Some(old) = inner.order.pop_front() {
                inner.replies.remove(&old);
            }
        }
        inner.replies.insert(key.clone(), None);
        inner.order.push_back(key.clone());
        DrcLookup::Miss
    }

    fn finish(&self, key: &DrcKey, reply: &[u8]) {
        if let Some(slot) = self.lock().replies.get_mut(key) {
            *slot = Some(reply.to_vec());
        }
    }
}

/// The programs a server offers, and how calls reach them.
pub struct RpcService {
    entries: Vec<Entry>,
    max_record_size: usize,
    stopping: AtomicBool,
    drc: Option<Drc>,
}

impl fmt::Debug for RpcService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcService")
            .field("programs", &self.programs())
            .field("max_record_size", &self.max_record_size)
            .finish_non_exhaustive()
    }
}

impl Default for RpcService {
    fn default() -> Self {
        RpcService::new()
    }
}

impl RpcService {
    /// A service with no program yet.
    pub fn new() -> Self {
        RpcService {
            entries: Vec::new(),
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            stopping: AtomicBool::new(false),
            drc: None,
        }
    }

    /// Keeps the replies to the last `entries` datagram calls, so that a retransmission (same
    /// client, same xid, same bytes) is answered from the cache instead of running the
    /// procedure again, and one that arrives while the first is still running is dropped
    /// (NFS servers keep such a cache for non-idempotent procedures). Off by default. The
    /// cache is the service's memory: a forking UDP server's children do not share it.
    pub fn duplicate_request_cache(mut self, entries: usize) -> Self {
        self.drc = Some(Drc {
            capacity: entries,
            inner: Mutex::new(DrcInner::default()),
        });
        self
    }

    /// Adds a program version (a value, or an `Arc` of one to keep a handle on its state). A
    /// second program with the same number and version replaces the first.
    pub fn with<P: Program>(mut self, program: P) -> Self {
        self.entries
            .retain(|e| (e.program, e.version) != (P::PROGRAM, P::VERSION));
        self.entries.push(Entry {
            program: P::PROGRAM,
            version: P::VERSION,
            procedures: P::PROCEDURES,
            imp: Arc::new(program),
        });
        self
    }

    /// Sets the largest record (call) a stream connection accepts; a record mark announcing
    /// more closes the connection. Default [`DEFAULT_MAX_RECORD_SIZE`].
    pub fn max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// The program and version pairs served.
    pub fn programs(&self) -> Vec<(u32, u32)> {
        self.entries.iter().map(|e| (e.program, e.version)).collect()
    }

    /// Whether `program` `version` serves `procedure` (procedure 0 always).
    pub fn serves(&self, program: u32, version: u32, procedure: u32) -> bool {
        self.entries.iter().any(|e| {
            (e.program, e.version) == (program, version)
                && (procedure == 0 || e.procedures.contains(&procedure))
        })
    }

    /// Asks stream connections to close once they are between calls (at most 200 ms later):
    /// for a graceful stop. [`RpcServer`](crate::RpcServer) calls it on shutdown. It is not
    /// undone: a service stopped this way closes every later connection after its first
    /// idle moment, so make a new service to serve again.
    pub fn stop_connections(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether [`stop_connections`](RpcService::stop_connections) was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Answers one message: appends the reply to `out`, or drops a message that is not a
    /// call. A procedure that panics gets a SYSTEM_ERR reply (and an error in the log).
    pub fn dispatch(&self, message: &[u8], protocol: Protocol, out: &mut Vec<u8>) -> Outcome {
        let (call, mut args) = match msg::parse_call(message, protocol) {
            Ok(parsed) => parsed,
            Err(CallError::NotACall(e)) => return Outcome::Dropped(format!("not an RPC call: {e}")),
            Err(CallError::Denied { xid, denied }) => {
                log::debug!("call {xid:#x} over {protocol} denied: {denied:?}");
                msg::reply_denied(out, xid, denied);
                return Outcome::Replied;
            }
        };
        let mut low_high: Option<(u32, u32)> = None;
        let mut found = None;
        for e in &self.entries {
            if e.program != call.program {
                continue;
            }
            if e.version == call.version {
                found = Some(e);
                break;
            }
            let (lo, hi) = low_high.unwrap_or((e.version, e.version));
            low_high = Some((lo.min(e.version), hi.max(e.version)));
        }
        let Some(entry) = found else {
            let error = match low_high {
                Some((low, high)) => AcceptError::ProgMismatch { low, high },
                None => AcceptError::ProgUnavail,
            };
            msg::reply_accepted(out, call.xid, error);
            return Outcome::Replied;
        };
        let start = out.len();
        msg::reply_success(out, call.xid);
        if call.procedure == 0 {
            return Outcome::Replied;
        }
        let result = panic::catch_unwind(AssertUnwindSafe(|| entry.imp.call(&call, &mut args, out)))
            .unwrap_or_else(|payload| {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!(
                    "procedure {} of program {} version {} panicked: {what}",
                    call.procedure,
                    call.program,
                    call.version
                );
                Err(ProcError::Accept(AcceptError::SystemErr))
            });
        if let Err(error) = result {
            out.truncate(start);
            match error {
                ProcError::Accept(e) => msg::reply_accepted(out, call.xid, e),
                ProcError::Auth(stat) => msg::reply_denied(out, call.xid, Denied::AuthError(stat)),
            }
        }
        Outcome::Replied
    }
}

/// A service on a sockserve server: the handler of RPC over stream transports (TCP, Unix
/// streams: record marking) and datagram transports (UDP, Unix datagrams). Cheap to clone;
/// clones share the service.
#[derive(Clone, Debug)]
pub struct RpcHandler {
    service: Arc<RpcService>,
}

impl RpcHandler {
    /// A handler for `service`.
    pub fn new(service: impl Into<Arc<RpcService>>) -> Self {
        RpcHandler {
            service: service.into(),
        }
    }

    /// The service.
    pub fn service(&self) -> &Arc<RpcService> {
        &self.service
    }
}

/// Record-marked calls, answered in order, until the client closes, a record goes over
/// `max_record_size` (the connection is closed, reported to `handle_error` as
/// `InvalidData`), or the client stays silent longer than the server's `connection_timeout`:
/// between calls the connection is closed quietly, inside a record it is reported to
/// `handle_error` as `TimedOut`.
#[diagnostic::do_not_recommend]
impl<T> StreamHandler<T> for RpcHandler
where
    T: StreamTransport,
    T::Request: AsFd,
{
    fn handle(&self, req: &mut StreamRequest<'_, T>) -> io::Result<()> {
        let service = &*self.service;
        let idle_limit = req.server.options().connection_timeout;
        let tick = idle_limit
            .map_or(STOP_POLL, |t| t.min(STOP_POLL))
            .max(Duration::from_millis(1));
        SockRef::from(req.request).set_read_timeout(Some(tick))?;
        let client = req.client_address;
        let mut on_wait = |at_boundary: bool, idle: Duration| {
            if at_boundary && service.is_stopping() {
                return Ok(Wait::Stop);
            }
            match idle_limit {
                Some(limit) if idle >= limit && at_boundary => {
                    log::debug!("{client}: idle for {limit:?} between calls: closing");
                    Ok(Wait::Stop)
                }
                Some(limit) if idle >= limit => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("client silent for {limit:?} inside a record: closing"),
                )),
                _ => Ok(Wait::Continue),
            }
        };
        let mut record = Vec::new();
        let mut reply = Vec::new();
        while record::read_record(&mut req.rfile, service.max_record_size, &mut record, &mut on_wait)? {
            reply.clear();
            let start = record::begin_record(&mut reply);
            match service.dispatch(&record, Protocol::Stream, &mut reply) {
                Outcome::Replied => {
                    record::end_record(&mut reply, start)?;
                    req.wfile.write_all(&reply)?;
                }
                Outcome::Dropped(why) => log::debug!("record from {} dropped: {}", req.client_address, why),
            }
        }
        Ok(())
    }
}

/// One call per datagram; what is not a call is dropped without a reply. With a
/// [duplicate-request cache](RpcService::duplicate_request_cache), retransmissions are
/// answered from it.
#[diagnostic::do_not_recommend]
impl<T: DatagramTransport> DatagramHandler<T> for RpcHandler {
    fn handle(&self, req: &mut DatagramRequest<'_, T>) -> io::Result<()> {
        let service = &*self.service;
        let key = match (&service.drc, req.packet.get(..4)) {
            (Some(drc), Some(xid)) => {
                let mut hasher = DefaultHasher::new();
                req.packet.hash(&mut hasher);
                let key = DrcKey {
                    client: req.client_address.to_string(),
                    xid: u32::from_be_bytes([xid[0], xid[1], xid[2], xid[3]]),
                    digest: hasher.finish(),
                };
                match drc.begin(&key) {
                    DrcLookup::Miss => Some((drc, key)),
                    DrcLookup::Hit(reply) => {
                        log::debug!(
                            "retransmission from {}: answered from the cache",
                            req.client_address
                        );
                        req.wfile.extend_from_slice(&reply);
                        return Ok(());
                    }
                    DrcLookup::InProgress => {
                        log::debug!(
                            "retransmission from {} while in progress: dropped",
                            req.client_address
                        );
                        return Ok(());
                    }
                }
            }
            _ => None,
        };
        if let Outcome::Dropped(why) = service.dispatch(req.packet, Protocol::Datagram, &mut req.wfile) {
            log::debug!("datagram from {} dropped: {}", req.client_address, why);
        }
        if let Some((drc, key)) = key {
            drc.finish(&key, &req.wfile);
        }
        Ok(())
    }
}
