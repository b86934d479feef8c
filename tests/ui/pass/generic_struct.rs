// Generic structs: type, const and lifetime parameters, bounds and where clauses.
// The alias keeps the parameters (without bounds); `Declared` is implemented for the
// `'static` instances.
use std::fmt::Display;
use std::io::{self, Write};
use std::marker::PhantomData;

use sockserve::prelude::*;
use sockserve::server;

#[server(tcp, threading, timeout = "1s")]
pub struct Greeter<G: Display, const N: usize = 1>
where
    G: Send + Sync,
{
    greeting: G,
}

impl<G: Display + Send + Sync + 'static, const N: usize> StreamHandler for Greeter<G, N> {
    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        for _ in 0..N {
            writeln!(req.wfile, "{}", self.greeting)?;
        }
        Ok(())
    }
}

#[server(udp)]
pub struct Borrowing<'a, T>(&'a str, PhantomData<T>);

impl<T: 'static> DatagramHandler for Borrowing<'static, T> {
    fn handle(&self, req: &mut DatagramRequest<'_, Udp>) -> io::Result<()> {
        req.wfile.write_all(self.0.as_bytes())
    }
}

fn same(server: GreeterServer<&'static str>) -> ThreadingTcpServer<Greeter<&'static str, 1>> {
    server
}

fn main() {
    let _ = same;
    let server = Greeter::<String, 2> {
        greeting: "hello".into(),
    }
    .bind("127.0.0.1:0")
    .unwrap();
    let _: &GreeterServer<String, 2> = &server;
    assert_eq!(
        Greeter::<String>::OPTIONS.timeout,
        Some(std::time::Duration::from_secs(1))
    );

    let server: BorrowingServer<'static, u8> = Borrowing("hi", PhantomData).bind("127.0.0.1:0").unwrap();
    assert_eq!(server.handler().0, "hi");
}
