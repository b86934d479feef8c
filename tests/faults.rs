//! The fault suite: how the runtime behaves when clients, the kernel or handlers misbehave.
//!
//! Each scenario runs in a process of its own (see `faults/harness.rs`); `RELIABILITY.md` at
//! the repository root lists every fault, the test that covers it and what the server does.

#[allow(dead_code)] // helpers for the scenarios still to come
#[path = "faults/harness.rs"]
mod harness;

#[path = "faults/reset.rs"]
mod reset;

#[path = "faults/emfile.rs"]
mod emfile;
