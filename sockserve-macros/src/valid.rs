//! Checks a parsed [`Input`] and builds the validated [`Server`] model.
//!
//! Every mistake becomes a `syn::Error` spanned on the token that is wrong, with
//! a message that says what is wrong and how to fix it. All mistakes are
//! reported together rather than one per build.

use crate::ast::{Choice, ConstValue, Input, OptionValue, Server};
use crate::attr::{Arg, OptionArg, Value};
use crate::duration;
use crate::suggest::{or_list, similar};
use crate::table::{self, IntType, KeyDef, Scope, ValueKind, CONCURRENCY, KEYS, TRANSPORTS};
use proc_macro2::Span;
use quote::format_ident;
use syn::ext::IdentExt;
use syn::{Ident, Lit};

/// Validates the declaration, returning every error found at once.
pub(crate) fn validate(input: &Input) -> syn::Result<Server<'_>> {
    let mut errors = Errors(None);
    let mut transport = None;
    let mut concurrency = None;
    let mut custom_transport = None;
    let mut tls: Option<Span> = None;
    for arg in &input.args.args {
        match arg {
            Arg::Word(word) if word.unraw() == table::TLS_WORD => {
                if tls.is_some() {
                    errors.push(syn::Error::new(word.span(), "`tls` is written twice: keep one"));
                }
                tls = Some(word.span());
            }
            Arg::Word(word) => check_word(word, &mut transport, &mut concurrency, &mut errors),
            Arg::Option(option) if option.key.unraw() == "transport" => {
                match custom_transport_type(option, transport.as_ref()) {
                    Ok(ty) => {
                        transport = Some(Choice {
                            def: &table::CUSTOM_TRANSPORT,
                            span: syn::spanned::Spanned::span(&option.expr),
                            written: true,
                        });
                        custom_transport = Some(ty);
                    }
                    Err(err) => errors.push(err),
                }
            }
            Arg::Option(_) => {}
        }
    }
    // A misspelled transport was already reported; "missing" would say it twice.
    let mut transport_attempted = errors.any();
    let concurrency = concurrency.unwrap_or(Choice {
        def: table::default_concurrency(),
        span: Span::call_site(),
        written: false,
    });

    if let (Some(t), Scope::Only(served)) = (&transport, concurrency.def.transports) {
        if custom_transport.is_none() && !served.contains(&t.def.name) {
            errors.push(syn::Error::new(
                concurrency.span,
                format!(
                    "`{}` does not serve a `{}` server: {}; use `sync`, `threading` or `forking`, \
                     or a transport it serves ({})",
                    concurrency.def.name,
                    t.def.name,
                    concurrency.def.why_not,
                    and_list(served)
                ),
            ));
        }
    }

    let mut options: Vec<OptionValue> = Vec::new();
    let mut name = None;
    let mut krate = None;
    let mut seen: Vec<String> = Vec::new();
    for arg in &input.args.args {
        let Arg::Option(option) = arg else { continue };
        let written = option.key.unraw().to_string();
        let Some(key) = table::key(&written) else {
            transport_attempted |= written == "transport" || table::transport(&written).is_some();
            errors.push(unknown_key(option));
            continue;
        };
        if seen.contains(&written) {
            errors.push(syn::Error::new(
                option.key.span(),
                format!("duplicate option `{written}`: it is already set earlier in this attribute; keep only one"),
            ));
            continue;
        }
        seen.push(written);
        if let Some(transport) = &transport {
            if let Err(err) = check_scope(option, key, transport.def.name, &concurrency) {
                // The value of an option that cannot be used is not worth checking.
                errors.push(err);
                continue;
            }
        }
        match key.kind {
            ValueKind::TypeName => {
                match type_name(option, key) {
                    Ok(ident) => name = Some(ident),
                    Err(err) => errors.push(err),
                }
                continue;
            }
            ValueKind::CratePath => {
                match crate_path(option, key) {
                    Ok(path) => krate = Some(path),
                    Err(err) => errors.push(err),
                }
                continue;
            }
            // Taken with the transport words above.
            ValueKind::TransportType => continue,
            _ => debug_assert!(key.kind.is_options_field()),
        }
        match check_value(option, key) {
            Ok(value) => options.push(OptionValue {
                key,
                ident: option.key.clone(),
                value,
                span: syn::spanned::Spanned::span(&option.expr),
            }),
            Err(err) => errors.push(err),
        }
    }

    if transport.is_none() && !transport_attempted {
        errors.push(syn::Error::new(
            Span::call_site(),
            format!(
                "missing transport: name one first, like `#[server(tcp)]`; transports: {}",
                all_names(TRANSPORTS.iter().map(|t| t.name))
            ),
        ));
    }
    if let (Some(span), Some(t)) = (tls, &transport) {
        if matches!(t.def.name, "udp" | "unix_datagram") {
            errors.push(syn::Error::new(
                span,
                format!(
                    "`tls` needs a stream transport (`tcp`, `unix_stream`), not `{}`: TLS runs over connections",
                    t.def.name
                ),
            ));
        }
    }
    errors.finish()?;
    let ident = &input.item.ident;
    Ok(Server {
        tls: tls.is_some(),
        item: &input.item,
        transport: transport.expect("a missing transport is an error"),
        concurrency,
        name: name.unwrap_or_else(|| format_ident!("{}Server", ident, span = ident.span())),
        options,
        custom_transport,
        krate,
    })
}

