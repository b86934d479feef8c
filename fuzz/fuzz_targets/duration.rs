//! The duration format of the `#[server]` DSL (`sockserve-macros/src/duration.rs`), which
//! depends on nothing but `core`, so it is compiled here on its own.
//!
//! Besides "never panics", compares `parse` with an independent model: the grammar
//! `digits [ "." digits ] unit`, the exact value in nanoseconds computed with big-enough
//! integers, `TooPrecise` for a value that is not a whole number of nanoseconds, `TooLong`
//! above `u64::MAX`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../sockserve-macros/src/duration.rs"]
mod duration;

use duration::Error;

/// The model: exact rational arithmetic on (numerator, power of ten), with saturation far
/// above u64::MAX.
fn model(text: &str) -> Result<u64, Error> {
    let units: [(&str, u128); 4] = [
        ("us", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
    ];
    let split = text
        .bytes()
        .position(|b| !b.is_ascii_digit() && b != b'.')
        .ok_or(Error::Malformed)?;
    let (number, unit) = text.split_at(split);
    let unit = units
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or(Error::Malformed)?
        .1;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(Error::Malformed);
    }
    // Trailing zeros of the fraction change nothing.
    let fraction = fraction.trim_end_matches('0');
    // value = (whole * 10^f + fraction) * unit / 10^f, f = fraction.len().
    // It is a whole number of nanoseconds iff 10^f divides fraction * unit.
    let cap: u128 = 1 << 100;
    let mut numerator: u128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        numerator = (numerator * 10 + u128::from(b - b'0')).min(cap);
    }
    let f = fraction.len();
    // Every unit is c * 10^k with k <= 10 and c in {1, 6}. With its trailing zeros trimmed,
    // a fraction of more than 11 digits times c * 10^k is never a multiple of 10^f (that
    // would need 10^(f-11) to divide the fraction, whose last digit is not 0).
    if f > 11 {
        return Err(Error::TooPrecise);
    }
    let mut fraction_value: u128 = 0;
    for b in fraction.bytes() {
        fraction_value = fraction_value * 10 + u128::from(b - b'0');
    }
    let scale = 10u128.pow(f as u32);
    if !(fraction_value * unit).is_multiple_of(scale) {
        return Err(Error::TooPrecise);
    }
    if numerator >= cap {
        return Err(Error::TooLong);
    }
    let nanos = numerator
        .checked_mul(unit)
        .map(|n| n / scale)
        .unwrap_or(u128::MAX);
    u64::try_from(nanos).map_err(|_| Error::TooLong)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = duration::parse(text);
    let expected = model(text);
    // A value both too precise and too long may be reported either way.
    let both = matches!(
        (&parsed, &expected),
        (Err(Error::TooLong), Err(Error::TooPrecise)) | (Err(Error::TooPrecise), Err(Error::TooLong))
    );
    assert!(
        both || parsed == expected,
        "{text:?}: parse {parsed:?}, model {expected:?}"
    );
});
