//! `#[rpc_program(program = N, version = V)]` on an impl block: its `#[proc(n)]` methods
//! become the procedures of one version of one ONC RPC program (an implementation of
//! `::sockserve::rpc::Program`).
//!
//! Phases: [`Args::parse`] reads the attribute, [`procedures`] finds and checks the
//! procedures (strips their `#[proc]`), [`expand`] generates the `Program` impl.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, ImplItem, ImplItemFn, ItemImpl, LitInt, Meta, Token, Type};

use super::{rt, Errors};

/// The attribute's arguments.
struct Args {
    program: Expr,
    version: Expr,
}

impl Args {
    fn parse(args: TokenStream) -> Result<Args, syn::Error> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
        let mut program = None;
        let mut version = None;
        let mut errors = Errors::default();
        for meta in metas {
            let Meta::NameValue(nv) = &meta else {
                errors.push(syn::Error::new(
                    meta.span(),
                    "expected `program = N` or `version = N`",
                ));
                continue;
            };
            let slot = if nv.path.is_ident("program") {
                &mut program
            } else if nv.path.is_ident("version") {
                &mut version
            } else {
                errors.push(syn::Error::new(
                    nv.path.span(),
                    "unknown argument: #[rpc_program] takes `program = N` and `version = N`",
                ));
                continue;
            };
            if slot.replace(nv.value.clone()).is_some() {
                errors.push(syn::Error::new(nv.path.span(), "duplicate argument"));
            }
        }
        if program.is_none() {
            errors.push(syn::Error::new(
                Span::call_site(),
                "missing program number: write #[rpc_program(program = 0x2000_0000, version = 1)] (user-defined programs are 0x20000000 to 0x3fffffff)",
            ));
        }
        if version.is_none() {
            errors.push(syn::Error::new(
                Span::call_site(),
                "missing version number: write #[rpc_program(program = .., version = 1)]",
            ));
        }
        errors.finish()?;
        Ok(Args {
            program: program.expect("checked"),
            version: version.expect("checked"),
        })
    }
}

/// One `#[proc(n)]` method.
struct Procedure {
    number: u32,
    method: syn::Ident,
    /// Whether the method takes the call (`&Call`) before its argument.
    takes_call: bool,
    /// The argument type, if any (`void` otherwise).
    arg: Option<Type>,
    span: Span,
    /// The span of the return type (where a result with no XDR mapping is reported).
    ret_span: Span,
}

/// Takes the `#[proc(n)]` attribute off a method, returning its number.
fn take_proc_attr(method: &mut ImplItemFn, errors: &mut Errors) -> Option<(u32, Span)> {
    let position = method.attrs.iter().position(|a| a.path().is_ident("proc"))?;
    let attr = method.attrs.remove(position);
    if let Some(again) = method.attrs.iter().find(|a| a.path().is_ident("proc")) {
        errors.push(syn::Error::new(again.span(), "a method has one #[proc(n)]"));
    }
    match attr
        .parse_args::<LitInt>()
        .and_then(|lit| lit.base10_parse::<u32>().map(|n| (n, lit.span())))
    {
        Ok(found) => Some(found),
        Err(_) => {
            errors.push(syn::Error::new(
                attr.span(),
                "expected a procedure number: #[proc(1)] (an integer from 1 to 4294967295)",
            ));
            None
        }
    }
}

