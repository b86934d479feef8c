//! Graceful stop on SIGTERM and SIGINT, for every concurrency model:
//! [`Server::serve_until_signal`].
//!
//! What a stop does, in order:
//! 1. the first SIGTERM or SIGINT sets the process-wide stop flag ([`stop_requested`], in
//!    memory shared with forked children), tells systemd `STOPPING=1` (when `NOTIFY_SOCKET` is
//!    set) and asks the server to [`shutdown`](Server::shutdown): the listening socket accepts
//!    no more;
//! 2. the connections already queued in the listen backlog are taken and served (closing the
//!    listener with them in it would reset them), then `serve_until_signal` closes the server ([`server_close`](Server::server_close)), which
//!    waits for the requests in flight (handler threads, forked children) to finish;
//! 3. idle persistent connections are closed: with step 1, a threading or synchronous
//!    server's handlers waiting for a next request read end of input
//!    ([`Server::close_idle_connections`]), and the multiplex and pooled models close their
//!    parked connections in `server_close`; in forked children, handlers look at
//!    [`stop_requested`] between requests;
//! 4. if the drain has not ended after [`Graceful::drain`], the process exits with status 1;
//!    a second signal exits at once with status 1.
//!
//! SIGHUP (TCP servers, unless [`Graceful::reload`] is off) reloads without downtime: a new
//! process of the same program gets the listening socket and, once it says it serves on that
//! socket, this one stops as above (see `reload.rs`: the successor adopts the socket from
//! `LISTEN_FDS`, e.g. through [`systemd::inherited`](crate::systemd::inherited)). A successor
//! that serves without taking the socket (a program that always binds its own address) is
//! stopped again, and this process keeps serving: the reload fails with an error in the log.
//!
//! The signals are caught with `signal-hook` (its self-pipe iterator, on a thread of its own),
//! not with a hand-written `sigaction`.
//!
//! ```no_run
//! use std::io;
//! use sockserve_core::{StreamHandler, StreamRequest, ThreadingTcpServer, transport::Tcp};
//!
//! struct Quiet;
//! impl StreamHandler for Quiet {
//!     fn handle(&self, _req: &mut StreamRequest<'_, Tcp>) -> io::Result<()> {
//!         Ok(())
//!     }
//! }
//!
//! let server = ThreadingTcpServer::bind("127.0.0.1:0", Quiet)?;
//! server.serve_until_signal()?; // returns once SIGTERM/SIGINT came and the requests drained
//! # Ok::<(), io::Error>(())
//! ```

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use std::os::fd::AsFd;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::concurrency::Concurrency;
use crate::server::Server;
use crate::sys;
use crate::transport::Transport;

/// How a signal-driven stop goes: see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Graceful {
    /// The longest the requests in flight may take to finish after the first signal; then the
    /// process exits with status 1. Default 30 s (systemd waits 90 s before SIGKILL).
    pub drain: Duration,
    /// Whether SIGHUP reloads a TCP server without downtime (a new process of the same program
    /// takes over the listening socket; see [`StopSignals::serve`]). Default `true`. A program
    /// that gives SIGHUP another meaning (reloading a TLS certificate in place, say) turns it
    /// off; SIGHUP then keeps its default action unless that program handles it.
    pub reload: bool,
}

impl Graceful {
    /// The defaults.
    pub const DEFAULT: Graceful = Graceful {
        drain: Duration::from_secs(30),
        reload: true,
    };

    /// Sets [`drain`](Graceful::drain).
    pub const fn drain(self, drain: Duration) -> Graceful {
        Graceful { drain, ..self }
    }

    /// Sets [`reload`](Graceful::reload).
    pub const fn reload(self, reload: bool) -> Graceful {
        Graceful { reload, ..self }
    }
}

impl Default for Graceful {
    fn default() -> Self {
        Graceful::DEFAULT
    }
}

/// The most connections left in the listen backlog that a stop still serves.
const PENDING_LIMIT: usize = 65_536;

/// The process-wide stop flag, in a page shared with forked children.
fn flag() -> Option<&'static sys::SharedState> {
    static FLAG: OnceLock<Option<sys::SharedState>> = OnceLock::new();
    FLAG.get_or_init(|| match sys::SharedState::new() {
        Ok(shared) => Some(shared),
        Err(e) => {
            log::warn!("no shared memory for the stop flag ({e}); forked children will not see a stop");
            None
        }
    })
    .as_ref()
}

