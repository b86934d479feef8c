//! Unix sockets: paths and abstract names, the stale-socket policy, server_close removing
//! only its own file, and the socket file mode.

mod util;

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram as StdDatagram, UnixListener, UnixStream as StdStream};
use std::thread;
use std::time::Duration;

use sockserve::prelude::*;
use sockserve::transport::{DatagramTransport, StreamTransport};
use util::{Running, TempDir, LIMIT};

struct Echo;

impl<T: StreamTransport> StreamHandler<T> for Echo {
    fn handle(&self, req: &mut StreamRequest<'_, T>) -> io::Result<()> {
        let mut buf = Vec::new();
        req.rfile.read_to_end(&mut buf)?;
        write!(
            req.wfile,
            "{} from {}",
            String::from_utf8_lossy(&buf),
            req.client_address
        )
    }
}

impl<T: DatagramTransport> DatagramHandler<T> for Echo {
    fn handle(&self, req: &mut DatagramRequest<'_, T>) -> io::Result<()> {
        req.wfile.extend_from_slice(req.packet);
        Ok(())
    }
}

fn fast() -> Options {
    Options::DEFAULT.poll_interval(Duration::from_millis(20))
}

fn talk(mut conn: StdStream) -> String {
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    conn.write_all(b"hi").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn path_server_reports_unnamed_clients_and_removes_its_file_on_close() {
    let dir = TempDir::new("unix");
    let path = dir.path("echo.sock");
    let server = ThreadingUnixStreamServer::with_options(&path, Echo, fast()).unwrap();
    assert_eq!(server.server_address(), UnixAddr::Path(path.clone()));
    assert_eq!(server.server_address().to_string(), path.display().to_string());
    let running = Running::start(server);
    assert_eq!(talk(StdStream::connect(&path).unwrap()), "hi from (unnamed)");
    let (result, server) = running.stop();
    result.unwrap();
    assert!(path.exists());
    drop(server);
    assert!(!path.exists(), "server_close removes the socket file it created");
}

#[test]
fn abstract_names_work_without_a_file() {
    let name = format!("sockserve-test-{}", std::process::id());
    let server =
        UnixStreamServer::with_options(UnixAddr::abstract_name(name.as_bytes()), Echo, fast()).unwrap();
    assert_eq!(server.server_address().to_string(), format!("@{name}"));
    let running = Running::start(server);
    let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
        name.as_bytes(),
    )
    .unwrap();
    assert_eq!(talk(StdStream::connect_addr(&addr).unwrap()), "hi from (unnamed)");
    drop(running);
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = TempDir::new("unix");
    let path = dir.path("stale.sock");
    // A server that died without removing its file: the socket file stays, nobody listens.
    drop(UnixListener::bind(&path).unwrap());
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    let server = UnixStreamServer::with_options(&path, Echo, fast()).unwrap();
    let running = Running::start(server);
    assert_eq!(talk(StdStream::connect(&path).unwrap()), "hi from (unnamed)");
    drop(running);
}

