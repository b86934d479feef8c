//! The RPC runtime over real sockets on loopback: every reply kind over UDP and TCP, the
//! XDR types through a server, bad input (garbage datagrams, a 2 GiB record mark, truncated
//! arguments, a stalled half record), the concurrency models, and rpcbind registration.
//!
//! The clients here are written with the crate's own codec; `tests/rpc_calc.rs` has the
//! clients nobody here wrote (rpcinfo, an rpcgen C client). Servers that do not test rpcbind
//! opt out of it; the one that does uses a program number of its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use sockserve::concurrency::{Forking, Synchronous, Threading};
use sockserve::rpc::msg::{AUTH_SYS, CALL};
use sockserve::rpc::record::{self, Wait};
use sockserve::rpc::xdr::{from_bytes, put_u32, to_bytes};
use sockserve::rpc::{
    AuthStat, Call, Credentials, ProcError, Protocol, RpcOptions, RpcServer, RpcService, Rpcbind, XdrString,
};
use sockserve::{rpc_program, Xdr};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const PROG: u32 = 0x2000_7E50;

#[derive(Xdr, Debug, Clone, PartialEq)]
struct Pair {
    a: i32,
    b: i32,
}

#[derive(Xdr, Debug, Clone, Copy, PartialEq)]
enum Color {
    Red = 1,
    Green = 2,
    Blue = 7,
}

#[derive(Xdr, Debug, Clone, PartialEq)]
enum Shape {
    #[xdr(case = 1)]
    Circle(u32),
    #[xdr(case = 2)]
    Rect { w: u32, h: u32 },
    #[xdr(case = Color::Blue as i32)]
    Nothing,
    #[xdr(default)]
    Other(i32),
}

#[derive(Xdr, Debug, Clone, PartialEq)]
struct Everything {
    int: i32,
    unsigned: u32,
    hyper: i64,
    uhyper: u64,
    flag: bool,
    color: Color,
    #[xdr(max = 8)]
    name: String,
    #[xdr(opaque, max = 4)]
    blob: Vec<u8>,
    #[xdr(opaque)]
    fixed: [u8; 3],
    pair: [u32; 2],
    #[xdr(max = 3)]
    list: Vec<u32>,
    text: XdrString<16>,
    shapes: Vec<Shape>,
    next: Option<Box<Everything>>,
}

fn everything() -> Everything {
    Everything {
        int: -7,
        unsigned: 7,
        hyper: -1 << 40,
        uhyper: u64::MAX,
        flag: true,
        color: Color::Blue,
        name: "abcde".into(),
        blob: vec![1, 2, 3],
        fixed: [9, 8, 7],
        pair: [1, 2],
        list: vec![4, 5, 6],
        text: "hi".into(),
        shapes: vec![
            Shape::Circle(3),
            Shape::Rect { w: 1, h: 2 },
            Shape::Nothing,
            Shape::Other(99),
        ],
        next: Some(Box::new(Everything {
            next: None,
            shapes: vec![],
            ..everything_leaf()
        })),
    }
}

fn everything_leaf() -> Everything {
    Everything {
        int: 0,
        unsigned: 0,
        hyper: 0,
        uhyper: 0,
        flag: false,
        color: Color::Red,
        name: String::new(),
        blob: vec![],
        fixed: [0; 3],
        pair: [0, 0],
        list: vec![],
        text: XdrString::default(),
        shapes: vec![],
        next: None,
    }
}

/// Version 2 of the test program.
struct V2;

#[rpc_program(program = PROG, version = 2)]
impl V2 {
    #[proc(1)]
    fn add(&self, p: Pair) -> i32 {
        p.a.wrapping_add(p.b)
    }

    #[proc(2)]
    fn whoami(&self, call: &Call) -> Result<u32, ProcError> {
        match &call.credentials {
            Credentials::Sys(sys) => Ok(sys.uid),
            Credentials::None => Err(AuthStat::TooWeak.into()),
        }
    }

    #[proc(3)]
    fn round_trip(&self, e: Everything) -> Everything {
        e
    }