/// What the attribute most likely meant, for the code emitted beside its errors: the first
/// transport word (or the transport a misspelled word is closest to; `tcp` when there is
/// none), the first concurrency word, the default name, no options. The declaration still
/// exists then, so the user's `Echo.bind(..)` and the rest of the program raise no further
/// errors: the attribute's own are the only ones.
pub(crate) fn fallback<'a>(item: &'a syn::ItemStruct, words: &[Ident]) -> Server<'a> {
    let texts: Vec<String> = words.iter().map(|w| w.unraw().to_string()).collect();
    let transport = texts
        .iter()
        .find_map(|t| table::transport(t))
        .or_else(|| {
            texts
                .iter()
                .find_map(|t| similar(t, TRANSPORTS.iter().map(|d| d.name)).first().copied())
                .and_then(table::transport)
        })
        .unwrap_or(&TRANSPORTS[0]);
    let concurrency = texts
        .iter()
        .find_map(|t| table::concurrency(t))
        .unwrap_or_else(table::default_concurrency);
    let ident = &item.ident;
    Server {
        item,
        transport: Choice {
            def: transport,
            span: Span::call_site(),
            written: false,
        },
        concurrency: Choice {
            def: concurrency,
            span: Span::call_site(),
            written: false,
        },
        name: format_ident!("{}Server", ident, span = ident.span()),
        options: Vec::new(),
        custom_transport: None,
        krate: None,
        // `tls` on a datagram transport is the error itself: the fallback leaves it out, so
        // that no second error follows from it.
        tls: texts.iter().any(|t| t == table::TLS_WORD) && !matches!(transport.name, "udp" | "unix_datagram"),
    }
}

/// Accumulates errors so that all of them are reported.
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn any(&self) -> bool {
        self.0.is_some()
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn all_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

fn and_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// A bare word: a transport, a concurrency model, or a mistake.
fn check_word(
    word: &Ident,
    transport: &mut Option<Choice<table::TransportDef>>,
    concurrency: &mut Option<Choice<table::ConcurrencyDef>>,
    errors: &mut Errors,
) {
    let text = word.unraw().to_string();
    if let Some(def) = table::transport(&text) {
        match transport {
            Some(first) => errors.push(syn::Error::new(
                word.span(),
                format!(
                    "two transports, `{}` and `{text}`: a server has exactly one; \
                     declare a second handler struct for a second server",
                    first.def.name
                ),
            )),
            None => {
                *transport = Some(Choice {
                    def,
                    span: word.span(),
                    written: true,
                })
            }
        }
    } else if let Some(def) = table::concurrency(&text) {
        match concurrency {
            Some(first) => errors.push(syn::Error::new(
                word.span(),
                format!(
                    "two concurrency models, `{}` and `{text}`: a server has at most one; \
                     keep the one you want (`sync` is the default)",
                    first.def.name
                ),
            )),
            None => {
                *concurrency = Some(Choice {
                    def,
                    span: word.span(),
                    written: true,
                })
            }
        }
    } else if let Some(key) = table::key(&text) {
        errors.push(syn::Error::new(
            word.span(),
            format!(
                "`{text}` is an option and needs a value, like `{text} = {}`",
                key.example
            ),
        ));
    } else {
        errors.push(unknown_word(word, &text, transport.is_none()));
    }
}

fn unknown_word(word: &Ident, text: &str, expecting_transport: bool) -> syn::Error {
    let transports = all_names(TRANSPORTS.iter().map(|t| t.name));
    let models = all_names(CONCURRENCY.iter().map(|c| c.name));
    let near_transport = similar(text, TRANSPORTS.iter().map(|t| t.name));
    let near_model = similar(text, CONCURRENCY.iter().map(|c| c.name));
    let message = if !near_transport.is_empty() {
        format!(
            "unknown transport `{text}`: did you mean {}? (transports: {transports})",
            or_list(&near_transport)
        )
    } else if !near_model.is_empty() {
        format!(
            "unknown concurrency model `{text}`: did you mean {}? (concurrency models: {models})",
            or_list(&near_model)
        )
    } else if expecting_transport {
        format!("unknown transport `{text}`: expected one of {transports}")
    } else {
        format!("unknown concurrency model `{text}`: expected one of {models}")
    };
    syn::Error::new(word.span(), message)
}

fn unknown_key(option: &OptionArg) -> syn::Error {
    let text = option.key.unraw().to_string();
    let message = if text == "concurrency" {
        format!(
            "`{text}` is not an option: write the {text} as a bare word, like `#[server(tcp, threading)]`"
        )
    } else if table::transport(&text).is_some() || table::concurrency(&text).is_some() {
        format!("`{text}` takes no value: write it as a bare word, like `#[server(tcp, threading)]`")
    } else {
        let near = similar(&text, KEYS.iter().map(|k| k.name));
        if near.is_empty() {
            format!(
                "unknown option `{text}`; the options are: {}",
                all_names(KEYS.iter().map(|k| k.name))
            )
        } else {
            format!("unknown option `{text}`: did you mean {}?", or_list(&near))
        }
    };
    syn::Error::new(option.key.span(), message)
}

/// Rejects an option that the chosen transport or concurrency model ignores.
fn check_scope(
    option: &OptionArg,
    key: &KeyDef,
    transport: &str,
    concurrency: &Choice<table::ConcurrencyDef>,
) -> syn::Result<()> {
    let name = key.name;
    if let Scope::Only(transports) = key.transports {
        if !transports.contains(&transport) {
            return Err(syn::Error::new(
                option.key.span(),
                format!(
                    "`{name}` does not apply to a `{transport}` server: it applies to {} only; \
                     remove it or use {}",
                    and_list(transports),
                    if transports.len() == 1 {
                        "that transport"
                    } else {
                        "one of those transports"
                    },
                ),
            ));
        }
    }
    if let Scope::Only(models) = key.concurrency {
        let model = concurrency.def.name;
        if !models.contains(&model) {
            let chosen = if concurrency.written {
                format!("a `{model}` server")
            } else {
                format!("a `{model}` server (the default when no concurrency model is named)")
            };
            let fix = if concurrency.written {
                format!("use {} instead of `{model}`", or_list(models))
            } else {
                format!(
                    "add {} after the transport, like `#[server({transport}, {}, {name} = {})]`",
                    or_list(models),
                    models[0],
                    key.example
                )
            };
            return Err(syn::Error::new(
                option.key.span(),
                format!(
                    "`{name}` does not apply to {chosen}: it applies to {} only; {fix}, or remove it",
                    and_list(models)
                ),
            ));
        }
    }
    Ok(())
}

/// What a value is, for "found ..." in messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Lit(Lit::Str(_)) => "a string",
        Value::Lit(Lit::Int(_)) => "an integer",
        Value::Lit(Lit::Float(_)) => "a floating-point number",
        Value::Lit(Lit::Bool(_)) => "a boolean",
        Value::Lit(Lit::Char(_)) => "a character",
        Value::Lit(Lit::Byte(_)) => "a byte",
        Value::Lit(Lit::ByteStr(_) | Lit::CStr(_)) => "a byte string",
        Value::Lit(_) => "a literal of another kind",
        Value::Neg(_) => "a negative number",
        Value::Other => "an expression (only literals are accepted)",
    }
}

