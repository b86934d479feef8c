//! The `http_server` example's request-target mapping (`parse_target`) and percent coding.
//!
//! Besides "never panics", checks that:
//! - `percent_decode(percent_encode(x)) == x` for any bytes, and that the encoding uses only
//!   unreserved characters and `%XX`;
//! - a mapped path holds only safe segments (none empty, `.`, `..`, none with `/`, `\` or NUL),
//!   and its canonical form `encoded()` maps back to the same path (a fixed point), so a
//!   redirect to it lands where it says.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../examples/http_server/parse.rs"]
mod parse;

use parse::{parse_target, percent_decode, percent_encode};

fuzz_target!(|data: &[u8]| {
    let encoded = percent_encode(data);
    assert!(encoded
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
    assert_eq!(percent_decode(encoded.as_bytes()).as_deref(), Some(data));

    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = parse_target(target) else {
        return;
    };
    for segment in &path.segments {
        assert!(!segment.is_empty() && segment != b"." && segment != b"..");
        assert!(!segment.iter().any(|&b| b == b'/' || b == b'\\' || b == 0));
    }
    let canonical = path.encoded();
    assert!(canonical.starts_with('/'));
    assert_eq!(
        parse_target(&canonical),
        Ok(path.clone()),
        "canonical form {canonical:?}"
    );
});
