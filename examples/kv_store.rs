//! A key-value store over a line protocol, with server-wide state, served three ways.
//!
//! ```sh
//! cargo run --example kv_store -- --bind 127.0.0.1:9004
//! printf 'SET greeting hello world\n' | nc -N 127.0.0.1 9004   # OK
//! printf 'GET greeting\n' | nc -N 127.0.0.1 9004               # VALUE hello world
//! cargo run --example kv_store -- --bind 127.0.0.1:9004 --forking
//! cargo run --example kv_store -- --bind 127.0.0.1:9004 --pooled
//! ```
//!
//! Commands, one per line (replies end in `\n`):
//!
//! | command | reply |
//! |---|---|
//! | `SET key value...` | `OK` (the value is the rest of the line) |
//! | `GET key` | `VALUE value` or `NOT_FOUND` |
//! | `DEL key` | `DELETED` or `NOT_FOUND` |
//! | `KEYS` | `KEYS k1 k2 ...` (sorted) |
//! | `COUNT` | `COUNT n` |
//! | `PID` | `PID n`: the process serving this connection |
//! | `STATS` | `STATS commands=n`: commands this connection has sent, this one included |
//! | `QUIT` | `BYE`, then the connection closes |
//! | anything else | `ERR ...` |
//!
//! Keys are 1 to 250 bytes without whitespace; the store holds at most 100 000 keys.
//!
//! **Why `--forking` forgets.** By default the server is threading: every connection runs in a
//! thread of the same process, and the one handler value (the server-wide state) holds the map
//! behind a `Mutex`, so a `SET` on one connection is seen by a `GET` on the next. With
//! `--forking` each connection is served by a child process, which gets a *copy* of the
//! parent's memory: a `SET` changes the child's copy only, and is gone when the child exits.
//! The next connection starts again from the parent's map, which never changes. This is the
//! trade-off the `socketserver` documentation warns about: processes isolate requests, so they
//! cannot share state without an external store (a file, a database, shared memory).
//!
//! **Per-connection state.** `STATS` counts the commands of one connection. The count lives in
//! the request's own state (`StatefulStreamHandler::State`, Python's `self.x` set in `setup`):
//! created for each connection, owned by it, no lock, unlike the shared map.
//!
//! **`--pooled`.** The same shared map served on the pooled model ([`PooledKv`]): `handle`
//! answers one command line per call, and between commands the connection is parked in the
//! event loop, holding no thread. The map is shared exactly as with threads (one handler value,
//! the map behind its `Mutex`). A message handler has no state per connection, though: `STATS`
//! counts come from a table of [`Sessions`] keyed by the client's address, which names one
//! connection while it is open: a session starts in `verify_request` and ends in `closed`.
//!
//! `--max-threads N` (threading, and the pool of `--pooled`) and `--max-children N`
//! (`--forking`) override the caps the `#[server]` attribute declares.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use support::{Connection as _, Next};

/// One connection's own state: created by `setup`, owned by the connection.
#[derive(Default)]
struct Session {
    commands: u64,
}

/// The map every request works on.
#[derive(Default)]
struct Store {
    map: Mutex<BTreeMap<String, String>>,
}

const MAX_KEYS: usize = 100_000;
const MAX_KEY_LEN: usize = 250;

impl Store {
    /// Runs one command line; returns the reply and whether to go on.
    fn execute(&self, session: &mut Session, line: &[u8]) -> (String, Next) {
        session.commands += 1;
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (command, rest) = text.split_once(' ').unwrap_or((text, ""));
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = |rest: &str| -> Result<String, String> {
            let key = rest.trim();
            if key.is_empty() || key.len() > MAX_KEY_LEN || key.contains(char::is_whitespace) {
                Err(format!(
                    "ERR a key is 1 to {MAX_KEY_LEN} bytes without whitespace"
                ))
            } else {
                Ok(key.to_string())
            }
        };
        let reply = match command.to_ascii_uppercase().as_str() {
            "SET" => {
                let (k, value) = rest.trim_start().split_once(' ').unwrap_or((rest, ""));
                match key(k) {
                    Err(e) => e,
                    Ok(k) if map.len() >= MAX_KEYS && !map.contains_key(&k) => {
                        "ERR the store is full".to_string()
                    }
                    Ok(k) => {
                        map.insert(k, value.to_string());
                        "OK".to_string()
                    }
                }
            }
            "GET" => match key(rest) {
                Err(e) => e,
                Ok(k) => match map.get(&k) {
                    Some(v) => format!("VALUE {v}"),
                    None => "NOT_FOUND".to_string(),
                },
            },
            "DEL" => match key(rest) {
                Err(e) => e,
                Ok(k) => match map.remove(&k) {
                    Some(_) => "DELETED".to_string(),
                    None => "NOT_FOUND".to_string(),
                },
            },
            "KEYS" => {
                let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                format!("KEYS {}", keys.join(" ")).trim_end().to_string()
            }
            "COUNT" => format!("COUNT {}", map.len()),
            "PID" => format!("PID {}", std::process::id()),
            "STATS" => format!("STATS commands={}", session.commands),
            "QUIT" => return ("BYE\n".to_string(), Next::Close),
            "" => "ERR empty command".to_string(),
            _ => "ERR unknown command (SET GET DEL KEYS COUNT PID STATS QUIT)".to_string(),
        };
        (reply + "\n", Next::Continue)
    }

