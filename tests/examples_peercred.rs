//! `peercred` with real peers: the test process itself, and `socat` run under another user
//! (`setpriv`, which needs root: the tests run as root here and in CI). The uid, gid and pid
//! the server reports are checked against the connecting process; `--allow-uid` refuses
//! another user without a reply.

mod examples_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use examples_support::*;

/// The user and group the other peer runs as (`nobody`/`nogroup` on Debian).
const OTHER: u32 = 65534;

/// Runs `socat` as uid/gid [`OTHER`] against the Unix socket `path`, sends `line`; returns
/// socat's pid, what it printed, and its stderr when it failed (a refused peer may see
/// `EPIPE`).
fn socat_as_other(path: &str, line: &str) -> (u32, String, Option<String>) {
    let id = OTHER.to_string();
    let mut child = Command::new("setpriv")
        .args([
            "--reuid",
            &id,
            "--regid",
            &id,
            "--clear-groups",
            "socat",
            "-t",
            "10",
            "-",
        ])
        .arg(format!("UNIX-CONNECT:{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) and socat");
    // setpriv execs socat: same process.
    let pid = child.id();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + IO_TIMEOUT;
    let failure = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            break (!status.success()).then(|| format!("{status}: {err}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("socat as uid {OTHER} still running after {IO_TIMEOUT:?}");
        }
        thread::sleep(std::time::Duration::from_millis(10));
    };
    (pid, reader.join().unwrap(), failure)
}

fn me() -> (u32, u32, u32) {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    (uid, gid, std::process::id())
}

#[test]
fn peers_are_told_their_own_uid_gid_and_pid() {
    let dir = TempDir::new("peercred");
    let path = dir.join("peercred.sock");
    let path = path.to_str().unwrap();
    let mut server = Server::start("peercred", &["--bind", path]);
    let (uid, gid, pid) = me();
    let mut client = Client::from_stream(UnixStream::connect(path).unwrap());
    assert_eq!(client.ask("who am i"), format!("uid={uid} gid={gid} pid={pid}"));
    assert_eq!(client.ask("again"), format!("uid={uid} gid={gid} pid={pid}"));
    drop(client);

    // Another user, another process: the socket file is world-writable, the answer names it.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (socat_pid, reply, failure) = socat_as_other(path, "who am i");
    assert_eq!(failure, None);
    assert_eq!(reply, format!("uid={OTHER} gid={OTHER} pid={socat_pid}\n"));
    assert_no_panic(&server);
    server.stop_with(libc::SIGTERM);
}

#[test]
fn allow_uid_refuses_other_users_without_a_reply() {
    let dir = TempDir::new("peercred-allow");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = dir.join("peercred.sock");
    let path = path.to_str().unwrap();
    let (uid, gid, pid) = me();
    assert_ne!(uid, OTHER, "run the tests as a user other than {OTHER}");
    let uid_arg = uid.to_string();
    let mut server = Server::start(
        "peercred",
        &["--bind", path, "--allow-uid", &uid_arg, "--allow-uid", "4242"],
    );

    let (_, reply, _) = socat_as_other(path, "let me in");
    assert_eq!(reply, "", "uid {OTHER} is not allowed");
    assert!(
        wait_until(IO_TIMEOUT, || server
            .stderr()
            .contains(&format!("refused uid={OTHER}"))),
        "{}",
        server.stderr()
    );
    // The allowed user is still served.
    let mut client = Client::from_stream(UnixStream::connect(path).unwrap());
    assert_eq!(client.ask("me"), format!("uid={uid} gid={gid} pid={pid}"));
    assert_no_panic(&server);
    server.stop_with(libc::SIGTERM);
}
