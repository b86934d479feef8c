//! XDR (RFC 4506): the [`Xdr`] trait, its implementations for the XDR primitive types, and
//! the bounded types (`string<N>`, `opaque<N>`, `T<N>`).
//!
//! | XDR | Rust |
//! |---|---|
//! | `int`, `unsigned int` | `i32`, `u32` |
//! | `hyper`, `unsigned hyper` | `i64`, `u64` |
//! | `float`, `double` | `f32`, `f64` |
//! | `bool` | `bool` |
//! | `enum`, `struct`, `union` | `#[derive(Xdr)]` on an enum or struct |
//! | `string<N>`, `string<>` | [`XdrString<N>`], `String` (no maximum) |
//! | `opaque<N>`, `opaque[N]` | [`Opaque<N>`], [`FixedOpaque<N>`] |
//! | `T<N>`, `T<>`, `T[N]` | [`VarArray<T, N>`], `Vec<T>`, `[T; N]` |
//! | `T *` (optional data) | `Option<T>` (or `Option<Box<T>>` for recursive types) |
//! | `void` | `()` |
//!
//! In a derived struct, `#[xdr(max = N)]` bounds a `String` or `Vec<T>` field and
//! `#[xdr(opaque)]` (with or without `max`) makes a `Vec<u8>` field `opaque<N>` and a
//! `[u8; N]` field `opaque[N]`.
//!
//! Decoding never trusts a length from the wire: a count is checked against the declared
//! maximum and the bytes left before anything is allocated.

use std::fmt;

/// Why a value could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XdrError {
    /// The input ended before the value did.
    Truncated {
        /// Bytes the value needs at this point.
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A length or count over the declared maximum (decoding), or a value too long for it
    /// (encoding).
    TooLong {
        /// The length or count.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A `bool` other than 0 or 1.
    InvalidBool(u32),
    /// An enum value or union discriminant that the type does not declare.
    InvalidDiscriminant {
        /// The type.
        type_name: &'static str,
        /// The value on the wire.
        value: i32,
    },
    /// A string that is not UTF-8.
    InvalidUtf8,
}

impl fmt::Display for XdrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdrError::Truncated { needed, remaining } => {
                write!(f, "XDR input truncated: {needed} bytes needed, {remaining} left")
            }
            XdrError::TooLong { len, max } => write!(f, "XDR length {len} over the maximum {max}"),
            XdrError::InvalidBool(v) => write!(f, "XDR bool is {v}, not 0 or 1"),
            XdrError::InvalidDiscriminant { type_name, value } => {
                write!(f, "{value} is not a value of XDR type {type_name}")
            }
            XdrError::InvalidUtf8 => write!(f, "XDR string is not UTF-8"),
        }
    }
}

impl std::error::Error for XdrError {}

/// A reader over XDR-encoded bytes. Every read checks what is left first.
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// The padding after `len` bytes of opaque data or string.
#[inline]
fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// Bytes not read yet.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many bytes have been read.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        if n > self.remaining() {
            return Err(XdrError::Truncated {
                needed: n,
                remaining: self.remaining(),
            });
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// An `unsigned int`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An `int`.
    #[inline]
    pub fn i32(&mut self) -> Result<i32, XdrError> {
        self.u32().map(|v| v as i32)
    }

    /// An `unsigned hyper`.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        let hi = self.u32()?;
        let lo = self.u32()?;
        Ok((u64::from(hi) << 32) | u64::from(lo))
    }

    /// A length or count, checked against `max`.
    #[inline]
    pub fn length(&mut self, max: u32) -> Result<usize, XdrError> {
        let len = self.u32()?;
        if len > max {
            return Err(XdrError::TooLong {
                len: len as usize,
                max: max as usize,
            });
        }
        Ok(len as usize)
    }

    /// Fixed-length opaque data (`opaque[n]`): `n` bytes and their padding.
    pub fn fixed_opaque(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let total = n.checked_add(padding(n)).ok_or(XdrError::Truncated {
            needed: usize::MAX,
            remaining: self.remaining(),
        })?;
        Ok(&self.take(total)?[..n])
    }

    /// Variable-length opaque data (`opaque<max>`).
    pub fn opaque(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        let len = self.length(max)?;
        self.fixed_opaque(len)
    }

    /// A string (`string<max>`), which must be UTF-8.
    pub fn string(&mut self, max: u32) -> Result<&'a str, XdrError> {
        std::str::from_utf8(self.opaque(max)?).map_err(|_| XdrError::InvalidUtf8)
    }

    /// A count of elements of at least `min_size` bytes each, checked against `max` and the
    /// bytes left (so a count from the wire never sizes an allocation on its own). Elements
    /// that take no bytes (`void`, which XDR does not allow in arrays) admit only a count
    /// of 0.
    pub fn count(&mut self, max: u32, min_size: usize) -> Result<usize, XdrError> {
        let n = self.length(max)?;
        if min_size == 0 && n > 0 {
            return Err(XdrError::TooLong { len: n, max: 0 });
        }
        let fits = self.remaining() / min_size.max(1);
        if n > fits {
            return Err(XdrError::Truncated {
                needed: n.saturating_mul(min_size.max(1)),
                remaining: self.remaining(),
            });
        }
        Ok(n)
    }
}

