//! `close_idle_connections`: a threading server's keep-alive connections whose handler waits
//! for its next request end at once; requests in flight finish; the first request of a new
//! connection is still read.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sockserve::prelude::*;
use util::eventually;

const LIMIT: Duration = Duration::from_secs(10);

/// A keep-alive line echo: answers each line until end of input.
struct KeepAlive {
    finished: Arc<AtomicUsize>,
}

impl StreamHandler for KeepAlive {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            req.wfile.write_all(line.as_bytes())?;
            line.clear();
        }
        Ok(())
    }

    fn finish(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn connect(server: &ThreadingTcpServer<KeepAlive>) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(server.server_address()).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    BufReader::new(stream)
}

fn ask(client: &mut BufReader<TcpStream>, line: &str) -> String {
    client.get_mut().write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    client.read_line(&mut reply).unwrap();
    reply
}

/// Whether the server ended `client` (end of input) within the read timeout.
fn ended(client: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).is_ok() && rest.is_empty()
}

#[test]
fn idle_keep_alive_connections_end_and_requests_in_flight_finish() {
    let finished = Arc::new(AtomicUsize::new(0));
    let handler = KeepAlive {
        finished: Arc::clone(&finished),
    };
    let server = Arc::new(ThreadingTcpServer::bind("127.0.0.1:0", handler).unwrap());
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever());

    // Ten idle keep-alive connections: each answered once, now waiting for a next request.
    let mut idle: Vec<_> = (0..10)
        .map(|i| {
            let mut client = connect(&server);
            assert_eq!(ask(&mut client, &format!("hello {i}\n")), format!("hello {i}\n"));
            client
        })
        .collect();
    // One in the middle of a request: answered once, then half of its next line sent.
    let mut busy = connect(&server);
    assert_eq!(ask(&mut busy, "first\n"), "first\n");
    busy.get_mut().write_all(b"second, half").unwrap();
    // One connected without a request yet.
    let mut fresh = connect(&server);
    assert!(eventually(LIMIT, || server.concurrency().active_threads() == 12));

    let started = Instant::now();
    server.close_idle_connections();
    for client in &mut idle {
        assert!(ended(client), "an idle connection was not ended");
    }
    assert!(started.elapsed() < LIMIT);
    assert!(eventually(LIMIT, || finished.load(Ordering::SeqCst) == 10));

    // The request in flight finishes and is answered, then its connection ends (idle again).
    assert_eq!(ask(&mut busy, " and the rest\n"), "second, half and the rest\n");
    assert!(ended(&mut busy));
    // A connection's first request is still read and answered.
    assert_eq!(ask(&mut fresh, "first request\n"), "first request\n");
    assert!(ended(&mut fresh));
    assert!(eventually(LIMIT, || finished.load(Ordering::SeqCst) == 12));

    server.shutdown();
    thread.join().unwrap().unwrap();
    server.server_close();
}

#[test]
fn a_new_serve_forever_keeps_idle_connections_again() {
    let finished = Arc::new(AtomicUsize::new(0));
    let handler = KeepAlive {
        finished: Arc::clone(&finished),
    };
    let server = Arc::new(ThreadingTcpServer::bind("127.0.0.1:0", handler).unwrap());
    server.close_idle_connections();
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever());
    let mut client = connect(&server);
    for i in 0..3 {
        assert_eq!(ask(&mut client, &format!("{i}\n")), format!("{i}\n"));
    }
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    server.shutdown();
    thread.join().unwrap().unwrap();
    drop(client);
    server.server_close();
}