    #[proc(4)]
    fn fails(&self) {
        panic!("this procedure always fails");
    }

    #[proc(5)]
    fn protocol(&self, call: &Call) -> u32 {
        match call.protocol {
            Protocol::Datagram => 17,
            Protocol::Stream => 6,
        }
    }
}

/// Version 4: only NULL and one procedure.
struct V4;

#[rpc_program(program = PROG, version = 4)]
impl V4 {
    #[proc(1)]
    fn add(&self, p: Pair) -> i64 {
        i64::from(p.a) + i64::from(p.b)
    }
}

fn service() -> RpcService {
    RpcService::new().with(V2).with(V4).max_record_size(64 * 1024)
}

// ------------------------------------------------------------------------- a small client

static XID: AtomicU32 = AtomicU32::new(1);

fn call_msg(
    program: u32,
    version: u32,
    procedure: u32,
    cred: Option<(u32, u32)>,
    args: &[u8],
) -> (u32, Vec<u8>) {
    let xid = XID.fetch_add(1, Ordering::Relaxed);
    let mut out = Vec::new();
    for w in [xid, CALL, 2, program, version, procedure] {
        put_u32(&mut out, w);
    }
    match cred {
        None => out.extend_from_slice(&[0; 8]),
        Some((uid, gid)) => {
            let mut body = Vec::new();
            for w in [1, 4] {
                put_u32(&mut body, w);
            }
            body.extend_from_slice(b"test");
            for w in [uid, gid, 1, gid] {
                put_u32(&mut body, w);
            }
            put_u32(&mut out, AUTH_SYS);
            put_u32(&mut out, body.len() as u32);
            out.extend_from_slice(&body);
        }
    }
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(args);
    (xid, out)
}

/// A parsed reply: `(reply_stat, stat, the words or bytes after it)`.
#[derive(Debug, PartialEq)]
enum Reply {
    /// SUCCESS with its results.
    Success(Vec<u8>),
    /// Another accept_stat, with what follows it.
    Accepted(u32, Vec<u8>),
    /// MSG_DENIED: reject_stat and what follows.
    Denied(u32, Vec<u8>),
}

fn parse(reply: &[u8], xid: u32) -> Reply {
    let words: Vec<u32> = reply
        .chunks(4)
        .take(3)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(words[..2], [xid, 1], "reply to xid {xid}: {reply:?}");
    if words[2] == 1 {
        let stat = u32::from_be_bytes(reply[12..16].try_into().unwrap());
        return Reply::Denied(stat, reply[16..].to_vec());
    }
    assert_eq!(&reply[12..20], &[0; 8], "verifier AUTH_NONE");
    let stat = u32::from_be_bytes(reply[20..24].try_into().unwrap());
    match stat {
        0 => Reply::Success(reply[24..].to_vec()),
        s => Reply::Accepted(s, reply[24..].to_vec()),
    }
}

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_be_bytes()).collect()
}

trait Exchange {
    fn exchange(&mut self, msg: &[u8]) -> Vec<u8>;

    fn call(
        &mut self,
        program: u32,
        version: u32,
        procedure: u32,
        cred: Option<(u32, u32)>,
        args: &[u8],
    ) -> Reply {
        let (xid, msg) = call_msg(program, version, procedure, cred, args);
        let reply = self.exchange(&msg);
        parse(&reply, xid)
    }
}

struct Udp(UdpSocket);

fn udp(addr: SocketAddr) -> Udp {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.connect(addr).unwrap();
    Udp(socket)
}

impl Exchange for Udp {
    fn exchange(&mut self, msg: &[u8]) -> Vec<u8> {
        self.0.send(msg).unwrap();
        let mut buf = vec![0; 65536];
        let n = self.0.recv(&mut buf).expect("a reply datagram");
        buf.truncate(n);
        buf
    }
}

struct Tcp(TcpStream);

fn tcp(addr: SocketAddr) -> Tcp {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    Tcp(stream)
}