/// What a key takes, as a sentence fragment: "takes `true` or `false`".
fn expected(key: &KeyDef) -> String {
    let name = key.name;
    let example = key.example;
    match key.kind {
        ValueKind::Bool => format!("`{name}` takes `true` or `false`, like `{name} = {example}`"),
        ValueKind::Duration { .. } => format!(
            "`{name}` takes a duration string with a unit, like `{name} = {example}` \
             (valid: {})",
            duration::EXAMPLES
        ),
        ValueKind::Int { min: 0, .. } => {
            format!("`{name}` takes an integer (0 or more), like `{name} = {example}`")
        }
        ValueKind::Int { .. } => {
            format!("`{name}` takes a positive integer, like `{name} = {example}`")
        }
        ValueKind::Mode => format!("`{name}` takes an octal permission mode, like `{name} = {example}`"),
        ValueKind::Proxy => format!("`{name}` takes \"v1\", \"v2\" or \"any\", like `{name} = {example}`"),
        ValueKind::TypeName => {
            format!("`{name}` takes the server type's name as a string, like `{name} = {example}`")
        }
        ValueKind::CratePath => {
            format!("`{name}` takes the path of the sockserve crate as a string, like `{name} = {example}`")
        }
        ValueKind::TransportType => {
            format!("`{name}` takes a transport type (a path, not a string), like `{name} = {example}`")
        }
    }
}

fn wrong_type(option: &OptionArg, key: &KeyDef) -> syn::Error {
    syn::Error::new_spanned(
        &option.expr,
        format!("{}; found {}", expected(key), describe(&option.value)),
    )
}

fn check_value(option: &OptionArg, key: &KeyDef) -> syn::Result<ConstValue> {
    match key.kind {
        ValueKind::Bool => match &option.value {
            Value::Lit(Lit::Bool(b)) => Ok(ConstValue::Bool(b.value)),
            _ => Err(wrong_type(option, key)),
        },
        ValueKind::Duration { positive, .. } => duration_value(option, key, positive),
        ValueKind::Int { ty, min, max, .. } => int_value(option, key, ty, min, max),
        ValueKind::Mode => mode_value(option, key),
        ValueKind::Proxy => match &option.value {
            Value::Lit(Lit::Str(s)) => match s.value().as_str() {
                "v1" => Ok(ConstValue::Proxy("V1")),
                "v2" => Ok(ConstValue::Proxy("V2")),
                "any" => Ok(ConstValue::Proxy("Any")),
                other => Err(syn::Error::new_spanned(
                    &option.expr,
                    format!("{}; found \"{other}\"", expected(key)),
                )),
            },
            _ => Err(wrong_type(option, key)),
        },
        ValueKind::TypeName | ValueKind::CratePath | ValueKind::TransportType => {
            unreachable!("`{}` is not an Options field", key.name)
        }
    }
}

