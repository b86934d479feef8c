//! `server_close` on the multiplex workers serves what already arrived: a request a client
//! sent before the close, not yet read because the worker was busy, is answered before the
//! connection closes (a reload or a stop must not drop it).

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::transport::Tcp;

const LIMIT: Duration = Duration::from_secs(10);

/// Echoes lines; `slow` holds the worker for 300 ms first.
struct SlowEcho;

impl ConnectionHandler<Tcp> for SlowEcho {
    type Conn = ();

    fn connected(&self, _io: &mut ConnIo<'_, Tcp>) -> io::Result<()> {
        Ok(())
    }

    fn input(&self, _conn: &mut (), io: &mut ConnIo<'_, Tcp>, input: &[u8]) -> io::Result<usize> {
        let mut consumed = 0;
        while let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line = &input[consumed..consumed + end + 1];
            if line == b"slow\n" {
                thread::sleep(Duration::from_millis(300));
            }
            io.write(line);
            consumed += end + 1;
        }
        Ok(consumed)
    }
}

fn connect(address: std::net::SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    BufReader::new(stream)
}

fn ask(client: &mut BufReader<TcpStream>, line: &str) -> String {
    client.get_mut().write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    client.read_line(&mut reply).unwrap();
    reply
}

#[test]
fn a_request_that_arrived_before_server_close_is_answered() {
    let options = Options::DEFAULT.workers(Some(1));
    let server = Arc::new(MultiplexTcpServer::with_options("127.0.0.1:0", SlowEcho, options).unwrap());
    let address = server.server_address();
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever());
    let mut busy = connect(address);
    let mut waiting = connect(address);
    // Both are on the one worker.
    assert_eq!(ask(&mut busy, "hi\n"), "hi\n");
    assert_eq!(ask(&mut waiting, "hi\n"), "hi\n");
    // The worker is held by `slow`; meanwhile the other client's request arrives, unread.
    busy.get_mut().write_all(b"slow\n").unwrap();
    thread::sleep(Duration::from_millis(50));
    waiting.get_mut().write_all(b"sent before the close\n").unwrap();
    server.shutdown();
    thread.join().unwrap().unwrap();
    server.server_close();
    let mut rest = String::new();
    waiting.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest, "sent before the close\n",
        "the request that had arrived was dropped"
    );
    let mut rest = String::new();
    busy.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "slow\n");
}

#[test]
fn a_connection_whose_first_request_is_on_its_way_is_served_by_the_drain() {
    let options = Options::DEFAULT.workers(Some(1));
    let server = Arc::new(MultiplexTcpServer::with_options("127.0.0.1:0", SlowEcho, options).unwrap());
    let address = server.server_address();
    let serving = Arc::clone(&server);
    let thread = thread::spawn(move || serving.serve_forever());
    let mut served = connect(address);
    assert_eq!(ask(&mut served, "hi\n"), "hi\n");
    // Accepted and on the worker, nothing sent yet.
    let mut fresh = connect(address);
    assert!(util::eventually(LIMIT, || server
        .concurrency()
        .open_connections()
        == 2));
    server.shutdown();
    thread.join().unwrap().unwrap();
    let closing = Arc::clone(&server);
    let close = thread::spawn(move || closing.server_close());
    // The served connection is closed at once; the fresh one's request arrives during the
    // close (well inside FIRST_MESSAGE_GRACE) and is answered before it is closed.
    let mut rest = String::new();
    served.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
    fresh.get_mut().write_all(b"first request\n").unwrap();
    let mut rest = String::new();
    fresh.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "first request\n");
    close.join().unwrap();
}