/// Appends `v` as an XDR `unsigned int`.
#[inline]
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a length, checked against `max`.
#[inline]
pub fn put_length(out: &mut Vec<u8>, len: usize, max: u32) -> Result<(), XdrError> {
    match u32::try_from(len) {
        Ok(l) if l <= max => {
            put_u32(out, l);
            Ok(())
        }
        _ => Err(XdrError::TooLong {
            len,
            max: max as usize,
        }),
    }
}

/// Appends fixed-length opaque data and its padding.
#[inline]
pub fn put_fixed_opaque(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.extend_from_slice(&[0; 3][..padding(bytes.len())]);
}

/// Appends variable-length opaque data (or a string), checked against `max`.
#[inline]
pub fn put_opaque(out: &mut Vec<u8>, bytes: &[u8], max: u32) -> Result<(), XdrError> {
    put_length(out, bytes.len(), max)?;
    put_fixed_opaque(out, bytes);
    Ok(())
}

/// A type with an XDR encoding. Derive it with `#[derive(Xdr)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no XDR mapping",
    label = "not an XDR type",
    note = "XDR types: i32, u32, i64, u64, f32, f64, bool, (), String, Vec<T>, [T; N], Option<T>, Box<T>, XdrString<N>, Opaque<N>, FixedOpaque<N>, VarArray<T, N>, and types with #[derive(Xdr)]"
)]
pub trait Xdr: Sized {
    /// The fewest bytes an encoded value takes (bounds counts read from the wire).
    const MIN_SIZE: usize = 4;
    /// Appends the encoding of `self`. Fails only when a value is over a declared maximum.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError>;
    /// Reads one value.
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError>;
}

/// Encodes `value` into a new buffer.
pub fn to_bytes<T: Xdr>(value: &T) -> Result<Vec<u8>, XdrError> {
    let mut out = Vec::new();
    value.encode(&mut out)?;
    Ok(out)
}

/// Decodes one value that must take all of `bytes`.
pub fn from_bytes<T: Xdr>(bytes: &[u8]) -> Result<T, XdrError> {
    let mut input = Decoder::new(bytes);
    let value = T::decode(&mut input)?;
    if input.remaining() != 0 {
        return Err(XdrError::TooLong {
            len: bytes.len(),
            max: input.position(),
        });
    }
    Ok(value)
}

impl Xdr for u32 {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        put_u32(out, *self);
        Ok(())
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        input.u32()
    }
}

impl Xdr for i32 {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        put_u32(out, *self as u32);
        Ok(())
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        input.i32()
    }
}

impl Xdr for u64 {
    const MIN_SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        out.extend_from_slice(&self.to_be_bytes());
        Ok(())
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        input.u64()
    }
}

impl Xdr for i64 {
    const MIN_SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        out.extend_from_slice(&self.to_be_bytes());
        Ok(())
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        input.u64().map(|v| v as i64)
    }
}

