//! The system layer: every `unsafe` block of sockserve-core lives in this module.
//!
//! Each function is a thin wrapper over one system call, checks its result and returns
//! `io::Result`; ownership of every descriptor it creates is handed to an [`OwnedFd`] at once,
//! so each is closed exactly once.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use socket2::{SockAddr, SockRef};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `fd` was just returned by eventfd, is valid and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A page of memory shared with forked children (`MAP_SHARED | MAP_ANONYMOUS`), holding the
/// serve loop's state and a pending-shutdown flag. Unmapped on drop in the process that made
/// it; a forked child's mapping goes with the child.
pub(crate) struct SharedState {
    page: std::ptr::NonNull<u8>,
}

// SAFETY: the page is only ever accessed through the atomics below, which are Sync.
unsafe impl Send for SharedState {}
// SAFETY: as above.
unsafe impl Sync for SharedState {}

impl SharedState {
    const LEN: usize = 4096;

    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: an anonymous shared mapping with no address hint takes no pointers; the
        // result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let page =
            std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedState { page })
    }

    /// The loop state (byte 0).
    pub(crate) fn state(&self) -> &std::sync::atomic::AtomicU8 {
        // SAFETY: the page is mapped for the life of `self`, zero-filled at creation (a valid
        // AtomicU8), aligned (page-aligned, alignment 1 needed), and only accessed atomically.
        unsafe { &*self.page.as_ptr().cast::<std::sync::atomic::AtomicU8>() }
    }

    /// The pending-shutdown flag (byte 1).
    pub(crate) fn pending(&self) -> &std::sync::atomic::AtomicBool {
        // SAFETY: as for `state`: byte 1 of the mapped, zero-filled page (false), alignment 1,
        // accessed only atomically.
        unsafe { &*self.page.as_ptr().add(1).cast::<std::sync::atomic::AtomicBool>() }
    }
}

impl Drop for SharedState {
    fn drop(&mut self) {
        // SAFETY: the page was mapped with this length by `new` and nothing borrows it any
        // more (the borrows above are tied to `&self`).
        unsafe { libc::munmap(self.page.as_ptr().cast(), Self::LEN) };
    }
}

/// Adds one to an eventfd's counter, making it readable.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: the pointer and length describe `one`, a live 8-byte value, as eventfd requires.
    // The only possible failure (EAGAIN at a counter of u64::MAX - 1) leaves it readable anyway.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd's counter to zero (not readable).
pub(crate) fn eventfd_clear(fd: BorrowedFd<'_>) {
    let mut value: u64 = 0;
    // SAFETY: the pointer and length describe `value`, a live writable 8-byte value. The fd is
    // non-blocking, so this returns EAGAIN at once when the counter is already zero.
    unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no limit). `None` entries
/// are skipped. Returns which entries are readable (or have an error or hang-up pending);
/// all `false` on timeout or when interrupted by a signal.
pub(crate) fn poll_readable<const N: usize>(
    fds: [Option<BorrowedFd<'_>>; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let mut pollfds = fds.map(|fd| libc::pollfd {
        fd: fd.map_or(-1, |fd| fd.as_raw_fd()),
        events: libc::POLLIN,
        revents: 0,
    });
    let millis = match timeout {
        // Round up, so a sub-millisecond remainder does not turn into a busy loop.
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(libc::c_int::MAX as u128) as libc::c_int,
        None => -1,
    };
    // SAFETY: `pollfds` is a live array of N pollfd structs; poll writes only their revents.
    let ret = unsafe { libc::poll(pollfds.as_mut_ptr(), N as libc::nfds_t, millis) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok([false; N]);
        }
        return Err(err);
    }
    Ok(pollfds.map(|p| p.revents != 0))
}

/// What [`wait_input_or_urgent`] found on a connection.
pub(crate) enum Input {
    /// In-band bytes (or end of stream, or an error) are ready to be read.
    Ready,
    /// TCP urgent data is pending (`POLLPRI`).
    Urgent,
    /// Nothing arrived within the timeout.
    TimedOut,
}

/// Waits until `fd` has in-band input or urgent data pending, or `timeout` passes (`None`: no
/// limit). A signal interrupting the wait counts as input, so the caller's read decides.
pub(crate) fn wait_input_or_urgent(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<Input> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLPRI,
        revents: 0,
    };
    let millis = match timeout {
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(libc::c_int::MAX as u128) as libc::c_int,
        None => -1,
    };
    // SAFETY: `pollfd` is one live pollfd struct; poll writes only its revents.
    let ret = unsafe { libc::poll(&mut pollfd, 1, millis) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(Input::Ready);
        }
        return Err(err);
    }
    Ok(if ret == 0 {
        Input::TimedOut
    } else if pollfd.revents & libc::POLLPRI != 0 {
        Input::Urgent
    } else {
        Input::Ready
    })
}