    fn serve<R: io::BufRead, W: Write>(
        &self,
        session: &mut Session,
        rfile: R,
        wfile: &mut W,
    ) -> io::Result<()> {
        support::serve_lines(rfile, wfile, IDLE, |line, out| {
            let (reply, next) = self.execute(session, line);
            out.write_all(reply.as_bytes())?;
            Ok(next)
        })
    }
}

/// How long a silent client keeps its connection.
const IDLE: Duration = Duration::from_secs(300);

/// Threads share one `Store`: writes are seen by every later request.
#[server(tcp, threading)]
#[derive(Default)]
struct SharedKv(Store);

impl StatefulStreamHandler for SharedKv {
    type State = Session;

    fn setup(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<Session> {
        req.request.poll_reads()?;
        Ok(Session::default())
    }

    fn handle(&self, session: &mut Session, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.0.serve(session, &mut req.rfile, &mut req.wfile)
    }
}

/// Each connection's child process works on its own copy of the `Store`.
#[server(tcp, forking)]
#[derive(Default)]
struct ForkingKv(Store);

impl StatefulStreamHandler for ForkingKv {
    type State = Session;

    fn setup(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<Session> {
        req.request.poll_reads()?;
        Ok(Session::default())
    }

    fn handle(&self, session: &mut Session, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.0.serve(session, &mut req.rfile, &mut req.wfile)
    }
}

/// `--pooled`: the threads share one `Store` as [`SharedKv`]'s do; one command per `handle`,
/// the connection parked between commands (and dropped after `idle_timeout`, the threading
/// handler's [`IDLE`]).
#[server(tcp, pooled, idle_timeout = "300s")]
#[derive(Default)]
struct PooledKv {
    store: Store,
    sessions: Sessions,
}

impl MessageHandler<Tcp> for PooledKv {
    /// Once per connection, at accept: its session starts.
    fn verify_request(&self, _request: &TcpStream, client_address: &SocketAddr) -> bool {
        self.sessions.open(*client_address);
        true
    }

    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<AfterMessage> {
        let client = *req.client_address;
        support::serve_line(req, |line, out| {
            let (reply, next) = self
                .sessions
                .with(client, |session| self.store.execute(session, line));
            out.write_all(reply.as_bytes())?;
            Ok(next)
        })
    }

    /// Once per connection, whatever closed it (`QUIT`, end of input, a reset, `idle_timeout`,
    /// an error): its session ends.
    fn closed(&self, client_address: &SocketAddr) {
        self.sessions.close(client_address);
    }
}

/// The sessions of [`PooledKv`]'s open connections, by client address: what
/// `StatefulStreamHandler::State` is for the other two servers. A message handler has no state
/// per connection (each `handle` is one message, on whichever pool thread is free), but while a
/// TCP connection is open its client address names it alone. A session starts in
/// `verify_request` and ends in `closed`, each called once per connection, so the table holds
/// exactly the open connections.
#[derive(Default)]
struct Sessions {
    table: Mutex<HashMap<SocketAddr, Session>>,
}

impl Sessions {
    fn table(&self) -> MutexGuard<'_, HashMap<SocketAddr, Session>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection was accepted: a fresh session for it.
    fn open(&self, client: SocketAddr) {
        self.table().insert(client, Session::default());
    }

    /// Runs `f` on the session of `client` (a fresh one if it has none).
    fn with<R>(&self, client: SocketAddr, f: impl FnOnce(&mut Session) -> R) -> R {
        let mut table = self.table();
        match table.get_mut(&client) {
            Some(session) => f(session),
            None => f(&mut Session::default()),
        }
    }

    /// The connection of `client` is closed.
    fn close(&self, client: &SocketAddr) {
        self.table().remove(client);
    }
}

/// `--forking`: serve each connection in a child process.
const FORKING: support::Opt = support::Opt {
    name: "forking",
    value: None,
    help: "serve each connection in a child process (SETs are then not kept)",
};

/// `--pooled`: serve on the pooled model.
const POOLED: support::Opt = support::Opt {
    name: "pooled",
    value: None,
    help: "serve on the pooled model (no thread per connection between commands)",
};

const SPEC: support::Spec = support::Spec {
    about: "A key-value store over a line protocol (threading; --forking to see state lost; --pooled).",
    default_bind: "127.0.0.1:9004",
    bind_value: "HOST:PORT",
    options: &[FORKING, POOLED, support::MAX_THREADS, support::MAX_CHILDREN],
};

fn main() -> ExitCode {
    support::report(run())
}

fn run() -> io::Result<()> {
    let stopper = support::start()?;
    let args = support::parse_args(&SPEC);
    if args.flag(FORKING.name) && args.flag(POOLED.name) {
        log::error!("--forking and --pooled are two ways to serve: choose one");
        std::process::exit(2);
    }
    if args.flag(FORKING.name) {
        let options = args.server_options(ForkingKv::OPTIONS);
        let server = ForkingKv::default().bind_with(args.bind.as_str(), options)?;
        support::serve(server, stopper)
    } else if args.flag(POOLED.name) {
        let options = args.server_options(PooledKv::OPTIONS);
        let server = PooledKv::default().bind_with(args.bind.as_str(), options)?;
        support::serve(server, stopper)
    } else {
        let options = args.server_options(SharedKv::OPTIONS);
        let server = SharedKv::default().bind_with(args.bind.as_str(), options)?;
        support::serve(server, stopper)
    }
}
