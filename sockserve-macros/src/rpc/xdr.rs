//! `#[derive(Xdr)]`: XDR encoding and decoding for structs, enums and discriminated unions.
//!
//! - a struct (named, tuple or unit) is an XDR struct: its fields in order;
//! - an enum whose variants are all units is an XDR enum: each variant's value is its Rust
//!   discriminant (`Red = 2`, or the previous one plus 1 from 0);
//! - an enum with data is a discriminated union on an `int`: each variant has
//!   `#[xdr(case = EXPR)]` (an `i32` constant expression) and holds nothing (`void`), one
//!   value, or named fields; at most one variant has `#[xdr(default)]` and holds the
//!   discriminant as its only field (`Other(i32)`, a `void` default arm).
//!
//! Field attributes: `#[xdr(max = N)]` on `String`/`Vec<T>` (`string<N>`, `T<N>`),
//! `#[xdr(opaque)]` on `Vec<u8>` (`opaque<>`, with `max` `opaque<N>`) and `[u8; N]`
//! (`opaque[N]`).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, Fields, Ident};

use super::{rt, Errors};

/// How one field is coded.
enum Coding {
    /// Through its `Xdr` impl.
    Plain,
    /// `string<N>` or `T<N>`.
    Max(Expr),
    /// Opaque bytes, with a maximum for `Vec<u8>`.
    Opaque(Option<Expr>),
}

fn field_coding(field: &syn::Field, errors: &mut Errors) -> Coding {
    let mut max = None;
    let mut opaque = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("xdr")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("max") {
                max = Some(meta.value()?.parse::<Expr>()?);
                Ok(())
            } else if meta.path.is_ident("opaque") {
                opaque = true;
                Ok(())
            } else {
                Err(meta.error("unknown field attribute: expected `max = N` or `opaque`"))
            }
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    match (opaque, max) {
        (true, max) => Coding::Opaque(max),
        (false, Some(max)) => Coding::Max(max),
        (false, None) => Coding::Plain,
    }
}

