//! The fault suite: how the runtime behaves when clients, the kernel or handlers misbehave.
//!
//! Each scenario runs in a process of its own (see `faults/harness.rs`); `RELIABILITY.md` at
//! the repository root lists every fault, the test that covers it and what the server does.

#[path = "faults/harness.rs"]
mod harness;

#[path = "faults/reset.rs"]
mod reset;

#[path = "faults/emfile.rs"]
mod emfile;

#[path = "faults/slowloris.rs"]
mod slowloris;

#[path = "faults/panics.rs"]
mod panics;

#[path = "faults/shutdown.rs"]
mod shutdown;

#[path = "faults/churn.rs"]
mod churn;

#[path = "faults/sigpipe.rs"]
mod sigpipe;

#[path = "faults/datagram.rs"]
mod datagram;

#[path = "faults/reporting.rs"]
mod reporting;

#[path = "faults/fork.rs"]
mod fork;

#[path = "faults/multiplex.rs"]
mod multiplex;

#[path = "tls_support/mod.rs"]
mod tls_support;

#[path = "faults/tls.rs"]
mod tls;

#[path = "faults/pooled.rs"]
mod pooled;
