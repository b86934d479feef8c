//! Event-driven (mio/epoll) load generator: one thread, loopback only.
//!
//! Every run is bounded by a request count and by wall-clock time, and gives up
//! when no progress is made for `stall` (a server that stopped answering).
//! The generator measures its own CPU time (RUSAGE_THREAD) so the harness can
//! tell how close it is to being the bottleneck.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Latency samples in nanoseconds (bounded).
#[derive(Default, Clone)]
pub struct Latencies {
    samples: Vec<u32>,
    cap: usize,
}

impl Latencies {
    pub fn with_cap(cap: usize) -> Self {
        Latencies {
            samples: Vec::with_capacity(cap.min(1 << 20)),
            cap,
        }
    }
    fn record(&mut self, d: Duration) {
        if self.samples.len() < self.cap {
            self.samples.push(d.as_nanos().min(u32::MAX as u128) as u32);
        }
    }
    fn clear(&mut self) {
        self.samples.clear();
    }
    /// (p50, p99) in microseconds.
    pub fn percentiles(mut self) -> (f64, f64) {
        if self.samples.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        self.samples.sort_unstable();
        let at = |q: f64| {
            let i = ((self.samples.len() as f64 - 1.0) * q).round() as usize;
            self.samples[i] as f64 / 1000.0
        };
        (at(0.50), at(0.99))
    }
}

/// Limits of one measured run.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub warmup: Duration,
    pub duration: Duration,
    pub max_ops: u64,
    pub stall: Duration,
}

/// Hook called at the start and the end of the measured window (the harness
/// samples the server's CPU time there).
pub type Probe<'a> = &'a mut dyn FnMut();

pub struct RunResult {
    pub ops: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    pub loadgen_cpu: Duration,
    pub errors: u64,
    pub lost: u64,
}

