// A struct with named fields, other attributes around `#[server]`, and `name = ".."`.
use std::io;
use std::sync::Mutex;

use sockserve::prelude::*;
use sockserve::server;

/// The lines every client has sent.
#[derive(Default)]
#[server(unix_stream, threading, name = "LogServer", socket_mode = 0o600)]
#[allow(dead_code)]
struct Log {
    lines: Mutex<Vec<String>>,
    limit: usize,
}

impl StreamHandler<Unix> for Log {
    fn handle(&self, req: &mut StreamRequest<'_, Unix>) -> io::Result<()> {
        let mut line = String::new();
        io::BufRead::read_line(&mut req.rfile, &mut line)?;
        self.lines.lock().unwrap().push(line);
        Ok(())
    }
}

fn same(server: LogServer) -> ThreadingUnixStreamServer<Log> {
    server
}

fn main() {
    let _ = same;
    let log = Log {
        limit: 3,
        ..Log::default()
    };
    assert_eq!(log.limit, 3);
    assert_eq!(Log::OPTIONS.socket_mode, Some(0o600));
}
