//! What every example server of the gallery shares: the command line, the `listening on ADDR`
//! line, graceful stop on SIGTERM/SIGINT, and bounded, stop-aware reading from clients.
//!
//! Included by each example with `#[path = "support/mod.rs"] mod support;` (`"../support/mod.rs"`
//! from `examples/http_server/main.rs`). It lives in `examples/support/mod.rs`, a path cargo does
//! not take for an example of its own. Its bounded line reader is in `lines.rs` beside it, which
//! depends on `std` only: `http_server`'s parser, which fuzz targets include by path, includes it
//! too.
//!
//! An example that runs one server has for its whole `main`
//! `support::run(&SPEC, |args| Handler.bind(args.bind.as_str()))`: [`run`] sets up the process,
//! parses the command line and [`serve`]s what the closure binds.
//!
//! The contract each example keeps:
//! - `--bind ADDR` (host:port for TCP/UDP, a path for Unix sockets), a loopback default, port 0
//!   allowed; `--delay MS` pretends each request takes that long (to watch a graceful stop);
//! - the first line on stdout is exactly `listening on ADDR`, with the real bound address;
//! - SIGTERM or SIGINT: stop accepting, let the requests in flight finish, exit 0. A second signal
//!   exits at once with status 1;
//! - errors go to stderr through `log` (`RUST_LOG=debug` for more); bad client input never panics.
//!
//! How a stop reaches the connections: the library catches the signal
//! ([`sockserve::Server::serve_until_signal`]), sets its stop flag and calls the server's
//! `shutdown()`. Handlers read through [`Patient`], which polls the socket every [`POLL`] and
//! reports end of input once the flag is set ([`sockserve::signals::stop_requested`]) and the
//! client is idle, so a handler finishes the request it is working on and then returns. The
//! flag lives in shared memory, so the children of a forking server see it too. A pooled
//! server's connections wait for their next request parked in the library's event loop, which
//! closes them on a stop; only a request that has begun to arrive is read, through `Patient`
//! too ([`serve_line`]).

// Each example uses a part of this module.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sockserve::concurrency::{AfterMessage, Concurrency, Pooled};
use sockserve::transport::{StreamTransport, Transport};
use sockserve::{Server, StreamRequest, Wfile};

mod lines;

pub use lines::{read_line, Line};

/// How often a blocked read wakes up to look at the stop flag.
pub const POLL: Duration = Duration::from_millis(100);

/// How long a write to a client may block before the connection is given up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest line the line-protocol examples accept, newline included.
pub const MAX_LINE: usize = 4096;

/// One command-line option of an example, besides the common `--bind`, `--delay` and `--help`.
pub struct Opt {
    /// The option without its dashes: `"directory"` for `--directory`.
    pub name: &'static str,
    /// The name of its value in the usage text, or `None` for a flag.
    pub value: Option<&'static str>,
    pub help: &'static str,
}

/// What an example tells [`parse_args`] about itself.
pub struct Spec {
    /// One line saying what the example is.
    pub about: &'static str,
    /// The `--bind` default.
    pub default_bind: &'static str,
    /// What `--bind` takes, for the usage text (`"HOST:PORT"` or `"PATH"`).
    pub bind_value: &'static str,
    pub options: &'static [Opt],
}