impl Xdr for f32 {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        put_u32(out, self.to_bits());
        Ok(())
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        input.u32().map(f32::from_bits)
    }
}

impl Xdr for f64 {
    const MIN_SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        out.extend_from_slice(&self.to_bits().to_be_bytes());
        Ok(())
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        input.u64().map(f64::from_bits)
    }
}

impl Xdr for bool {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        put_u32(out, u32::from(*self));
        Ok(())
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        match input.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(XdrError::InvalidBool(other)),
        }
    }
}

/// `void`.
impl Xdr for () {
    const MIN_SIZE: usize = 0;
    fn encode(&self, _out: &mut Vec<u8>) -> Result<(), XdrError> {
        Ok(())
    }
    fn decode(_input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(())
    }
}

/// `string<>`: a string with no maximum but the 2^32 - 1 bytes XDR allows.
impl Xdr for String {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        put_opaque(out, self.as_bytes(), u32::MAX)
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        input.string(u32::MAX).map(str::to_owned)
    }
}

/// `T<>`: a variable-length array with no maximum.
impl<T: Xdr> Xdr for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        bounded::encode(self, u32::MAX, out)
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        bounded::decode(input, u32::MAX)
    }
}

/// `T[N]`: a fixed-length array.
impl<T: Xdr, const N: usize> Xdr for [T; N] {
    const MIN_SIZE: usize = T::MIN_SIZE.saturating_mul(N);
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        self.iter().try_for_each(|v| v.encode(out))
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        if N.saturating_mul(T::MIN_SIZE) > input.remaining() {
            return Err(XdrError::Truncated {
                needed: N.saturating_mul(T::MIN_SIZE),
                remaining: input.remaining(),
            });
        }
        let mut items = Vec::with_capacity(N);
        for _ in 0..N {
            items.push(T::decode(input)?);
        }
        // The vector holds exactly N items.
        items.try_into().map_err(|_| XdrError::TooLong { len: 0, max: N })
    }
}

/// `T *`: optional data.
impl<T: Xdr> Xdr for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        match self {
            None => false.encode(out),
            Some(v) => {
                true.encode(out)?;
                v.encode(out)
            }
        }
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        if bool::decode(input)? {
            T::decode(input).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl<T: Xdr> Xdr for Box<T> {
    const MIN_SIZE: usize = T::MIN_SIZE;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        (**self).encode(out)
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        T::decode(input).map(Box::new)
    }
}

/// `string<MAX>`: a string of at most `MAX` bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XdrString<const MAX: u32>(pub String);

impl<const MAX: u32> Xdr for XdrString<MAX> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        put_opaque(out, self.0.as_bytes(), MAX)
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        input.string(MAX).map(|s| XdrString(s.to_owned()))
    }
}

impl<const MAX: u32> From<String> for XdrString<MAX> {
    fn from(s: String) -> Self {
        XdrString(s)
    }
}

impl<const MAX: u32> From<&str> for XdrString<MAX> {
    fn from(s: &str) -> Self {
        XdrString(s.to_owned())
    }
}

impl<const MAX: u32> std::ops::Deref for XdrString<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// `opaque<MAX>`: variable-length opaque data of at most `MAX` bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Opaque<const MAX: u32>(pub Vec<u8>);

impl<const MAX: u32> Xdr for Opaque<MAX> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        put_opaque(out, &self.0, MAX)
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        input.opaque(MAX).map(|b| Opaque(b.to_vec()))
    }
}

/// `opaque[N]`: fixed-length opaque data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FixedOpaque<const N: usize>(pub [u8; N]);

impl<const N: usize> Xdr for FixedOpaque<N> {
    const MIN_SIZE: usize = N;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        put_fixed_opaque(out, &self.0);
        Ok(())
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        let bytes = input.fixed_opaque(N)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(FixedOpaque(array))
    }
}

/// `T<MAX>`: a variable-length array of at most `MAX` elements.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VarArray<T, const MAX: u32>(pub Vec<T>);

