//! A small static file server in the spirit of `python -m http.server`.
//!
//! ```sh
//! cargo run --release --example http_server                      # ./ on 127.0.0.1:8000
//! cargo run --example http_server -- --directory /srv/www --bind 127.0.0.1:8080
//! curl -i http://127.0.0.1:8000/
//! # HTTPS (SIGHUP reloads the certificate):
//! cargo run --example http_server -- --tls-cert cert.pem --tls-key key.pem
//! curl --cacert ca.pem https://localhost:8000/
//! ```
//!
//! What it does:
//! - `GET` and `HEAD` of regular files, with `Content-Length`, `Content-Type` (by extension)
//!   and `Last-Modified`; any other method gets 501 with `Allow: GET, HEAD`;
//! - a directory asked for without its trailing slash is redirected (301) to the slashed path;
//!   with the slash, its `index.html` is served if present, otherwise an HTML listing (links
//!   percent-encoded, names HTML-escaped);
//! - dot-files (`.git/`, `.env`, anything whose path, symlinks resolved, has a component
//!   starting with `.`) are neither served (404) nor listed, unless `--show-hidden`;
//! - 404 for what does not exist; 403 for what must not be served: `..` in any encoding
//!   (`..`, `%2e%2e`), an encoded `/` (`%2f`), a backslash, NUL, a symlink leading out of the
//!   served directory (paths are canonicalized and checked against the canonical root), and
//!   anything that is neither a regular file nor a directory;
//! - 400 for a malformed request (request line, percent-encoding, header syntax), 414 for a
//!   request line over 8190 bytes, 431 for a header line over 8190 bytes, more than 100
//!   headers or more than 64 KiB of them, 505 for HTTP/2 and above. The request head is read
//!   with those bounds: no input is buffered without limit. The body of a request is never
//!   read (`--pooled` skips a short one, below).
//! - HTTP/1.0 and HTTP/1.1. **An HTTP/1.1 request without a `Host` header is refused with 400**,
//!   as RFC 9112 section 3.2 requires (HTTP/1.0 requests need none), and so is a request whose
//!   `Content-Length` is not a number. By default, one request per connection: every response
//!   carries `Connection: close`, and the server closes after it.
//!
//! The request parser is `parse.rs`, which depends on `std` only so that a fuzz target can
//! include it by path; `files.rs` maps paths to the filesystem and renders listings.
//!
//! A threading server: each connection gets a thread, at most 64 at once (`max_threads`);
//! a client that sends nothing for 30 s is dropped. SIGTERM/SIGINT: stop accepting, finish the
//! responses in flight, exit 0.
//!
//! **`--pooled`: keep-alive.** The same files on the pooled model ([`PooledFileServer`]), with
//! persistent connections (RFC 9112 section 9.3): `handle` answers one request, and between
//! requests the connection is parked in the event loop, holding no thread (so 64 pool threads
//! serve many more open connections; an idle one is closed after 30 s, `idle_timeout`).
//! - An HTTP/1.1 request keeps the connection open unless it says `Connection: close`; an
//!   HTTP/1.0 one closes it unless it says `Connection: keep-alive`. Each response says which:
//!   `Connection: keep-alive` or `Connection: close`, with its `Content-Length`.
//! - Requests sent back to back without waiting (pipelining) are answered in order.
//! - Error responses (status 400 and above) close the connection, as Python's `send_error`
//!   does.
//! - A request body (which no `GET` or `HEAD` needs) is read and discarded when its
//!   `Content-Length` is at most 64 KiB, so that the next request is found after it; a longer
//!   one, or one sent with `Transfer-Encoding`, is answered and the connection closed.
//! - With `--tls-cert`/`--tls-key` too, HTTPS with keep-alive: the TLS handshake runs on the
//!   event loop without blocking it, and a kept-alive HTTPS connection is parked like any other.
//!
//! Both servers answer a request with one function, [`FileServer::exchange`]; they differ in
//! whether it may keep the connection open.

#[path = "../support/mod.rs"]
mod support;

mod files;
// The parser's whole API is exercised by its tests and a fuzz target, not all by the server.
// It includes support's line reader by path itself, to stay free of `support` for the fuzz
// targets: that module is compiled twice here.
#[allow(dead_code, clippy::duplicate_mod)]
mod parse;

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use sockserve::transport::{StreamTransport, Tls};
use support::{Connection as _, Patient};