fn read_reply(stream: &TcpStream) -> Option<Vec<u8>> {
    let mut reply = Vec::new();
    let mut fail =
        |_: bool, _: Duration| -> std::io::Result<Wait> { Err(std::io::ErrorKind::TimedOut.into()) };
    match record::read_record(&mut &*stream, 1 << 20, &mut reply, &mut fail) {
        Ok(true) => Some(reply),
        Ok(false) => None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("reading a reply: {e}"),
    }
}

impl Exchange for Tcp {
    fn exchange(&mut self, msg: &[u8]) -> Vec<u8> {
        self.0.write_all(&record::frame(msg)).unwrap();
        read_reply(&self.0).expect("a reply record")
    }
}

fn start<CT, CU>(server: RpcServer<CT, CU>) -> (Arc<RpcServer<CT, CU>>, thread::JoinHandle<()>)
where
    CT: sockserve::concurrency::ProcessRequest<sockserve::transport::Tcp, sockserve::rpc::RpcHandler>
        + Send
        + Sync,
    CU: sockserve::concurrency::ProcessRequest<sockserve::transport::Udp, sockserve::rpc::RpcHandler>
        + Send
        + Sync,
{
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever().expect("serve_forever"));
    (server, thread)
}

fn unregistered() -> RpcOptions {
    RpcOptions::unregistered()
}

fn pair(a: i32, b: i32) -> Vec<u8> {
    to_bytes(&Pair { a, b }).unwrap()
}

/// Every reply kind the issue lists, over one client.
fn all_reply_kinds(client: &mut dyn Exchange, protocol: u32) {
    assert_eq!(client.call(PROG, 2, 0, None, &[]), Reply::Success(vec![]));
    assert_eq!(client.call(PROG, 4, 0, None, &[]), Reply::Success(vec![]));
    assert_eq!(
        client.call(PROG, 2, 1, None, &pair(40, 2)),
        Reply::Success(words(&[42]))
    );
    assert_eq!(
        client.call(PROG, 4, 1, None, &pair(i32::MAX, 1)),
        Reply::Success(to_bytes(&(1i64 << 31)).unwrap())
    );
    assert_eq!(
        client.call(PROG, 2, 5, None, &[]),
        Reply::Success(words(&[protocol]))
    );
    // PROG_UNAVAIL, PROG_MISMATCH (low 2, high 4), PROC_UNAVAIL.
    assert_eq!(client.call(PROG + 1, 2, 0, None, &[]), Reply::Accepted(1, vec![]));
    assert_eq!(
        client.call(PROG, 3, 1, None, &pair(1, 1)),
        Reply::Accepted(2, words(&[2, 4]))
    );
    assert_eq!(client.call(PROG, 2, 9, None, &[]), Reply::Accepted(3, vec![]));
    assert_eq!(client.call(PROG, 4, 2, None, &[]), Reply::Accepted(3, vec![]));
    // GARBAGE_ARGS: a truncated pair; a bool that is 2; a string over its maximum.
    assert_eq!(
        client.call(PROG, 2, 1, None, &words(&[1])),
        Reply::Accepted(4, vec![])
    );
    let mut bad = to_bytes(&everything()).unwrap();
    bad[24 + 3] = 2;
    assert_eq!(client.call(PROG, 2, 3, None, &bad), Reply::Accepted(4, vec![]));
    // SYSTEM_ERR: the procedure panicked.
    assert_eq!(client.call(PROG, 2, 4, None, &[]), Reply::Accepted(5, vec![]));
    // AUTH_SYS credentials reach the procedure; without them it refuses (AUTH_ERROR, TOOWEAK).
    assert_eq!(
        client.call(PROG, 2, 2, Some((1234, 99)), &[]),
        Reply::Success(words(&[1234]))
    );
    assert_eq!(
        client.call(PROG, 2, 2, None, &[]),
        Reply::Denied(1, words(&[AuthStat::TooWeak as u32]))
    );
    // RPC_MISMATCH (low = high = 2) and an unknown flavor (AUTH_REJECTEDCRED).
    let xid = XID.fetch_add(1, Ordering::Relaxed);
    let reply = client.exchange(&words(&[xid, CALL, 3, PROG, 2, 0, 0, 0, 0, 0]));
    assert_eq!(parse(&reply, xid), Reply::Denied(0, words(&[2, 2])));
    let xid = XID.fetch_add(1, Ordering::Relaxed);
    let reply = client.exchange(&words(&[xid, CALL, 2, PROG, 2, 0, 9, 0, 0, 0]));
    assert_eq!(parse(&reply, xid), Reply::Denied(1, words(&[2])));
    // Every XDR type through the server and back.
    let e = everything();
    assert_eq!(
        client.call(PROG, 2, 3, None, &to_bytes(&e).unwrap()),
        Reply::Success(to_bytes(&e).unwrap())
    );
}