/// The parsed command line.
pub struct Args {
    pub bind: String,
    values: Vec<(&'static str, String)>,
    flags: Vec<&'static str>,
}

impl Args {
    /// The value of `--name`, if given (the last one wins).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable `--name`, in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the flag `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }
}

/// `--max-threads N`: the threading servers' `max_threads`.
pub const MAX_THREADS: Opt = Opt {
    name: "max-threads",
    value: Some("N"),
    help: "serve at most N connections at once (max_threads)",
};

/// `--max-children N`: the forking servers' `max_children`.
pub const MAX_CHILDREN: Opt = Opt {
    name: "max-children",
    value: Some("N"),
    help: "at most N child processes at once (max_children)",
};

/// `--connection-timeout SECS`: the stream servers' `connection_timeout`.
pub const CONNECTION_TIMEOUT: Opt = Opt {
    name: "connection-timeout",
    value: Some("SECS"),
    help: "close a connection idle for SECS seconds (connection_timeout)",
};

impl Args {
    /// The server options: what `#[server(...)]` declared (`declared`, i.e. `Handler::OPTIONS`),
    /// with what the command line set through [`MAX_THREADS`], [`MAX_CHILDREN`] and
    /// [`CONNECTION_TIMEOUT`] on top. A bad value ends the program with status 2.
    pub fn server_options(&self, declared: sockserve::Options) -> sockserve::Options {
        match self.try_server_options(declared) {
            Ok(options) => options,
            Err(message) => {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
        }
    }

    fn try_server_options(&self, declared: sockserve::Options) -> Result<sockserve::Options, String> {
        fn count(name: &str, value: &str) -> Result<usize, String> {
            match value.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("`--{name}` takes a whole number above 0, not `{value}`")),
            }
        }
        let mut options = declared;
        if let Some(value) = self.value(MAX_THREADS.name) {
            options.max_threads = Some(count(MAX_THREADS.name, value)?);
        }
        if let Some(value) = self.value(MAX_CHILDREN.name) {
            options.max_children = count(MAX_CHILDREN.name, value)?;
        }
        if let Some(value) = self.value(CONNECTION_TIMEOUT.name) {
            let secs = value
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                .ok_or_else(|| format!("`--connection-timeout` takes seconds above 0, not `{value}`"))?;
            options.connection_timeout = Some(Duration::from_secs_f64(secs));
        }
        Ok(options)
    }
}

static DELAY: OnceLock<Duration> = OnceLock::new();

fn usage(spec: &Spec) -> String {
    let program = std::env::args()
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map_or(p.clone(), |n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut text = format!("{}\n\nUsage: {program} [OPTIONS]\n\nOptions:\n", spec.about);
    let mut line = |left: String, help: &str| {
        text.push_str(&format!("  {left:<24} {help}\n"));
    };
    line(
        format!("--bind {}", spec.bind_value),
        &format!("address to listen on [default: {}]", spec.default_bind),
    );
    for opt in spec.options {
        let left = match opt.value {
            Some(value) => format!("--{} {value}", opt.name),
            None => format!("--{}", opt.name),
        };
        line(left, opt.help);
    }
    line(
        "--delay MS".into(),
        "pretend each request takes MS milliseconds [default: 0]",
    );
    line("--help".into(), "print this help");
    text
}

/// Parses the command line; prints the usage and exits (status 0 for `--help`, 2 for a mistake).
pub fn parse_args(spec: &Spec) -> Args {
    match try_parse_args(spec, std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{}", usage(spec));
            std::process::exit(0);
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{}", usage(spec));
            std::process::exit(2);
        }
    }
}

fn try_parse_args(spec: &Spec, mut argv: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        bind: spec.default_bind.to_string(),
        values: Vec::new(),
        flags: Vec::new(),
    };
    let mut delay = Duration::ZERO;
    while let Some(arg) = argv.next() {
        let Some(long) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument `{arg}`"));
        };
        let (name, inline) = match long.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (long, None),
        };
        let takes_value = match name {
            "help" => return Ok(None),
            "bind" | "delay" => true,
            _ => match spec.options.iter().find(|o| o.name == name) {
                Some(opt) => opt.value.is_some(),
                None => return Err(format!("unknown option `--{name}`")),
            },
        };
        if !takes_value {
            if inline.is_some() {
                return Err(format!("`--{name}` takes no value"));
            }
            let name = spec.options.iter().find(|o| o.name == name).map(|o| o.name);
            args.flags.extend(name);
            continue;
        }
        let value = match inline.or_else(|| argv.next()) {
            Some(value) => value,
            None => return Err(format!("`--{name}` needs a value")),
        };
        match name {
            "bind" => args.bind = value,
            "delay" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| format!("`--delay` takes milliseconds, not `{value}`"))?;
                delay = Duration::from_millis(ms);
            }
            _ => {
                let name = spec.options.iter().find(|o| o.name == name).map(|o| o.name);
                args.values.extend(name.map(|n| (n, value)));
            }
        }
    }
    let _ = DELAY.set(delay);
    Ok(Some(args))
}