static LOCAL_FLAG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether SIGTERM or SIGINT asked this process (or, for a forked child, its server) to stop.
/// Handlers of persistent connections check it between requests and close idle connections.
pub fn stop_requested() -> bool {
    match flag() {
        Some(shared) => shared.pending().load(Ordering::Acquire),
        None => LOCAL_FLAG.load(Ordering::Acquire),
    }
}

fn set_stop_requested() {
    match flag() {
        Some(shared) => shared.pending().store(true, Ordering::Release),
        None => LOCAL_FLAG.store(true, Ordering::Release),
    }
}

/// Whether the drain after a stop has ended, and its wake-up.
#[derive(Default)]
struct Drained {
    done: Mutex<bool>,
    wake: Condvar,
}

impl Drained {
    fn finish(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits up to `deadline` for [`finish`](Drained::finish); returns whether it came.
    fn wait(&self, deadline: Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = self
            .wake
            .wait_timeout_while(done, deadline, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }
}

/// SIGTERM and SIGINT, caught from [`StopSignals::install`] on: what
/// [`Server::serve_until_signal`] uses, for a program that serves several servers at once
/// (a TCP and a UDP one, say) and stops them together.
pub struct StopSignals {
    signals: Signals,
    drained: Arc<Drained>,
    graceful: Graceful,
}

impl std::fmt::Debug for StopSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignals")
            .field("graceful", &self.graceful)
            .finish_non_exhaustive()
    }
}

/// Ends a [`StopSignals`] thread; [`StopGuard::drained`] says the requests in flight are done,
/// which cancels the drain deadline.
#[derive(Debug)]
pub struct StopGuard {
    handle: Handle,
    drained: Arc<Drained>,
}

impl StopGuard {
    /// The requests in flight have finished: the drain deadline no longer applies.
    pub fn drained(self) {}
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.drained.finish();
        self.handle.close();
    }
}

impl std::fmt::Debug for Drained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drained").finish_non_exhaustive()
    }
}

impl StopSignals {
    /// Starts catching SIGTERM and SIGINT (they no longer kill the process) and makes the
    /// shared stop flag, so call it before the server forks any child.
    pub fn install(graceful: Graceful) -> io::Result<StopSignals> {
        flag();
        Ok(StopSignals {
            signals: Signals::new([SIGTERM, SIGINT])?,
            drained: Arc::new(Drained::default()),
            graceful,
        })
    }

    /// On the first signal: sets [`stop_requested`], notifies systemd `STOPPING=1`, and runs
    /// `stop` (typically the servers' [`ShutdownHandle::shutdown`](crate::ShutdownHandle::shutdown)) on a thread of its own;
    /// then exits with status 1 unless the returned guard is dropped within the drain
    /// deadline. A second signal exits at once with status 1. Keep the guard while serving:
    /// dropping it stops catching the signals.
    #[must_use = "dropping the guard stops catching the signals"]
    pub fn on_stop(self, stop: impl FnOnce() + Send + 'static) -> StopGuard {
        let StopSignals {
            mut signals,
            drained,
            graceful,
        } = self;
        let guard = StopGuard {
            handle: signals.handle(),
            drained: Arc::clone(&drained),
        };
        thread::spawn(move || {
            let mut stop = Some(stop);
            for signal in signals.forever() {
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                match stop.take() {
                    Some(stop) => {
                        log::info!("{name}: finishing the requests in flight, then exiting");
                        set_stop_requested();
                        crate::systemd::notify_stopping();
                        thread::spawn(stop);
                        let drained = Arc::clone(&drained);
                        thread::spawn(move || {
                            if !drained.wait(graceful.drain) {
                                log::error!(
                                    "requests still in flight {:?} after {name}: exiting now",
                                    graceful.drain
                                );
                                std::process::exit(1);
                            }
                        });
                    }
                    None => {
                        log::warn!("{name} again: exiting now");
                        std::process::exit(1);
                    }
                }
            }
        });
        guard
    }