/// Code that encodes `value` (an expression of a reference to the field).
fn encode_field(coding: &Coding, ty: &syn::Type, value: TokenStream) -> TokenStream {
    let rt = rt();
    match coding {
        Coding::Plain => quote_spanned!(ty.span()=> <#ty as #rt::Xdr>::encode(#value, out)?;),
        Coding::Max(max) => {
            quote_spanned!(ty.span()=> #rt::xdr::bounded::encode::<#ty>(#value, #max, out)?;)
        }
        Coding::Opaque(max) => {
            let max = max.as_ref().map_or(quote!(u32::MAX), |m| quote!(#m));
            quote_spanned!(ty.span()=> #rt::xdr::opaque::encode::<#ty>(#value, #max, out)?;)
        }
    }
}

/// An expression that decodes a field from `input`.
fn decode_field(coding: &Coding, ty: &syn::Type) -> TokenStream {
    let rt = rt();
    match coding {
        Coding::Plain => quote_spanned!(ty.span()=> <#ty as #rt::Xdr>::decode(input)?),
        Coding::Max(max) => {
            quote_spanned!(ty.span()=> #rt::xdr::bounded::decode::<#ty>(input, #max)?)
        }
        Coding::Opaque(max) => {
            let max = max.as_ref().map_or(quote!(u32::MAX), |m| quote!(#m));
            quote_spanned!(ty.span()=> #rt::xdr::opaque::decode::<#ty>(input, #max)?)
        }
    }
}

fn min_size(coding: &Coding, ty: &syn::Type) -> TokenStream {
    let rt = rt();
    match coding {
        Coding::Plain => quote!(<#ty as #rt::Xdr>::MIN_SIZE),
        _ => quote!(4),
    }
}

/// Encoding, decoding (a constructor expression) and minimum size of a set of fields, bound
/// to locals `f0, f1, ...`.
struct FieldsCode {
    /// The pattern that binds the fields: `{ a: f0, b: f1 }`, `(f0, f1)` or nothing.
    pattern: TokenStream,
    encode: Vec<TokenStream>,
    /// The constructor suffix, decoding in order.
    construct: TokenStream,
    min: Vec<TokenStream>,
}

fn fields_code(fields: &Fields, errors: &mut Errors) -> FieldsCode {
    let mut encode = Vec::new();
    let mut decoded = Vec::new();
    let mut min = Vec::new();
    let mut binds = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let coding = field_coding(field, errors);
        let local = format_ident!("f{i}");
        encode.push(encode_field(&coding, &field.ty, quote!(#local)));
        decoded.push(decode_field(&coding, &field.ty));
        min.push(min_size(&coding, &field.ty));
        binds.push((field.ident.clone(), local));
    }
    let (pattern, construct) = match fields {
        Fields::Named(_) => {
            let pats = binds.iter().map(|(name, local)| quote!(#name: #local));
            let inits = binds.iter().zip(&decoded).map(|((name, _), d)| quote!(#name: #d));
            (quote!({ #(#pats),* }), quote!({ #(#inits),* }))
        }
        Fields::Unnamed(_) => {
            let locals = binds.iter().map(|(_, local)| local);
            (quote!((#(#locals),*)), quote!((#(#decoded),*)))
        }
        Fields::Unit => (quote!(), quote!()),
    };
    FieldsCode {
        pattern,
        encode,
        construct,
        min,
    }
}

fn variant_case(variant: &syn::Variant, errors: &mut Errors) -> (Option<Expr>, bool) {
    let mut case = None;
    let mut default = false;
    for attr in variant.attrs.iter().filter(|a| a.path().is_ident("xdr")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("case") {
                case = Some(meta.value()?.parse::<Expr>()?);
                Ok(())
            } else if meta.path.is_ident("default") {
                default = true;
                Ok(())
            } else {
                Err(meta.error("unknown variant attribute: expected `case = N` or `default`"))
            }
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    (case, default)
}

/// The body of `encode`, of `decode`, and `MIN_SIZE`.
fn body(input: &DeriveInput, errors: &mut Errors) -> (TokenStream, TokenStream, TokenStream) {
    let rt = rt();
    let name = &input.ident;
    let type_name = name.to_string();
    match &input.data {
        Data::Struct(data) => {
            let code = fields_code(&data.fields, errors);
            let (pattern, encode, construct, min) = (code.pattern, code.encode, code.construct, code.min);
            (
                quote!(let #name #pattern = self; #(#encode)* ::core::result::Result::Ok(())),
                quote!(::core::result::Result::Ok(#name #construct)),
                quote!(0 #(+ #min)*),
            )
        }
        Data::Enum(data)
            if data.variants.iter().all(|v| matches!(v.fields, Fields::Unit))
                && !data
                    .variants
                    .iter()
                    .any(|v| v.attrs.iter().any(|a| a.path().is_ident("xdr"))) =>
        {
            // An XDR enum: values are the Rust discriminants.
            let mut encode_arms = Vec::new();
            let mut decode_checks = Vec::new();
            for variant in &data.variants {
                let ident = &variant.ident;
                let value = quote!(#name::#ident as i32);
                encode_arms.push(quote!(#name::#ident => #value,));
                decode_checks
                    .push(quote!(if value == #value { return ::core::result::Result::Ok(#name::#ident); }));
            }
            (
                quote! {
                    let value: i32 = match self { #(#encode_arms)* };
                    <i32 as #rt::Xdr>::encode(&value, out)
                },
                quote! {
                    let value = <i32 as #rt::Xdr>::decode(input)?;
                    #(#decode_checks)*
                    ::core::result::Result::Err(#rt::XdrError::InvalidDiscriminant { type_name: #type_name, value })
                },
                quote!(4),
            )
        }
        Data::Enum(data) => {
            // A discriminated union.
            let mut encode_arms = Vec::new();
            let mut decode_checks = Vec::new();
            let mut default_arm = None;
            for variant in &data.variants {
                let ident = &variant.ident;
                let (case, default) = variant_case(variant, errors);
                match (case, default) {
                    (Some(_), true) => errors.push(syn::Error::new(
                        variant.span(),
                        "a union arm is either `case = N` or `default`, not both",
                    )),
                    (None, false) => errors.push(syn::Error::new(
                        variant.ident.span(),
                        "a union arm needs #[xdr(case = N)] (or #[xdr(default)] with the discriminant as its one i32 field)",
                    )),
                    (None, true) => {
                        let ok = matches!(&variant.fields, Fields::Unnamed(f) if f.unnamed.len() == 1);
                        if !ok {
                            errors.push(syn::Error::new(
                                variant.span(),
                                "the default arm holds the discriminant: write `Other(i32)`",
                            ));
                        } else if default_arm.is_some() {
                            errors.push(syn::Error::new(variant.span(), "a union has one default arm"));
                        } else {
                            encode_arms.push(quote!(#name::#ident(d) => <i32 as #rt::Xdr>::encode(d, out)?,));
                            default_arm = Some(quote!(::core::result::Result::Ok(#name::#ident(value))));
                        }
                    }
                    (Some(case), false) => {
                        let code = fields_code(&variant.fields, errors);
                        let (pattern, encode, construct) = (code.pattern, code.encode, code.construct);
                        encode_arms.push(quote! {
                            #name::#ident #pattern => {
                                let case: i32 = #case;
                                <i32 as #rt::Xdr>::encode(&case, out)?;
                                #(#encode)*
                            }
                        });
                        decode_checks.push(quote! {
                            if value == { let case: i32 = #case; case } { return ::core::result::Result::Ok(#name::#ident #construct); }
                        });
                    }
                }
            }
            let fallback = default_arm.unwrap_or_else(
                || quote!(::core::result::Result::Err(#rt::XdrError::InvalidDiscriminant { type_name: #type_name, value })),
            );
            (
                quote! {
                    match self { #(#encode_arms)* }
                    ::core::result::Result::Ok(())
                },
                quote! {
                    let value = <i32 as #rt::Xdr>::decode(input)?;
                    #(#decode_checks)*
                    #fallback
                },
                quote!(4),
            )
        }
        Data::Union(u) => {
            errors.push(syn::Error::new(
                u.union_token.span(),
                "#[derive(Xdr)] takes a struct or an enum (an XDR union is a Rust enum with #[xdr(case = N)] arms)",
            ));
            (quote!(), quote!(), quote!(0))
        }
    }
}

/// The whole derive.
pub(crate) fn derive_xdr(item: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(item) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let rt = rt();
    let mut errors = Errors::default();
    let (encode, decode, min) = body(&input, &mut errors);
    if let Err(e) = errors.finish() {
        return e.to_compile_error();
    }
    let name = &input.ident;
    let mut generics = input.generics.clone();
    let params: Vec<Ident> = generics.type_params().map(|p| p.ident.clone()).collect();
    {
        let where_clause = generics.make_where_clause();
        for p in params {
            where_clause.predicates.push(syn::parse_quote!(#p: #rt::Xdr));
        }
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let span = Span::call_site();
    quote_spanned! {span=>
        #[automatically_derived]
        impl #impl_generics #rt::Xdr for #name #ty_generics #where_clause {
            const MIN_SIZE: usize = #min;
            #[allow(unused_variables)]
            fn encode(&self, out: &mut ::std::vec::Vec<u8>) -> ::core::result::Result<(), #rt::XdrError> {
                #encode
            }
            fn decode(input: &mut #rt::Decoder<'_>) -> ::core::result::Result<Self, #rt::XdrError> {
                #decode
            }
        }
    }
}
