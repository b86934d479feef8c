//! Generates the server type alias, the `Declared` impl and the handler-kind
//! check from a validated [`Server`].
//!
//! Only names from `sockserve-core` and `core` are emitted, always as absolute
//! paths, so user code that shadows `std`, `Result`, `Option` or `io` still
//! compiles. No runtime logic lives here.

use crate::ast::{ConstValue, Input, OptionValue, Server};
use crate::table::ValueKind;
use crate::valid;
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{parse_quote, GenericParam, Generics};

/// The whole macro: parse, validate, generate. On error the item is emitted
/// unchanged next to the errors, with the alias and a `Declared` impl for what the
/// attribute most likely meant ([`valid::fallback`]) whose methods are never run,
/// so that the struct, its server type and `bind` still exist and the only errors
/// the user sees are ours.
pub(crate) fn server(args: TokenStream, item: TokenStream) -> TokenStream {
    let input = match Input::parse(args.clone(), item.clone()) {
        Ok(input) => input,
        Err(error) => {
            let errors = error.to_compile_error();
            let Ok(item) = syn::parse2::<syn::ItemStruct>(item.clone()) else {
                return quote!(#item #errors);
            };
            let words = bare_words(args);
            return fallback(&valid::fallback(&item, &words), errors);
        }
    };
    match valid::validate(&input) {
        Ok(server) => generate(&server),
        Err(error) => {
            let words: Vec<Ident> = input
                .args
                .args
                .iter()
                .filter_map(|arg| match arg {
                    crate::attr::Arg::Word(word) => Some(word.clone()),
                    crate::attr::Arg::Option(_) => None,
                })
                .collect();
            fallback(&valid::fallback(&input.item, &words), error.to_compile_error())
        }
    }
}

/// The bare identifiers among attribute arguments that did not parse.
fn bare_words(args: TokenStream) -> Vec<Ident> {
    args.into_iter()
        .filter_map(|tree| match tree {
            proc_macro2::TokenTree::Ident(ident) => Some(ident),
            _ => None,
        })
        .collect()
}

/// The struct, the errors, and the declaration of what was most likely meant, its
/// constructor unreachable (the program does not compile).
fn fallback(server: &Server, errors: TokenStream) -> TokenStream {
    let item = server.item;
    let alias = alias(server);
    let declared = declared(server, quote!(::core::unreachable!("#[server] has errors")));
    quote! {
        #item
        #errors
        #alias
        #declared
    }
}

/// The struct as written, the alias and the `Declared` impl.
pub(crate) fn generate(server: &Server) -> TokenStream {
    let item = server.item;
    let alias = alias(server);
    let declared = declared(server, construct(server));
    quote! {
        #item
        #alias
        #declared
    }
}

/// The body of `on_transport`: `Server::from_transport`, whose bounds check the handler against
/// the transport and the concurrency model. It is spanned on the transport keyword, so a
/// handler of the wrong kind (or one a threading server cannot share) is one error there,
/// with core's message.
fn construct(server: &Server) -> TokenStream {
    let span = server.transport.span;
    let root = root_at(server, span);
    quote_spanned!(span=> #root::Server::from_transport(transport, self, options))
}

/// Where generated code finds sockserve: `::sockserve`, or the `crate = "..."` path.
fn root(server: &Server) -> TokenStream {
    root_at(server, Span::call_site())
}

/// [`root`], its tokens spanned at `span` (so an error in the path's call points there).
fn root_at(server: &Server, span: Span) -> TokenStream {
    match &server.krate {
        Some(path) => path
            .to_token_stream()
            .into_iter()
            .map(|mut tree| {
                tree.set_span(tree.span().located_at(span));
                tree
            })
            .collect(),
        None => quote_spanned!(span=> ::sockserve),
    }
}

/// Whether `proxy_protocol` wraps the transport in `transport::Proxied`.
fn proxied(server: &Server) -> bool {
    server.options.iter().any(|o| o.key.kind == ValueKind::Proxy)
}

/// `::sockserve::transport::Tcp`, or the custom transport type; with `proxy_protocol`
/// wrapped in `transport::Proxied<..>` and with `tls` in `transport::Tls<..>`, the PROXY
/// header read first (`Proxied<Tls<Tcp>>`: the header comes before the TLS handshake).
fn transport_path(server: &Server) -> TokenStream {
    let root = root(server);
    let inner = match &server.custom_transport {
        Some(ty) => quote!(#ty),
        None => {
            let ty = Ident::new(server.transport.def.ty, Span::call_site());
            quote!(#root::transport::#ty)
        }
    };
    let inner = if server.tls {
        quote!(#root::transport::Tls<#inner>)
    } else {
        inner
    };
    if proxied(server) {
        quote!(#root::transport::Proxied<#inner>)
    } else {
        inner
    }
}

/// `::sockserve::concurrency::Threading`.
fn concurrency_path(server: &Server) -> TokenStream {
    let root = root(server);
    let ty = Ident::new(server.concurrency.def.ty, Span::call_site());
    quote!(#root::concurrency::#ty)
}

/// `<vis> type EchoServer<T> = ::sockserve::ThreadingTcpServer<Echo<T>>;`
fn alias(server: &Server) -> TokenStream {
    let item = server.item;
    let vis = &item.vis;
    let name = &server.name;
    let ident = &item.ident;
    let (_, ty_generics, _) = item.generics.split_for_impl();
    let params = alias_params(&item.generics);
    let handler = quote!(#ident #ty_generics);
    let (transport, concurrency) = (server.transport.def, server.concurrency.def);
    let root = root(server);
    let target = match concurrency.alias_prefix {
        Some(prefix) if server.custom_transport.is_none() && !proxied(server) && !server.tls => {
            let alias = format_ident!("{}{}Server", prefix, transport.alias_stem);
            quote!(#root::#alias<#handler>)
        }
        _ => {
            let (t, c) = (transport_path(server), concurrency_path(server));
            quote!(#root::Server<#t, #c, #handler>)
        }
    };
    let doc = format!(
        "The server of [`{ident}`]: a `{}` transport{} with `{}` concurrency, \
         declared by `#[server]`.",
        transport.name,
        if server.tls { " over TLS" } else { "" },
        concurrency.name
    );
    quote! {
        #[doc = #doc]
        #[allow(dead_code)]
        #vis type #name #params = #target;
    }
}

/// The struct's generic parameters without bounds or where clause (bounds on a
/// type alias are not enforced and the compiler warns about them).
fn alias_params(generics: &Generics) -> TokenStream {
    if generics.params.is_empty() {
        return TokenStream::new();
    }
    let params = generics.params.iter().map(|param| match param {
        GenericParam::Lifetime(l) => {
            let lifetime = &l.lifetime;
            quote!(#lifetime)
        }
        GenericParam::Type(t) => {
            let ident = &t.ident;
            match &t.default {
                Some(default) => quote!(#ident = #default),
                None => quote!(#ident),
            }
        }
        GenericParam::Const(c) => {
            let mut c = c.clone();
            c.attrs.clear();
            quote!(#c)
        }
    });
    quote!(<#(#params),*>)
}

/// `impl ::sockserve::Declared for Echo { .. }`.
fn declared(server: &Server, body: TokenStream) -> TokenStream {
    let item = server.item;
    let ident = &item.ident;
    let root = root(server);
    let transport = transport_path(server);
    let concurrency = concurrency_path(server);
    // `Declared: 'static`: a generic handler is declared for its `'static` instances, and
    // for those that fit the server (its bounds may be weaker than its handler impl's).
    let mut generics = item.generics.clone();
    if !generics.params.is_empty() {
        let (_, ty_generics, _) = item.generics.split_for_impl();
        let handler = quote!(#ident #ty_generics);
        let predicates = &mut generics.make_where_clause().predicates;
        predicates.push(parse_quote!(#handler: 'static));
        predicates.push(parse_quote!(#concurrency: #root::concurrency::ProcessRequest<#transport, #handler>));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let options = options(&root, &server.options);
    quote! {
        #[automatically_derived]
        impl #impl_generics #root::Declared for #ident #ty_generics #where_clause {
            type Transport = #transport;
            type Concurrency = #concurrency;
            const OPTIONS: #root::Options = #options;

            fn on_transport(
                self,
                transport: #transport,
                options: #root::Options,
            ) -> ::core::result::Result<#root::Server<#transport, #concurrency, Self>, ::std::io::Error> {
                #body
            }
        }
    }
}

/// `::sockserve::Options::DEFAULT.key(value)...`: core's `const` setters, so the options
/// can grow without breaking declared servers.
fn options(root: &TokenStream, options: &[OptionValue]) -> TokenStream {
    let setters = options.iter().map(|option| {
        let field = &option.ident;
        let value = value(root, option);
        quote!(.#field(#value))
    });
    quote!(#root::Options::DEFAULT #(#setters)*)
}

/// One field value, as a constant expression spanned on the value as written.
fn value(root: &TokenStream, option: &OptionValue) -> TokenStream {
    let span = option.span;
    let value = match option.value {
        ConstValue::Bool(b) => quote_spanned!(span=> #b),
        ConstValue::Int(n) => {
            let lit = proc_macro2::Literal::u64_unsuffixed(n);
            quote_spanned!(span=> #lit)
        }
        ConstValue::Duration(nanos) => duration(nanos, span),
        ConstValue::Proxy(variant) => {
            let variant = Ident::new(variant, span);
            quote_spanned!(span=> #root::transport::ProxyProtocol::#variant)
        }
    };
    let optional = match option.key.kind {
        ValueKind::Duration { optional, .. } | ValueKind::Int { optional, .. } => optional,
        ValueKind::Mode => true,
        ValueKind::Bool
        | ValueKind::Proxy
        | ValueKind::TypeName
        | ValueKind::CratePath
        | ValueKind::TransportType => false,
    };
    if optional {
        quote_spanned!(span=> ::core::option::Option::Some(#value))
    } else {
        value
    }
}

/// `::core::time::Duration::from_millis(250)`, in the largest exact unit.
fn duration(nanos: u64, span: Span) -> TokenStream {
    let (constructor, count) = [
        ("from_secs", 1_000_000_000),
        ("from_millis", 1_000_000),
        ("from_micros", 1_000),
        ("from_nanos", 1),
    ]
    .into_iter()
    .find(|(_, unit)| nanos.is_multiple_of(*unit))
    .map(|(name, unit)| (name, nanos / unit))
    .expect("every duration is a whole number of nanoseconds");
    let constructor = Ident::new(constructor, span);
    let count = proc_macro2::Literal::u64_unsuffixed(count);
    quote_spanned!(span=> ::core::time::Duration::#constructor(#count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        server(args, item).to_string()
    }

    #[test]
    fn the_contract_example() {
        let got = expand(
            quote!(tcp, threading, timeout = "500ms"),
            quote!(
                pub struct Echo;
            ),
        );
        let want = quote! {
            pub struct Echo;
            #[doc = "The server of [`Echo`]: a `tcp` transport with `threading` concurrency, declared by `#[server]`."]
            #[allow(dead_code)]
            pub type EchoServer = ::sockserve::ThreadingTcpServer<Echo>;
            #[automatically_derived]
            impl ::sockserve::Declared for Echo {
                type Transport = ::sockserve::transport::Tcp;
                type Concurrency = ::sockserve::concurrency::Threading;
                const OPTIONS: ::sockserve::Options = ::sockserve::Options::DEFAULT
                    .timeout(::core::option::Option::Some(::core::time::Duration::from_millis(500)));

                fn on_transport(
                    self,
                    transport: ::sockserve::transport::Tcp,
                    options: ::sockserve::Options,
                ) -> ::core::result::Result<::sockserve::Server<::sockserve::transport::Tcp, ::sockserve::concurrency::Threading, Self>, ::std::io::Error> {
                    ::sockserve::Server::from_transport(transport, self, options)
                }
            }
        };
        assert_eq!(got, want.to_string());
    }

    #[test]
    fn every_pair_uses_the_named_alias() {
        let cases = [
            ("tcp", "sync", "TcpServer", "Synchronous"),
            ("udp", "sync", "UdpServer", "Synchronous"),
            ("unix_stream", "sync", "UnixStreamServer", "Synchronous"),
            ("unix_datagram", "sync", "UnixDatagramServer", "Synchronous"),
            ("tcp", "threading", "ThreadingTcpServer", "Threading"),
            ("udp", "threading", "ThreadingUdpServer", "Threading"),
            (
                "unix_stream",
                "threading",
                "ThreadingUnixStreamServer",
                "Threading",
            ),
            (
                "unix_datagram",
                "threading",
                "ThreadingUnixDatagramServer",
                "Threading",
            ),
            ("tcp", "forking", "ForkingTcpServer", "Forking"),
            ("udp", "forking", "ForkingUdpServer", "Forking"),
            ("unix_stream", "forking", "ForkingUnixStreamServer", "Forking"),
            ("unix_datagram", "forking", "ForkingUnixDatagramServer", "Forking"),
        ];
        for (t, c, alias, model) in cases {
            let (ti, ci) = (format_ident!("{t}"), format_ident!("{c}"));
            let got = expand(
                quote!(#ti, #ci),
                quote!(
                    struct H;
                ),
            );
            let alias = format_ident!("{alias}");
            let model = format_ident!("{model}");
            let want_alias = quote!(type HServer = ::sockserve::#alias<H>;).to_string();
            let want_model = quote!(type Concurrency = ::sockserve::concurrency::#model;).to_string();
            assert!(got.contains(&want_alias), "{t} {c}: {got}");
            assert!(got.contains(&want_model), "{t} {c}: {got}");
        }
        // No concurrency written: sync.
        assert!(expand(
            quote!(udp),
            quote!(
                struct H;
            )
        )
        .contains("type HServer = :: sockserve :: UdpServer < H >"));
    }

    #[test]
    fn the_server_is_made_for_the_declared_types() {
        let got = expand(
            quote!(unix_datagram, forking),
            quote!(
                struct H;
            ),
        );
        let want = quote!(::sockserve::Server<::sockserve::transport::UnixDgram, ::sockserve::concurrency::Forking, Self>);
        assert!(got.contains(&want.to_string()), "{got}");
        assert!(
            got.contains(&quote!(::sockserve::Server::from_transport(transport, self, options)).to_string()),
            "{got}"
        );
    }

    #[test]
    fn generic_structs_keep_their_generics() {
        let got = expand(
            quote!(tcp, forking, name = "Named"),
            quote!(
                pub(crate) struct Echo<'a, T: Clone + 'static, const N: usize = 4>
                where
                    T: Send,
                {
                    t: &'a T,
                }
            ),
        );
        let want_alias = quote! {
            pub(crate) type Named<'a, T, const N: usize = 4> = ::sockserve::ForkingTcpServer<Echo<'a, T, N> >;
        };
        let want_impl = quote! {
            impl<'a, T: Clone + 'static, const N: usize> ::sockserve::Declared for Echo<'a, T, N>
            where T: Send, Echo<'a, T, N>: 'static
        };
        assert!(got.contains(&want_alias.to_string()), "{got}");
        assert!(got.contains(&want_impl.to_string()), "{got}");
        // Declared for the instances that fit the server.
        let want_bound = quote! {
            ::sockserve::concurrency::Forking: ::sockserve::concurrency::ProcessRequest<::sockserve::transport::Tcp, Echo<'a, T, N> >
        };
        assert!(got.contains(&want_bound.to_string()), "{got}");
    }

    #[test]
    fn option_values_are_constant_expressions() {
        let got = expand(
            quote!(
                unix_stream,
                threading,
                poll_interval = "2s",
                timeout = "1.5s",
                connection_timeout = "500us",
                request_queue_size = 16,
                max_threads = 4,
                rbufsize = 0,
                socket_mode = 0o660,
                remove_stale_socket = false
            ),
            quote!(
                struct H;
            ),
        );
        let want = quote! {
            ::sockserve::Options::DEFAULT
                .poll_interval(::core::time::Duration::from_secs(2))
                .timeout(::core::option::Option::Some(::core::time::Duration::from_millis(1500)))
                .connection_timeout(::core::option::Option::Some(::core::time::Duration::from_micros(500)))
                .request_queue_size(16)
                .max_threads(::core::option::Option::Some(4))
                .rbufsize(0)
                .socket_mode(::core::option::Option::Some(432))
                .remove_stale_socket(false)
        };
        assert!(got.contains(&want.to_string()), "{got}");
        let nanos = duration(1_001, Span::call_site()).to_string();
        assert_eq!(
            nanos,
            quote!(::core::time::Duration::from_nanos(1001)).to_string()
        );
        let minute = duration(60_000_000_000, Span::call_site()).to_string();
        assert_eq!(minute, quote!(::core::time::Duration::from_secs(60)).to_string());
    }

    #[test]
    fn no_options_is_the_default() {
        let got = expand(
            quote!(tcp),
            quote!(
                struct H;
            ),
        );
        assert!(
            got.contains("const OPTIONS : :: sockserve :: Options = :: sockserve :: Options :: DEFAULT ;"),
            "{got}"
        );
    }

    #[test]
    fn a_concurrency_model_without_alias_names_server_directly() {
        static MODEL: crate::table::ConcurrencyDef = crate::table::ConcurrencyDef {
            name: "thread_pool",
            ty: "ThreadPool",
            alias_prefix: None,
            transports: crate::table::Scope::All,
            why_not: "",
        };
        let input = Input::parse(
            quote!(tcp),
            quote!(
                struct H;
            ),
        )
        .unwrap();
        let mut server = valid::validate(&input).unwrap();
        server.concurrency.def = &MODEL;
        let got = generate(&server).to_string();
        let want = quote! {
            type HServer = ::sockserve::Server<::sockserve::transport::Tcp, ::sockserve::concurrency::ThreadPool, H>;
        };
        assert!(got.contains(&want.to_string()), "{got}");
    }

    #[test]
    fn a_crate_path_replaces_every_sockserve_path() {
        let got = expand(
            quote!(tcp, threading, crate = "ss", timeout = "1s"),
            quote!(
                struct H;
            ),
        );
        assert!(!got.contains(":: sockserve"), "{got}");
        assert!(
            got.contains("type HServer = ss :: ThreadingTcpServer < H >"),
            "{got}"
        );
        assert!(got.contains("impl ss :: Declared for H"), "{got}");
        assert!(got.contains("ss :: Options :: DEFAULT . timeout"), "{got}");
    }

    #[test]
    fn a_custom_transport_names_server_directly() {
        let got = expand(
            quote!(transport = jobs::Queue, threading),
            quote!(
                struct H;
            ),
        );
        let want = quote!(
            type HServer = ::sockserve::Server<jobs::Queue, ::sockserve::concurrency::Threading, H>;
        );
        assert!(got.contains(&want.to_string()), "{got}");
        assert!(got.contains("type Transport = jobs :: Queue ;"), "{got}");
    }

    #[test]
    fn tls_wraps_the_transport() {
        let got = expand(
            quote!(unix_stream, forking, tls),
            quote!(
                struct H;
            ),
        );
        let want = "type HServer = :: sockserve :: Server < :: sockserve :: transport :: Tls < \
                    :: sockserve :: transport :: Unix > , :: sockserve :: concurrency :: Forking , H > ;";
        assert!(got.contains(want), "{got}");
        let err = expand(
            quote!(udp, tls),
            quote!(
                struct H;
            ),
        );
        assert!(err.contains("`tls` needs a stream transport"), "{err}");
    }

    #[test]
    fn errors_keep_the_item() {
        let got = expand(
            quote!(tpc),
            quote!(
                struct H;
            ),
        );
        assert!(got.starts_with("struct H ;"), "{got}");
        assert!(got.contains("compile_error !"), "{got}");
        // What was meant is still declared (the closest transport), so that `H.bind(..)`
        // raises no second error; its constructor never runs.
        assert!(
            got.contains("type HServer = :: sockserve :: TcpServer < H >"),
            "{got}"
        );
        assert!(got.contains("unreachable !"), "{got}");
    }
}
