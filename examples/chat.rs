//! A chat room: a threading TCP server whose handler holds the room, behind a lock.
//!
//! ```sh
//! cargo run --example chat -- --bind 127.0.0.1:9003
//! nc 127.0.0.1 9003      # in two or more terminals; type lines, they reach the others
//! ```
//!
//! The handler value is the server-wide state (Python's `self.server`): every connection's
//! thread sees the same [`Room`], so its members sit behind a `Mutex`. On connecting, a client
//! gets `* welcome guest-N (K online)`; each line it sends reaches every other member as
//! `guest-N: line`. Commands: `/nick NAME`, `/who`, `/quit`. A member whose socket cannot take a
//! message within 5 s is dropped, so one stuck client cannot stall the room for long.
//!
//! `--multiplex` serves the same room on the multiplex model ([`MuxRoom`]): no thread per
//! member, a [`ConnHandle`] per member instead of a second socket handle, and messages queued
//! on the member's worker instead of written from the sender's thread (a member that does
//! not read holds its queued messages in memory; no sender waits for it).
//! In a room of more than [`QUIET_ABOVE`] members, joins and leaves are not announced, so a
//! crowd arriving costs traffic linear in its size, not quadratic.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::server;
use support::{Connection as _, Next};

/// The room: who is in it, and how to reach them.
#[server(tcp, threading)]
#[derive(Default)]
struct Room {
    members: Mutex<Members>,
}

#[derive(Default)]
struct Members {
    next_id: u64,
    by_id: BTreeMap<u64, Member>,
}

struct Member {
    name: String,
    /// A second handle on the member's connection, for messages from other threads.
    stream: TcpStream,
}