/// Reads the pending TCP urgent byte (`MSG_OOB`) without blocking; `None` when there is none
/// (already read, or its byte has not arrived yet).
pub(crate) fn recv_urgent(fd: BorrowedFd<'_>) -> io::Result<Option<u8>> {
    let mut byte = 0u8;
    // SAFETY: the pointer and length describe `byte`, a live writable u8.
    let ret = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_OOB | libc::MSG_DONTWAIT,
        )
    };
    match ret {
        1 => Ok(Some(byte)),
        0 => Ok(None),
        _ => {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINVAL | libc::EAGAIN) => Ok(None),
                _ => Err(err),
            }
        }
    }
}

/// Receives one datagram without blocking into the spare capacity of `buf` (which must be
/// empty), at most `limit` bytes of it, without initialising the buffer first. Returns the
/// datagram's real length, which is larger than `buf.len()` when it was truncated (Linux
/// `MSG_TRUNC`), and the sender.
#[inline]
pub(crate) fn recv_from_truncating(
    socket: SockRef<'_>,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<(usize, SockAddr)> {
    debug_assert!(buf.is_empty());
    let spare = buf.spare_capacity_mut();
    let room = limit.min(spare.len());
    let (received, from) =
        socket.recv_from_with_flags(&mut spare[..room], libc::MSG_TRUNC | libc::MSG_DONTWAIT)?;
    // SAFETY: recvfrom wrote the datagram, cut to `room` bytes, at the start of the spare
    // capacity, so its first `received.min(room)` bytes are initialised; `buf` was empty.
    unsafe { buf.set_len(received.min(room)) };
    Ok((received, from))
}

/// The result of [`fork`].
pub(crate) enum Forked {
    /// In the parent: the child's pid.
    Parent(libc::pid_t),
    /// In the child.
    Child,
}

/// Forks the process.
///
/// The child has only the calling thread. It must confine itself to serving one request and
/// then call [`exit_child`]; it never returns into the server loop.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own. The hazard of forking a
    // multi-threaded process is locks held by threads that do not exist in the child: the
    // caller holds std's stdout and stderr locks across the call (the ones the child's
    // logging and panic messages take), glibc resets its allocator's, and the documented
    // contract of the forking model tells handlers not to rely on any other. The child runs
    // one request and leaves through `exit_child`.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Ends a forked child at once, without running destructors or exit handlers that belong
/// to the parent (Python's `os._exit`).
pub(crate) fn exit_child(status: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(status) }
}

