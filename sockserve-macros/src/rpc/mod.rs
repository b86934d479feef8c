//! The ONC RPC macros: `#[rpc_program]` on an impl block (`program.rs`) and
//! `#[derive(Xdr)]` (`xdr.rs`). Generated code names the runtime only through
//! `::sockserve::rpc::...` (the `sockserve-rpc` crate, re-exported by the facade), and
//! `::core`/`::std` for the rest, as the `#[server]` macro does.

pub(crate) mod program;
pub(crate) mod xdr;

use proc_macro2::TokenStream;
use quote::quote;

/// `::sockserve::rpc`.
fn rt() -> TokenStream {
    quote!(::sockserve::rpc)
}

/// Collects errors so that one compile reports all of them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}
