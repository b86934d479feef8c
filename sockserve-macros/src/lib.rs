//! The `#[server(...)]` attribute macro of sockserve.
//!
//! Use it through the `sockserve` crate, which re-exports it as
//! `sockserve::server`. The macro only names types and constants of
//! `sockserve-core`; all behaviour lives there.
//!
//! Layout: `attr.rs` parses the arguments, `ast.rs` is the typed model,
//! `valid.rs` checks it, `expand.rs` generates code, and `table.rs` holds the
//! tables of transports, concurrency models and option keys that drive all three.

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