#[test]
fn every_reply_kind_over_udp_and_tcp() {
    let server: RpcServer<Synchronous, Synchronous> =
        RpcServer::bind("127.0.0.1:0", service(), unregistered()).unwrap();
    assert_eq!(server.tcp_address().port(), server.udp_address().port());
    let (server, thread) = start(server);
    all_reply_kinds(&mut udp(server.udp_address()), 17);
    let mut client = tcp(server.tcp_address());
    all_reply_kinds(&mut client, 6);
    drop(client);
    server.shutdown();
    thread.join().unwrap();
}

#[test]
fn every_concurrency_model_serves_both_transports() {
    fn check<CT, CU>()
    where
        CT: sockserve::concurrency::ProcessRequest<sockserve::transport::Tcp, sockserve::rpc::RpcHandler>
            + Send
            + Sync,
        CU: sockserve::concurrency::ProcessRequest<sockserve::transport::Udp, sockserve::rpc::RpcHandler>
            + Send
            + Sync,
    {
        let server: RpcServer<CT, CU> = RpcServer::bind("127.0.0.1:0", service(), unregistered()).unwrap();
        let (server, thread) = start(server);
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let addr = (server.tcp_address(), server.udp_address());
                thread::spawn(move || {
                    let mut t = tcp(addr.0);
                    let mut u = udp(addr.1);
                    for j in 0..20 {
                        assert_eq!(
                            t.call(PROG, 2, 1, None, &pair(i, j)),
                            Reply::Success(words(&[(i + j) as u32]))
                        );
                        assert_eq!(
                            u.call(PROG, 2, 1, None, &pair(i, -j)),
                            Reply::Success(words(&[(i - j) as u32]))
                        );
                    }
                    // Shut down our end, so a forked child's copy of nothing holds it open.
                    let _ = t.0.shutdown(std::net::Shutdown::Both);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        server.shutdown();
        thread.join().unwrap();
    }
    check::<Synchronous, Synchronous>();
    check::<Threading, Threading>();
    check::<Forking, Forking>();
    check::<Threading, Forking>();
}

#[test]
fn derived_xdr_wire_format() {
    assert_eq!(to_bytes(&Color::Blue).unwrap(), words(&[7]));
    assert!(from_bytes::<Color>(&words(&[3])).is_err());
    assert_eq!(to_bytes(&Shape::Rect { w: 5, h: 6 }).unwrap(), words(&[2, 5, 6]));
    assert_eq!(to_bytes(&Shape::Nothing).unwrap(), words(&[7]));
    assert_eq!(from_bytes::<Shape>(&words(&[42])).unwrap(), Shape::Other(42));
    assert_eq!(to_bytes(&Shape::Other(42)).unwrap(), words(&[42]));
    let e = everything();
    assert_eq!(from_bytes::<Everything>(&to_bytes(&e).unwrap()).unwrap(), e);
    // Over the declared maximums: encoding refuses rather than send what the peer rejects.
    let mut long = everything();
    long.name = "123456789".into();
    assert!(to_bytes(&long).is_err());
    long = everything();
    long.list = vec![1, 2, 3, 4];
    assert!(to_bytes(&long).is_err());
    long = everything();
    long.blob = vec![0; 5];
    assert!(to_bytes(&long).is_err());
}

// ---------------------------------------------------------------------------- bad input

/// A deterministic byte generator (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn garbage_datagrams_get_no_reply_and_the_server_serves_on() {
    let server: RpcServer<Synchronous, Synchronous> =
        RpcServer::bind("127.0.0.1:0", service(), unregistered()).unwrap();
    let (server, thread) = start(server);
    let client = udp(server.udp_address());
    let mut garbage: Vec<Vec<u8>> = vec![vec![], vec![1, 2, 3], words(&[1, 1, 0, 0, 0, 0]), words(&[5, 7])];
    garbage.extend((0..200).map(|i| noise(i, (i as usize * 37) % 1500)));
    for (i, datagram) in garbage.iter().enumerate() {
        client.0.send(datagram).unwrap();
        // The next datagram to arrive is the reply to this call: the garbage got none (a
        // synchronous server answers in order). Random bytes that happen to form a call
        // with msg_type CALL are answered first; skip those.
        let (xid, msg) = call_msg(PROG, 2, 1, None, &pair(i as i32, 1));
        client.0.send(&msg).unwrap();
        let mut buf = vec![0; 65536];
        loop {
            let n = client.0.recv(&mut buf).expect("the server answers after garbage");
            let got = u32::from_be_bytes(buf[..4].try_into().unwrap());
            if got == xid {
                assert_eq!(parse(&buf[..n], xid), Reply::Success(words(&[i as u32 + 1])));
                break;
            }
            assert_eq!(
                &datagram[..4],
                &buf[..4],
                "a reply to garbage {i} must answer its xid"
            );
            assert_eq!(&datagram[4..8], &[0; 4], "only a CALL gets a reply");
        }
    }
    server.shutdown();
    thread.join().unwrap();
}

#[test]
fn a_record_mark_over_the_maximum_closes_only_that_connection() {
    let server: RpcServer<Threading, Synchronous> =
        RpcServer::bind("127.0.0.1:0", service(), unregistered()).unwrap();
    let (server, thread) = start(server);
    let mut good = tcp(server.tcp_address());
    for mark in [0xffff_ffffu32, 0x8000_0000 | (64 * 1024 + 1), 0x7fff_ffff] {
        let mut bad = tcp(server.tcp_address());
        bad.0.write_all(&mark.to_be_bytes()).unwrap();
        bad.0.write_all(&[0; 100]).unwrap();
        assert_eq!(read_reply(&bad.0), None, "mark {mark:#x}: the server closes");
        assert_eq!(
            good.call(PROG, 2, 1, None, &pair(1, 2)),
            Reply::Success(words(&[3]))
        );
    }
    // Two fragments of 40 KiB: fine alone, over the 64 KiB maximum together.
    let mut bad = tcp(server.tcp_address());
    bad.0.write_all(&(40 * 1024u32).to_be_bytes()).unwrap();
    bad.0.write_all(&vec![0; 40 * 1024]).unwrap();
    bad.0
        .write_all(&(0x8000_0000u32 | (40 * 1024)).to_be_bytes())
        .unwrap();
    assert_eq!(read_reply(&bad.0), None);
    // A call split into three fragments is one record.
    let (xid, msg) = call_msg(PROG, 2, 1, None, &pair(20, 22));
    let mut wire = Vec::new();
    for (i, part) in [&msg[..5], &msg[5..30], &msg[30..]].iter().enumerate() {
        let last = if i == 2 { 0x8000_0000 } else { 0 };
        wire.extend_from_slice(&(last | part.len() as u32).to_be_bytes());
        wire.extend_from_slice(part);
    }
    good.0.write_all(&wire).unwrap();
    assert_eq!(
        parse(&read_reply(&good.0).unwrap(), xid),
        Reply::Success(words(&[42]))
    );
    // A record that is not a call is dropped; the connection serves on.
    good.0.write_all(&record::frame(&[1, 2, 3])).unwrap();
    assert_eq!(
        good.call(PROG, 2, 1, None, &pair(2, 2)),
        Reply::Success(words(&[4]))
    );
    server.shutdown();
    thread.join().unwrap();
}

#[test]
fn a_client_that_stalls_inside_a_record_is_dropped_by_the_connection_timeout() {
    let mut options = unregistered();
    options.tcp.connection_timeout = Some(Duration::from_millis(500));
    let server: RpcServer<Threading, Synchronous> =
        RpcServer::bind("127.0.0.1:0", service(), options).unwrap();
    let (server, thread) = start(server);
    let mut stalled = tcp(server.tcp_address());
    let (_, msg) = call_msg(PROG, 2, 1, None, &pair(1, 2));
    let framed = record::frame(&msg);
    stalled.0.write_all(&framed[..framed.len() / 2]).unwrap();
    // Others are served meanwhile.
    let mut other = tcp(server.tcp_address());
    assert_eq!(
        other.call(PROG, 2, 1, None, &pair(1, 2)),
        Reply::Success(words(&[3]))
    );
    // The stalled client is closed by the server (its read ends: no reply, end of input).
    let mut rest = Vec::new();
    let n = stalled.0.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "no reply to half a record");
    // So is an idle client, between calls; a new one is served.
    assert_eq!(read_reply(&other.0), None);
    let mut other = tcp(server.tcp_address());
    assert_eq!(
        other.call(PROG, 2, 1, None, &pair(2, 2)),
        Reply::Success(words(&[4]))
    );
    drop(other);
    server.shutdown();
    thread.join().unwrap();
}