impl RunResult {
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    pub fn loadgen_util(&self) -> f64 {
        self.loadgen_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

fn payload(len: usize, tag: u64) -> Vec<u8> {
    let mut v = vec![b'x'; len];
    let t = tag.to_le_bytes();
    let n = t.len().min(len);
    v[..n].copy_from_slice(&t[..n]);
    v
}

/// Tracks the warm-up / measured-window phases shared by all workloads.
struct Phase<'p, 'a> {
    start: Instant,
    measure_from: Instant,
    measuring: bool,
    measure_start: Instant,
    cpu_start: Duration,
    last_progress: Instant,
    bounds: Bounds,
    probe: &'p mut Probe<'a>,
}

impl<'p, 'a> Phase<'p, 'a> {
    fn new(bounds: Bounds, probe: &'p mut Probe<'a>) -> Self {
        let now = Instant::now();
        Phase {
            start: now,
            measure_from: now + bounds.warmup,
            measuring: false,
            measure_start: now,
            cpu_start: Duration::ZERO,
            last_progress: now,
            bounds,
            probe,
        }
    }
    /// Returns true when the measured window begins now (caller resets its counters).
    fn tick(&mut self, now: Instant) -> bool {
        if !self.measuring && now >= self.measure_from {
            // The probe may take a while (a profiler attaching): the window starts after it.
            (self.probe)();
            self.measuring = true;
            self.measure_start = Instant::now();
            self.cpu_start = thread_cpu();
            return true;
        }
        false
    }
    fn done(&self, now: Instant, ops: u64) -> bool {
        self.measuring && (ops >= self.bounds.max_ops || now - self.measure_start >= self.bounds.duration)
    }
    fn check_stall(&self, now: Instant) -> io::Result<()> {
        if now - self.last_progress > self.bounds.stall {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "no progress for {:?} ({:?} into the run)",
                    self.bounds.stall,
                    now - self.start
                ),
            ));
        }
        Ok(())
    }
    fn finish(self, ops: u64, latencies: Latencies, errors: u64, lost: u64) -> RunResult {
        let elapsed = self.measure_start.elapsed();
        let loadgen_cpu = thread_cpu() - self.cpu_start;
        (self.probe)();
        RunResult {
            ops,
            elapsed,
            latencies,
            loadgen_cpu,
            errors,
            lost,
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

// ---------------------------------------------------------------------------
// Workload 1: persistent ping-pong.

struct PingConn {
    stream: TcpStream,
    out: Vec<u8>,
    wpos: usize,
    rgot: usize,
    sent_at: Instant,
    want_write: bool,
}

impl PingConn {
    /// Writes the rest of the message; registers for WRITABLE only if the
    /// socket buffer is full (never on loopback with 64-byte messages).
    fn flush(&mut self, poll: &Poll, token: Token) -> io::Result<()> {
        while self.wpos < self.out.len() {
            match self.stream.write(&self.out[self.wpos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if would_block(&e) => {
                    if !self.want_write {
                        self.want_write = true;
                        poll.registry().reregister(
                            &mut self.stream,
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.want_write {
            self.want_write = false;
            poll.registry()
                .reregister(&mut self.stream, token, Interest::READABLE)?;
        }
        Ok(())
    }
}

/// `conns` persistent connections, each with one `msg`-byte message in flight.
pub fn ping_pong(
    addr: SocketAddr,
    conns: usize,
    msg: usize,
    bounds: Bounds,
    mut probe: Probe<'_>,
) -> io::Result<RunResult> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut cs = Vec::with_capacity(conns);
    for i in 0..conns {
        let s = std::net::TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(s);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        cs.push(PingConn {
            stream,
            out: payload(msg, i as u64),
            wpos: 0,
            rgot: 0,
            sent_at: Instant::now(),
            want_write: false,
        });
    }
    let mut phase = Phase::new(bounds, &mut probe);
    for (i, c) in cs.iter_mut().enumerate() {
        c.sent_at = Instant::now();
        c.flush(&poll, Token(i))?;
    }
    let mut lat = Latencies::with_cap(bounds.max_ops.min(20_000_000) as usize);
    let mut ops = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        let mut now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut cs[i];
            if ev.is_writable() {
                c.flush(&poll, ev.token())?;
            }
            if !ev.is_readable() {
                continue;
            }
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            ErrorKind::UnexpectedEof,
                            "server closed a persistent connection",
                        ))
                    }
                    Ok(n) => {
                        c.rgot += n;
                        if c.rgot >= msg {
                            // one message in flight: a full echo completes it
                            now = Instant::now();
                            lat.record(now - c.sent_at);
                            ops += 1;
                            phase.last_progress = now;
                            c.rgot -= msg;
                            c.wpos = 0;
                            c.sent_at = now;
                            c.flush(&poll, ev.token())?;
                        }
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if phase.tick(now) {
            ops = 0;
            lat.clear();
        }
        if phase.done(now, ops) {
            break;
        }
        phase.check_stall(now)?;
    }
    let result = phase.finish(ops, lat, 0, 0);
    drain_ping(&mut poll, &mut events, &mut cs, msg, &mut buf);
    Ok(result)
}

/// Lets the messages in flight come back, then half-closes every connection,
/// so servers see a clean EOF rather than a reset (CPython would print a
/// traceback for each reset). Bounded to two seconds; errors are ignored.
fn drain_ping(poll: &mut Poll, events: &mut Events, cs: &mut [PingConn], msg: usize, buf: &mut [u8]) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut open = cs.len();
    let mut closed = vec![false; cs.len()];
    for (i, c) in cs.iter_mut().enumerate() {
        if c.rgot == 0 && c.wpos == 0 {
            let _ = c.stream.shutdown(Shutdown::Write);
            closed[i] = true;
            open -= 1;
        }
    }
    while open > 0 && Instant::now() < deadline {
        if poll.poll(events, Some(Duration::from_millis(10))).is_err() {
            return;
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if closed[i] {
                continue;
            }
            let c = &mut cs[i];
            loop {
                match c.stream.read(buf) {
                    Ok(0) => {
                        closed[i] = true;
                        open -= 1;
                        break;
                    }
                    Ok(n) => {
                        c.rgot += n;
                        if c.rgot >= msg {
                            let _ = c.stream.shutdown(Shutdown::Write);
                            closed[i] = true;
                            open -= 1;
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Workload 2 (churn) and workload 4 (idle connections): connect, send, receive.

enum SlotState {
    Idle,
    Connecting,
    Reading,
}

struct Slot {
    stream: Option<TcpStream>,
    state: SlotState,
    rgot: usize,
    started: Instant,
}

struct Connector {
    addr: SocketAddr,
    msg: Vec<u8>,
    poll: Poll,
    slots: Vec<Slot>,
}

enum Step {
    Pending,
    /// Echo received; the stream is handed back.
    Done(TcpStream, Duration),
    /// Connection failed; the slot is free again.
    Failed(io::Error),
}

impl Connector {
    fn new(addr: SocketAddr, msg: usize, concurrency: usize) -> io::Result<Self> {
        let slots = (0..concurrency)
            .map(|_| Slot {
                stream: None,
                state: SlotState::Idle,
                rgot: 0,
                started: Instant::now(),
            })
            .collect();
        Ok(Connector {
            addr,
            msg: payload(msg, 0),
            poll: Poll::new()?,
            slots,
        })
    }

    fn start(&mut self, i: usize) -> io::Result<()> {
        let mut s = TcpStream::connect(self.addr)?;
        self.poll
            .registry()
            .register(&mut s, Token(i), Interest::WRITABLE)?;
        let slot = &mut self.slots[i];
        slot.stream = Some(s);
        slot.state = SlotState::Connecting;
        slot.rgot = 0;
        slot.started = Instant::now();
        Ok(())
    }

    fn event(&mut self, i: usize, buf: &mut [u8]) -> Step {
        match self.event_inner(i, buf) {
            Ok(step) => step,
            Err(e) => {
                let slot = &mut self.slots[i];
                if let Some(mut s) = slot.stream.take() {
                    let _ = self.poll.registry().deregister(&mut s);
                }
                slot.state = SlotState::Idle;
                Step::Failed(e)
            }
        }
    }

    fn event_inner(&mut self, i: usize, buf: &mut [u8]) -> io::Result<Step> {
        let slot = &mut self.slots[i];
        let Some(s) = slot.stream.as_mut() else {
            return Ok(Step::Pending);
        };
        if let SlotState::Connecting = slot.state {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            match s.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(Step::Pending),
                Err(e) => return Err(e),
            }
            s.set_nodelay(true)?;
            // 64 bytes always fit into a fresh socket's send buffer.
            let n = s.write(&self.msg)?;
            if n != self.msg.len() {
                return Err(io::Error::other("short write on a fresh connection"));
            }
            self.poll.registry().reregister(s, Token(i), Interest::READABLE)?;
            slot.state = SlotState::Reading;
        }
        loop {
            match s.read(buf) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    slot.rgot += n;
                    if slot.rgot >= self.msg.len() {
                        let mut s = slot.stream.take().unwrap();
                        self.poll.registry().deregister(&mut s)?;
                        slot.state = SlotState::Idle;
                        return Ok(Step::Done(s, slot.started.elapsed()));
                    }
                }
                Err(e) if would_block(&e) => return Ok(Step::Pending),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Connection churn: `concurrency` clients, each loops connect → send →
/// receive the echo → close (RST, see [`abortive_close`]).
pub fn churn(
    addr: SocketAddr,
    concurrency: usize,
    msg: usize,
    bounds: Bounds,
    mut probe: Probe<'_>,
) -> io::Result<RunResult> {
    let mut c = Connector::new(addr, msg, concurrency)?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut phase = Phase::new(bounds, &mut probe);
    let mut lat = Latencies::with_cap(bounds.max_ops.min(20_000_000) as usize);
    let (mut ops, mut errors) = (0u64, 0u64);
    let mut first_error: Option<io::Error> = None;
    for i in 0..concurrency {
        c.start(i)?;
    }
    loop {
        c.poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        let now = Instant::now();
        let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        for i in ready {
            match c.event(i, &mut buf) {
                Step::Pending => continue,
                Step::Done(s, d) => {
                    abortive_close(s);
                    ops += 1;
                    lat.record(d);
                    phase.last_progress = now;
                }
                Step::Failed(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                    if errors > 100 && errors * 10 > ops {
                        return Err(first_error.unwrap());
                    }
                }
            }
            if !phase.done(now, ops) {
                c.start(i)?;
            }
        }
        if phase.tick(now) {
            ops = 0;
            errors = 0;
            lat.clear();
        }
        if phase.done(now, ops) {
            break;
        }
        phase.check_stall(now)?;
    }
    if let Some(e) = first_error.filter(|_| errors > 0) {
        eprintln!("  churn: {errors} failed connections (first: {e})");
    }
    let result = phase.finish(ops, lat, errors, 0);
    // Let the connections in flight finish (bounded) so servers see clean EOFs.
    let deadline = Instant::now() + Duration::from_secs(2);
    while c.slots.iter().any(|s| s.stream.is_some()) && Instant::now() < deadline {
        c.poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        for i in ready {
            if let Step::Done(s, _) = c.event(i, &mut buf) {
                abortive_close(s);
            }
        }
    }
    Ok(result)
}

/// Opens `n` connections (at most `concurrency` handshakes at a time), each
/// sends one message and receives its echo; returns them open.
pub fn open_idle(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    msg: usize,
    timeout: Duration,
) -> io::Result<Vec<TcpStream>> {
    let concurrency = concurrency.min(n).max(1);
    let mut c = Connector::new(addr, msg, concurrency)?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 4096];
    let mut kept = Vec::with_capacity(n);
    let mut started = 0usize;
    let deadline = Instant::now() + timeout;
    let mut last_progress = Instant::now();
    for i in 0..concurrency {
        c.start(i)?;
        started += 1;
    }
    while kept.len() < n {
        c.poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        for i in ready {
            match c.event(i, &mut buf) {
                Step::Pending => continue,
                Step::Done(s, _) => {
                    kept.push(s);
                    last_progress = Instant::now();
                }
                Step::Failed(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("idle connection {} failed: {e}", kept.len()),
                    ))
                }
            }
            if started < n {
                c.start(i)?;
                started += 1;
            }
        }
        let now = Instant::now();
        if now > deadline || now - last_progress > Duration::from_secs(10) {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!("only {} of {n} idle connections set up", kept.len()),
            ));
        }
    }
    Ok(kept)
}

/// Closes with SO_LINGER 0: the kernel sends RST and neither side keeps the
/// connection in TIME_WAIT; the server's next read fails with ECONNRESET, which
/// every echo handler in the harness treats as the end of the connection.
///
/// With a plain close (or FIN first, then RST, which races with the server's
/// own FIN) the client's TIME_WAIT entries pile up over a run up to
/// tcp_max_tw_buckets (131072 here) and connect() slows down until the table
/// overflows, after which it speeds up again: churn rates then depend on what
/// ran in the minute before (seen here: 13k/s vs 22k/s for the same server).
pub fn abortive_close(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// Closes idle connections (RST, see [`abortive_close`]); servers see the
/// reset as the end of the connection and forked children exit.
pub fn close_idle(conns: Vec<TcpStream>) {
    for s in conns {
        abortive_close(s);
    }
}

// ---------------------------------------------------------------------------
// Workload 3: UDP echo with several datagrams outstanding.

struct UdpSlot {
    seq: u32,
    sent_at: Instant,
}

/// Datagrams moved per recvmmsg/sendmmsg call.
const MMSG: usize = 32;
/// Receive buffer per datagram (echoes are `msg` bytes; anything longer is truncated).
const RBUF: usize = 256;

/// recvmmsg on a connected, non-blocking socket: fills `lens` and returns how many
/// datagrams arrived (0 when none is pending).
fn recv_batch(fd: RawFd, bufs: &mut [u8], lens: &mut [usize; MMSG]) -> io::Result<usize> {
    debug_assert!(bufs.len() >= MMSG * RBUF);
    // SAFETY: each iovec points into a distinct RBUF-sized chunk of `bufs`, which outlives
    // the call; the headers point at those iovecs; the kernel writes at most RBUF bytes each.
    unsafe {
        let mut iov: [libc::iovec; MMSG] = std::mem::zeroed();
        let mut hdr: [libc::mmsghdr; MMSG] = std::mem::zeroed();
        for i in 0..MMSG {
            iov[i].iov_base = bufs.as_mut_ptr().add(i * RBUF).cast();
            iov[i].iov_len = RBUF;
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
        }
        let n = libc::recvmmsg(
            fd,
            hdr.as_mut_ptr(),
            MMSG as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        );
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::ConnectionRefused | ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for i in 0..n as usize {
            lens[i] = hdr[i].msg_len as usize;
        }
        Ok(n as usize)
    }
}

/// sendmmsg of `count` datagrams of `msg` bytes laid out back to back in `bufs`. A
/// datagram the kernel does not take (full buffer) is dropped: the loss timeout
/// replaces it.
fn send_batch(fd: RawFd, bufs: &[u8], msg: usize, count: usize) -> io::Result<()> {
    let mut sent = 0;
    while sent < count {
        // SAFETY: the iovecs point into `bufs` (live for the call, only read by the kernel).
        let n = unsafe {
            let mut iov: [libc::iovec; MMSG] = std::mem::zeroed();
            let mut hdr: [libc::mmsghdr; MMSG] = std::mem::zeroed();
            let k = count - sent;
            for i in 0..k {
                iov[i].iov_base = bufs.as_ptr().add((sent + i) * msg) as *mut libc::c_void;
                iov[i].iov_len = msg;
                hdr[i].msg_hdr.msg_iov = &mut iov[i];
                hdr[i].msg_hdr.msg_iovlen = 1;
            }
            libc::sendmmsg(fd, hdr.as_mut_ptr(), k as libc::c_uint, libc::MSG_DONTWAIT)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                ErrorKind::Interrupted => continue,
                ErrorKind::WouldBlock | ErrorKind::ConnectionRefused => Ok(()),
                _ => Err(e),
            };
        }
        sent += n as usize;
    }
    Ok(())
}

/// `sockets` connected UDP sockets with `window` datagrams outstanding each;
/// a datagram not answered within `loss_timeout` counts as lost and is
/// replaced by a new one (late answers are recognised by their sequence number
/// and ignored). Datagrams move in batches (recvmmsg/sendmmsg) to keep the
/// generator's cost per datagram well below the servers'.
pub fn udp_echo(
    addr: SocketAddr,
    sockets: usize,
    window: usize,
    msg: usize,
    loss_timeout: Duration,
    bounds: Bounds,
    mut probe: Probe<'_>,
) -> io::Result<RunResult> {
    assert!((8..=RBUF).contains(&msg) && window <= MMSG);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut socks = Vec::with_capacity(sockets);
    let mut slots: Vec<Vec<UdpSlot>> = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let mut s = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
        s.connect(addr)?;
        poll.registry().register(&mut s, Token(i), Interest::READABLE)?;
        socks.push(s);
        slots.push(
            (0..window)
                .map(|_| UdpSlot {
                    seq: 0,
                    sent_at: Instant::now(),
                })
                .collect(),
        );
    }
    let template = payload(msg, 0);
    let mut out = template.repeat(MMSG);
    let stamp = |out: &mut [u8], k: usize, slot: usize, seq: u32| {
        let d = &mut out[k * msg..];
        d[..4].copy_from_slice(&(slot as u32).to_le_bytes());
        d[4..8].copy_from_slice(&seq.to_le_bytes());
    };
    let mut phase = Phase::new(bounds, &mut probe);
    for (i, s) in socks.iter().enumerate() {
        for (j, sl) in slots[i].iter_mut().enumerate() {
            sl.sent_at = Instant::now();
            stamp(&mut out, j, j, sl.seq);
        }
        send_batch(s.as_raw_fd(), &out, msg, window)?;
    }
    let mut lat = Latencies::with_cap(bounds.max_ops.min(20_000_000) as usize);
    let (mut ops, mut lost) = (0u64, 0u64);
    let mut rbufs = vec![0u8; MMSG * RBUF];
    let mut lens = [0usize; MMSG];
    let mut last_scan = Instant::now();
    loop {
        poll.poll(&mut events, Some(Duration::from_millis(5)))?;
        let mut now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0;
            let fd = socks[i].as_raw_fd();
            loop {
                let n = recv_batch(fd, &mut rbufs, &mut lens)?;
                if n == 0 {
                    break;
                }
                now = Instant::now();
                let mut k = 0;
                for (d, &len) in lens.iter().enumerate().take(n) {
                    if len < 8 {
                        continue;
                    }
                    let b = &rbufs[d * RBUF..];
                    let slot = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
                    let seq = u32::from_le_bytes(b[4..8].try_into().unwrap());
                    if let Some(sl) = slots[i].get_mut(slot) {
                        if sl.seq == seq {
                            lat.record(now - sl.sent_at);
                            ops += 1;
                            sl.seq = sl.seq.wrapping_add(1);
                            sl.sent_at = now;
                            stamp(&mut out, k, slot, sl.seq);
                            k += 1;
                        }
                    }
                }
                if k > 0 {
                    phase.last_progress = now;
                    send_batch(fd, &out, msg, k)?;
                }
            }
        }
        if now - last_scan >= Duration::from_millis(5) {
            last_scan = now;
            for (i, s) in socks.iter().enumerate() {
                let mut k = 0;
                for (j, sl) in slots[i].iter_mut().enumerate() {
                    if now - sl.sent_at >= loss_timeout {
                        lost += 1;
                        sl.seq = sl.seq.wrapping_add(1);
                        sl.sent_at = now;
                        stamp(&mut out, k, j, sl.seq);
                        k += 1;
                    }
                }
                if k > 0 {
                    send_batch(s.as_raw_fd(), &out, msg, k)?;
                }
            }
        }
        if phase.tick(now) {
            ops = 0;
            lost = 0;
            lat.clear();
        }
        if phase.done(now, ops) {
            break;
        }
        phase.check_stall(now)?;
    }
    Ok(phase.finish(ops, lat, 0, lost))
}