impl<T: Xdr, const MAX: u32> Xdr for VarArray<T, MAX> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        bounded::encode(&self.0, MAX, out)
    }
    fn decode(input: &mut Decoder<'_>) -> Result<Self, XdrError> {
        bounded::decode(input, MAX).map(VarArray)
    }
}

/// `string<N>` and `T<N>` for `String` and `Vec<T>` fields with `#[xdr(max = N)]` (used by
/// the derived code).
pub mod bounded {
    use super::{put_length, put_opaque, Decoder, Xdr, XdrError};

    /// A type with a length that a maximum bounds.
    pub trait Bounded: Sized {
        /// Appends the value, checking its length against `max`.
        fn encode_max(&self, max: u32, out: &mut Vec<u8>) -> Result<(), XdrError>;
        /// Reads a value of at most `max` length.
        fn decode_max(input: &mut Decoder<'_>, max: u32) -> Result<Self, XdrError>;
    }

    impl Bounded for String {
        fn encode_max(&self, max: u32, out: &mut Vec<u8>) -> Result<(), XdrError> {
            put_opaque(out, self.as_bytes(), max)
        }
        fn decode_max(input: &mut Decoder<'_>, max: u32) -> Result<Self, XdrError> {
            input.string(max).map(str::to_owned)
        }
    }

    impl<T: Xdr> Bounded for Vec<T> {
        fn encode_max(&self, max: u32, out: &mut Vec<u8>) -> Result<(), XdrError> {
            if T::MIN_SIZE == 0 && !self.is_empty() {
                // What decoding would refuse (see `Decoder::count`).
                return Err(XdrError::TooLong {
                    len: self.len(),
                    max: 0,
                });
            }
            put_length(out, self.len(), max)?;
            self.iter().try_for_each(|v| v.encode(out))
        }
        fn decode_max(input: &mut Decoder<'_>, max: u32) -> Result<Self, XdrError> {
            let n = input.count(max, T::MIN_SIZE)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(T::decode(input)?);
            }
            Ok(items)
        }
    }

    /// Encodes `value` with at most `max` bytes or elements.
    pub fn encode<B: Bounded>(value: &B, max: u32, out: &mut Vec<u8>) -> Result<(), XdrError> {
        value.encode_max(max, out)
    }

    /// Decodes a value of at most `max` bytes or elements.
    pub fn decode<B: Bounded>(input: &mut Decoder<'_>, max: u32) -> Result<B, XdrError> {
        B::decode_max(input, max)
    }
}

/// `opaque<N>` and `opaque[N]` for `Vec<u8>` and `[u8; N]` fields with `#[xdr(opaque)]`
/// (used by the derived code).
pub mod opaque {
    use super::{put_fixed_opaque, put_opaque, Decoder, XdrError};

    /// Bytes that encode as opaque data.
    pub trait OpaqueBytes: Sized {
        /// Appends the bytes (with their length when variable), checking `max`.
        fn encode_opaque(&self, max: u32, out: &mut Vec<u8>) -> Result<(), XdrError>;
        /// Reads the bytes, at most `max` when variable.
        fn decode_opaque(input: &mut Decoder<'_>, max: u32) -> Result<Self, XdrError>;
    }

    impl OpaqueBytes for Vec<u8> {
        fn encode_opaque(&self, max: u32, out: &mut Vec<u8>) -> Result<(), XdrError> {
            put_opaque(out, self, max)
        }
        fn decode_opaque(input: &mut Decoder<'_>, max: u32) -> Result<Self, XdrError> {
            input.opaque(max).map(<[u8]>::to_vec)
        }
    }

    impl<const N: usize> OpaqueBytes for [u8; N] {
        fn encode_opaque(&self, _max: u32, out: &mut Vec<u8>) -> Result<(), XdrError> {
            put_fixed_opaque(out, self);
            Ok(())
        }
        fn decode_opaque(input: &mut Decoder<'_>, _max: u32) -> Result<Self, XdrError> {
            let mut array = [0; N];
            array.copy_from_slice(input.fixed_opaque(N)?);
            Ok(array)
        }
    }

