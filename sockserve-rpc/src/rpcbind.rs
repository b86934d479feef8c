//! A client of the system's rpcbind (portmapper version 2, RFC 1833): registers the
//! programs a server offers, and unregisters them.
//!
//! Portmapper v2 over TCP to 127.0.0.1:111 is what every rpcbind answers, and what
//! `rpcinfo -p` lists. SET fails when the program and version are registered already (by
//! another process, or by an earlier run that died without unregistering), so a
//! [`Registration`] first unsets what it is about to set, as rpcgen's servers do.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::msg::{self, Protocol};
use crate::record::{self, Wait};
use crate::xdr::{put_u32, Decoder};

/// The portmapper's program number.
pub const PMAP_PROGRAM: u32 = 100_000;
/// The portmapper version spoken here.
pub const PMAP_VERSION: u32 = 2;
/// The portmapper's well-known port.
pub const PMAP_PORT: u16 = 111;
const PMAPPROC_SET: u32 = 1;
const PMAPPROC_UNSET: u32 = 2;
const PMAPPROC_GETPORT: u32 = 3;

/// The `prot` of a mapping: IPPROTO_TCP or IPPROTO_UDP.
fn ipproto(protocol: Protocol) -> u32 {
    match protocol {
        Protocol::Stream => 6,
        Protocol::Datagram => 17,
    }
}

/// A portmapper (rpcbind) at an address.
#[derive(Clone, Debug)]
pub struct Rpcbind {
    address: SocketAddr,
    timeout: Duration,
}

impl Default for Rpcbind {
    fn default() -> Self {
        Rpcbind::local()
    }
}

impl Rpcbind {
    /// The system's rpcbind: 127.0.0.1:111.
    pub fn local() -> Self {
        Rpcbind::at(SocketAddr::from(([127, 0, 0, 1], PMAP_PORT)))
    }

    /// A portmapper at `address` (tests run one of their own).
    pub fn at(address: SocketAddr) -> Self {
        Rpcbind {
            address,
            timeout: Duration::from_secs(5),
        }
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn call(&self, procedure: u32, args: [u32; 4]) -> io::Result<u32> {
        let mut stream = TcpStream::connect_timeout(&self.address, self.timeout).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot reach rpcbind at {}: {e} (is rpcbind running?)",
                    self.address
                ),
            )
        })?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let xid = std::process::id() ^ procedure.rotate_left(24) ^ args[0];
        let mut out = Vec::with_capacity(64);
        let start = record::begin_record(&mut out);
        msg::call_header(&mut out, xid, PMAP_PROGRAM, PMAP_VERSION, procedure);
        for a in args {
            put_u32(&mut out, a);
        }
        record::end_record(&mut out, start)?;
        stream.write_all(&out)?;
        let mut reply = Vec::new();
        let mut fail = |_: bool, _: Duration| -> io::Result<Wait> {
            Err(io::Error::new(io::ErrorKind::TimedOut, "rpcbind did not answer"))
        };
        if !record::read_record(&mut (&stream).take(64 * 1024), 64 * 1024, &mut reply, &mut fail)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "rpcbind closed without a reply",
            ));
        }
        parse_reply(&reply, xid)
    }

    /// PMAPPROC_SET: maps `program` `version` over `protocol` to `port`. `Ok(false)` when
    /// rpcbind refuses (the mapping exists already).
    pub fn set(&self, program: u32, version: u32, protocol: Protocol, port: u16) -> io::Result<bool> {
        self.call(
            PMAPPROC_SET,
            [program, version, ipproto(protocol), u32::from(port)],
        )
        .map(|r| r != 0)
    }

    /// PMAPPROC_UNSET: removes every mapping of `program` `version`. `Ok(false)` when there
    /// was none (or rpcbind refuses).
    pub fn unset(&self, program: u32, version: u32) -> io::Result<bool> {
        self.call(PMAPPROC_UNSET, [program, version, 0, 0])
            .map(|r| r != 0)
    }

    /// PMAPPROC_GETPORT: the port of `program` `version` over `protocol`, 0 when none.
    pub fn getport(&self, program: u32, version: u32, protocol: Protocol) -> io::Result<u16> {
        self.call(PMAPPROC_GETPORT, [program, version, ipproto(protocol), 0])
            .map(|p| u16::try_from(p).unwrap_or(0))
    }
}

fn parse_reply(reply: &[u8], xid: u32) -> io::Result<u32> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("rpcbind reply: {what}"));
    let mut d = Decoder::new(reply);
    let mut word = || d.u32().map_err(|e| bad(e.to_string()));
    if word()? != xid {
        return Err(bad("wrong xid".into()));
    }
    if word()? != msg::REPLY {
        return Err(bad("not a reply".into()));
    }
    if word()? != 0 {
        return Err(bad("call denied".into()));
    }
    let _verf_flavor = word()?;
    let verf_len = word()?;
    if verf_len != 0 {
        return Err(bad("unexpected verifier".into()));
    }
    match word()? {
        0 => word(),
        stat => Err(bad(format!("accept_stat {stat}"))),
    }
}

/// The mappings a server made with rpcbind; removed by [`unregister`](Registration::unregister)
/// or on drop (in the process that made them only: never in a forked child).
#[derive(Debug)]
pub struct Registration {
    rpcbind: Rpcbind,
    pairs: Vec<(u32, u32)>,
    pid: u32,
}

impl Registration {
    /// Maps every program and version in `programs` to `tcp_port` over TCP and `udp_port`
    /// over UDP (either may be `None`), after unsetting what was there.
    ///
    /// Errors: rpcbind cannot be reached (the message says so and how to opt out), or it
    /// refuses a mapping. On error, what was set already is unset again.
    pub fn register(
        rpcbind: Rpcbind,
        programs: &[(u32, u32)],
        tcp_port: Option<u16>,
        udp_port: Option<u16>,
    ) -> io::Result<Registration> {
        let mut registration = Registration {
            rpcbind,
            pairs: Vec::new(),
            pid: std::process::id(),
        };
        for &(program, version) in programs {
            registration.rpcbind.unset(program, version)?;
            registration.pairs.push((program, version));
            for (protocol, port) in [(Protocol::Stream, tcp_port), (Protocol::Datagram, udp_port)] {
                let Some(port) = port else { continue };
                if !registration.rpcbind.set(program, version, protocol, port)? {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "rpcbind at {} refused to map program {program} version {version} over {protocol} to port {port}",
                            registration.rpcbind.address
                        ),
                    ));
                }
                log::debug!("registered program {program} version {version} over {protocol} on port {port}");
            }
        }
        Ok(registration)
    }

    /// The program and version pairs registered.
    pub fn programs(&self) -> &[(u32, u32)] {
        &self.pairs
    }

    /// Removes the mappings (idempotent). The first error is returned after trying them all.
    pub fn unregister(&mut self) -> io::Result<()> {
        if self.pid != std::process::id() {
            self.pairs.clear();
            return Ok(());
        }
        let mut result = Ok(());
        for (program, version) in std::mem::take(&mut self.pairs) {
            match self.rpcbind.unset(program, version) {
                Ok(_) => log::debug!("unregistered program {program} version {version}"),
                Err(e) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        result
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Err(e) = self.unregister() {
            log::error!("unregistering from rpcbind: {e}");
        }
    }
}