use files::Resolved;
use parse::{Framing, Method, PathError, Request};

/// The server-wide state: the canonical directory being served.
#[server(tcp, threading, max_threads = 64)]
struct FileServer {
    root: PathBuf,
    /// Serve and list dot-files (`.git/`, `.env`): off unless `--show-hidden`.
    show_hidden: bool,
}

/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest request body skipped to keep a connection open (`--pooled`); a longer one
/// closes the connection instead.
const MAX_SKIPPED_BODY: u64 = 64 * 1024;

/// What became of a connection after [`FileServer::exchange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exchange {
    /// No request came (end of input, a read error or timeout): nothing was sent.
    Nothing,
    /// A response was sent with `Connection: keep-alive`: the next request may follow.
    KeepAlive,
    /// A response was sent with `Connection: close`.
    Close,
}

/// A response about to be written.
struct Response {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    File(File, u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::File(_, len) => *len,
        }
    }
}

impl Response {
    /// A small HTML page explaining an error status.
    fn error(status: u16, reason: &'static str, detail: &str) -> Response {
        let body = format!(
            "<!DOCTYPE HTML>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{status} {reason}</title>\n</head>\n<body>\n<h1>{status} {reason}</h1>\n\
             <p>{}</p>\n</body>\n</html>\n",
            files::html_escape(detail)
        );
        Response {
            status,
            reason,
            headers: vec![("Content-Type", "text/html; charset=utf-8".into())],
            body: Body::Bytes(body.into_bytes()),
        }
    }

    fn html(body: String) -> Response {
        Response {
            status: 200,
            reason: "OK",
            headers: vec![("Content-Type", "text/html; charset=utf-8".into())],
            body: Body::Bytes(body.into_bytes()),
        }
    }

    /// Writes the response, saying whether the connection stays open; without the body when
    /// `head_only`.
    fn write_to(self, out: &mut impl Write, head_only: bool, keep_alive: bool) -> io::Result<u64> {
        let length = self.body.len();
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nServer: sockserve-http_server\r\nDate: {}\r\n\
             Connection: {connection}\r\nContent-Length: {length}\r\n",
            self.status,
            self.reason,
            support::Utc::now().http_date()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if head_only {
            return Ok(0);
        }
        match self.body {
            Body::Bytes(bytes) => out.write_all(&bytes)?,
            Body::File(file, len) => {
                let sent = io::copy(&mut file.take(len), out)?;
                if sent != len {
                    // The file shrank while being sent: the client sees a short body and a close.
                    log::warn!("sent {sent} of {len} bytes: the file changed");
                }
            }
        }
        Ok(length)
    }
}

impl FileServer {
    /// Reads one request from `input` and writes its response to `out` (flushed): what both
    /// servers do for each request. With `may_keep_alive` false the response closes the
    /// connection (`Connection: close`, the body left unread); with it true the request
    /// decides ([`Request::keep_alive`]), except that an error response closes, and so does a
    /// body that cannot be skipped ([`MAX_SKIPPED_BODY`], `Transfer-Encoding`).
    fn exchange<R: BufRead, W: Write>(
        &self,
        input: &mut R,
        out: &mut W,
        client: &dyn Display,
        may_keep_alive: bool,
    ) -> io::Result<Exchange> {
        let (response, request_line, head_only, keep_alive) = match parse::read_request(input, &parse::LIMITS)
        {
            Ok(request) => {
                support::simulate_work();
                let line = format!("{} {} {}", request.method, request.target, request.version);
                let framing = request.framing();
                let response = match framing {
                    Framing::Invalid => Response::error(400, "Bad Request", "Invalid Content-Length."),
                    _ => self.respond(&request),
                };
                let keep_alive = may_keep_alive
                    && request.keep_alive()
                    && response.status < 400
                    && match framing {
                        Framing::None => true,
                        Framing::Length(length) => skip_body(input, length, client),
                        Framing::Encoded | Framing::Invalid => false,
                    };
                (response, line, request.method == Method::Head, keep_alive)
            }
            Err(parse::Error::Closed) => return Ok(Exchange::Nothing),
            Err(parse::Error::Io(e)) => {
                log::debug!("{client}: {e}");
                return Ok(Exchange::Nothing);
            }
            Err(e) => {
                let (status, reason) = e.status().unwrap_or((400, "Bad Request"));
                (
                    Response::error(status, reason, &e.to_string()),
                    "-".to_string(),
                    false,
                    false,
                )
            }
        };
        let status = response.status;
        let sent = response.write_to(out, head_only, keep_alive)?;
        out.flush()?;
        log::info!("{client} \"{}\" {status} {sent}", request_line.escape_debug());
        Ok(match keep_alive {
            true => Exchange::KeepAlive,
            false => Exchange::Close,
        })
    }

