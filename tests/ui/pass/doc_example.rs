use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;

use sockserve::transport::Tcp;
use sockserve::{server, Declared, StreamHandler, StreamRequest};

/// Echoes every line back to the client.
#[server(tcp, threading, connection_timeout = "30s", disable_nagle_algorithm = true)]
struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            req.wfile.write_all(line.as_bytes())?;
            line.clear();
        }
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let server: EchoServer = Echo.bind("127.0.0.1:0")?;
    let address = server.server_address();
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.serve_forever());
        let mut client = TcpStream::connect(address)?;
        client.write_all(b"hello\n")?;
        let mut reply = String::new();
        BufReader::new(&client).read_line(&mut reply)?;
        assert_eq!(reply, "hello\n");
        server.shutdown();
        serving.join().expect("serve_forever panicked")
    })
}