/// The `--delay` given on the command line (zero by default), for servers that must not sleep
/// in a handler (the multiplex ones wait with a timer instead).
pub fn delay() -> Duration {
    DELAY.get().copied().unwrap_or_default()
}

/// Sleeps for the `--delay` given on the command line (no time at all by default).
pub fn simulate_work() {
    let delay = DELAY.get().copied().unwrap_or_default();
    if !delay.is_zero() {
        thread::sleep(delay);
    }
}

/// Prints the `listening on ADDR` line and flushes it at once.
pub fn announce(address: impl Display) {
    let mut out = io::stdout().lock();
    // A closed stdout is no reason to stop serving.
    let _ = writeln!(out, "listening on {address}");
    let _ = out.flush();
}

/// Whether a stop was asked for (by SIGTERM or SIGINT), in this process or its forking parent:
/// the library's flag ([`sockserve::signals::stop_requested`]).
pub fn stopping() -> bool {
    sockserve::signals::stop_requested()
}

/// Turns `main`'s result into the exit status, logging an error (to stderr) first.
pub fn report(result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // In case the error came before `start` set up logging.
            let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .try_init();
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT, caught by the library from [`start`] on (for the examples that run
/// several servers or serve in their own way; the others use [`run`]).
pub type Stopper = sockserve::signals::StopSignals;

fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).try_init();
}

/// Sets up an example process that serves in its own way: logging to stderr, and
/// SIGTERM/SIGINT caught by the library ([`sockserve::signals::StopSignals`]): from then on a
/// signal no longer kills the process but is kept until [`Stopper::on_stop`] acts on it.
pub fn start() -> io::Result<Stopper> {
    start_with(sockserve::signals::Graceful::DEFAULT)
}

/// [`start`] with other [`Graceful`](sockserve::signals::Graceful) settings: the TLS examples
/// turn the SIGHUP reload off, since SIGHUP reloads their certificate in place
/// ([`tls_config`]).
pub fn start_with(graceful: sockserve::signals::Graceful) -> io::Result<Stopper> {
    init_logging();
    sockserve::signals::StopSignals::install(graceful)
}

/// Serves `server` until a stop: prints its `listening on ADDR` line, then lets the library
/// serve it until the first SIGTERM/SIGINT and drain the requests in flight.
pub fn serve<T: Transport, C: Concurrency, H>(server: Server<T, C, H>, stopper: Stopper) -> io::Result<()> {
    announce(server.server_address());
    stopper.serve(&server)
}

/// The whole `main` of an example that runs one server: sets up logging and the library's
/// signal handling ([`start`]), parses the command line ([`parse_args`]), makes the server with
/// `bind` and [`serve`]s it (the library's graceful stop,
/// [`StopSignals::serve`](sockserve::signals::StopSignals::serve)). An error (from `bind`, say)
/// is logged and the exit status is 1 ([`report`]).
pub fn run<T: Transport, C: Concurrency, H>(
    spec: &Spec,
    bind: impl FnOnce(&Args) -> io::Result<Server<T, C, H>>,
) -> ExitCode {
    let served = start().and_then(|stopper| {
        let args = parse_args(spec);
        serve(bind(&args)?, stopper)
    });
    report(served)
}

