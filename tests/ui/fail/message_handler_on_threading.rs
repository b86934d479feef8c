use std::io;

use sockserve::prelude::*;

#[sockserve::server(tcp, threading)]
struct Echo;

impl MessageHandler for Echo {
    fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<AfterMessage> {
        Ok(AfterMessage::KeepOpen)
    }
}

fn main() {}
