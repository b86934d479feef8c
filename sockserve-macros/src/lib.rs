//! The `#[server(...)]` attribute macro (placeholder until the DSL lands).
use proc_macro::TokenStream;

/// Declares a server for a handler struct.
#[proc_macro_attribute]
pub fn server(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