#[test]
fn a_stale_socket_file_is_kept_when_the_policy_is_off() {
    let dir = TempDir::new("unix");
    let path = dir.path("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    let options = fast().remove_stale_socket(false);
    let err = UnixStreamServer::with_options(&path, Echo, options).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(path.exists());
}

#[test]
fn a_live_server_socket_is_never_removed() {
    let dir = TempDir::new("unix");
    let path = dir.path("live.sock");
    let live = UnixListener::bind(&path).unwrap();
    let err = UnixStreamServer::with_options(&path, Echo, fast()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("another server"), "{err}");
    // The live server still gets its connections.
    let _client = StdStream::connect(&path).unwrap();
    live.set_nonblocking(false).unwrap();
    assert!(live.accept().is_ok());
    // A live datagram socket is not removed by a datagram server either.
    let dgram_path = dir.path("live.dgram");
    let _live_dgram = StdDatagram::bind(&dgram_path).unwrap();
    let err = UnixDatagramServer::with_options(&dgram_path, Echo, fast()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(dgram_path.exists());
}

#[test]
fn a_path_that_is_not_a_socket_is_refused() {
    let dir = TempDir::new("unix");
    let path = dir.path("data.txt");
    std::fs::write(&path, b"precious").unwrap();
    let err = UnixStreamServer::with_options(&path, Echo, fast()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn server_close_leaves_a_replaced_file_alone() {
    let dir = TempDir::new("unix");
    let path = dir.path("moved.sock");
    let server = UnixStreamServer::with_options(&path, Echo, fast()).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    drop(server);
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}

#[test]
fn socket_mode_sets_the_file_mode() {
    let dir = TempDir::new("unix");
    for (name, mode) in [("a.sock", 0o600), ("b.sock", 0o660)] {
        let path = dir.path(name);
        let options = fast().socket_mode(Some(mode));
        let _server = UnixStreamServer::with_options(&path, Echo, options.clone()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            mode
        );
        let dgram = dir.path(&format!("{name}.dgram"));
        let _dgram_server = UnixDatagramServer::with_options(&dgram, Echo, options).unwrap();
        assert_eq!(
            std::fs::metadata(&dgram).unwrap().permissions().mode() & 0o777,
            mode
        );
    }
}

#[test]
fn unix_datagram_stale_file_replaced_and_removed_on_close() {
    let dir = TempDir::new("unix");
    let path = dir.path("d.sock");
    drop(StdDatagram::bind(&path).unwrap());
    let server = UnixDatagramServer::with_options(&path, Echo, fast()).unwrap();
    let running = Running::start(server);
    let client = StdDatagram::bind(dir.path("client.sock")).unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    client.send_to(b"ping", &path).unwrap();
    let mut buf = [0u8; 16];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    drop(running);
    assert!(!path.exists());
}

/// The device and inode of a file: which file a path names now.
fn file_id(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.dev(), meta.ino())
}

#[test]
fn a_socket_bound_but_not_listening_yet_is_never_removed() {
    let dir = TempDir::new("unix");
    let path = dir.path("binding.sock");
    // Another server between bind and listen (a plain socket, and one of ours made unbound).
    let other = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    other.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    let before = file_id(&path);
    let err = UnixStreamServer::with_options(&path, Echo, fast()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert_eq!(file_id(&path), before, "the other server's file is still there");
    drop(other);

    let path = dir.path("unbound.sock");
    let mut first = UnixStreamServer::unbound(&path, Echo, fast()).unwrap();
    first.server_bind().unwrap();
    let before = file_id(&path);
    let err = UnixStreamServer::with_options(&path, Echo, fast()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert_eq!(file_id(&path), before);
    first.server_activate().unwrap();
    assert!(
        StdStream::connect(&path).is_ok(),
        "the first server listens on its own file"
    );
}

#[test]
fn the_stale_check_does_not_connect_to_a_live_server() {
    let dir = TempDir::new("unix");
    let path = dir.path("live.sock");
    let live = UnixListener::bind(&path).unwrap();
    live.set_nonblocking(true).unwrap();
    let err = UnixStreamServer::with_options(&path, Echo, fast()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    let probe = live.accept();
    assert!(
        matches!(&probe, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "the live server was sent a probe connection: {probe:?}"
    );
}

#[test]
fn servers_racing_for_one_path_never_remove_each_others_file() {
    let dir = TempDir::new("unix");
    let path = dir.path("race.sock");
    for round in 0..50 {
        // A stale file to race over.
        drop(UnixListener::bind(&path).unwrap());
        let results: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                thread::spawn(move || {
                    let mut server = UnixStreamServer::unbound(&path, Echo, fast()).unwrap();
                    let bound = server.server_bind();
                    bound.map(|()| (server, file_id(&path)))
                })
            })
            .map(|t| t.join().unwrap())
            .collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one server binds");
        assert_eq!(
            file_id(&path),
            winners[0].1,
            "round {round}: its file is the one at the path"
        );
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "round {round}: {e}");
            }
        }
        drop(results);
    }
}
