//! The `http_server` example's request-head parser (`read_request`), on arbitrary bytes.
//!
//! Besides "never panics", checks that:
//! - the result does not depend on how the input arrives: a `BufReader` of 1 to 16 bytes
//!   gives the same request (or the same error) and leaves the same bytes unread as the
//!   whole slice does;
//! - a parsed request keeps the promises of the docs: limits respected, method and header
//!   names are tokens, target visible ASCII, header values trimmed and free of controls,
//!   exactly one `Host` for HTTP/1.1, at most one for HTTP/1.0.
#![no_main]

use std::io::{BufReader, Read};

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../examples/http_server/parse.rs"]
mod parse;

use parse::{read_request, Limits, Method, Request, Version};

/// Small limits, so that the fuzzer reaches them with short inputs.
const SMALL: Limits = Limits {
    request_line: 64,
    header_line: 48,
    headers_total: 128,
    max_headers: 4,
};

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn check(request: &Request, limits: &Limits) {
    let method = request.method.to_string();
    assert!(is_token(&method), "method {method:?}");
    if let Method::Other(name) = &request.method {
        assert!(name != "GET" && name != "HEAD");
    }
    assert!(request.target.len() <= limits.request_line);
    assert!(!request.target.is_empty() && request.target.bytes().all(|b| b.is_ascii_graphic()));
    assert!(request.headers.len() <= limits.max_headers);
    let mut total = 0;
    for (name, value) in &request.headers {
        assert!(is_token(name), "header name {name:?}");
        assert!(
            !value.starts_with([' ', '\t']) && !value.ends_with([' ', '\t']),
            "{value:?}"
        );
        assert!(
            !value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f),
            "{value:?}"
        );
        // Values are decoded lossily (a byte that is not UTF-8 becomes U+FFFD, 3 bytes): each
        // char stands for at least one byte of the line, so counting chars stays a lower bound.
        total += name.len() + 1 + value.chars().count();
    }
    assert!(total <= limits.headers_total);
    let hosts = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .count();
    match request.version {
        Version::Http11 => assert_eq!(hosts, 1),
        Version::Http10 => assert!(hosts <= 1),
    }
}

/// The outcome as comparable text (io errors cannot happen on in-memory input).
fn outcome(result: &Result<Request, parse::Error>) -> String {
    match result {
        Ok(request) => format!("{request:?}"),
        Err(e) => format!("error: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let limits = if first & 0x80 != 0 { parse::LIMITS } else { SMALL };

    let mut whole = input;
    let parsed = read_request(&mut whole, &limits);
    if let Ok(request) = &parsed {
        check(request, &limits);
    }

    let capacity = usize::from(first & 0x0f) + 1;
    let mut chunked = BufReader::with_capacity(capacity, input);
    let reparsed = read_request(&mut chunked, &limits);
    assert_eq!(
        outcome(&parsed),
        outcome(&reparsed),
        "with a {capacity}-byte buffer"
    );
    if parsed.is_ok() {
        let mut rest = Vec::new();
        chunked.read_to_end(&mut rest).unwrap();
        assert_eq!(whole, &rest[..], "unread bytes with a {capacity}-byte buffer");
    }
});
