//! Runs the unit tests of the `http_server` example's request parser.
//!
//! The parser lives in `examples/http_server/parse.rs` with no dependency on sockserve, so it is
//! included here by path (as a fuzz target would include it) and its `#[cfg(test)]` tests run as
//! part of `cargo test --workspace`.

#[allow(dead_code)]
#[path = "../examples/http_server/parse.rs"]
mod parse;
