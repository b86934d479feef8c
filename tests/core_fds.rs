//! Descriptor accounting: every fd a server opens is closed exactly once, also when bind
//! fails. One test function, so no other test of this binary opens descriptors meanwhile.

mod util;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

use sockserve::prelude::*;
use util::{eventually, open_fds, Running, TempDir, LIMIT};

struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        io::copy(&mut req.rfile, &mut req.wfile).map(drop)
    }
}

impl StreamHandler<Unix> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
        io::copy(&mut req.rfile, &mut req.wfile).map(drop)
    }
}

fn exchange(addr: std::net::SocketAddr) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    conn.write_all(b"ping").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"ping");
}

#[test]
fn descriptors_are_closed_exactly_once() {
    // Warm up lazily allocated process state (the SIGPIPE check, test harness output).
    drop(TcpServer::bind("127.0.0.1:0", Echo).unwrap());
    let baseline = open_fds();

    // A failed bind leaks nothing.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    let no_reuse = Options::DEFAULT.allow_reuse_address(false);
    for _ in 0..50 {
        let err = TcpServer::with_options(taken, Echo, no_reuse.clone()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
    drop(holder);
    assert_eq!(open_fds(), baseline, "after failed binds");

    // A failed Unix bind (path is not a socket) leaks nothing either.
    let dir = TempDir::new("fds");
    std::fs::write(dir.path("file"), b"not a socket").unwrap();
    for _ in 0..20 {
        let err = UnixStreamServer::bind(dir.path("file"), Echo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
    assert_eq!(open_fds(), baseline, "after failed unix binds");

    // Serving and dropping servers of each concurrency model returns to the baseline.
    {
        let running = Running::start(TcpServer::bind("127.0.0.1:0", Echo).unwrap());
        let addr = running.server.server_address();
        for _ in 0..20 {
            exchange(addr);
        }
    }
    assert!(
        eventually(LIMIT, || open_fds() == baseline),
        "sync: {} != {baseline}",
        open_fds()
    );
    {
        let running = Running::start(ThreadingTcpServer::bind("127.0.0.1:0", Echo).unwrap());
        let addr = running.server.server_address();
        for _ in 0..20 {
            exchange(addr);
        }
        let (result, server) = running.stop();
        result.unwrap();
        drop(server);
    }
    assert!(
        eventually(LIMIT, || open_fds() == baseline),
        "threading: {} != {baseline}",
        open_fds()
    );
    {
        let running = Running::start(ForkingTcpServer::bind("127.0.0.1:0", Echo).unwrap());
        let addr = running.server.server_address();
        for _ in 0..20 {
            exchange(addr);
        }
    }
    assert!(
        eventually(LIMIT, || open_fds() == baseline),
        "forking: {} != {baseline}",
        open_fds()
    );
}
