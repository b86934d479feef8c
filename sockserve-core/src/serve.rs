//! The serve loop: Python's `serve_forever` and `handle_request`, and how the loop reacts when
//! `get_request` fails (retry, skip, back off, give up).

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::concurrency::Concurrency;
use crate::context::Begin;
use crate::handler::panic_message;
use crate::server::Server;
use crate::sys;
use crate::transport::Transport;

/// `get_request`, with a panic in a custom transport turned into an error (which backs the
/// loop off) instead of unwinding through the serve loop.
pub(crate) fn take_request<T: Transport>(transport: &T) -> io::Result<Option<(T::Request, T::Address)>> {
    match panic::catch_unwind(AssertUnwindSafe(|| transport.get_request())) {
        Ok(result) => result,
        Err(payload) => Err(io::Error::other(format!(
            "get_request panicked: {}",
            panic_message(payload)
        ))),
    }
}

/// How the loop reacts to a failed `get_request`.
pub(crate) enum AcceptFailure {
    /// Interrupted: try again at once.
    Retry,
    /// The failure belongs to one connection (it was reset or aborted before accept):
    /// skip it.
    Skip,
    /// Out of descriptors or memory, or an error of a custom source: back off and retry;
    /// the server recovers when the resource frees up.
    BackOff,
    /// The listening socket itself is unusable.
    Fatal,
}

pub(crate) fn classify(error: &io::Error) -> AcceptFailure {
    if error.kind() == io::ErrorKind::Interrupted {
        return AcceptFailure::Retry;
    }
    match error.raw_os_error() {
        Some(
            libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::ECONNREFUSED
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ETIMEDOUT,
        ) => AcceptFailure::Skip,
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT) => AcceptFailure::Fatal,
        _ => AcceptFailure::BackOff,
    }
}

/// Back-off while `get_request` keeps failing (EMFILE and friends): the loop sleeps
/// 10 ms, doubling up to one second, and logs once per episode.
#[derive(Default)]
pub(crate) struct BackOff {
    failures: u64,
}

impl BackOff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn failed(&mut self, error: &io::Error) -> Duration {
        if self.failures == 0 {
            log::warn!("get_request failed: {error}; backing off until it recovers");
        }
        self.failures += 1;
        let shift = (self.failures - 1).min(7) as u32;
        (Self::FIRST * 2u32.pow(shift)).min(Self::MAX)
    }

    #[inline]
    pub(crate) fn succeeded(&mut self) {
        if self.failures > 0 {
            log::info!("get_request recovered after {} failed attempts", self.failures);
            self.failures = 0;
        }
    }
}

/// How many requests a pass of the loop takes before it waits again: every pending one (up to
/// [`BATCH`]) while requests come in bursts; one while they come one at a time (a ping-pong
/// client, a lone datagram), so that each does not cost a second `get_request` that only
/// finds nothing pending (`EAGAIN`): the wait tells when the next one is there. Every
/// [`Pace::PROBE_EVERY`]th pass drains again, to notice a burst. Only for transports with a
/// descriptor: a source that is polled every `poll_interval` always drains.
struct Pace {
    single: bool,
    passes: u32,
    waits: bool,
}

impl Pace {
    const PROBE_EVERY: u32 = 8;

    fn new(has_descriptor: bool) -> Self {
        Pace {
            single: false,
            passes: 0,
            waits: has_descriptor,
        }
    }

    #[inline]
    fn limit(&mut self) -> usize {
        self.passes = self.passes.wrapping_add(1);
        if self.waits && self.single && !self.passes.is_multiple_of(Self::PROBE_EVERY) {
            1
        } else {
            BATCH
        }
    }

    /// A pass took `taken` requests; `drained`: it stopped because none was pending.
    #[inline]
    fn record(&mut self, taken: usize, drained: bool) {
        if drained {
            self.single = taken <= 1;
        } else if taken > 1 {
            self.single = false;
        }
    }
}

/// At most this many requests are taken per loop iteration before `service_actions` runs
/// and the shutdown flag is checked again.
const BATCH: usize = 64;
impl<T: Transport, C: Concurrency, H> Server<T, C, H> {
    /// Serves requests until [`shutdown`](Server::shutdown), waking at least every
    /// `options.poll_interval` to run `service_actions` (Python's `serve_forever`).
    pub fn serve_forever(&self) -> io::Result<()> {
        self.serve_forever_with(self.core.context.options.poll_interval)
    }

