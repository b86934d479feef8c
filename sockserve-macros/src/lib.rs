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
mod rpc;
mod suggest;
mod table;
mod valid;

use proc_macro::TokenStream;

#[doc = include_str!("server.md")]
#[proc_macro_attribute]
pub fn server(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::server(args.into(), item.into()).into()
}

/// Declares one version of an ONC RPC program: `#[rpc_program(program = N, version = V)]` on
/// an impl block whose `#[proc(n)]` methods are the procedures (`n` from 1: procedure 0,
/// NULL, is answered by the server). A procedure takes `&self`, optionally `&Call` (the
/// caller's credentials and more), and at most one argument by value (`void` without one);
/// it returns an XDR type or `Result<T, ProcError>` (`()` is `void`). Implements
/// `sockserve::rpc::Program`.
///
/// ```ignore
/// #[rpc_program(program = 0x2000_5353, version = 1)]
/// impl Calc {
///     #[proc(1)]
///     fn add(&self, p: Pair) -> i32 { p.a.wrapping_add(p.b) }
/// }
/// ```
#[proc_macro_attribute]
pub fn rpc_program(args: TokenStream, item: TokenStream) -> TokenStream {
    rpc::program::rpc_program(args.into(), item.into()).into()
}

/// Derives `sockserve::rpc::Xdr` (XDR encoding and decoding) for a struct (XDR struct), an
/// enum of unit variants (XDR enum) or an enum with `#[xdr(case = N)]` arms (XDR
/// discriminated union). Field attributes: `#[xdr(max = N)]` (`string<N>`, `T<N>`) and
/// `#[xdr(opaque)]` (`opaque<>`/`opaque[N]`, with `max` for `opaque<N>`).
#[proc_macro_derive(Xdr, attributes(xdr))]
pub fn derive_xdr(item: TokenStream) -> TokenStream {
    rpc::xdr::derive_xdr(item.into()).into()
}
