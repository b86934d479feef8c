//! The `#[server(...)]` attribute macro of sockserve.
//!
//! Use it through the `sockserve` crate, which re-exports it as
//! `sockserve::server`. The macro only names types and constants of
//! `sockserve-core`; all behaviour lives there.
//!
//! Layout, one phase per file: `attr.rs` parses the arguments, `ast.rs` is the
//! typed model, `valid.rs` checks it (with `duration.rs` for duration strings and
//! `suggest.rs` for "did you mean"), `expand.rs` generates code. `table.rs` holds
//! the tables of transports, concurrency models and option keys that drive all of
//! them: a new concurrency model or option is one new row there. `server.md` is
//! the DSL reference (the docs of [`server`]); `docs.rs` tests that its key table
//! and the README's match `table.rs`.

mod ast;
mod attr;
#[cfg(test)]
mod docs;
mod duration;
mod expand;
mod suggest;
mod table;
mod valid;

use proc_macro::TokenStream;

#[doc = include_str!("server.md")]
#[proc_macro_attribute]
pub fn server(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::server(args.into(), item.into()).into()
}
