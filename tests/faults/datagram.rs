//! Fault 8: datagrams at the edges of size. Empty and maximum-size datagrams are handled;
//! oversize ones (longer than `max_packet_size`) are reported to `handle_error` as truncated
//! (`InvalidData`) and never reach the handler. The server serves on in every case.
//!
//! UDP runs on `[::1]`: an IPv4 UDP payload cannot exceed 65507 bytes, the largest
//! `max_packet_size` worth setting, but an IPv6 one can be 65527 bytes, so the oversize case
//! is real. A second UDP server on 127.0.0.1 with a small `max_packet_size` covers IPv4.

use std::io;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram as ClientDatagram;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use sockserve::concurrency::{Forking, ProcessRequest, Synchronous, Threading};
use sockserve::transport::{DatagramTransport, Udp, UnixDgram};
use sockserve::{DatagramHandler, DatagramRequest, Options, RequestError, Server};

use crate::harness::{self, bump, get, isolated_tests};

/// The largest UDP payload over IPv4.
const UDP_MAX: usize = 65507;
/// The largest UDP payload over IPv6 without jumbograms.
const UDP6_MAX: usize = 65527;

const HANDLED: usize = 0;
const TRUNCATED: usize = 1;
const OTHER_ERRORS: usize = 2;
/// Datagrams of oversize content (`O` bytes) the handler saw: must stay 0.
const SAW_OVERSIZE: usize = 3;
const SAW_EMPTY: usize = 4;
const SAW_MAX: usize = 5;
/// Replies that could not be sent without waiting (the client does not read).
const DROPPED: usize = 6;

/// Replies `len N` to each datagram and checks its content.
struct Sizes {
    counters: &'static [AtomicU64],
    max: usize,
}

impl<T: DatagramTransport> DatagramHandler<T> for Sizes {
    fn handle(&self, req: &mut DatagramRequest<'_, T>) -> io::Result<()> {
        let packet = req.packet;
        if packet.first() == Some(&b'O') {
            bump(&self.counters[SAW_OVERSIZE]);
        }
        if packet.is_empty() {
            bump(&self.counters[SAW_EMPTY]);
        }
        if packet.len() == self.max && packet.iter().all(|&b| b == b'M') {
            bump(&self.counters[SAW_MAX]);
        }
        req.wfile
            .extend_from_slice(format!("len {}", packet.len()).as_bytes());
        bump(&self.counters[HANDLED]);
        Ok(())
    }

    fn handle_error(&self, _client: &T::Address, error: &RequestError) {
        match error {
            RequestError::Io(e)
                if e.kind() == io::ErrorKind::InvalidData && e.to_string().contains("truncated") =>
            {
                bump(&self.counters[TRUNCATED])
            }
            RequestError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => bump(&self.counters[DROPPED]),
            other => {
                eprintln!("unexpected error: {other}");
                bump(&self.counters[OTHER_ERRORS]);
            }
        }
    }
}

/// A client socket connected to the server.
trait Client {
    fn send(&self, buf: &[u8]) -> io::Result<usize>;
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Client for UdpSocket {
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        UdpSocket::send(self, buf)
    }
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        UdpSocket::recv(self, buf)
    }
}

impl Client for ClientDatagram {
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        ClientDatagram::send(self, buf)
    }
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        ClientDatagram::recv(self, buf)
    }
}

/// Sends a datagram the handler must see and checks the reply.
fn accepted(client: &dyn Client, datagram: &[u8]) {
    assert_eq!(client.send(datagram).expect("send"), datagram.len());
    let mut reply = [0u8; 64];
    let n = client.recv(&mut reply).expect("reply");
    assert_eq!(
        std::str::from_utf8(&reply[..n]).unwrap(),
        format!("len {}", datagram.len())
    );
}