/// `--bind systemd`, or whenever sockets were passed (`LISTEN_FDS`: systemd,
/// `systemd-socket-activate`, the predecessor of a SIGHUP reload): the declared server on the
/// passed socket; otherwise on the `--bind` address. With `options` either way.
pub fn bind_declared<D>(
    handler: D,
    args: &Args,
    options: sockserve::Options,
) -> io::Result<Server<D::Transport, D::Concurrency, D>>
where
    D: sockserve::Declared,
    D::Transport: sockserve::systemd::Inherit,
    for<'a> &'a str: sockserve::transport::ToAddress<<D::Transport as Transport>::BindAddress>,
{
    // A reloaded process (SIGHUP) gets its predecessor's socket the same way.
    if args.bind == "systemd" || sockserve::systemd::activated() {
        let mut server = handler.on_transport(sockserve::systemd::inherited(None, &options)?, options)?;
        server.server_bind()?;
        server.server_activate()?;
        Ok(server)
    } else {
        handler.bind_with(args.bind.as_str(), options)
    }
}

/// Stream sockets the examples read from: set up for [`Patient`] reads.
pub trait Connection {
    /// Makes reads wake up every [`POLL`] and writes give up after [`WRITE_TIMEOUT`].
    fn poll_reads(&self) -> io::Result<()>;

    /// Ends a reply: sends end-of-file to the client, then reads and discards what the client
    /// still sends (at most 256 KiB, for at most 250 ms), until it closes too.
    ///
    /// Closing a socket with unread input makes the kernel reset the connection, and a reset
    /// can destroy the reply before the client reads it. A server that answers without reading
    /// everything (an error reply to an oversized request, daytime's ignored input) lingers
    /// here first.
    fn close_gently(&self);
}

fn drain(mut input: impl Read, set_timeout: impl Fn(Duration) -> io::Result<()>) {
    let deadline = Instant::now() + Duration::from_millis(250);
    let mut budget = 256 * 1024;
    let mut buf = [0; 8192];
    while budget > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || set_timeout(left).is_err() {
            break;
        }
        match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget -= n.min(budget),
        }
    }
}

impl Connection for TcpStream {
    fn poll_reads(&self) -> io::Result<()> {
        self.set_read_timeout(Some(POLL))?;
        self.set_write_timeout(Some(WRITE_TIMEOUT))
    }

    fn close_gently(&self) {
        if self.shutdown(std::net::Shutdown::Write).is_ok() {
            drain(self, |t| self.set_read_timeout(Some(t)));
        }
    }
}

impl Connection for UnixStream {
    fn poll_reads(&self) -> io::Result<()> {
        self.set_read_timeout(Some(POLL))?;
        self.set_write_timeout(Some(WRITE_TIMEOUT))
    }

    fn close_gently(&self) {
        if self.shutdown(std::net::Shutdown::Write).is_ok() {
            drain(self, |t| self.set_read_timeout(Some(t)));
        }
    }
}

/// TLS connections: the socket underneath polls; `close_notify` (sent by the transport's
/// `shutdown_request`) ends the reply, so there is nothing to drain.
impl<S: Connection> Connection for sockserve::transport::TlsStream<S> {
    fn poll_reads(&self) -> io::Result<()> {
        self.get_ref().poll_reads()
    }

    fn close_gently(&self) {}
}

