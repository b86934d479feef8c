//! The duration format of the DSL: a decimal number followed by a unit.
//!
//! ```text
//! duration = digits [ "." digits ] unit
//! unit     = "us" | "ms" | "s" | "m"
//! ```
//!
//! `"500us"`, `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`. No sign, no spaces, no other
//! units. The value must be a whole number of nanoseconds and at most
//! `u64::MAX` nanoseconds (about 584 years).

/// The units, largest first, with their length in nanoseconds.
pub(crate) const UNITS: &[(&str, u128)] = &[
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
];

/// Valid examples, quoted in error messages and docs.
pub(crate) const EXAMPLES: &str = "\"500us\", \"250ms\", \"2s\", \"1.5s\", \"1m\"";

/// Why a duration string was rejected.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Error {
    /// Not of the form `<number><unit>`.
    Malformed,
    /// Finer than one nanosecond (`"0.0001us"`).
    TooPrecise,
    /// Longer than `u64::MAX` nanoseconds.
    TooLong,
}

/// Parses a duration string into nanoseconds.
pub(crate) fn parse(text: &str) -> Result<u64, Error> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or(Error::Malformed)?;
    let (number, unit) = text.split_at(split);
    let unit_nanos = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, nanos)| *nanos)
        .ok_or(Error::Malformed)?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits_ok(whole)
        || !digits_ok(fraction)
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(Error::Malformed);
    }
    // Exact arithmetic: nanos = (whole + fraction / 10^len) * unit_nanos.
    let mut nanos: u128 = 0;
    for b in whole.bytes() {
        nanos = nanos
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(b - b'0')))
            .filter(|n| *n <= u128::from(u64::MAX))
            .ok_or(Error::TooLong)?;
    }
    nanos *= unit_nanos;
    // The fraction, exactly: f / 10^k of a unit is whole in nanoseconds iff 10^k divides
    // f * unit_nanos. With trailing zeros gone, f ends in a non-zero digit, so that needs
    // k <= 11 for the largest unit (6 * 10^10 ns): longer fractions are always too precise.
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 11 {
        return Err(Error::TooPrecise);
    }
    let numerator = fraction.bytes().fold(0u128, |n, b| n * 10 + u128::from(b - b'0')) * unit_nanos;
    let denominator = 10u128.pow(fraction.len() as u32);
    if numerator % denominator != 0 {
        return Err(Error::TooPrecise);
    }
    nanos += numerator / denominator;
    u64::try_from(nanos).map_err(|_| Error::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples() {
        assert_eq!(parse("500us"), Ok(500_000));
        assert_eq!(parse("250ms"), Ok(250_000_000));
        assert_eq!(parse("2s"), Ok(2_000_000_000));
        assert_eq!(parse("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse("1m"), Ok(60_000_000_000));
        assert_eq!(parse("0s"), Ok(0));
        assert_eq!(parse("0.25ms"), Ok(250_000));
        assert_eq!(parse("1.001us"), Ok(1_001));
        assert_eq!(parse("1.0010us"), Ok(1_001));
    }

    #[test]
    fn malformed() {
        for bad in [
            "", "5", "s", "ms", "5 s", " 5s", "5s ", "-1s", "+1s", "1.s", ".5s", "1..5s", "1.2.3s", "5sec",
            "5h", "5ns", "5S", "1e3ms", "1_000ms", "5µs",
        ] {
            assert_eq!(parse(bad), Err(Error::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn too_precise_or_too_long() {
        assert_eq!(parse("1.0001us"), Err(Error::TooPrecise));
        assert_eq!(parse("18446744073709551616us"), Err(Error::TooLong));
        assert_eq!(
            parse("99999999999999999999999999999999999999999s"),
            Err(Error::TooLong)
        );
        assert_eq!(parse("18446744073s"), Ok(18_446_744_073_000_000_000));
        // Found by fuzzing: eleven fraction digits of a minute can still be whole nanoseconds.
        assert_eq!(parse("0.00000000005m"), Ok(3));
        assert_eq!(parse("300.08300006615m"), Ok(18_004_980_003_969));
        assert_eq!(parse("0.000000000001m"), Err(Error::TooPrecise));
        assert_eq!(parse("1.5000000000000000000000000s"), Ok(1_500_000_000));
        assert_eq!(parse("18446744074s"), Err(Error::TooLong));
    }
}