/// Sends datagrams of `sizes` (all larger than the server's `max_packet_size`), each followed
/// by a normal one, and a maximum-size and an empty one; checks what reached the handler and
/// what `handle_error`.
fn edges<T, C>(server: &Server<T, C, Sizes>, client: &dyn Client, max: usize, oversize: &[usize])
where
    T: DatagramTransport,
    C: ProcessRequest<T, Sizes> + Sync,
    Server<T, C, Sizes>: Sync,
{
    let counters = server.handler().counters;
    harness::serving(server, || {
        accepted(client, b"");
        accepted(client, &vec![b'M'; max]);
        for (i, &size) in oversize.iter().enumerate() {
            assert_eq!(client.send(&vec![b'O'; size]).expect("send oversize"), size);
            let reported = harness::eventually(Duration::from_secs(5), || {
                get(&counters[TRUNCATED]) == i as u64 + 1
            });
            assert!(reported, "the {size}-byte datagram was not reported as truncated");
            accepted(client, b"ping");
        }
        accepted(client, b"");
        let handled = 3 + oversize.len() as u64;
        assert!(harness::eventually(Duration::from_secs(5), || get(
            &counters[HANDLED]
        ) == handled));
    });
    assert_eq!(
        get(&counters[SAW_OVERSIZE]),
        0,
        "the handler saw an oversize datagram"
    );
    assert_eq!(get(&counters[SAW_EMPTY]), 2);
    assert_eq!(get(&counters[SAW_MAX]), 1);
    assert_eq!(get(&counters[TRUNCATED]), oversize.len() as u64);
    assert_eq!(get(&counters[OTHER_ERRORS]), 0);
    assert_eq!(get(&counters[DROPPED]), 0);
}

fn options(max: usize) -> Options {
    Options::DEFAULT
        .max_packet_size(max)
        .poll_interval(Duration::from_millis(50))
}

fn udp<C>()
where
    C: ProcessRequest<Udp, Sizes> + Sync,
{
    // IPv6: a real oversize datagram against the largest useful max_packet_size.
    let sizes = Sizes {
        counters: harness::shared_counters(7),
        max: UDP_MAX,
    };
    let server: Server<Udp, C, Sizes> =
        Server::with_options("[::1]:0", sizes, options(UDP_MAX)).expect("bind ::1");
    let client = UdpSocket::bind("[::1]:0").expect("client");
    client.connect(server.server_address()).expect("connect");
    client.set_read_timeout(Some(harness::CLIENT_TIMEOUT)).unwrap();
    edges(&server, &client, UDP_MAX, &[UDP_MAX + 1, UDP6_MAX]);

    // IPv4 with a small max_packet_size.
    const SMALL: usize = 512;
    let sizes = Sizes {
        counters: harness::shared_counters(7),
        max: SMALL,
    };
    let server: Server<Udp, C, Sizes> =
        Server::with_options("127.0.0.1:0", sizes, options(SMALL)).expect("bind");
    let client = UdpSocket::bind("127.0.0.1:0").expect("client");
    client.connect(server.server_address()).expect("connect");
    client.set_read_timeout(Some(harness::CLIENT_TIMEOUT)).unwrap();
    edges(&server, &client, SMALL, &[SMALL + 1, UDP_MAX]);
}