// ------------------------------------------------------------------------------ rpcbind

/// A program number of this test alone (tests run in parallel; rpcbind is shared).
const REGISTERED: u32 = 0x2000_7E51;

struct Registered;

#[rpc_program(program = REGISTERED, version = 3)]
impl Registered {
    #[proc(1)]
    fn hello(&self, name: XdrString<64>) -> XdrString<80> {
        XdrString(format!("hello, {}", name.0))
    }
}

#[test]
fn registers_with_rpcbind_and_unregisters_at_server_close() {
    let rpcbind = Rpcbind::local();
    let service = RpcService::new().with(Registered);
    let mut server: RpcServer = RpcServer::bind("127.0.0.1:0", service, RpcOptions::default())
        .expect("bind and register (is rpcbind running? scripts/test starts it)");
    let port = server.tcp_address().port();
    assert_eq!(rpcbind.getport(REGISTERED, 3, Protocol::Stream).unwrap(), port);
    assert_eq!(rpcbind.getport(REGISTERED, 3, Protocol::Datagram).unwrap(), port);
    let (xid, msg) = call_msg(
        REGISTERED,
        3,
        1,
        None,
        &to_bytes(&XdrString::<64>::from("rpc")).unwrap(),
    );
    let served = {
        // Serve one UDP request by hand: handle_request on the UDP server.
        let client = udp(server.udp_address());
        client.0.send(&msg).unwrap();
        server.udp().handle_request().unwrap();
        let mut buf = vec![0; 1024];
        let n = client.0.recv(&mut buf).unwrap();
        parse(&buf[..n], xid)
    };
    assert_eq!(
        served,
        Reply::Success(to_bytes(&XdrString::<80>::from("hello, rpc")).unwrap())
    );
    server.server_close();
    assert_eq!(rpcbind.getport(REGISTERED, 3, Protocol::Stream).unwrap(), 0);
    assert_eq!(rpcbind.getport(REGISTERED, 3, Protocol::Datagram).unwrap(), 0);
}