    /// Serves `server` until the first signal, then stops it gracefully: what
    /// [`Server::serve_until_signal`] does, with the signals caught since
    /// [`install`](StopSignals::install) (call that before binding, so a signal that comes
    /// while the program starts up is not lost).
    pub fn serve<T: Transport, C: Concurrency, H>(self, server: &Server<T, C, H>) -> io::Result<()> {
        let handle = server.shutdown_handle();
        let deadline = (Arc::clone(&self.drained), self.graceful.drain);
        let reload_on_sighup = self.graceful.reload;
        // Idle persistent connections end first: their handlers return, and the drain waits
        // only for requests in flight.
        let guard = self.on_stop(move || {
            handle.close_idle_connections();
            handle.shutdown()
        });
        let reload = match reload_on_sighup {
            true => Reload::start(server, deadline)?,
            false => None,
        };
        crate::systemd::notify_ready();
        let served = server.serve_forever();
        let handed_over = reload.as_ref().is_some_and(Reload::handed_over);
        if handed_over {
            // The successor accepts from the same socket now: let go of it without shutting it
            // down, and leave its queue to the successor.
            if let Some(fd) = server.fileno() {
                if let Err(e) = sys::detach_listener(fd) {
                    log::error!("reload: could not let go of the listening socket: {e}");
                }
            }
        } else if T::BACKLOG && served.is_ok() && !server.is_closed() {
            // Connections the kernel completed before the stop are served, not reset.
            server.serve_pending(PENDING_LIMIT);
        }
        server.server_close();
        guard.drained();
        drop(reload);
        served
    }
}

/// SIGHUP: hand the listening socket to a new process of the same program, then stop
/// (see `reload.rs`). TCP servers only.
struct Reload {
    handle: Handle,
    handed_over: Arc<std::sync::atomic::AtomicBool>,
}

impl Reload {
    fn start<T: Transport, C: Concurrency, H>(
        server: &Server<T, C, H>,
        (drained, drain): (Arc<Drained>, Duration),
    ) -> io::Result<Option<Reload>> {
        let listener = match server.fileno() {
            Some(fd) if T::BACKLOG => fd.try_clone_to_owned()?,
            _ => return Ok(None),
        };
        // TCP only: a Unix server bound to a path removes its socket file when it closes, which
        // would leave the successor listening on a socket nobody can reach.
        let domain = socket2::SockRef::from(&listener).domain()?;
        if domain != socket2::Domain::IPV4 && domain != socket2::Domain::IPV6 {
            return Ok(None);
        }
        let mut signals = Signals::new([SIGHUP])?;
        let handed_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reload = Reload {
            handle: signals.handle(),
            handed_over: Arc::clone(&handed_over),
        };
        let shutdown = server.shutdown_handle();
        thread::spawn(move || {
            for _ in signals.forever() {
                log::info!("SIGHUP: starting a new process and handing it the listening socket");
                match crate::reload::hand_over(listener.as_fd()) {
                    Ok(pid) => {
                        log::info!("reload: process {pid} took over; finishing the requests in flight");
                        handed_over.store(true, Ordering::SeqCst);
                        set_stop_requested();
                        thread::spawn(move || {
                            if !drained.wait(drain) {
                                log::error!(
                                    "requests still in flight {drain:?} after the reload: exiting now"
                                );
                                std::process::exit(1);
                            }
                        });
                        shutdown.shutdown();
                        break;
                    }
                    Err(e) => log::error!("reload failed, still serving: {e}"),
                }
            }
        });
        Ok(Some(reload))
    }

    fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::SeqCst)
    }
}

impl Drop for Reload {
    fn drop(&mut self) {
        self.handle.close();
    }
}

impl<T: Transport, C: Concurrency, H> Server<T, C, H> {
    /// Serves until SIGTERM or SIGINT, then stops gracefully with the default [`Graceful`]
    /// settings: see [`serve_until_signal_with`](Server::serve_until_signal_with).
    pub fn serve_until_signal(&self) -> io::Result<()> {
        self.serve_until_signal_with(Graceful::DEFAULT)
    }

    /// Serves until SIGTERM or SIGINT: stops accepting, lets the requests in flight finish
    /// (closing the server, which waits for handler threads and children), and returns `Ok`
    /// once they have; the process exits with status 1 if they take longer than
    /// `graceful.drain`, or at a second signal. Tells systemd `READY=1` once serving (and
    /// keeps its watchdog fed) when `NOTIFY_SOCKET` is set. Any concurrency model.
    pub fn serve_until_signal_with(&self, graceful: Graceful) -> io::Result<()> {
        StopSignals::install(graceful)?.serve(self)
    }
}