/// `--cert PEM --key PEM [--client-ca PEM]` for the TLS examples: the TLS configuration
/// (mutual TLS with a client CA, client certificates required), and SIGHUP reloading the
/// certificate and key from the same files. A missing or bad file ends the program with
/// status 2.
pub fn tls_config(
    cert: Option<&str>,
    key: Option<&str>,
    client_ca: Option<&str>,
    alpn: &[&str],
) -> sockserve::transport::TlsConfig {
    let (Some(cert), Some(key)) = (cert, key) else {
        log::error!("TLS needs both a certificate chain and a key (PEM files)");
        std::process::exit(2);
    };
    let built = sockserve::transport::TlsConfig::from_pem_files(cert, key)
        .and_then(|b| match client_ca {
            Some(ca) => b.client_ca_pem_file(ca, true),
            None => Ok(b),
        })
        .and_then(|b| b.alpn(alpn).build());
    let config = match built {
        Ok(config) => config,
        Err(e) => {
            log::error!("TLS configuration: {e}");
            std::process::exit(2);
        }
    };
    let (reload, cert, key) = (config.clone(), cert.to_string(), key.to_string());
    match signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]) {
        Ok(mut signals) => {
            thread::spawn(move || {
                for _ in signals.forever() {
                    match reload.reload_pem_files(&cert, &key) {
                        Ok(()) => log::info!("SIGHUP: reloaded {cert} and {key}; new connections get them"),
                        Err(e) => log::error!("SIGHUP: reload failed, keeping the current certificate: {e}"),
                    }
                }
            });
        }
        Err(e) => log::warn!("no SIGHUP reload: {e}"),
    }
    config
}

/// A reader over a socket set up with [`Connection::poll_reads`]: waits for input while the
/// client is busy, but reports end of input when a stop was asked for and the client is idle,
/// or when the client stayed idle for longer than `idle`.
pub struct Patient<R> {
    inner: R,
    idle: Duration,
}