#[test]
fn without_rpcbind_bind_fails_with_a_clear_error_unless_opted_out() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let options = RpcOptions {
        rpcbind: Some(Rpcbind::at(closed)),
        ..RpcOptions::default()
    };
    let err = RpcServer::<Threading, Synchronous>::bind("127.0.0.1:0", RpcService::new().with(V2), options)
        .expect_err("no rpcbind there");
    let text = err.to_string();
    assert!(
        text.contains("rpcbind") && text.contains(&closed.to_string()),
        "{text}"
    );
    assert!(
        text.contains("RpcOptions::rpcbind"),
        "says how to opt out: {text}"
    );
    // Opted out: serves.
    let server: RpcServer =
        RpcServer::bind("127.0.0.1:0", RpcService::new().with(V2), unregistered()).unwrap();
    assert!(server.registration().is_none());
}

// ------------------------------------------------------------------------- Unix sockets

#[test]
fn the_handler_serves_unix_stream_and_datagram_servers_too() {
    use std::os::unix::net::{UnixDatagram, UnixStream};
    let dir = std::env::temp_dir().join(format!("sockserve-rpc-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let handler = sockserve::rpc::RpcHandler::new(service());
    let stream_path = dir.join("rpc.sock");
    let dgram_path = dir.join("rpc.dgram");
    let stream_server =
        Arc::new(sockserve::ThreadingUnixStreamServer::bind(stream_path.as_path(), handler.clone()).unwrap());
    let dgram_server = Arc::new(sockserve::UnixDatagramServer::bind(dgram_path.as_path(), handler).unwrap());
    let (s, d) = (Arc::clone(&stream_server), Arc::clone(&dgram_server));
    let threads = [
        thread::spawn(move || s.serve_forever().unwrap()),
        thread::spawn(move || d.serve_forever().unwrap()),
    ];

    let stream = UnixStream::connect(&stream_path).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (xid, msg) = call_msg(PROG, 2, 5, None, &[]);
    (&stream).write_all(&record::frame(&msg)).unwrap();
    let mut reply = Vec::new();
    let mut fail =
        |_: bool, _: Duration| -> std::io::Result<Wait> { Err(std::io::ErrorKind::TimedOut.into()) };
    assert!(record::read_record(&mut &stream, 1 << 16, &mut reply, &mut fail).unwrap());
    assert_eq!(parse(&reply, xid), Reply::Success(words(&[6])), "a stream call");

    let client = UnixDatagram::bind(dir.join("client.dgram")).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (xid, msg) = call_msg(PROG, 2, 1, None, &pair(5, 6));
    client.send_to(&msg, &dgram_path).unwrap();
    let mut buf = [0; 512];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(parse(&buf[..n], xid), Reply::Success(words(&[11])));

    drop(stream);
    stream_server.shutdown();
    dgram_server.shutdown();
    for t in threads {
        t.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------- duplicate-request cache

struct Counter(std::sync::atomic::AtomicU32);

#[rpc_program(program = PROG + 2, version = 1)]
impl Counter {
    /// Not idempotent: each run counts.
    #[proc(1)]
    fn bump(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[test]
fn a_retransmitted_datagram_is_answered_from_the_duplicate_request_cache() {
    let counter = Arc::new(Counter(AtomicU32::new(0)));
    let service = RpcService::new()
        .with(Arc::clone(&counter))
        .duplicate_request_cache(2);
    let server: RpcServer<Synchronous, Synchronous> =
        RpcServer::bind("127.0.0.1:0", service, unregistered()).unwrap();
    let (server, thread) = start(server);
    let mut a = udp(server.udp_address());
    let (xid, msg) = call_msg(PROG + 2, 1, 1, None, &[]);
    for _ in 0..3 {
        // The same call three times (a client retransmitting): run once, the same reply.
        assert_eq!(parse(&a.exchange(&msg), xid), Reply::Success(words(&[1])));
    }
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    // Another xid, or the same xid from another client, is a new call.
    assert_eq!(a.call(PROG + 2, 1, 1, None, &[]), Reply::Success(words(&[2])));
    let mut b = udp(server.udp_address());
    assert_eq!(parse(&b.exchange(&msg), xid), Reply::Success(words(&[3])));
    // The cache holds 2 replies: the first call's has been evicted and runs again.
    assert_eq!(parse(&a.exchange(&msg), xid), Reply::Success(words(&[4])));
    // TCP never uses it.
    let mut t = tcp(server.tcp_address());
    assert_eq!(parse(&t.exchange(&msg), xid), Reply::Success(words(&[5])));
    assert_eq!(parse(&t.exchange(&msg), xid), Reply::Success(words(&[6])));
    drop(t);
    server.shutdown();
    thread.join().unwrap();
}