/// Finds the procedures of the impl block, stripping their attributes.
fn procedures(item: &mut ItemImpl, errors: &mut Errors) -> Vec<Procedure> {
    let mut found: Vec<Procedure> = Vec::new();
    let mut seen: HashMap<u32, syn::Ident> = HashMap::new();
    for impl_item in &mut item.items {
        let ImplItem::Fn(method) = impl_item else { continue };
        let Some((number, span)) = take_proc_attr(method, errors) else {
            continue;
        };
        let name = method.sig.ident.clone();
        if number == 0 {
            errors.push(syn::Error::new(
                span,
                "procedure 0 is NULL: the server answers it for every program, and it cannot be redefined",
            ));
            continue;
        }
        if let Some(first) = seen.get(&number) {
            errors.push(syn::Error::new(
                span,
                format!("duplicate procedure number {number}: `{first}` has it already"),
            ));
            continue;
        }
        seen.insert(number, name.clone());
        let mut inputs = method.sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
            _ => {
                errors.push(syn::Error::new(
                    method.sig.span(),
                    "a procedure takes `&self` (the service is shared by every call)",
                ));
                continue;
            }
        }
        let mut rest: Vec<&Type> = inputs
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(&*t.ty),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let takes_call = matches!(rest.first(), Some(Type::Reference(_)));
        if takes_call {
            rest.remove(0);
        }
        if rest.len() > 1 {
            errors.push(syn::Error::new(
                rest[1].span(),
                "a procedure takes one argument (and optionally `&Call` before it): put several values in a struct",
            ));
            continue;
        }
        if let Some(Type::Reference(r)) = rest.first() {
            errors.push(syn::Error::new(
                r.span(),
                "the argument is taken by value (decoded from the call); only `&Call` comes by reference",
            ));
            continue;
        }
        found.push(Procedure {
            number,
            method: name,
            takes_call,
            arg: rest.first().map(|t| (*t).clone()),
            span,
            ret_span: match &method.sig.output {
                syn::ReturnType::Default => span,
                syn::ReturnType::Type(_, ty) => ty.span(),
            },
        });
    }
    if found.is_empty() && seen.is_empty() {
        errors.push(syn::Error::new(
            item.self_ty.span(),
            "no procedures: mark methods with #[proc(n)], n from 1 up",
        ));
    }
    found
}

/// The `Program` impl.
fn expand(item: &ItemImpl, args: &Args, procs: &[Procedure]) -> TokenStream {
    let rt = rt();
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let (program, version) = (&args.program, &args.version);
    let numbers = procs.iter().map(|p| p.number);
    let arms = procs.iter().map(|p| {
        let number = p.number;
        let method = &p.method;
        let call_arg = p.takes_call.then(|| quote!(call,));
        let (decode, value) = match &p.arg {
            Some(ty) => (
                quote_spanned! {ty.span()=>
                    let arg: #ty = #rt::decode_args::<#ty>(call, args)?;
                },
                quote!(arg),
            ),
            None => (quote!(), quote!()),
        };
        let invoke = quote_spanned!(p.ret_span=> self.#method(#call_arg #value));
        let encode = quote_spanned! {p.ret_span=>
            ::sockserve::rpc::ProcResult::encode_result(#invoke, out)
        };
        quote_spanned! {p.span=>
            #number => {
                #decode
                #encode
            }
        }
    });
    quote! {
        impl #impl_generics #rt::Program for #self_ty #where_clause {
            const PROGRAM: u32 = #program;
            const VERSION: u32 = #version;
            const PROCEDURES: &'static [u32] = &[#(#numbers),*];
            fn call(
                &self,
                call: &#rt::Call,
                args: &mut #rt::Decoder<'_>,
                out: &mut ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<(), #rt::ProcError> {
                let _ = &args;
                match call.procedure {
                    #(#arms)*
                    _ => ::core::result::Result::Err(#rt::ProcError::Accept(#rt::AcceptError::ProcUnavail)),
                }
            }
        }
    }
}

/// The whole macro. On error the impl block is emitted (without its `#[proc]` attributes)
/// next to the errors.
pub(crate) fn rpc_program(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut item: ItemImpl = match syn::parse2(item) {
        Ok(item) => item,
        Err(_) => {
            return syn::Error::new(
                Span::call_site(),
                "#[rpc_program] goes on an impl block whose #[proc(n)] methods are the procedures",
            )
            .to_compile_error()
        }
    };
    let mut errors = Errors::default();
    let args = Args::parse(args).map_err(|e| errors.push(e)).ok();
    let procs = procedures(&mut item, &mut errors);
    match (errors.finish(), args) {
        (Ok(()), Some(args)) => {
            let program = expand(&item, &args, &procs);
            quote!(#item #program)
        }
        (Err(e), _) => {
            let e = e.to_compile_error();
            quote!(#item #e)
        }
        (Ok(()), None) => quote!(#item),
    }
}