fn unix<C>()
where
    C: ProcessRequest<UnixDgram, Sizes> + Sync,
{
    let dir = harness::temp_dir("datagram");
    let path = dir.join("server.sock");
    let sizes = Sizes {
        counters: harness::shared_counters(7),
        max: UDP_MAX,
    };
    let server: Server<UnixDgram, C, Sizes> =
        Server::with_options(&path, sizes, options(UDP_MAX)).expect("bind");
    // Bound to a name, so the server can reply.
    let client = ClientDatagram::bind(dir.join("client.sock")).expect("client");
    client.connect(Path::new(&path)).expect("connect");
    client.set_read_timeout(Some(harness::CLIENT_TIMEOUT)).unwrap();
    edges(&server, &client, UDP_MAX, &[UDP_MAX + 1, 100_000]);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Unix datagram clients that send requests but never read the replies. An unconnected
/// one fills its receive queue (`net.unix.max_dgram_qlen`, often 10); a connected one, which
/// the kernel exempts from that limit, ties up the server's send buffer (a Unix datagram is
/// charged to its sender until it is read). Either way the server must not stall: every
/// request is handled, the replies that do not fit are dropped and reported to
/// `handle_error` (`WouldBlock`), and it shuts down on request. While only the unconnected
/// one is deaf, another client is answered within 2 s.
fn unix_clients_that_never_read<C>()
where
    C: ProcessRequest<UnixDgram, Sizes> + Sync,
{
    const UNCONNECTED: u64 = 100;
    const CONNECTED: u64 = 1000;
    let dir = harness::temp_dir("datagram-deaf");
    let path = dir.join("server.sock");
    let sizes = Sizes {
        counters: harness::shared_counters(7),
        max: 1024,
    };
    let counters = sizes.counters;
    let server: Server<UnixDgram, C, Sizes> =
        Server::with_options(&path, sizes, options(1024)).expect("bind");
    let client = ClientDatagram::bind(dir.join("client.sock")).expect("client");
    client.connect(Path::new(&path)).expect("connect");
    client.set_read_timeout(Some(harness::CLIENT_TIMEOUT)).unwrap();
    let unconnected = ClientDatagram::bind(dir.join("deaf.sock")).expect("client");
    let connected = ClientDatagram::bind(dir.join("deaf-connected.sock")).expect("client");
    connected.connect(Path::new(&path)).expect("connect");
    harness::serving(&server, || {
        for _ in 0..UNCONNECTED {
            unconnected.send_to(b"never read the reply", &path).expect("send");
        }
        let handled = harness::eventually(Duration::from_secs(10), || get(&counters[HANDLED]) == UNCONNECTED);
        assert!(handled, "handled {} of {UNCONNECTED}", get(&counters[HANDLED]));
        let asked = Instant::now();
        accepted(&client, b"ping");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "answered after {:?}",
            asked.elapsed()
        );
        let dropped = get(&counters[DROPPED]);
        println!("unconnected deaf client: {dropped} of {UNCONNECTED} replies dropped");
        assert!(dropped > 0, "the deaf client's queue never filled");

        for _ in 0..CONNECTED {
            connected.send(b"never read the reply either").expect("send");
        }
        let total = UNCONNECTED + 1 + CONNECTED;
        let handled = harness::eventually(Duration::from_secs(10), || get(&counters[HANDLED]) == total);
        assert!(handled, "handled {} of {total}", get(&counters[HANDLED]));
        println!(
            "connected deaf client: {} of {CONNECTED} replies dropped",
            get(&counters[DROPPED]) - dropped
        );
        assert_eq!(get(&counters[OTHER_ERRORS]), 0);
    });
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// A UDP client that never reads its replies: loopback drops what does not fit its receive
/// buffer, and the server goes on.
fn udp_client_that_never_reads<C>()
where
    C: ProcessRequest<Udp, Sizes> + Sync,
{
    const UNREAD: u64 = 1000;
    let sizes = Sizes {
        counters: harness::shared_counters(7),
        max: 1024,
    };
    let counters = sizes.counters;
    let server: Server<Udp, C, Sizes> =
        Server::with_options("127.0.0.1:0", sizes, options(1024)).expect("bind");
    let deaf = UdpSocket::bind("127.0.0.1:0").expect("client");
    deaf.connect(server.server_address()).expect("connect");
    let client = UdpSocket::bind("127.0.0.1:0").expect("client");
    client.connect(server.server_address()).expect("connect");
    client.set_read_timeout(Some(harness::CLIENT_TIMEOUT)).unwrap();
    harness::serving(&server, || {
        for _ in 0..UNREAD {
            deaf.send(&[b'x'; 512]).expect("send");
        }
        // Some requests may be dropped by the server's own receive buffer: that is UDP.
        let settled = harness::eventually(Duration::from_secs(10), || {
            let before = get(&counters[HANDLED]);
            std::thread::sleep(Duration::from_millis(50));
            get(&counters[HANDLED]) == before
        });
        assert!(settled);
        accepted(&client, b"ping");
        assert_eq!(get(&counters[OTHER_ERRORS]), 0);
        assert_eq!(get(&counters[DROPPED]), 0);
    });
}

isolated_tests! {
    fn datagram_edges_udp_sync() {
        udp::<Synchronous>();
    }

    fn datagram_edges_udp_threading() {
        udp::<Threading>();
    }

    fn datagram_edges_udp_forking() {
        udp::<Forking>();
    }

    fn datagram_edges_unix_sync() {
        unix::<Synchronous>();
    }

    fn datagram_edges_unix_threading() {
        unix::<Threading>();
    }

    fn datagram_edges_unix_forking() {
        unix::<Forking>();
    }

    fn datagram_deaf_clients_unix_sync() {
        unix_clients_that_never_read::<Synchronous>();
    }

    fn datagram_deaf_clients_unix_threading() {
        unix_clients_that_never_read::<Threading>();
    }

    fn datagram_deaf_clients_unix_forking() {
        unix_clients_that_never_read::<Forking>();
    }

    fn datagram_deaf_client_udp_sync() {
        udp_client_that_never_reads::<Synchronous>();
    }

    fn datagram_deaf_client_udp_threading() {
        udp_client_that_never_reads::<Threading>();
    }

    fn datagram_deaf_client_udp_forking() {
        udp_client_that_never_reads::<Forking>();
    }
}