    /// Builds the response to a well-formed request.
    fn respond(&self, request: &Request) -> Response {
        if let Method::Other(method) = &request.method {
            let mut response = Response::error(
                501,
                "Not Implemented",
                &format!("Method {method} is not supported."),
            );
            response.headers.push(("Allow", "GET, HEAD".into()));
            return response;
        }
        let path = match parse::parse_target(&request.target) {
            Ok(path) => path,
            Err(PathError::Malformed) => {
                return Response::error(400, "Bad Request", "Malformed request target.")
            }
            Err(PathError::Forbidden) => {
                return Response::error(403, "Forbidden", "This path is not served.")
            }
        };
        match files::resolve(&self.root, &path, self.show_hidden) {
            Resolved::File(file) => self.file(&file),
            Resolved::Directory(dir) => match files::listing(&dir, &path, self.show_hidden) {
                Ok(html) => Response::html(html),
                Err(e) => {
                    log::warn!("cannot list {}: {e}", dir.display());
                    Response::error(403, "Forbidden", "This directory cannot be listed.")
                }
            },
            Resolved::Redirect(location) => {
                let mut response = Response::error(301, "Moved Permanently", &location);
                response.headers.push(("Location", location));
                response
            }
            Resolved::NotFound => Response::error(404, "Not Found", "Nothing matches this path."),
            Resolved::Forbidden => Response::error(403, "Forbidden", "This path is not served."),
        }
    }

    fn file(&self, path: &PathBuf) -> Response {
        // O_NONBLOCK: a FIFO swapped in after `resolve` must not block the open.
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Response::error(403, "Forbidden", "This file cannot be read.")
            }
            Err(_) => return Response::error(404, "Not Found", "Nothing matches this path."),
        };
        let metadata = match file.metadata() {
            Ok(metadata) if metadata.is_file() => metadata,
            _ => return Response::error(403, "Forbidden", "This path is not served."),
        };
        let mut headers = vec![("Content-Type", files::content_type(path).to_string())];
        if let Ok(modified) = metadata.modified() {
            headers.push(("Last-Modified", support::Utc::at(modified).http_date()));
        }
        Response {
            status: 200,
            reason: "OK",
            headers,
            body: Body::File(file, metadata.len()),
        }
    }
}

/// One handler for plain TCP and for TLS over TCP (`--tls-cert`/`--tls-key`).
impl<T: StreamTransport> StreamHandler<T> for FileServer
where
    T::Request: support::Connection,
{
    fn setup(&self, req: &mut StreamRequest<'_, T>) -> io::Result<()> {
        req.request.poll_reads()
    }

    fn handle(&self, req: &mut StreamRequest<'_, T>) -> io::Result<()> {
        let mut input = Patient::new(&mut req.rfile, REQUEST_TIMEOUT);
        // One request per connection.
        if self.exchange(&mut input, &mut req.wfile, req.client_address, false)? == Exchange::Close {
            // Unread input (an oversized head, a body) must not turn the close into a reset.
            req.request.close_gently();
        }
        Ok(())
    }
}

/// Reads and discards a request body of `length` bytes, if it is short enough
/// ([`MAX_SKIPPED_BODY`]); whether the connection can go on (the whole body was read).
fn skip_body(input: &mut impl BufRead, length: u64, client: &dyn Display) -> bool {
    if length > MAX_SKIPPED_BODY {
        return false;
    }
    match io::copy(&mut input.take(length), &mut io::sink()) {
        Ok(skipped) => skipped == length,
        Err(e) => {
            log::debug!("{client}: reading the request body: {e}");
            false
        }
    }
}

/// `--pooled`: the same files, one request per `handle`; between requests the connection is
/// parked in the event loop, holding no thread, and closed after 30 s without a request
/// (`idle_timeout`, the threading server's [`REQUEST_TIMEOUT`]). `TCP_NODELAY`: a response's
/// head and body are two writes, and on a kept-alive connection Nagle's algorithm would hold
/// the body until the client's delayed acknowledgement of the head (about 40 ms).
#[server(
    tcp,
    pooled,
    max_threads = 64,
    idle_timeout = "30s",
    disable_nagle_algorithm = true
)]
struct PooledFileServer(FileServer);