    /// Encodes opaque bytes.
    pub fn encode<B: OpaqueBytes>(value: &B, max: u32, out: &mut Vec<u8>) -> Result<(), XdrError> {
        value.encode_opaque(max, out)
    }

    /// Decodes opaque bytes.
    pub fn decode<B: OpaqueBytes>(input: &mut Decoder<'_>, max: u32) -> Result<B, XdrError> {
        B::decode_opaque(input, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        assert_eq!(to_bytes(&-2i32).unwrap(), [0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(to_bytes(&1u64).unwrap(), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(from_bytes::<i64>(&to_bytes(&i64::MIN).unwrap()), Ok(i64::MIN));
        assert_eq!(from_bytes::<bool>(&[0, 0, 0, 2]), Err(XdrError::InvalidBool(2)));
        assert_eq!(from_bytes::<f64>(&to_bytes(&1.5f64).unwrap()), Ok(1.5));
        assert_eq!(
            from_bytes::<u32>(&[0, 0, 1]),
            Err(XdrError::Truncated {
                needed: 4,
                remaining: 3
            })
        );
    }

    #[test]
    fn strings_and_opaque_are_padded_and_bounded() {
        let s = XdrString::<5>::from("hello");
        assert_eq!(to_bytes(&s).unwrap(), b"\0\0\0\x05hello\0\0\0");
        assert_eq!(from_bytes::<XdrString<5>>(b"\0\0\0\x05hello\0\0\0"), Ok(s));
        assert!(matches!(
            to_bytes(&XdrString::<4>::from("hello")),
            Err(XdrError::TooLong { len: 5, max: 4 })
        ));
        assert!(matches!(
            from_bytes::<XdrString<4>>(b"\0\0\0\x05hello\0\0\0"),
            Err(XdrError::TooLong { len: 5, max: 4 })
        ));
        assert_eq!(
            from_bytes::<String>(b"\0\0\0\x02\xff\xfe\0\0"),
            Err(XdrError::InvalidUtf8)
        );
        assert_eq!(
            to_bytes(&FixedOpaque([1, 2, 3, 4, 5])).unwrap(),
            [1, 2, 3, 4, 5, 0, 0, 0]
        );
        assert_eq!(to_bytes(&Opaque::<8>(vec![9])).unwrap(), [0, 0, 0, 1, 9, 0, 0, 0]);
    }

    #[test]
    fn a_huge_count_allocates_nothing() {
        // 4 billion elements announced, none sent.
        let wire = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            from_bytes::<Vec<u64>>(&wire),
            Err(XdrError::Truncated { .. })
        ));
        assert!(matches!(
            from_bytes::<Vec<()>>(&wire),
            Err(XdrError::TooLong { .. })
        ));
        // Elements of no size: only the empty array, both ways (fuzz finding F3).
        assert_eq!(from_bytes::<Vec<()>>(&[0; 4]), Ok(vec![]));
        assert!(from_bytes::<Vec<()>>(&[0, 0, 0, 1, 0, 0, 0, 0]).is_err());
        assert!(to_bytes(&vec![()]).is_err());
        assert!(matches!(
            from_bytes::<String>(&wire),
            Err(XdrError::Truncated { .. })
        ));
        assert!(matches!(
            from_bytes::<VarArray<u32, 3>>(&[0, 0, 0, 4]),
            Err(XdrError::TooLong { len: 4, max: 3 })
        ));
    }

    #[test]
    fn arrays_and_options() {
        let v: Vec<Option<u32>> = vec![Some(7), None];
        let bytes = to_bytes(&v).unwrap();
        assert_eq!(bytes, [0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0]);
        assert_eq!(from_bytes::<Vec<Option<u32>>>(&bytes), Ok(v));
        let a = [1u32, 2, 3];
        assert_eq!(from_bytes::<[u32; 3]>(&to_bytes(&a).unwrap()), Ok(a));
        assert!(from_bytes::<[u32; 3]>(&[0; 8]).is_err());
    }
}
