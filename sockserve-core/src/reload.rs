//! Zero-downtime reload on SIGHUP: the server starts a new process of the same program and
//! hands it its listening socket, systemd's way (descriptor 3, `LISTEN_FDS=1`, `LISTEN_PID` the
//! successor's own pid, `LISTEN_FDNAMES`); the successor adopts it
//! ([`systemd::inherited`](crate::systemd::inherited)) and says `READY=1` on a notification
//! socket this process made (`NOTIFY_SOCKET`), as it would to systemd, with
//! `X_SOCKSERVE_ADOPTED=1` to say it took the socket. Only then does this
//! process stop accepting and drain its requests in flight. Both processes share the one
//! listening socket (the same accept queue) during the handover, so no connection is refused
//! or reset: nothing is closed that a client could be queued on.
//!
//! `SO_REUSEPORT` alone is not enough: with two sockets bound to the port, the kernel hashes
//! each new connection to one of them, and the connections queued on the socket that closes
//! are reset.
//!
//! A successor that says `READY=1` without having taken the socket (a program that always
//! binds an address of its own, with port 0 a different one) would leave the shared socket with
//! nobody accepting: clients would queue there until they time out. Such a successor is sent
//! SIGTERM (SIGKILL if it has not exited within [`STOP_TIMEOUT`]) and the reload fails; this
//! process keeps serving.

use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

/// How long the successor may take to say `READY=1`.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a successor that did not take the socket has to exit after SIGTERM.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The notification socket's file, removed when dropped.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn notify_socket() -> io::Result<NotifySocket> {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "sockserve-reload-{}-{}.sock",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path)?;
    Ok(NotifySocket { socket, path })
}

/// Starts the successor with `listener` and waits for its `READY=1`; returns its pid. On an
/// error (it could not start, exited, or did not get ready in time) this process keeps
/// serving.
pub(crate) fn hand_over(listener: BorrowedFd<'_>) -> io::Result<u32> {
    let notify = notify_socket()?;
    let program = std::env::current_exe()?;
    let mut command = Command::new("/bin/sh");
    // The shell's pid is the program's after `exec`: LISTEN_PID names it, as systemd does.
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(&program)
        .args(std::env::args_os().skip(1))
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "reload")
        .env("NOTIFY_SOCKET", &notify.path)
        .env_remove("LISTEN_PID");
    let mut child = sys::spawn_with_fd3(&mut command, listener)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "the new process exited before it was ready: {status}"
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the new process was not ready within {READY_TIMEOUT:?}"),
            ));
        }
        notify.socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        match notify.socket.recv(&mut buf) {
            Ok(n) if has_line(&buf[..n], b"READY=1") => {
                if has_line(&buf[..n], crate::systemd::ADOPTED.as_bytes()) {
                    return Ok(child.id());
                }
                let pid = child.id();
                stop(&mut child);
                return Err(io::Error::other(format!(
                    "the new process {pid} said it was ready without taking the listening socket \
                     (it binds its own; serve the inherited one, e.g. with systemd::inherited): stopped it"
                )));
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether the notification `message` has the line `line`.
fn has_line(message: &[u8], line: &[u8]) -> bool {
    message.split(|&b| b == b'\n').any(|l| l == line)
}

/// Stops a successor that must not serve: SIGTERM (its graceful stop), SIGKILL after
/// [`STOP_TIMEOUT`]; reaped either way.
fn stop(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        sys::terminate(pid);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
