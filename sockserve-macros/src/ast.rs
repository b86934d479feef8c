//! The typed model of a `#[server(...)]` declaration.
//!
//! [`Input`] is what was written: the handler struct and the raw attribute
//! arguments. [`Server`] is what `valid.rs` turns it into once every word, key
//! and value has been checked; `expand.rs` generates code from a [`Server`] only.

use crate::attr::Args;
use crate::table::{ConcurrencyDef, KeyDef, TransportDef};
use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{Ident, Item, ItemStruct};

/// The attribute arguments and the item they are attached to, parsed but not
/// yet validated.
pub(crate) struct Input {
    pub item: ItemStruct,
    pub args: Args,
}

impl Input {
    /// Parses the item first (so that `#[server]` on an enum reports that,
    /// whatever its arguments), then the arguments.
    pub(crate) fn parse(args: TokenStream, item: TokenStream) -> syn::Result<Input> {
        let item = match syn::parse2::<Item>(item)? {
            Item::Struct(item) => item,
            other => return Err(not_a_struct(&other)),
        };
        let args = syn::parse2::<Args>(args)?;
        Ok(Input { item, args })
    }
}

fn not_a_struct(item: &Item) -> syn::Error {
    let (span, found) = match item {
        Item::Enum(e) => (e.enum_token.span, "an enum"),
        Item::Union(u) => (u.union_token.span, "a union"),
        Item::Fn(f) => (f.sig.fn_token.span, "a function"),
        Item::Trait(t) => (t.trait_token.span, "a trait"),
        Item::Impl(i) => (i.impl_token.span, "an impl block"),
        Item::Mod(m) => (m.mod_token.span, "a module"),
        Item::Type(t) => (t.type_token.span, "a type alias"),
        other => (other.span(), "this item"),
    };
    syn::Error::new(
        span,
        format!(
            "#[server] goes on a struct: the handler type, found {found}; \
             declare `#[server(tcp)] struct Echo;` and implement the handler trait for it"
        ),
    )
}

/// A keyword chosen from one of the tables, with the span of the word as
/// written (or of the attribute, for a default).
#[derive(Clone, Copy)]
pub(crate) struct Choice<T: 'static> {
    pub def: &'static T,
    pub span: Span,
    /// `false` when the attribute did not name it and the default was taken.
    pub written: bool,
}

/// A validated option value, ready to be written as a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConstValue {
    Bool(bool),
    /// An integer (also a permission mode).
    Int(u64),
    /// A duration in nanoseconds.
    Duration(u64),
    /// A `ProxyProtocol` variant: `V1`, `V2` or `Any`.
    Proxy(&'static str),
}

/// One validated `key = value`.
pub(crate) struct OptionValue {
    pub key: &'static KeyDef,
    /// The key as written, whose span code for the field is given.
    pub ident: Ident,
    pub value: ConstValue,
    /// The span of the value as written.
    pub span: Span,
}

/// A validated declaration: everything `expand.rs` needs.
pub(crate) struct Server<'a> {
    pub item: &'a ItemStruct,
    pub transport: Choice<TransportDef>,
    pub concurrency: Choice<ConcurrencyDef>,
    /// The name of the server type alias.
    pub name: Ident,
    /// The `Options` fields set by the attribute, in source order.
    pub options: Vec<OptionValue>,
    /// `transport = Type`: the custom transport type (then `transport.def` is
    /// [`CUSTOM_TRANSPORT`](crate::table::CUSTOM_TRANSPORT)).
    pub custom_transport: Option<syn::Type>,
    /// `crate = "path"`: where generated code finds sockserve (`::sockserve` when `None`).
    pub krate: Option<syn::Path>,
    /// The `tls` word: the transport is wrapped in `transport::Tls`.
    pub tls: bool,
}
