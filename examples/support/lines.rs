//! The bounded line reader of the example gallery: the line-protocol examples read their
//! requests with it (through `support`), and `http_server`'s parser reads the request head with
//! it (through `#[path = "../support/lines.rs"]`).
//!
//! It depends on `std` only, so that the parser, which fuzz targets include by path, stays
//! free of sockserve and of `support`'s other dependencies.

use std::io::{self, BufRead};

/// The outcome of [`read_line`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, ending in `\n` unless the input ended without one.
    Complete,
    /// End of input, nothing read.
    Eof,
    /// More than the limit without a newline; the bytes read so far are in the buffer.
    TooLong,
}

/// Reads one line (up to and including `\n`) into `line`, at most `max` bytes: never buffers
/// more than that, whatever the client sends.
pub fn read_line<R: BufRead + ?Sized>(r: &mut R, max: usize, line: &mut Vec<u8>) -> io::Result<Line> {
    line.clear();
    loop {
        let available = match r.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if line.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let room = max - line.len();
        let window = &available[..available.len().min(room)];
        if let Some(end) = window.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&window[..=end]);
            r.consume(end + 1);
            return Ok(Line::Complete);
        }
        let taken = window.len();
        line.extend_from_slice(window);
        r.consume(taken);
        if line.len() >= max {
            return Ok(Line::TooLong);
        }
    }
}
