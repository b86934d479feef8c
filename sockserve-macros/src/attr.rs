//! Parses the arguments of `#[server(...)]` into a list of [`Arg`]s.
//!
//! This step is purely syntactic: it accepts any comma-separated list of bare
//! words and `key = value` pairs. Deciding which word is a transport, which key
//! exists and whether a value fits is the job of `valid.rs`, which reports every
//! problem at once.

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, Token, UnOp};

/// The arguments of one `#[server(...)]` attribute, in source order.
pub(crate) struct Args {
    pub args: Vec<Arg>,
}

/// One comma-separated argument.
pub(crate) enum Arg {
    /// A bare word: a transport or a concurrency model (`tcp`, `threading`).
    Word(Ident),
    /// `key = value`.
    Option(Box<OptionArg>),
}

/// `key = value`.
pub(crate) struct OptionArg {
    pub key: Ident,
    /// The value as written, for error spans covering all of it.
    pub expr: Expr,
    /// The value, classified.
    pub value: Value,
}

/// The value of an option, as written.
pub(crate) enum Value {
    /// A literal: `true`, `40`, `0o660`, `"250ms"`, `1.5`.
    Lit(Lit),
    /// A negated literal: `-1`.
    Neg(Lit),
    /// Anything else (a path, a call, a block, ...).
    Other,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let args = Punctuated::<Arg, Token![,]>::parse_terminated(input)?;
        Ok(Args {
            args: args.into_iter().collect(),
        })
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if !input.peek(Ident::peek_any) {
            return Err(input.error(
                "expected a transport (`tcp`, `udp`, `unix_stream`, `unix_datagram`), \
                 a concurrency model (`sync`, `threading`, `forking`) or `key = value`, \
                 like `#[server(tcp, threading, timeout = \"5s\")]`",
            ));
        }
        let word = Ident::parse_any(input)?;
        if !input.peek(Token![=]) {
            return Ok(Arg::Word(word));
        }
        input.parse::<Token![=]>()?;
        let expr = input.parse::<Expr>()?;
        Ok(Arg::Option(Box::new(OptionArg {
            key: word,
            value: Value::classify(&expr),
            expr,
        })))
    }
}

impl Value {
    fn classify(expr: &Expr) -> Value {
        match expr {
            Expr::Lit(ExprLit { lit, attrs }) if attrs.is_empty() => Value::Lit(lit.clone()),
            Expr::Unary(ExprUnary {
                op: UnOp::Neg(_),
                expr: inner,
                attrs,
            }) if attrs.is_empty() => match &**inner {
                Expr::Lit(ExprLit { lit, attrs }) if attrs.is_empty() => Value::Neg(lit.clone()),
                _ => Value::Other,
            },
            _ => Value::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
        syn::parse2(tokens)
    }

    #[test]
    fn words_and_options_in_order() {
        let args = parse(quote!(tcp, threading, timeout = "5s", max_threads = 4,)).unwrap();
        assert_eq!(args.args.len(), 4);
        assert!(matches!(&args.args[0], Arg::Word(w) if w == "tcp"));
        assert!(matches!(&args.args[1], Arg::Word(w) if w == "threading"));
        assert!(matches!(&args.args[2], Arg::Option(o) if o.key == "timeout"
            && matches!(&o.value, Value::Lit(Lit::Str(s)) if s.value() == "5s")));
        assert!(matches!(&args.args[3], Arg::Option(o) if o.key == "max_threads"));
    }

    #[test]
    fn empty_is_fine_here() {
        assert!(parse(quote!()).unwrap().args.is_empty());
    }

    #[test]
    fn negative_and_other_values() {
        let args = parse(quote!(max_children = -1, timeout = SOME_CONST)).unwrap();
        assert!(matches!(&args.args[0], Arg::Option(o) if matches!(o.value, Value::Neg(..))));
        assert!(matches!(&args.args[1], Arg::Option(o) if matches!(o.value, Value::Other)));
    }

    #[test]
    fn keywords_are_words() {
        // `type` is not a transport, but it must reach validation to get a good message.
        let args = parse(quote!(type)).unwrap();
        assert!(matches!(&args.args[0], Arg::Word(w) if w == "type"));
    }

    #[test]
    fn a_literal_in_word_position_is_a_syntax_error() {
        let err = parse(quote!("tcp")).err().unwrap();
        assert!(err.to_string().starts_with("expected a transport"));
    }
}
