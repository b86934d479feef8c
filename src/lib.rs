//! sockserve: Python's `socketserver`, composed at compile time.
//!
//! This facade re-exports [`sockserve_core`] (the runtime) and the
//! [`server`] attribute macro from `sockserve-macros`. See the
//! [`sockserve_core`] crate documentation for the design.
#![forbid(unsafe_code)]

pub use sockserve_core::*;
pub use sockserve_macros::server;
