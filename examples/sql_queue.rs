//! A server whose requests are rows of a SQL table: the seed's "generic request source".
//!
//! ```sh
//! cargo run --example sql_queue -- --db /tmp/queue.db --enqueue "hello world"   # enqueued job 1
//! cargo run --example sql_queue -- --db /tmp/queue.db                            # serves the queue
//! sqlite3 /tmp/queue.db 'SELECT id, status, result FROM jobs'                     # if installed
//! ```
//!
//! `socketserver` separates *where requests come from* (the server's socket methods) from *what
//! is done with them* (the handler). Here the request source is not a socket at all:
//!
//! - [`SqlQueue`] implements core's public [`Transport`] trait with `type Kind = BaseKind`. Its
//!   `get_request` claims the oldest `pending` row of the `jobs` table, marking it `running`
//!   and counting the attempt, in one SQL statement (so two servers on the same database never
//!   claim the same row), and returns `Ok(None)` when nothing is pending. It has no descriptor
//!   to poll (`fileno` is `None`), so the server asks it again every `poll_interval` (100 ms).
//! - [`Worker`] implements `RequestHandler<SqlQueue>`: it processes the row (counts its words
//!   and bytes), stores the result and marks the row `done`, then prints
//!   `processed job ID: RESULT`.
//!
//! The worker is declared with `#[server(transport = SqlQueue, poll_interval = "100ms")]`: a
//! custom transport type in place of a transport word. `Worker.bind(path)` opens the queue
//! through `Transport::open`, like any other server. Everything else (signals, `listening on`,
//! graceful stop) is as in the other examples.
//!
//! The database is an embedded SQLite file (bundled with rusqlite: no database server), created
//! with its table on first use. It is the transport's bind address: `--db PATH` (or `--bind
//! PATH`, as for the other examples) chooses it, default `sockserve-queue.db` in the current
//! directory; stdout's first line is `listening on PATH`. `--enqueue TEXT` adds a row and exits
//! instead of serving.
//!
//! Each row is processed at most once: `attempts` is 1 for every `done` row. A row whose
//! processing fails is marked `failed` with the error; a row left `running` by a crashed server
//! stays so until an operator resets it.

#[path = "support/mod.rs"]
mod support;

use std::fmt;
use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use sockserve::transport::{BaseKind, ToAddress, Transport};
use sockserve::{server, BaseRequest, Declared, Options, RequestHandler};

/// The table, created on first use.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS jobs (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        payload   TEXT,
        status    TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done', 'failed')),
        attempts  INTEGER NOT NULL DEFAULT 0,
        worker    INTEGER,
        result    TEXT,
        created   TEXT NOT NULL DEFAULT (datetime('now')),
        finished  TEXT
    );
    CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (status, id);
";

/// Opens (creating if needed) the queue database.
fn open_db(path: &PathBuf) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    // Several servers (and `--enqueue`) may use one file: wait for each other's writes.
    db.busy_timeout(Duration::from_secs(5))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.execute_batch(SCHEMA)?;
    Ok(db)
}

fn sql_error(e: rusqlite::Error) -> io::Error {
    io::Error::other(e)
}

/// A claimed row: the request a [`Worker`] handles.
#[derive(Debug)]
struct Job {
    id: i64,
    /// The payload's bytes (TEXT or BLOB; NULL reads as empty).
    payload: Vec<u8>,
}

/// A row's id: the "client address" of a job.
#[derive(Clone, Copy, Debug)]
struct JobId(i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}", self.0)
    }
}

/// The database file: the "server address".
#[derive(Clone, Debug)]
struct DbPath(PathBuf);

/// What `Worker.bind(..)` takes: a path to the database file.
impl ToAddress<DbPath> for PathBuf {
    fn to_address(self) -> io::Result<DbPath> {
        Ok(DbPath(self))
    }
}

impl fmt::Display for DbPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

/// The request source: pending rows of the `jobs` table.
struct SqlQueue {
    path: PathBuf,
    db: Mutex<Connection>,
}

impl SqlQueue {
    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of a claimed job.
    fn complete(&self, id: i64, status: &str, result: &str) -> io::Result<()> {
        self.db()
            .execute(
                "UPDATE jobs SET status = ?2, result = ?3, finished = datetime('now')
                 WHERE id = ?1 AND status = 'running'",
                params![id, status, result],
            )
            .map_err(sql_error)?;
        Ok(())
    }
}

