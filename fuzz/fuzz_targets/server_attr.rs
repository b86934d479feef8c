//! The `#[server(...)]` attribute, end to end: the macro's own modules (parse, validate,
//! suggest, expand; everything but the `proc_macro` entry point) compiled here on top of
//! proc-macro2's fallback implementation, fed arbitrary argument token streams for a fixed
//! `struct Echo;`.
//!
//! The macro must never panic: any input becomes either the expansion or the struct with
//! compile errors (`compile_error!`), and the output must itself be valid tokens that parse
//! as items.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proc_macro2::TokenStream;

#[allow(dead_code)]
#[path = "../../sockserve-macros/src/ast.rs"]
mod ast;
#[allow(dead_code)]
#[path = "../../sockserve-macros/src/attr.rs"]
mod attr;
#[allow(dead_code)]
#[path = "../../sockserve-macros/src/duration.rs"]
mod duration;
#[allow(dead_code)]
#[path = "../../sockserve-macros/src/expand.rs"]
mod expand;
#[allow(dead_code)]
#[path = "../../sockserve-macros/src/suggest.rs"]
mod suggest;
#[allow(dead_code)]
#[path = "../../sockserve-macros/src/table.rs"]
mod table;
#[allow(dead_code)]
#[path = "../../sockserve-macros/src/valid.rs"]
mod valid;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The lexer rejects what rustc's would (unbalanced delimiters, bad literals).
    let Ok(args) = text.parse::<TokenStream>() else {
        return;
    };
    let item: TokenStream = "struct Echo;".parse().unwrap();
    let output = expand::server(args, item);
    let reparsed: syn::File =
        syn::parse2(output.clone()).unwrap_or_else(|e| panic!("the expansion does not parse: {e}\n{output}"));
    assert!(!reparsed.items.is_empty());
});
