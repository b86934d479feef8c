//! sockserve's servers under test: one echo handler per handler kind, served by
//! `TcpServer`, `ThreadingTcpServer`, `ForkingTcpServer`, `UdpServer`,
//! `MultiplexTcpServer` (its workers default to one per CPU, as tokio's runtime), twice:
//! `ss-multiplex` with the serve loop accepting every connection and handing it to a
//! worker, `ss-multiplex-rp` with `worker_listeners` (a `SO_REUSEPORT` listener per worker),
//! and `PooledTcpServer` (the same workers, and a pool of threads for the messages).
//!
//! Options differ from `Options::DEFAULT` only in `disable_nagle_algorithm`
//! (every server in the harness sets TCP_NODELAY), `max_children` (the same
//! cap the CPython forking peer gets) and `max_threads` (none: a thread per
//! connection, as the peers it is compared with, so W4 holds 10,000 idle ones).
//! For `ss-pooled`, `max_threads` bounds the pool instead; no workload has more
//! than 64 messages in flight, so the pool never reaches a cap either way.

use std::io::{self, BufRead, Write};

use sockserve::concurrency::{AfterMessage, MessageHandler};
use sockserve::transport::{Tcp, Udp};
use sockserve::{
    ConnIo, ConnectionHandler, DatagramHandler, DatagramRequest, ForkingTcpServer, MultiplexTcpServer,
    Options, PooledTcpServer, StreamHandler, StreamRequest, TcpServer, ThreadingTcpServer, UdpServer,
};

use super::servers::{announce, ServeArgs};

/// Ping-pong echo: writes back whatever is available, not line-based. A reset
/// connection (the load generator closes with RST) ends the request like EOF,
/// as in every other server of the harness.
pub struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        loop {
            let buf = match req.rfile.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(());
            }
            let n = buf.len();
            req.wfile.write_all(buf)?;
            req.rfile.consume(n);
        }
    }
}

impl DatagramHandler for Echo {
    fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        req.wfile.extend_from_slice(req.packet);
        Ok(())
    }
}

/// Ping-pong echo on the multiplex model: whatever arrives goes back.
impl ConnectionHandler<Tcp> for Echo {
    type Conn = ();

    fn connected(&self, _io: &mut ConnIo<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }

    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tcp>, input: &[u8]) -> io::Result<usize> {
        io.write(input);
        Ok(input.len())
    }

    fn handle_error(&self, client_address: &std::net::SocketAddr, error: &sockserve::RequestError) {
        // The load generator closes with RST: a reset is the end of a connection, as elsewhere.
        if !error.is_peer_event() {
            sockserve::log_request_error(client_address, error);
        }
    }
}

/// Ping-pong echo on the pooled model: one message is what has arrived when `handle` runs
/// (the pool calls it with those bytes buffered, so `fill_buf` does not block); it goes back
/// and the connection is parked until the next one.
impl MessageHandler<Tcp> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<AfterMessage> {
        let buf = match req.rfile.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(AfterMessage::Close),
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(AfterMessage::Close);
        }
        let n = buf.len();
        req.wfile.write_all(buf)?;
        req.rfile.consume(n);
        Ok(AfterMessage::KeepOpen)
    }

    fn handle_error(&self, client_address: &std::net::SocketAddr, error: &sockserve::RequestError) {
        // As for the multiplex echo: a reset is the end of a connection.
        if !error.is_peer_event() {
            sockserve::log_request_error(client_address, error);
        }
    }
}

pub const AVAILABLE: bool = true;

pub fn serve(name: &str, args: &ServeArgs) -> io::Result<()> {
    let options = Options::DEFAULT
        .disable_nagle_algorithm(true)
        .max_children(args.max_children)
        .max_threads(None);
    let bind = args.bind.as_str();
    match name {
        "ss-sync" => {
            let server = TcpServer::with_options(bind, Echo, options)?;
            announce(server.server_address());
            server.serve_forever()
        }
        "ss-threading" => {
            let server = ThreadingTcpServer::with_options(bind, Echo, options)?;
            announce(server.server_address());
            server.serve_forever()
        }
        "ss-forking" => {
            let server = ForkingTcpServer::with_options(bind, Echo, options)?;
            announce(server.server_address());
            server.serve_forever()
        }
        "ss-multiplex" => {
            let server = MultiplexTcpServer::with_options(bind, Echo, options)?;
            announce(server.server_address());
            server.serve_forever()
        }
        "ss-pooled" => {
            let server = PooledTcpServer::with_options(bind, Echo, options)?;
            announce(server.server_address());
            server.serve_forever()
        }
        "ss-multiplex-rp" => {
            let server = MultiplexTcpServer::with_options(bind, Echo, options.worker_listeners(true))?;
            announce(server.server_address());
            server.serve_forever()
        }
        "ss-udp" => {
            let server = UdpServer::with_options(bind, Echo, options)?;
            announce(server.server_address());
            server.serve_forever()
        }
        other => Err(io::Error::other(format!("unknown server {other:?}"))),
    }
}
