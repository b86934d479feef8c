//! Record marking (RFC 5531, section 11): how RPC messages travel over a byte stream.
//!
//! A record is one or more fragments, each preceded by a 4-byte mark: the high bit set on
//! the last fragment, the low 31 bits the fragment's length. [`read_record`] reassembles one
//! record, refusing a record whose announced size passes the maximum before reading or
//! allocating it; [`begin_record`] and [`end_record`] frame a reply in place.

use std::io::{self, Read};
use std::time::{Duration, Instant};

/// The bit of a record mark that flags the last fragment.
pub const LAST_FRAGMENT: u32 = 0x8000_0000;

/// The largest fragment a mark can announce.
pub const MAX_FRAGMENT: usize = 0x7fff_ffff;

/// Bytes read into the record buffer at a time: a fragment announced larger than what
/// arrives costs at most this much memory beyond what did arrive.
const CHUNK: usize = 64 * 1024;

/// How a wait for input turned out, decided by the caller of [`read_record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Keep waiting.
    Continue,
    /// Stop reading: honoured only between records, where it ends the input cleanly.
    Stop,
}

enum Filled {
    All,
    /// End of input after this many bytes.
    Eof(usize),
    Stopped,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Reads exactly `dst.len()` bytes, unless the input ends. A read that times out calls
/// `on_wait(at_boundary, idle)`, `idle` being the time since the last byte arrived.
fn fill<R: Read + ?Sized>(
    r: &mut R,
    dst: &mut [u8],
    boundary: bool,
    on_wait: &mut dyn FnMut(bool, Duration) -> io::Result<Wait>,
) -> io::Result<Filled> {
    let mut got = 0;
    let mut since = None;
    while got < dst.len() {
        match r.read(&mut dst[got..]) {
            Ok(0) => return Ok(Filled::Eof(got)),
            Ok(n) => {
                got += n;
                since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                let idle = since.get_or_insert_with(Instant::now).elapsed();
                let at_boundary = boundary && got == 0;
                if on_wait(at_boundary, idle)? == Wait::Stop && at_boundary {
                    return Ok(Filled::Stopped);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Filled::All)
}

/// Reads one record into `record` (cleared first). Returns `Ok(false)` at a clean end of
/// input (or a [`Wait::Stop`]) between records.
///
/// Errors: `InvalidData` when a mark announces more than `max` bytes in all (nothing of that
/// fragment is read: the caller should close the connection), `UnexpectedEof` when the input
/// ends inside a record, and whatever `on_wait` or the reader return. The memory used is at
/// most `max` plus one chunk of 64 KiB, whatever the marks announce.
pub fn read_record<R: Read + ?Sized>(
    r: &mut R,
    max: usize,
    record: &mut Vec<u8>,
    on_wait: &mut dyn FnMut(bool, Duration) -> io::Result<Wait>,
) -> io::Result<bool> {
    record.clear();
    let mut first = true;
    loop {
        let mut mark = [0u8; 4];
        match fill(r, &mut mark, first, on_wait)? {
            Filled::All => {}
            Filled::Eof(0) if first => return Ok(false),
            Filled::Stopped => return Ok(false),
            Filled::Eof(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a record mark",
                ))
            }
        }
        first = false;
        let mark = u32::from_be_bytes(mark);
        let len = (mark & !LAST_FRAGMENT) as usize;
        let total = record.len().saturating_add(len);
        if total > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "record mark announces a record of {total} bytes, over the maximum record size {max}"
                ),
            ));
        }
        let mut left = len;
        while left > 0 {
            let start = record.len();
            let chunk = left.min(CHUNK);
            record.resize(start + chunk, 0);
            match fill(r, &mut record[start..], false, on_wait)? {
                Filled::All => left -= chunk,
                Filled::Eof(_) | Filled::Stopped => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed inside a record ({left} bytes of a fragment missing)"),
                    ))
                }
            }
        }
        if mark & LAST_FRAGMENT != 0 {
            return Ok(true);
        }
    }
}

/// Starts a record at the end of `out`: reserves its mark. Returns where the record starts,
/// for [`end_record`].
pub fn begin_record(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    start
}

/// Ends the record begun at `start`: writes its mark (one fragment, the last). A record over
/// [`MAX_FRAGMENT`] bytes is an `InvalidInput` error.
pub fn end_record(out: &mut [u8], start: usize) -> io::Result<()> {
    let len = out.len() - start - 4;
    if len > MAX_FRAGMENT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("record of {len} bytes is too long for one fragment"),
        ));
    }
    let mark = LAST_FRAGMENT | len as u32;
    out[start..start + 4].copy_from_slice(&mark.to_be_bytes());
    Ok(())
}

/// Frames `payload` as one record of one fragment.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    let start = begin_record(&mut out);
    out.extend_from_slice(payload);
    // The callers frame small test and client messages.
    let _ = end_record(&mut out, start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_wait(_: bool, _: Duration) -> io::Result<Wait> {
        Ok(Wait::Continue)
    }

    #[test]
    fn multi_fragment_records() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&3u32.to_be_bytes());
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&(LAST_FRAGMENT | 2).to_be_bytes());
        wire.extend_from_slice(b"de");
        wire.extend(frame(b"second"));
        let mut r = &wire[..];
        let mut rec = Vec::new();
        assert!(read_record(&mut r, 100, &mut rec, &mut never_wait).unwrap());
        assert_eq!(rec, b"abcde");
        assert!(read_record(&mut r, 100, &mut rec, &mut never_wait).unwrap());
        assert_eq!(rec, b"second");
        assert!(!read_record(&mut r, 100, &mut rec, &mut never_wait).unwrap());
    }

    #[test]
    fn oversized_and_truncated_records() {
        let mut rec = Vec::new();
        let huge = 0xffff_ffffu32.to_be_bytes();
        let err = read_record(&mut &huge[..], 1 << 20, &mut rec, &mut never_wait).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(rec.capacity() < 1 << 20);
        // Two fragments that pass the maximum together.
        let mut wire = 6u32.to_be_bytes().to_vec();
        wire.extend_from_slice(b"abcdef");
        wire.extend_from_slice(&(LAST_FRAGMENT | 6).to_be_bytes());
        let err = read_record(&mut &wire[..], 10, &mut rec, &mut never_wait).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let half = [0x80, 0, 0, 8, 1, 2];
        let err = read_record(&mut &half[..], 10, &mut rec, &mut never_wait).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = read_record(&mut &half[..2], 10, &mut rec, &mut never_wait).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A reader that times out before every byte.
    struct Stuttering<'a> {
        data: &'a [u8],
        tick: bool,
    }

    impl Read for Stuttering<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.tick = !self.tick;
            if self.tick {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(1).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn timeouts_keep_partial_input_and_stop_only_between_records() {
        let wire = frame(b"xyz");
        let mut r = Stuttering {
            data: &wire,
            tick: false,
        };
        let mut boundaries = 0;
        let mut on_wait = |at_boundary: bool, _: Duration| {
            boundaries += usize::from(at_boundary);
            Ok(Wait::Stop)
        };
        let mut rec = Vec::new();
        // The first wait is at the boundary: stop.
        assert!(!read_record(&mut r, 10, &mut rec, &mut on_wait).unwrap());
        // Once a byte has arrived, a stop is not honoured until the record is whole.
        r.tick = true;
        assert!(read_record(&mut r, 10, &mut rec, &mut on_wait).unwrap());
        assert_eq!(rec, b"xyz");
        assert_eq!(boundaries, 1);
    }
}
