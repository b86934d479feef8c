//! Record-mark reassembly (`read_record` of `sockserve-rpc/src/record.rs`, compiled by path)
//! on arbitrary bytes, maximums and arrival patterns.
//!
//! - the records read equal those of an independent model that parses the whole input at
//!   once (same records, same error kind where it stops, nothing read past a refused mark);
//! - the result does not depend on how the input arrives: reads of 1 to 16 bytes with
//!   timeouts in between give the same records;
//! - no record exceeds the maximum, and the buffer never grows past it plus one chunk.
#![no_main]

use std::io::{self, Read};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../sockserve-rpc/src/record.rs"]
mod record;

use record::{read_record, Wait, LAST_FRAGMENT};

#[derive(Debug, PartialEq)]
enum End {
    Clean,
    TooLong,
    Truncated,
}

/// The model: split the whole input into records.
fn model(input: &[u8], max: usize) -> (Vec<Vec<u8>>, End) {
    let mut records = Vec::new();
    let mut pos = 0;
    let mut current: Option<Vec<u8>> = None;
    loop {
        if pos == input.len() {
            return (records, if current.is_some() { End::Truncated } else { End::Clean });
        }
        if input.len() - pos < 4 {
            return (records, End::Truncated);
        }
        let mark = u32::from_be_bytes(input[pos..pos + 4].try_into().unwrap());
        pos += 4;
        let len = (mark & !LAST_FRAGMENT) as usize;
        let rec = current.get_or_insert_with(Vec::new);
        if rec.len() + len > max {
            return (records, End::TooLong);
        }
        if input.len() - pos < len {
            return (records, End::Truncated);
        }
        rec.extend_from_slice(&input[pos..pos + len]);
        pos += len;
        if mark & LAST_FRAGMENT != 0 {
            records.push(current.take().unwrap());
        }
    }
}

/// A reader that hands out the input in pieces following `pattern`, timing out in between
/// (never twice in a row, so reading always progresses).
struct Pieces<'a> {
    data: &'a [u8],
    pattern: &'a [u8],
    step: usize,
    timed_out: bool,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let p = self.pattern.get(self.step % self.pattern.len().max(1)).copied().unwrap_or(0);
        self.step += 1;
        if p & 0x80 != 0 && !self.timed_out {
            self.timed_out = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.timed_out = false;
        let n = buf.len().min(usize::from(p & 0x0f) + 1).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn run<R: Read>(mut r: R, max: usize, limit: usize) -> (Vec<Vec<u8>>, End) {
    let mut records = Vec::new();
    let mut buf = Vec::new();
    let mut on_wait = |_: bool, _: Duration| Ok(Wait::Continue);
    for _ in 0..limit {
        match read_record(&mut r, max, &mut buf, &mut on_wait) {
            Ok(true) => {
                assert!(buf.len() <= max);
                assert!(buf.capacity() <= (max + 64 * 1024).max(64 * 1024) * 2);
                records.push(buf.clone());
            }
            Ok(false) => return (records, End::Clean),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return (records, End::TooLong),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (records, End::Truncated),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    panic!("more than {limit} records");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let pattern_len = usize::from(data[2] & 0x0f).min(data.len() - 3);
    let (pattern, input) = data[3..].split_at(pattern_len);
    let limit = input.len() / 4 + 2;
    let expected = model(input, max);
    assert_eq!(run(input, max, limit), expected);
    let pieces = Pieces {
        data: input,
        pattern,
        step: 0,
        timed_out: false,
    };
    assert_eq!(run(pieces, max, limit), expected);
});
