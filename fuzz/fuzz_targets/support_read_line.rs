//! The bounded line reader of the example gallery (`read_line` of `examples/support/lines.rs`,
//! which every line-protocol example uses through `support` and `http_server`'s parser
//! directly), on arbitrary bytes and limits.
//!
//! Reading the whole input line by line must:
//! - give back exactly the input, in order (nothing lost, nothing repeated);
//! - never hold more than `max` bytes in a line; a `TooLong` line holds exactly `max` bytes
//!   and no newline; a `Complete` line ends in its only newline, except the last one of an
//!   input that does not end in a newline;
//! - not depend on how the input arrives (a `BufReader` of 1 to 8 bytes gives the same lines).
#![no_main]

use std::io::{BufRead, BufReader};

use libfuzzer_sys::fuzz_target;

#[path = "../../examples/support/lines.rs"]
mod reader;

use reader::{read_line, Line};

fn lines<R: BufRead>(mut r: R, max: usize, limit: usize) -> Vec<(Line, Vec<u8>)> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    // Each call consumes at least one byte until end of input: `limit` calls are enough.
    for _ in 0..limit {
        match read_line(&mut r, max, &mut line).expect("in-memory input") {
            Line::Eof => return out,
            kind => out.push((kind, line.clone())),
        }
    }
    panic!("no end of input after {limit} lines");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let max = usize::from(first & 0x1f) + 1;
    let limit = input.len() + 2;
    let whole = lines(input, max, limit);

    let mut joined = Vec::new();
    for (i, (kind, line)) in whole.iter().enumerate() {
        assert!(
            !line.is_empty() && line.len() <= max,
            "{kind:?} {line:?} max {max}"
        );
        let newlines = line.iter().filter(|&&b| b == b'\n').count();
        match kind {
            Line::TooLong => assert!(line.len() == max && newlines == 0),
            Line::Complete if line.ends_with(b"\n") => assert_eq!(newlines, 1),
            Line::Complete => assert!(newlines == 0 && i == whole.len() - 1),
            Line::Eof => unreachable!(),
        }
        joined.extend_from_slice(line);
    }
    assert_eq!(joined, input);

    let capacity = usize::from(first >> 5) + 1;
    let chunked = lines(BufReader::with_capacity(capacity, input), max, limit);
    assert_eq!(whole, chunked, "with a {capacity}-byte buffer");
});