impl Members {
    /// Sends `text` to every member but `except`; drops members that cannot take it.
    fn broadcast(&mut self, except: Option<u64>, text: &str) {
        let mut gone = Vec::new();
        for (&id, member) in &self.by_id {
            if Some(id) != except && (&member.stream).write_all(text.as_bytes()).is_err() {
                gone.push(id);
            }
        }
        for id in gone {
            if let Some(member) = self.by_id.remove(&id) {
                log::info!("dropping {}: cannot deliver", member.name);
                let _ = member.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Sends `text` to one member.
    fn tell(&mut self, id: u64, text: &str) -> io::Result<()> {
        match self.by_id.get(&id) {
            Some(member) => (&member.stream).write_all(text.as_bytes()),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Room {
    fn members(&self) -> MutexGuard<'_, Members> {
        // A panic elsewhere while holding the lock leaves the map consistent: keep going.
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection to the room; returns its id.
    fn join(&self, stream: &TcpStream) -> io::Result<u64> {
        let stream = stream.try_clone()?;
        let mut members = self.members();
        members.next_id += 1;
        let id = members.next_id;
        let name = format!("guest-{id}");
        members.by_id.insert(
            id,
            Member {
                name: name.clone(),
                stream,
            },
        );
        let online = members.by_id.len();
        if let Err(e) = members.tell(id, &format!("* welcome {name} ({online} online)\n")) {
            members.by_id.remove(&id);
            return Err(e);
        }
        members.broadcast(Some(id), &format!("* {name} joined\n"));
        Ok(id)
    }

    fn leave(&self, id: u64) {
        let mut members = self.members();
        if let Some(member) = members.by_id.remove(&id) {
            members.broadcast(None, &format!("* {} left\n", member.name));
        }
    }

    /// Handles one line from member `id`.
    fn said(&self, id: u64, line: &[u8]) -> io::Result<Next> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        let mut members = self.members();
        let Some(name) = members.by_id.get(&id).map(|m| m.name.clone()) else {
            // Dropped by a failed delivery.
            return Ok(Next::Close);
        };
        if let Some(new) = text.strip_prefix("/nick ") {
            let new = new.trim();
            let valid = !new.is_empty()
                && new.len() <= 32
                && new.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
            if !valid {
                members.tell(id, "* nick: 1 to 32 letters, digits, - _ .\n")?;
            } else if let Some(member) = members.by_id.get_mut(&id) {
                member.name = new.to_string();
                members.broadcast(None, &format!("* {name} is now {new}\n"));
            }
        } else if text == "/who" {
            let names: Vec<&str> = members.by_id.values().map(|m| m.name.as_str()).collect();
            let list = format!("* online: {}\n", names.join(" "));
            members.tell(id, &list)?;
        } else if text == "/quit" {
            return Ok(Next::Close);
        } else if text.starts_with('/') {
            members.tell(id, "* commands: /nick NAME, /who, /quit\n")?;
        } else if !text.is_empty() {
            members.broadcast(Some(id), &format!("{name}: {text}\n"));
        }
        Ok(Next::Continue)
    }
}

impl StreamHandler for Room {
    fn setup(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        req.request.poll_reads()
    }

    fn handle(&self, req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
        let id = self.join(req.request)?;
        log::info!("{} joined as guest-{id}", req.client_address);
        let served = support::serve_lines(&mut req.rfile, &mut req.wfile, IDLE, |line, _| {
            self.said(id, line)
        });
        self.leave(id);
        served
    }
}

/// How long a silent member stays in the room.
const IDLE: Duration = Duration::from_secs(3600);

const SPEC: support::Spec = support::Spec {
    about: "A chat room over TCP: lines from one client reach all the others.",
    default_bind: "127.0.0.1:9003",
    bind_value: "HOST:PORT",
    options: &[MULTIPLEX],
};

/// The multiplex room: each member is a [`ConnHandle`]; a member's state is its id.
#[server(tcp, multiplex, name = "MuxRoomServer")]
#[derive(Default)]
struct MuxRoom {
    members: Mutex<MuxMembers>,
}

#[derive(Default)]
struct MuxMembers {
    next_id: u64,
    by_id: BTreeMap<u64, (String, ConnHandle)>,
}

/// Above this many members, joins and leaves are not announced.
const QUIET_ABOVE: usize = 100;

impl MuxMembers {
    fn broadcast(&self, except: Option<u64>, text: &str) {
        for (&id, (_, handle)) in &self.by_id {
            if Some(id) != except {
                handle.send(text.as_bytes());
            }
        }
    }
}

impl MuxRoom {
    fn members(&self) -> MutexGuard<'_, MuxMembers> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn said(&self, id: u64, io: &mut ConnIo<'_, Tcp>, text: &str) -> Next {
        let mut members = self.members();
        let Some(name) = members.by_id.get(&id).map(|(name, _)| name.clone()) else {
            return Next::Close;
        };
        if let Some(new) = text.strip_prefix("/nick ") {
            let new = new.trim();
            let valid = !new.is_empty()
                && new.len() <= 32
                && new.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
            if !valid {
                io.write(b"* nick: 1 to 32 letters, digits, - _ .\n");
            } else if let Some(member) = members.by_id.get_mut(&id) {
                member.0 = new.to_string();
                members.broadcast(None, &format!("* {name} is now {new}\n"));
            }
        } else if text == "/who" {
            let names: Vec<&str> = members.by_id.values().map(|(name, _)| name.as_str()).collect();
            io.write(format!("* online: {}\n", names.join(" ")).as_bytes());
        } else if text == "/quit" {
            return Next::Close;
        } else if text.starts_with('/') {
            io.write(b"* commands: /nick NAME, /who, /quit\n");
        } else if !text.is_empty() {
            members.broadcast(Some(id), &format!("{name}: {text}\n"));
        }
        Next::Continue
    }
}

impl ConnectionHandler<Tcp> for MuxRoom {
    type Conn = u64;

    fn connected(&self, io: &mut ConnIo<'_, Tcp>) -> io::Result<u64> {
        let mut members = self.members();
        members.next_id += 1;
        let id = members.next_id;
        let name = format!("guest-{id}");
        members.by_id.insert(id, (name.clone(), io.handle()));
        let online = members.by_id.len();
        io.write(format!("* welcome {name} ({online} online)\n").as_bytes());
        if online <= QUIET_ABOVE {
            members.broadcast(Some(id), &format!("* {name} joined\n"));
        }
        log::info!("{} joined as {name}", io.client_address());
        Ok(id)
    }

    fn input(&self, id: &mut u64, io: &mut ConnIo<'_, Tcp>, input: &[u8]) -> io::Result<usize> {
        let mut consumed = 0;
        while let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line = &input[consumed..consumed + end + 1];
            consumed += end + 1;
            if line.len() > support::MAX_LINE {
                io.write(b"error: line too long\n");
                io.close();
                return Ok(input.len());
            }
            let text = String::from_utf8_lossy(line);
            if self.said(*id, io, text.trim_end_matches(['\r', '\n'])) == Next::Close {
                io.close();
                return Ok(input.len());
            }
        }
        if input.len() - consumed >= support::MAX_LINE {
            io.write(b"error: line too long\n");
            io.close();
            return Ok(input.len());
        }
        Ok(consumed)
    }

    fn closed(&self, id: u64, _client_address: &std::net::SocketAddr, _reason: CloseReason) {
        let mut members = self.members();
        if let Some((name, _)) = members.by_id.remove(&id) {
            if members.by_id.len() < QUIET_ABOVE {
                members.broadcast(None, &format!("* {name} left\n"));
            }
        }
    }
}

/// `--multiplex`: serve the room on the multiplex model.
const MULTIPLEX: support::Opt = support::Opt {
    name: "multiplex",
    value: None,
    help: "serve the room on the multiplex model (no thread per member)",
};

fn main() -> ExitCode {
    let served = support::start().and_then(|stopper| {
        let args = support::parse_args(&SPEC);
        if args.flag(MULTIPLEX.name) {
            support::serve(MuxRoom::default().bind(args.bind.as_str())?, stopper)
        } else {
            support::serve(Room::default().bind(args.bind.as_str())?, stopper)
        }
    });
    support::report(served)
}