/// Reaps `pid` if it has exited (or waits for it when `block`). Returns its exit status,
/// `None` if it is still running, or the error (ECHILD when it is not our child).
pub(crate) fn waitpid(pid: libc::pid_t, block: bool) -> io::Result<Option<libc::c_int>> {
    let mut status: libc::c_int = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a live c_int that waitpid writes.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        match ret {
            0 => return Ok(None),
            r if r > 0 => return Ok(Some(status)),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// Blocks until some child of the process has exited, without reaping it, and returns its
/// pid (so the caller reaps only children it owns).
pub(crate) fn wait_any_child_exited() -> io::Result<libc::pid_t> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live siginfo_t that waitid writes.
        let ret = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if ret == 0 {
            // SAFETY: waitid succeeded with WEXITED, so `info` describes a child state change
            // and si_pid is the field the kernel filled.
            return Ok(unsafe { info.si_pid() });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// What [`child_exited`] found.
pub(crate) enum ChildExited {
    /// Some child has exited and waits to be reaped.
    Yes,
    /// Children exist; none has exited.
    No,
    /// The process has no children at all (`ECHILD`).
    NoChildren,
}

/// Whether some child of the process has exited and waits to be reaped, without reaping it
/// and without blocking.
pub(crate) fn child_exited() -> ChildExited {
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a live siginfo_t that waitid writes.
    let ret = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if ret != 0 {
        return if io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            ChildExited::NoChildren
        } else {
            ChildExited::No
        };
    }
    // SAFETY: with WNOHANG, waitid leaves si_pid zero when no child has changed state, and
    // fills it (the field read here) when one has.
    if unsafe { info.si_pid() } != 0 {
        ChildExited::Yes
    } else {
        ChildExited::No
    }
}

/// This process's id.
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail and takes no arguments.
    unsafe { libc::getpid() }
}

/// `recv(2)` with `flags`.
fn recv_flags(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes for the length of the call.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `recv(2)` with `MSG_PEEK | MSG_DONTWAIT`: what has arrived, left in the socket for the next
/// read, without waiting.
pub(crate) fn peek_nowait(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    recv_flags(fd, buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)
}

/// `recv(2)` with `MSG_DONTWAIT`: a read that never blocks, whatever the socket's own mode (the
/// multiplex workers' sockets stay blocking, so that a pooled model's thread can use them as
/// they are, without two `fcntl` calls each way per message).
pub(crate) fn recv_nowait(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    recv_flags(fd, buf, libc::MSG_DONTWAIT)
}

/// `send(2)` with `MSG_DONTWAIT` (never blocks, see [`recv_nowait`]) and `MSG_NOSIGNAL` (a
/// closed peer is `EPIPE`, not SIGPIPE).
pub(crate) fn send_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live slice of `buf.len()` bytes for the length of the call.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Shuts down the read side of `fd` (`shutdown(SHUT_RD)`): a read blocked on it returns end
/// of input. Errors (the peer is gone already) are of no interest to the caller.
pub(crate) fn shutdown_read(fd: BorrowedFd<'_>) {
    // SAFETY: shutdown(2) on a descriptor the borrow keeps open; no memory is passed.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) };
}

/// Sends SIGTERM to `pid`: a child process the caller has not reaped yet (it holds its
/// `std::process::Child`), so the pid cannot name another process.
pub(crate) fn terminate(pid: libc::pid_t) {
    // SAFETY: kill(2) has no memory effects; the pid is an unreaped child of ours (see above).
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

/// Takes ownership of a descriptor the process inherited (systemd's `LISTEN_FDS`), after
/// checking that it is open.
///
/// The caller ([`crate::systemd`]) takes each inherited descriptor at most once, under a lock,
/// so no two owners ever close the same one.
pub(crate) fn adopt_inherited_fd(fd: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD reads only the descriptor flags; an fd that is not open gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and, by the caller's contract, owned by nobody else
    // in this process: systemd handed it over, and it is taken once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Spawns `command` with `fd` as its descriptor 3 (systemd's `SD_LISTEN_FDS_START`), open
/// across `exec`: a reloaded server hands its listening socket to its successor this way.
pub(crate) fn spawn_with_fd3(
    command: &mut std::process::Command,
    fd: BorrowedFd<'_>,
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    // SAFETY: the hook runs in the forked child before exec and calls only dup2 and fcntl,
    // which are async-signal-safe; it allocates nothing and touches no lock. `raw` stays open
    // in the parent for the whole spawn (the caller borrows it), so the child's copy is valid.
    unsafe {
        command.pre_exec(move || {
            if raw == 3 {
                // dup2 onto itself keeps FD_CLOEXEC: clear it.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Makes `fd` refer to a fresh, unbound socket of the same family instead of the listening
/// socket it referred to, atomically (`dup2`): this process lets go of a listening socket it
/// handed to a successor, so that closing the server (which shuts its socket down) cannot stop
/// the successor's listener. The fresh socket's own descriptor is closed once, on return.
pub(crate) fn detach_listener(fd: BorrowedFd<'_>) -> io::Result<()> {
    let domain = SockRef::from(&fd).domain()?;
    let dummy = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    // SAFETY: both descriptors are open (`fd` is borrowed from the server's transport,
    // `dummy` is owned here); dup2 atomically replaces what `fd` refers to, closing this
    // process's reference to the listening socket, and leaves `dummy`'s own descriptor to be
    // closed by its drop.
    if unsafe { libc::dup2(dummy.as_raw_fd(), fd.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl on the descriptor just made by dup2, which does not copy FD_CLOEXEC.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(())
}

/// The credentials of the process at the other end of a connected Unix stream socket, as
/// the kernel recorded them at `connect` (`SO_PEERCRED`): `(pid, uid, gid)`.
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<(libc::pid_t, libc::uid_t, libc::gid_t)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live, writable `ucred` and `len` holds its size, as SO_PEERCRED
    // expects; the kernel writes at most `len` bytes.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_PEERCRED returned a short ucred",
        ));
    }
    Ok((cred.pid, cred.uid, cred.gid))
}