fn duration_value(option: &OptionArg, key: &KeyDef, positive: bool) -> syn::Result<ConstValue> {
    let name = key.name;
    let text = match &option.value {
        Value::Lit(Lit::Str(s)) => s.value(),
        // `500ms` and `1.5s` lex as suffixed number literals: point to the string form.
        Value::Lit(lit @ (Lit::Int(_) | Lit::Float(_))) if !lit_suffix(lit).is_empty() => {
            let written = quote::ToTokens::to_token_stream(lit).to_string();
            return Err(syn::Error::new_spanned(
                &option.expr,
                format!("write the duration as a string: `{name} = \"{written}\"`"),
            ));
        }
        Value::Lit(lit @ (Lit::Int(_) | Lit::Float(_))) => {
            let written = quote::ToTokens::to_token_stream(lit).to_string();
            return Err(syn::Error::new_spanned(
                &option.expr,
                format!(
                    "{}; found a number without a unit: write `\"{written}s\"` for seconds \
                     or `\"{written}ms\"` for milliseconds",
                    expected(key)
                ),
            ));
        }
        _ => return Err(wrong_type(option, key)),
    };
    let nanos = match duration::parse(&text) {
        Ok(nanos) => nanos,
        Err(duration::Error::Malformed) => {
            return Err(syn::Error::new_spanned(
                &option.expr,
                format!(
                    "malformed duration \"{text}\" for `{name}`: write a number and a unit \
                     (us, ms, s, m) with no space, like {}",
                    duration::EXAMPLES
                ),
            ))
        }
        Err(duration::Error::TooPrecise) => {
            return Err(syn::Error::new_spanned(
                &option.expr,
                format!("duration \"{text}\" for `{name}` is finer than one nanosecond"),
            ))
        }
        Err(duration::Error::TooLong) => {
            return Err(syn::Error::new_spanned(
                &option.expr,
                format!(
                    "duration \"{text}\" for `{name}` is too long: at most {} nanoseconds",
                    u64::MAX
                ),
            ))
        }
    };
    if positive && nanos == 0 {
        let why = if key.name == "connection_timeout" {
            "a zero socket timeout is rejected by the OS; omit the key for no timeout"
        } else {
            "zero is meaningless here"
        };
        return Err(syn::Error::new_spanned(
            &option.expr,
            format!(
                "`{name}` must be longer than zero ({why}), like `{name} = {}`",
                key.example
            ),
        ));
    }
    Ok(ConstValue::Duration(nanos))
}

fn lit_suffix(lit: &Lit) -> &str {
    match lit {
        Lit::Int(i) => i.suffix(),
        Lit::Float(f) => f.suffix(),
        _ => "",
    }
}

const INT_SUFFIXES: &[&str] = &[
    "", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
];

fn int_value(option: &OptionArg, key: &KeyDef, ty: IntType, min: u64, max: u64) -> syn::Result<ConstValue> {
    let name = key.name;
    let example = key.example;
    let lit = match &option.value {
        Value::Lit(Lit::Int(lit)) if INT_SUFFIXES.contains(&lit.suffix()) => lit,
        Value::Neg(Lit::Int(_) | Lit::Float(_)) => {
            let must = if min == 0 {
                "cannot be negative"
            } else {
                "must be a positive integer"
            };
            return Err(syn::Error::new_spanned(
                &option.expr,
                format!("`{name}` {must}, like `{name} = {example}`; found a negative number"),
            ));
        }
        _ => return Err(wrong_type(option, key)),
    };
    let too_large = || {
        let ty = match ty {
            IntType::U32 => "u32",
            IntType::Usize => "usize",
        };
        syn::Error::new_spanned(
            &option.expr,
            format!("`{name}` is too large: at most {max} (a {ty} field)"),
        )
    };
    check_suffix(option, lit)?;
    let value = lit.base10_parse::<u64>().map_err(|_| too_large())?;
    if value < min {
        return Err(syn::Error::new_spanned(
            &option.expr,
            format!("`{name}` must be at least {min}: zero is meaningless here; use a positive integer like `{name} = {example}`"),
        ));
    }
    if value > max {
        return Err(too_large());
    }
    Ok(ConstValue::Int(value))
}

fn mode_value(option: &OptionArg, key: &KeyDef) -> syn::Result<ConstValue> {
    let name = key.name;
    let example = key.example;
    let lit = match &option.value {
        Value::Lit(Lit::Int(lit)) if INT_SUFFIXES.contains(&lit.suffix()) => lit,
        _ => return Err(wrong_type(option, key)),
    };
    check_suffix(option, lit)?;
    let written = lit.to_string();
    let value = lit.base10_parse::<u32>().unwrap_or(u32::MAX);
    if value != 0 && !written.starts_with("0o") {
        return Err(syn::Error::new_spanned(
            &option.expr,
            format!("write `{name}` in octal like chmod does, with the `0o` prefix: `{name} = {example}`"),
        ));
    }
    if value > 0o777 {
        return Err(syn::Error::new_spanned(
            &option.expr,
            format!("`{name}` is a set of permission bits, at most 0o777, like `{name} = {example}`"),
        ));
    }
    Ok(ConstValue::Int(u64::from(value)))
}

/// `transport = Type`: a type path, and the only transport of the declaration.
fn custom_transport_type(
    option: &OptionArg,
    written: Option<&Choice<table::TransportDef>>,
) -> syn::Result<syn::Type> {
    if let Some(first) = written {
        return Err(syn::Error::new_spanned(
            &option.expr,
            format!(
                "two transports, `{}` and a custom `transport = ...`: a server has exactly one",
                first.def.name
            ),
        ));
    }
    match &option.expr {
        syn::Expr::Path(path)
            if path
                .path
                .get_ident()
                .is_some_and(|word| table::transport(&word.unraw().to_string()).is_some()) =>
        {
            Err(syn::Error::new_spanned(
                &option.expr,
                "a built-in transport is a bare word, like `#[server(tcp, threading)]`; \
                 `transport = Type` names your own transport type",
            ))
        }
        syn::Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            Ok(syn::Type::Path(syn::TypePath {
                qself: None,
                path: path.path.clone(),
            }))
        }
        _ => Err(syn::Error::new_spanned(
            &option.expr,
            "`transport` takes a transport type (a path, not a string), like `transport = SqlQueue`; \
             for a built-in transport write its word instead, like `#[server(tcp)]`",
        )),
    }
}