/// One handler for plain TCP and for TLS over TCP (`--pooled --tls-cert`: the handshake runs
/// on the event loop, and a kept-alive HTTPS connection is parked between requests as well).
impl<T: StreamTransport> MessageHandler<T> for PooledFileServer
where
    T::Request: support::Connection,
{
    fn handle(&self, req: &mut StreamRequest<'_, T>) -> io::Result<AfterMessage> {
        // Polling reads, so that a stop asked for while a client is silent in the middle of a
        // request ends the wait, as for the threading server. Set for every request: `handle`
        // cannot tell a connection's first one, and the library set its own timeouts at accept.
        req.request.poll_reads()?;
        let mut input = Patient::new(&mut req.rfile, REQUEST_TIMEOUT);
        match self
            .0
            .exchange(&mut input, &mut req.wfile, req.client_address, true)?
        {
            Exchange::KeepAlive => Ok(AfterMessage::KeepOpen),
            Exchange::Close => {
                req.request.close_gently();
                Ok(AfterMessage::Close)
            }
            Exchange::Nothing => Ok(AfterMessage::Close),
        }
    }
}

/// `--pooled`: keep-alive on the pooled model.
const POOLED: support::Opt = support::Opt {
    name: "pooled",
    value: None,
    help: "keep connections open between requests (HTTP keep-alive), on the pooled model",
};

const SPEC: support::Spec = support::Spec {
    about: "A static file server in the spirit of `python -m http.server` (--pooled: with keep-alive).",
    default_bind: "127.0.0.1:8000",
    bind_value: "HOST:PORT",
    options: &[
        support::Opt {
            name: "directory",
            value: Some("DIR"),
            help: "the directory to serve [default: the current directory]",
        },
        support::Opt {
            name: "show-hidden",
            value: None,
            help: "also serve and list dot-files such as .git/ and .env (hidden by default)",
        },
        support::Opt {
            name: "tls-cert",
            value: Some("PEM"),
            help: "serve HTTPS with this certificate chain (with --tls-key; SIGHUP reloads both)",
        },
        support::Opt {
            name: "tls-key",
            value: Some("PEM"),
            help: "the private key of --tls-cert",
        },
        POOLED,
        support::MAX_THREADS,
        support::CONNECTION_TIMEOUT,
    ],
};

fn main() -> ExitCode {
    // SIGHUP reloads the certificate in place (support::tls_config), not the process.
    let graceful = sockserve::signals::Graceful::DEFAULT.reload(false);
    let served = support::start_with(graceful).and_then(|stopper| {
        let args = support::parse_args(&SPEC);
        let directory = args.value("directory").unwrap_or(".");
        let root = match fs::canonicalize(directory) {
            Ok(root) if root.is_dir() => root,
            Ok(_) => {
                log::error!("--directory {directory}: not a directory");
                std::process::exit(2);
            }
            Err(e) => {
                log::error!("--directory {directory}: {e}");
                std::process::exit(2);
            }
        };
        log::info!("serving {}", root.display());
        let show_hidden = args.flag("show-hidden");
        let handler = FileServer { root, show_hidden };
        let (cert, key) = (args.value("tls-cert"), args.value("tls-key"));
        let tls = cert.is_some() || key.is_some();
        if args.flag(POOLED.name) {
            let options = args.server_options(PooledFileServer::OPTIONS);
            let handler = PooledFileServer(handler);
            if !tls {
                return support::serve(handler.bind_with(args.bind.as_str(), options)?, stopper);
            }
            let config = support::tls_config(cert, key, None, &["http/1.1"]);
            let server: Server<Tls<Tcp>, Pooled, PooledFileServer> =
                Server::with_options((args.bind.as_str(), config), handler, options)?;
            return support::serve(server, stopper);
        }
        let options = args.server_options(FileServer::OPTIONS);
        if !tls {
            return support::serve(handler.bind_with(args.bind.as_str(), options)?, stopper);
        }
        // HTTPS: the same handler behind the TLS layer, offering HTTP/1.1 through ALPN.
        let config = support::tls_config(cert, key, None, &["http/1.1"]);
        let server: Server<Tls<Tcp>, Threading, FileServer> =
            Server::with_options((args.bind.as_str(), config), handler, options)?;
        support::serve(server, stopper)
    });
    support::report(served)
}