impl Transport for SqlQueue {
    type Request = Job;
    type Address = JobId;
    type ServerAddress = DbPath;
    type BindAddress = DbPath;
    type Kind = BaseKind;

    fn open(DbPath(path): DbPath, _options: &Options) -> io::Result<Self> {
        let db = open_db(&path).map_err(sql_error)?;
        Ok(SqlQueue {
            path,
            db: Mutex::new(db),
        })
    }

    fn server_bind(&mut self, _options: &Options) -> io::Result<()> {
        Ok(())
    }

    fn server_activate(&mut self, _options: &Options) -> io::Result<()> {
        Ok(())
    }

    fn server_address(&self) -> DbPath {
        DbPath(self.path.clone())
    }

    fn fileno(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Claims the oldest pending row, atomically: one UPDATE ... RETURNING statement.
    fn get_request(&self) -> io::Result<Option<(Job, JobId)>> {
        let db = self.db();
        let claimed = db
            .query_row(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, worker = ?1
                 WHERE id = (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1)
                 RETURNING id, payload",
                params![std::process::id()],
                |row| {
                    let id: i64 = row.get(0)?;
                    let payload = match row.get_ref(1)? {
                        ValueRef::Null => Vec::new(),
                        ValueRef::Integer(n) => n.to_string().into_bytes(),
                        ValueRef::Real(x) => x.to_string().into_bytes(),
                        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes.to_vec(),
                    };
                    Ok(Job { id, payload })
                },
            )
            .optional()
            .map_err(sql_error)?;
        Ok(claimed.map(|job| {
            let id = JobId(job.id);
            (job, id)
        }))
    }
}

/// Processes jobs: counts words and bytes, marks the row done.
#[server(transport = SqlQueue, poll_interval = "100ms")]
struct Worker;

impl Worker {
    fn process(job: &Job) -> Result<String, String> {
        let text = std::str::from_utf8(&job.payload).map_err(|e| format!("payload is not UTF-8: {e}"))?;
        Ok(format!(
            "{} words, {} bytes",
            text.split_whitespace().count(),
            text.len()
        ))
    }
}

impl RequestHandler<SqlQueue> for Worker {
    fn handle(&self, req: &mut BaseRequest<'_, SqlQueue>) -> io::Result<()> {
        support::simulate_work();
        let queue = req.server.transport();
        let job = &*req.request;
        match Worker::process(job) {
            Ok(result) => {
                queue.complete(job.id, "done", &result)?;
                let mut out = io::stdout().lock();
                writeln!(out, "processed job {}: {result}", job.id)?;
                out.flush()
            }
            Err(why) => {
                log::warn!("job {} failed: {why}", job.id);
                queue.complete(job.id, "failed", &why)?;
                let mut out = io::stdout().lock();
                writeln!(out, "failed job {}: {why}", job.id)?;
                out.flush()
            }
        }
    }
}

const SPEC: support::Spec = support::Spec {
    about: "Serves the rows of a SQLite table as requests (a custom Transport).",
    default_bind: "sockserve-queue.db",
    bind_value: "PATH",
    options: &[
        support::Opt {
            name: "db",
            value: Some("PATH"),
            help: "the queue database, created if missing (same as --bind)",
        },
        support::Opt {
            name: "enqueue",
            value: Some("TEXT"),
            help: "add a job with this payload, print its id, and exit",
        },
    ],
};

fn main() -> ExitCode {
    support::report(run())
}

fn run() -> io::Result<()> {
    let stopper = support::start()?;
    let args = support::parse_args(&SPEC);
    let path = PathBuf::from(args.value("db").unwrap_or(&args.bind));

    if let Some(text) = args.value("enqueue") {
        let db = open_db(&path).map_err(sql_error)?;
        db.execute("INSERT INTO jobs (payload) VALUES (?1)", params![text])
            .map_err(sql_error)?;
        println!("enqueued job {}", db.last_insert_rowid());
        return Ok(());
    }

    let server: WorkerServer = Worker.bind(path)?;
    support::serve(server, stopper)
}