/// `crate = "path"`: a path such as `"ss"` or `"::my::reexport"`.
fn crate_path(option: &OptionArg, key: &KeyDef) -> syn::Result<syn::Path> {
    let Value::Lit(Lit::Str(lit)) = &option.value else {
        return Err(wrong_type(option, key));
    };
    let mut path = syn::parse_str::<syn::Path>(&lit.value()).map_err(|_| {
        syn::Error::new_spanned(
            lit,
            format!(
                "`crate` must be a path such as {}, naming the sockserve crate",
                key.example
            ),
        )
    })?;
    for segment in &mut path.segments {
        segment.ident.set_span(lit.span());
    }
    Ok(path)
}

/// A suffixed integer literal must fit its suffix's type: `300u8` is a mistake, not 300.
fn check_suffix(option: &OptionArg, lit: &syn::LitInt) -> syn::Result<()> {
    let suffix = lit.suffix();
    let max: u128 = match suffix {
        "" | "u64" | "u128" | "usize" => return Ok(()),
        "u8" => u8::MAX.into(),
        "u16" => u16::MAX.into(),
        "u32" => u32::MAX.into(),
        "i8" => i8::MAX as u128,
        "i16" => i16::MAX as u128,
        "i32" => i32::MAX as u128,
        "i64" | "isize" => i64::MAX as u128,
        "i128" => i128::MAX as u128,
        _ => return Ok(()),
    };
    match lit.base10_parse::<u128>() {
        Ok(value) if value <= max => Ok(()),
        _ => Err(syn::Error::new_spanned(
            &option.expr,
            format!(
                "`{lit}` does not fit in `{suffix}` (at most {max}); write the number without \
                 the suffix, or with one it fits"
            ),
        )),
    }
}