    /// [`serve_forever`](Server::serve_forever) with an explicit `poll_interval` (Python's
    /// `serve_forever(poll_interval)`).
    pub fn serve_forever_with(&self, poll_interval: Duration) -> io::Result<()> {
        // A zero interval would turn the idle loop into a busy loop.
        let poll_interval = poll_interval.max(Duration::from_millis(1));
        let control = &*self.core.context.control;
        let _serving = match control.begin_serving()? {
            Begin::Serve(guard) => guard,
            Begin::Pending => return Ok(()),
        };
        if !self.is_closed() {
            (self.steps.serving)(&self.concurrency, &self.core)?;
        }
        let transport = &self.core.context.transport;
        let mut backoff = BackOff::default();
        let mut pace = Pace::new(transport.fileno().is_some());
        loop {
            let mut taken = 0;
            let mut drained = false;
            let mut delay = None;
            // A server closed from another thread stops serving: its socket accepts no more.
            if self.is_closed() {
                return Ok(());
            }
            let limit = pace.limit();
            while taken < limit && !control.is_stopping() {
                match take_request(transport) {
                    Ok(Some((request, client_address))) => {
                        backoff.succeeded();
                        taken += 1;
                        self.handle_one(request, client_address);
                    }
                    Ok(None) => {
                        drained = true;
                        break;
                    }
                    Err(error) => match classify(&error) {
                        AcceptFailure::Retry => {}
                        AcceptFailure::Skip => log::debug!("get_request: skipped a failed request: {error}"),
                        AcceptFailure::BackOff => {
                            delay = Some(backoff.failed(&error));
                            break;
                        }
                        // Closed from another thread under the loop: not a failure.
                        AcceptFailure::Fatal if self.is_closed() => return Ok(()),
                        AcceptFailure::Fatal => return Err(error),
                    },
                }
            }
            pace.record(taken, drained);
            if control.is_stopping() {
                return Ok(());
            }
            self.concurrency.service_actions();
            (self.steps.service_actions)(&self.core);
            if taken == BATCH {
                continue;
            }
            // During a back-off the listening socket stays readable: wait on the wake-up only.
            let woken = match delay {
                Some(delay) => sys::poll_readable([Some(control.wake_fd())], Some(delay))?[0],
                None => transport.wait_for_request(control.wake_fd(), Some(poll_interval))?,
            };
            // A wake-up that no shutdown explains (one that raced with the end of the last
            // loop) is drained and ignored.
            if woken && control.woken() {
                return Ok(());
            }
        }
    }

    /// Serves one request, waiting up to `options.timeout` for it; calls `handle_timeout`
    /// when none arrives (Python's `handle_request`). Forked children that have exited are
    /// reaped before it returns.
    pub fn handle_request(&self) -> io::Result<()> {
        if !self.is_closed() {
            (self.steps.serving)(&self.concurrency, &self.core)?;
        }
        let transport = &self.core.context.transport;
        let options = &self.core.context.options;
        // A timeout too large to add to now is no timeout.
        let deadline = options.timeout.and_then(|t| Instant::now().checked_add(t));
        let result = loop {
            match take_request(transport) {
                Ok(Some((request, client_address))) => {
                    self.handle_one(request, client_address);
                    break Ok(());
                }
                Ok(None) => {}
                Err(error) => match classify(&error) {
                    AcceptFailure::Retry | AcceptFailure::Skip => continue,
                    AcceptFailure::BackOff | AcceptFailure::Fatal => break Err(error),
                },
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining == Some(Duration::ZERO) {
                self.concurrency.handle_timeout();
                (self.steps.handle_timeout)(&self.core);
                break Ok(());
            }
            // A source without a descriptor is asked again every poll_interval.
            let wait = match transport.fileno() {
                Some(_) => remaining,
                None => Some(remaining.map_or(options.poll_interval, |r| r.min(options.poll_interval))),
            };
            // handle_request does not stop for shutdown(): the wake-up is not waited on.
            transport.wait_for_request_only(wait)?;
        };
        self.concurrency.service_actions();
        result
    }

    /// Takes and processes the requests already pending (a listener's backlog), without
    /// waiting, at most `limit` of them: a graceful stop serves what the kernel accepted on the
    /// server's behalf before the socket closes, rather than resetting it.
    pub(crate) fn serve_pending(&self, limit: usize) {
        let transport = &self.core.context.transport;
        for _ in 0..limit {
            match take_request(transport) {
                Ok(Some((request, client_address))) => self.handle_one(request, client_address),
                Ok(None) => break,
                Err(error) => match classify(&error) {
                    AcceptFailure::Retry | AcceptFailure::Skip => {}
                    AcceptFailure::BackOff | AcceptFailure::Fatal => break,
                },
            }
        }
    }

    /// One request, from `get_request` on: the steps of `verify_and_process`.
    fn handle_one(&self, request: T::Request, client_address: T::Address) {
        (self.steps.handle_one)(&self.concurrency, &self.core, request, client_address)
    }
}
