//! Concurrency mix-ins: how a request is processed once accepted (Python's
//! `ThreadingMixIn`, `ForkingMixIn`, and the synchronous default).
//!
//! | mix-in | each request runs | good for | beware |
//! |---|---|---|---|
//! | [`Synchronous`] | in the serving thread, one at a time | quick requests, datagrams | one slow client stalls all |
//! | [`Threading`] | in a thread of its own (reused for later requests) | connections that live a while | shared state needs locks |
//! | [`Forking`] | in a forked child process | isolation, crash containment | no shared memory; a fork per request |
//! | [`Multiplex`] | as callbacks of a per-connection state machine, many connections per event-loop thread | many connections, most of them idle; high request rates | callbacks must not block |
//! | [`Pooled`] | one message at a time on a bounded thread pool, the connection parked in the event loop between messages | blocking handlers of keep-alive protocols with many idle connections | `handle` must not read past its message |
//!
//! A mix-in is two traits: [`Concurrency`] (its life cycle, independent of transport and
//! handler) and [`ProcessRequest`] (`process_request` for a given transport and handler). New models
//! (a thread pool, a multiplexer) implement both.

use std::io;
use std::sync::Arc;

use crate::options::Options;
use crate::pipeline::Pipeline;
use crate::transport::Transport;

// The models use the macro above.
mod forking;
pub mod multiplex;
mod pooled;
mod synchronous;
mod threading;

pub use forking::Forking;
pub use multiplex::Multiplex;
pub use pooled::{AfterMessage, MessageHandler, Pooled};
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

/// Python's `process_request` for transport `T` and handler `H`, and the hooks of the handler
/// kind this model serves.
///
/// The model chooses the handler kind: the synchronous, threading and forking models serve
/// the kind of the transport (`T::Kind: Dispatch<T, H>`: a `StreamHandler` for streams, a
/// `DatagramHandler` for datagrams); another model may serve a kind of its own and answer the
/// hooks from it. A server needs nothing else of its types than `C: ProcessRequest<T, H>`.
pub trait ProcessRequest<T: Transport, H>: Concurrency {
    /// Processes one request, verified at accept unless the transport has a prepare stage
    /// ([`Transport::PREPARES`]: then it is prepared, then verified, where it is processed). It
    /// must end in [`Pipeline::process_inline`] (or the same steps) wherever it runs, and
    /// report its own failures (a thread or process that cannot start) through the handler's
    /// `handle_error`.
    fn process_request(
        &self,
        pipeline: &Arc<Pipeline<T, H>>,
        request: T::Request,
        client_address: T::Address,
    );
    /// The handler's `verify_request`, at accept.
    fn verify_request(pipeline: &Pipeline<T, H>, request: &T::Request, client_address: &T::Address) -> bool;
    /// Runs the handler's `handle_timeout`.
    fn run_handle_timeout(pipeline: &Pipeline<T, H>);
    /// Runs the handler's `service_actions`.
    fn run_service_actions(pipeline: &Pipeline<T, H>);
    /// Runs when `serve_forever` or `handle_request` starts, before it takes a request, on
    /// every call (so it must be cheap once done); an error is returned from that call. The
    /// multiplex and pooled models start their workers here when each worker accepts on a
    /// listener of its own ([`Options::worker_listeners`]). Default: nothing.
    fn serving(&self, pipeline: &Arc<Pipeline<T, H>>) -> io::Result<()> {
        let _ = pipeline;
        Ok(())
    }
}

/// The hooks of [`ProcessRequest`] for models that serve the transport's own handler kind.
macro_rules! transport_kind_hooks {
    () => {
        fn verify_request(
            pipeline: &Pipeline<T, H>,
            request: &T::Request,
            client_address: &T::Address,
        ) -> bool {
            pipeline.verify_request(request, client_address)
        }
        fn run_handle_timeout(pipeline: &Pipeline<T, H>) {
            pipeline.handle_timeout()
        }
        fn run_service_actions(pipeline: &Pipeline<T, H>) {
            pipeline.service_actions()
        }
    };
}
use transport_kind_hooks;