impl<R: BufRead> Patient<R> {
    pub fn new(inner: R, idle: Duration) -> Self {
        Patient { inner, idle }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl<R: BufRead> BufRead for Patient<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let waiting_since = Instant::now();
        loop {
            match self.inner.fill_buf() {
                // Buffered data or end of input: the next call returns it without I/O.
                Ok(_) => break,
                Err(e) if is_timeout(&e) => {
                    if stopping() {
                        return Ok(&[]);
                    }
                    if waiting_since.elapsed() >= self.idle {
                        log::info!("client idle for {:?}: closing", self.idle);
                        return Ok(&[]);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
    }
}

impl<R: BufRead> Read for Patient<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// What a line protocol wants after answering a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Read the next line.
    Continue,
    /// Close the connection (the client said goodbye).
    Close,
}

/// The answer of a line echo, for [`serve_lines`]: the line goes back unchanged.
pub fn echo<W: Write>(line: &[u8], out: &mut W) -> io::Result<Next> {
    out.write_all(line)?;
    Ok(Next::Continue)
}

/// Serves a line protocol on one connection: reads lines of at most [`MAX_LINE`] bytes through
/// [`Patient`] (idle clients are dropped after `idle`), sleeps for `--delay`, and lets `answer`
/// write the reply. Ends at end of input, when a stop was asked for and the client is idle (after answering the line in
/// hand), when `answer` says [`Next::Close`], or after answering a too-long line with
/// `error: line too long`.
pub fn serve_lines<R: BufRead, W: Write>(
    rfile: R,
    wfile: &mut W,
    idle: Duration,
    mut answer: impl FnMut(&[u8], &mut W) -> io::Result<Next>,
) -> io::Result<()> {
    let mut input = Patient::new(rfile, idle);
    let mut line = Vec::new();
    // A stop ends the loop through `Patient`: end of input once the client is idle, so a line
    // that already arrived (or arrives within a POLL) is still answered.
    while answer_line(&mut input, wfile, &mut line, &mut answer)? == Next::Continue {}
    wfile.flush()
}

/// Reads one line of at most [`MAX_LINE`] bytes from `input` (into `line`), sleeps for
/// `--delay` and lets `answer` write the reply: one step of [`serve_lines`], and the whole
/// message of [`serve_line`]. [`Next::Close`] at end of input, when `answer` says so, or after
/// answering a too-long line with `error: line too long`.
fn answer_line<R: BufRead, W: Write>(
    input: &mut R,
    wfile: &mut W,
    line: &mut Vec<u8>,
    answer: &mut impl FnMut(&[u8], &mut W) -> io::Result<Next>,
) -> io::Result<Next> {
    match read_line(input, MAX_LINE, line)? {
        Line::Eof => Ok(Next::Close),
        Line::TooLong => {
            wfile.write_all(b"error: line too long\n")?;
            Ok(Next::Close)
        }
        Line::Complete => {
            simulate_work();
            answer(line, wfile)
        }
    }
}

/// Serves one line of a line protocol: the whole `handle` of a pooled server's
/// [`MessageHandler`](sockserve::concurrency::MessageHandler), which the library calls once the
/// first bytes of a line have arrived. Reads that line and no further (at most [`MAX_LINE`]
/// bytes) and answers it as [`serve_lines`] does. [`AfterMessage::KeepOpen`] after an answered
/// line: the connection then waits for the next one parked in the event loop, holding no
/// thread, and a stop closes it there. `Close` at end of input (after answering a last line
/// without its newline), when `answer` says [`Next::Close`], or after `error: line too long`.
///
/// A line that is not all there yet is waited for through [`Patient`], for at most the
/// server's `connection_timeout` ([`Pooled::MESSAGE_TIMEOUT`] when unset): a stop asked for
/// while the client is silent in the middle of a line ends the wait at once (the part already
/// sent is answered), as it does for the threading servers, instead of holding the drain for
/// the whole timeout.
pub fn serve_line<'a, T: StreamTransport>(
    req: &mut StreamRequest<'a, T>,
    mut answer: impl FnMut(&[u8], &mut Wfile<'a, T::Request>) -> io::Result<Next>,
) -> io::Result<AfterMessage>
where
    T::Request: Connection,
{
    // A whole line already buffered (the usual case) is answered without another read, so
    // the socket needs no polling set up for it.
    if !req.rfile.buffer().contains(&b'\n') {
        req.request.poll_reads()?;
    }
    let idle = req
        .server
        .options()
        .connection_timeout
        .unwrap_or(Pooled::MESSAGE_TIMEOUT);
    let mut input = Patient::new(&mut req.rfile, idle);
    let mut line = Vec::new();
    let next = answer_line(&mut input, &mut req.wfile, &mut line, &mut answer)?;
    // A line cut short by the end of input (or by a stop, or an idle client) is answered, and
    // the connection ends with it, as `serve_lines` ends at the next read.
    Ok(match next {
        Next::Continue if line.ends_with(b"\n") => AfterMessage::KeepOpen,
        Next::Continue | Next::Close => AfterMessage::Close,
    })
}

/// A calendar date and time in UTC, enough for HTTP dates and the daytime protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 (Sunday) to 6 (Saturday).
    pub weekday: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl Utc {
    pub fn now() -> Utc {
        Utc::at(SystemTime::now())
    }

    pub fn at(time: SystemTime) -> Utc {
        let secs = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        Utc::from_unix(secs)
    }

    /// Converts seconds since 1970-01-01T00:00:00Z (days to civil date after H. Hinnant).
    pub fn from_unix(secs: i64) -> Utc {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            // All of these are small and non-negative by construction.
            month: month as u32,
            day: day as u32,
            weekday: (days + 4).rem_euclid(7) as u32,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    fn weekday_name(&self) -> &'static str {
        WEEKDAYS[self.weekday as usize % 7]
    }

    fn month_name(&self) -> &'static str {
        MONTHS[(self.month as usize + 11) % 12]
    }

    /// The IMF-fixdate of HTTP: `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn http_date(&self) -> String {
        format!(
            "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
            &self.weekday_name()[..3],
            self.day,
            &self.month_name()[..3],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// The format RFC 867 suggests: `Tuesday, February 22, 1982 17:37:43-UTC`.
    pub fn daytime(&self) -> String {
        format!(
            "{}, {} {}, {} {:02}:{:02}:{:02}-UTC",
            self.weekday_name(),
            self.month_name(),
            self.day,
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }
}
