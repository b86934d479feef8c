//! Concurrency mix-ins: how a request is processed once accepted (Python's
//! `ThreadingMixIn`, `ForkingMixIn`, and the synchronous default).
//!
//! | mix-in | each request runs | good for | beware |
//! |---|---|---|---|
//! | [`Synchronous`] | in the serving thread, one at a time | quick requests, datagrams | one slow client stalls all |
//! | [`Threading`] | in a thread of its own (reused for later requests) | connections that live a while | shared state needs locks |
//! | [`Forking`] | in a forked child process | isolation, crash containment | no shared memory; a fork per request |
//!
//! A mix-in is two traits: [`Concurrency`] (its life cycle, independent of transport and
//! handler) and [`ProcessRequest`] (`process_request` for a given transport and handler). New models
//! (a thread pool, a multiplexer) implement both.

use std::io;
use std::sync::Arc;

use crate::handler::Dispatch;
use crate::options::Options;
use crate::pipeline::Pipeline;
use crate::transport::Transport;

mod forking;
mod synchronous;
mod threading;

pub use forking::Forking;
pub use synchronous::Synchronous;
pub use threading::Threading;

/// The life cycle of a concurrency mix-in.
pub trait Concurrency: Sized + 'static {
    /// Creates the mix-in from the server's options.
    fn new(options: &Options) -> io::Result<Self>;
    /// Runs on every iteration of the serve loop, before the handler's `service_actions`
    /// (forking reaps children here). Default: nothing.
    fn service_actions(&self) {}
    /// Runs when `handle_request` times out, before the handler's `handle_timeout`.
    /// Default: nothing.
    fn handle_timeout(&self) {}
    /// Runs in `server_close`, after the transport stopped accepting (threading and forking
    /// wait for their requests here when `block_on_close`). Default: nothing.
    fn server_close(&self) {}
}

/// Python's `process_request` for transport `T` and handler `H`.
pub trait ProcessRequest<T: Transport, H>: Concurrency
where
    T::Kind: Dispatch<T, H>,
{
    /// Processes one verified request; it must end in [`Pipeline::process_inline`] (or the
    /// same steps) wherever it runs, and report its own failures (a thread or process that
    /// cannot start) through [`Pipeline::handle_error`].
    fn process_request(&self, core: &Arc<Pipeline<T, H>>, request: T::Request, client_address: T::Address);
}