fn type_name(option: &OptionArg, key: &KeyDef) -> syn::Result<Ident> {
    let Value::Lit(Lit::Str(lit)) = &option.value else {
        return Err(wrong_type(option, key));
    };
    match syn::parse_str::<Ident>(&lit.value()) {
        Ok(mut ident) => {
            ident.set_span(lit.span());
            Ok(ident)
        }
        Err(_) => Err(syn::Error::new_spanned(
            lit,
            format!(
                "`name` must be a Rust identifier (not a keyword or a path), like `name = {}`",
                key.example
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::TokenStream;
    use quote::quote;

    /// The messages of every error for `#[server(args)] struct Echo;`.
    fn errors(args: TokenStream) -> Vec<String> {
        errors_on(
            args,
            quote!(
                struct Echo;
            ),
        )
    }

    fn errors_on(args: TokenStream, item: TokenStream) -> Vec<String> {
        let result = Input::parse(args, item).and_then(|input| validate(&input).map(|_| ()));
        match result {
            Ok(()) => Vec::new(),
            Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn error(args: TokenStream) -> String {
        let all = errors(args);
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().unwrap()
    }

    fn valid(args: TokenStream) -> Vec<(String, ConstValue)> {
        let input = Input::parse(
            args,
            quote!(
                struct Echo;
            ),
        )
        .unwrap();
        let server = validate(&input).unwrap_or_else(|e| panic!("{e}"));
        server
            .options
            .iter()
            .map(|o| (o.key.name.to_string(), o.value))
            .collect()
    }

    #[test]
    fn every_pair_is_valid() {
        for t in TRANSPORTS {
            for c in CONCURRENCY {
                if let Scope::Only(served) = c.transports {
                    if !served.contains(&t.name) {
                        continue;
                    }
                }
                let (t, c) = (format_ident!("{}", t.name), format_ident!("{}", c.name));
                assert!(errors(quote!(#t, #c)).is_empty());
            }
            let t = format_ident!("{}", t.name);
            assert!(errors(quote!(#t)).is_empty());
        }
    }

    #[test]
    fn proxy_protocol_with_tls_serves_every_model() {
        for model in [quote!(threading), quote!(multiplex), quote!(pooled)] {
            assert!(errors(quote!(tcp, #model, tls, proxy_protocol = "v1")).is_empty());
        }
    }

    #[test]
    fn pooled_serves_stream_transports_only() {
        assert!(errors(quote!(tcp, pooled, max_threads = 16, workers = 1)).is_empty());
        assert!(errors(quote!(unix_stream, pooled, idle_timeout = "30s")).is_empty());
        assert_eq!(
            error(quote!(udp, pooled)),
            "`pooled` does not serve a `udp` server: it parks idle connections between messages, \
             and a datagram server has no connections: every datagram is one message already; \
             use `sync`, `threading` or `forking`, or a transport it serves (`tcp` and `unix_stream`)"
        );
        assert!(error(quote!(tcp, pooled, daemon_threads = false)).contains("daemon_threads"));
    }

    #[test]
    fn multiplex_serves_stream_transports_only() {
        assert!(errors(quote!(tcp, multiplex, workers = 2)).is_empty());
        assert!(errors(quote!(unix_stream, multiplex, max_input = 4096)).is_empty());
        assert_eq!(
            error(quote!(udp, multiplex)),
            "`multiplex` does not serve a `udp` server: it multiplexes connections, and a datagram \
             server already reads every client's datagrams from one socket without a thread per \
             client; use `sync`, `threading` or `forking`, or a transport it serves (`tcp` and `unix_stream`)"
        );
        assert_eq!(
            error(quote!(tcp, multiplex, workers = 0)),
            "`workers` must be at least 1: zero is meaningless here; use a positive integer like `workers = 4`"
        );
    }

    #[test]
    fn worker_listeners_is_for_tcp_with_multiplex_or_pooled() {
        assert!(errors(quote!(tcp, multiplex, worker_listeners = true)).is_empty());
        assert!(errors(quote!(tcp, pooled, worker_listeners = true, workers = 2)).is_empty());
        assert!(error(quote!(unix_stream, multiplex, worker_listeners = true)).contains("worker_listeners"));
        assert!(error(quote!(tcp, threading, worker_listeners = true)).contains("worker_listeners"));
    }

    #[test]
    fn order_of_words_is_free() {
        assert!(errors(quote!(threading, tcp)).is_empty());
        assert!(errors(quote!(timeout = "1s", tcp)).is_empty());
    }

    #[test]
    fn values_of_every_kind() {
        let got = valid(quote!(
            tcp,
            threading,
            poll_interval = "250ms",
            timeout = "0s",
            request_queue_size = 5,
            allow_reuse_address = false,
            daemon_threads = true,
            max_threads = 8u32,
            rbufsize = 0,
            wbufsize = 0x10,
            connection_timeout = "1.5s",
        ));
        assert_eq!(
            got,
            [
                ("poll_interval".into(), ConstValue::Duration(250_000_000)),
                ("timeout".into(), ConstValue::Duration(0)),
                ("request_queue_size".into(), ConstValue::Int(5)),
                ("allow_reuse_address".into(), ConstValue::Bool(false)),
                ("daemon_threads".into(), ConstValue::Bool(true)),
                ("max_threads".into(), ConstValue::Int(8)),
                ("rbufsize".into(), ConstValue::Int(0)),
                ("wbufsize".into(), ConstValue::Int(16)),
                ("connection_timeout".into(), ConstValue::Duration(1_500_000_000)),
            ]
        );
        assert_eq!(
            valid(quote!(unix_stream, socket_mode = 0o660)),
            [("socket_mode".into(), ConstValue::Int(0o660))]
        );
        assert_eq!(
            valid(quote!(unix_datagram, socket_mode = 0)),
            [("socket_mode".into(), ConstValue::Int(0))]
        );
    }

    #[test]
    fn name_key_names_the_alias() {
        let input = Input::parse(
            quote!(tcp, name = "Echoes"),
            quote!(
                struct Echo;
            ),
        )
        .unwrap();
        assert_eq!(validate(&input).unwrap().name, "Echoes");
        let input = Input::parse(
            quote!(tcp),
            quote!(
                struct Echo;
            ),
        )
        .unwrap();
        assert_eq!(validate(&input).unwrap().name, "EchoServer");
        assert_eq!(
            error(quote!(tcp, name = "Echo Server")),
            "`name` must be a Rust identifier (not a keyword or a path), like `name = \"EchoServer\"`"
        );
        assert!(error(quote!(tcp, name = "type")).starts_with("`name` must be a Rust identifier"));
        assert_eq!(
            error(quote!(tcp, name = EchoServer)),
            "`name` takes the server type's name as a string, like `name = \"EchoServer\"`; \
             found an expression (only literals are accepted)"
        );
    }

    #[test]
    fn unknown_words_get_suggestions() {
        assert_eq!(
            error(quote!(tpc)),
            "unknown transport `tpc`: did you mean `tcp`? \
             (transports: tcp, udp, unix_stream, unix_datagram)"
        );
        assert_eq!(
            error(quote!(tcp, threding)),
            "unknown concurrency model `threding`: did you mean `threading`? \
             (concurrency models: sync, threading, forking, multiplex, pooled)"
        );
        assert_eq!(
            error(quote!(unix)),
            "unknown transport `unix`: did you mean `unix_stream` or `unix_datagram`? \
             (transports: tcp, udp, unix_stream, unix_datagram)"
        );
        assert_eq!(
            error(quote!(tcp, asynchronous_io)),
            "unknown concurrency model `asynchronous_io`: expected one of sync, threading, forking, multiplex, pooled"
        );
        // Nothing close, no transport yet: the word stands where a transport goes.
        assert_eq!(
            errors(quote!(quic)),
            ["unknown transport `quic`: expected one of tcp, udp, unix_stream, unix_datagram"]
        );
    }

    #[test]
    fn custom_transports_and_crate_paths() {
        assert!(errors(quote!(transport = my::Queue, threading, timeout = "1s")).is_empty());
        assert_eq!(
            error(quote!(transport = my::Queue, rbufsize = 0)),
            "`rbufsize` does not apply to a `custom` server: it applies to `tcp` and `unix_stream` only; remove it or use one of those transports"
        );
        assert!(error(quote!(tcp, transport = my::Queue)).starts_with("two transports, `tcp` and a custom"));
        assert!(error(quote!(transport = "Queue"))
            .starts_with("`transport` takes a transport type (a path, not a string)"));
        assert!(errors(quote!(tcp, crate = "ss")).is_empty());
        assert!(errors(quote!(tcp, crate = "::my::reexport")).is_empty());
        assert!(error(quote!(tcp, crate = "not a path")).starts_with("`crate` must be a path"));
        assert!(error(quote!(tcp, crate = ss))
            .starts_with("`crate` takes the path of the sockserve crate as a string"));
    }

    #[test]
    fn integer_suffixes_must_fit() {
        assert!(errors(quote!(tcp, forking, max_children = 40u8)).is_empty());
        assert_eq!(
            error(quote!(tcp, forking, max_children = 300u8)),
            "`300u8` does not fit in `u8` (at most 255); write the number without the suffix, or with one it fits"
        );
        assert!(
            error(quote!(tcp, request_queue_size = 40000i16)).starts_with("`40000i16` does not fit in `i16`")
        );
        assert!(
            error(quote!(unix_stream, socket_mode = 0o777i8)).starts_with("`0o777i8` does not fit in `i8`")
        );
        assert!(errors(quote!(tcp, request_queue_size = 4096u32)).is_empty());
    }

    #[test]
    fn unknown_keys_get_suggestions() {
        assert_eq!(
            error(quote!(tcp, timout = "1s")),
            "unknown option `timout`: did you mean `timeout`?"
        );
        assert_eq!(
            error(quote!(tcp, max_child = 4)),
            "unknown option `max_child`: did you mean `max_children`?"
        );
        assert!(error(quote!(tcp, frobnicate = 1))
            .starts_with("unknown option `frobnicate`; the options are: poll_interval, timeout,"));
        assert_eq!(
            error(quote!(transport = tcp)),
            "a built-in transport is a bare word, like `#[server(tcp, threading)]`; `transport = Type` names your own transport type"
        );
        assert_eq!(
            error(quote!(tcp, threading = true)),
            "`threading` takes no value: write it as a bare word, like `#[server(tcp, threading)]`"
        );
        assert_eq!(
            error(quote!(tcp, threading, daemon_threads)),
            "`daemon_threads` is an option and needs a value, like `daemon_threads = true`"
        );
    }

    #[test]
    fn conflicts_and_duplicates() {
        assert_eq!(
            error(quote!(tcp, udp)),
            "two transports, `tcp` and `udp`: a server has exactly one; \
             declare a second handler struct for a second server"
        );
        assert_eq!(
            error(quote!(tcp, threading, forking)),
            "two concurrency models, `threading` and `forking`: a server has at most one; \
             keep the one you want (`sync` is the default)"
        );
        assert_eq!(
            error(quote!(tcp, timeout = "1s", timeout = "2s")),
            "duplicate option `timeout`: it is already set earlier in this attribute; keep only one"
        );
        assert_eq!(
            error(quote!()),
            "missing transport: name one first, like `#[server(tcp)]`; \
             transports: tcp, udp, unix_stream, unix_datagram"
        );
        assert_eq!(error(quote!(threading, timeout = "1s")), error(quote!()));
    }

    #[test]
    fn options_outside_their_scope() {
        assert_eq!(
            error(quote!(tcp, max_packet_size = 1024)),
            "`max_packet_size` does not apply to a `tcp` server: it applies to `udp` and \
             `unix_datagram` only; remove it or use one of those transports"
        );
        assert_eq!(
            error(quote!(udp, disable_nagle_algorithm = true)),
            "`disable_nagle_algorithm` does not apply to a `udp` server: it applies to `tcp` only; \
             remove it or use that transport"
        );
        assert_eq!(
            error(quote!(tcp, threading, max_children = 4)),
            "`max_children` does not apply to a `threading` server: it applies to `forking` only; \
             use `forking` instead of `threading`, or remove it"
        );
        assert_eq!(
            error(quote!(tcp, daemon_threads = true)),
            "`daemon_threads` does not apply to a `sync` server (the default when no concurrency \
             model is named): it applies to `threading` only; add `threading` after the transport, \
             like `#[server(tcp, threading, daemon_threads = true)]`, or remove it"
        );
        assert_eq!(
            error(quote!(udp, block_on_close = false)),
            "`block_on_close` does not apply to a `sync` server (the default when no concurrency \
             model is named): it applies to `threading` and `forking` only; add `threading` or \
             `forking` after the transport, like `#[server(udp, threading, block_on_close = false)]`, \
             or remove it"
        );
        // Both scopes wrong: the transport is reported.
        assert_eq!(errors(quote!(udp, rbufsize = 1, max_children = 2)).len(), 2);
    }

    #[test]
    fn every_scope_in_the_table_is_enforced() {
        for key in KEYS.iter().filter(|k| k.kind.is_options_field()) {
            let k = format_ident!("{}", key.name);
            let v: TokenStream = key.example.parse().unwrap();
            for t in TRANSPORTS {
                for c in CONCURRENCY {
                    let (ti, ci) = (format_ident!("{}", t.name), format_ident!("{}", c.name));
                    let applies = matches!(key.transports, Scope::All)
                        || matches!(key.transports, Scope::Only(n) if n.contains(&t.name));
                    let applies = applies
                        && (matches!(key.concurrency, Scope::All)
                            || matches!(key.concurrency, Scope::Only(n) if n.contains(&c.name)))
                        && (matches!(c.transports, Scope::All)
                            || matches!(c.transports, Scope::Only(n) if n.contains(&t.name)));
                    let found = errors(quote!(#ti, #ci, #k = #v));
                    assert_eq!(
                        found.is_empty(),
                        applies,
                        "{} on {} {}: {found:?}",
                        key.name,
                        t.name,
                        c.name
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_value_types() {
        assert_eq!(
            error(quote!(tcp, forking, max_children = "40")),
            "`max_children` takes a positive integer, like `max_children = 40`; found a string"
        );
        assert_eq!(
            error(quote!(tcp, allow_reuse_port = 1)),
            "`allow_reuse_port` takes `true` or `false`, like `allow_reuse_port = true`; found an integer"
        );
        assert_eq!(
            error(quote!(tcp, rbufsize = 1.5)),
            "`rbufsize` takes an integer (0 or more), like `rbufsize = 65536`; found a floating-point number"
        );
        assert_eq!(
            error(quote!(tcp, timeout = true)),
            "`timeout` takes a duration string with a unit, like `timeout = \"5s\"` \
             (valid: \"500us\", \"250ms\", \"2s\", \"1.5s\", \"1m\"); found a boolean"
        );
        assert_eq!(
            error(quote!(tcp, timeout = 5)),
            "`timeout` takes a duration string with a unit, like `timeout = \"5s\"` \
             (valid: \"500us\", \"250ms\", \"2s\", \"1.5s\", \"1m\"); found a number without a unit: \
             write `\"5s\"` for seconds or `\"5ms\"` for milliseconds"
        );
        assert_eq!(
            error(quote!(tcp, timeout = 500ms)),
            "write the duration as a string: `timeout = \"500ms\"`"
        );
        assert_eq!(
            error(quote!(tcp, max_packet_size = 10ms)),
            "`max_packet_size` does not apply to a `tcp` server: it applies to `udp` and \
             `unix_datagram` only; remove it or use one of those transports"
        );
        assert_eq!(
            error(quote!(udp, max_packet_size = 10ms)),
            "`max_packet_size` takes a positive integer, like `max_packet_size = 65507`; found an integer"
        );
        assert_eq!(
            error(quote!(unix_stream, socket_mode = "0660")),
            "`socket_mode` takes an octal permission mode, like `socket_mode = 0o660`; found a string"
        );
        assert_eq!(
            error(quote!(tcp, timeout = TIMEOUT)),
            "`timeout` takes a duration string with a unit, like `timeout = \"5s\"` \
             (valid: \"500us\", \"250ms\", \"2s\", \"1.5s\", \"1m\"); found an expression (only literals are accepted)"
        );
    }

    #[test]
    fn out_of_range_values() {
        assert_eq!(
            error(quote!(tcp, forking, max_children = 0)),
            "`max_children` must be at least 1: zero is meaningless here; \
             use a positive integer like `max_children = 40`"
        );
        assert_eq!(
            error(quote!(tcp, request_queue_size = -5)),
            "`request_queue_size` must be a positive integer, like `request_queue_size = 128`; \
             found a negative number"
        );
        assert_eq!(
            error(quote!(tcp, rbufsize = -1)),
            "`rbufsize` cannot be negative, like `rbufsize = 65536`; found a negative number"
        );
        assert_eq!(
            error(quote!(tcp, request_queue_size = 4294967296)),
            "`request_queue_size` is too large: at most 4294967295 (a u32 field)"
        );
        assert_eq!(
            error(quote!(tcp, rbufsize = 99999999999999999999999)),
            "`rbufsize` is too large: at most 4294967295 (a usize field)"
        );
        assert_eq!(
            error(quote!(tcp, poll_interval = "0ms")),
            "`poll_interval` must be longer than zero (zero is meaningless here), like `poll_interval = \"500ms\"`"
        );
        assert_eq!(
            error(quote!(tcp, connection_timeout = "0s")),
            "`connection_timeout` must be longer than zero (a zero socket timeout is rejected by the OS; \
             omit the key for no timeout), like `connection_timeout = \"30s\"`"
        );
        assert_eq!(
            error(quote!(unix_stream, socket_mode = 0o1777)),
            "`socket_mode` is a set of permission bits, at most 0o777, like `socket_mode = 0o660`"
        );
        assert_eq!(
            error(quote!(unix_stream, socket_mode = 660)),
            "write `socket_mode` in octal like chmod does, with the `0o` prefix: `socket_mode = 0o660`"
        );
    }

    #[test]
    fn malformed_durations() {
        assert_eq!(
            error(quote!(tcp, timeout = "5 seconds")),
            "malformed duration \"5 seconds\" for `timeout`: write a number and a unit \
             (us, ms, s, m) with no space, like \"500us\", \"250ms\", \"2s\", \"1.5s\", \"1m\""
        );
        assert_eq!(
            error(quote!(tcp, timeout = "0.0000000001s")),
            "duration \"0.0000000001s\" for `timeout` is finer than one nanosecond"
        );
        assert_eq!(
            error(quote!(tcp, timeout = "99999999999m")),
            "duration \"99999999999m\" for `timeout` is too long: at most 18446744073709551615 nanoseconds"
        );
    }

    #[test]
    fn all_errors_at_once() {
        let all = errors(quote!(tcp, udp, threding, timout = "1s", max_packet_size = 0));
        assert_eq!(all.len(), 4, "{all:#?}");
    }

    #[test]
    fn only_structs() {
        let message = "#[server] goes on a struct: the handler type, found {}; \
                       declare `#[server(tcp)] struct Echo;` and implement the handler trait for it";
        let on = |item| errors_on(quote!(tcp), item);
        assert_eq!(
            on(quote!(
                enum Echo {
                    A,
                }
            )),
            [message.replace("{}", "an enum")]
        );
        assert_eq!(
            on(quote!(
                fn echo() {}
            )),
            [message.replace("{}", "a function")]
        );
        assert_eq!(on(quote!(union U { a: u8 })), [message.replace("{}", "a union")]);
        assert_eq!(
            on(quote!(
                trait T {}
            )),
            [message.replace("{}", "a trait")]
        );
        // The item is checked before the arguments.
        assert_eq!(
            errors_on(
                quote!(bogus),
                quote!(
                    enum E {}
                )
            ),
            [message.replace("{}", "an enum")]
        );
    }
}
