//! HTTP/1.x request parsing for the `http_server` example.
//!
//! This module depends on `std` only (no sockserve), so a fuzz target can include it with
//! `#[path = ".../examples/http_server/parse.rs"] mod parse;` and feed it arbitrary bytes:
//! `read_request(&mut &data[..], &LIMITS)` and `parse_target(..)` never panic, whatever the input.
//! Its lines are read with the gallery's bounded line reader, `../support/lines.rs`, which
//! depends on `std` only too.
//!
//! What it accepts (RFC 9112, strictly where it matters for safety):
//! - request line `METHOD SP request-target SP HTTP/x.y`, ending in CRLF or a bare LF; up to 8
//!   empty lines before it are skipped;
//! - a request line longer than [`Limits::request_line`] is [`Error::UriTooLong`] (414);
//! - header lines `name: value`, at most [`Limits::max_headers`] of them, each at most
//!   [`Limits::header_line`] bytes and all together at most [`Limits::headers_total`] bytes,
//!   otherwise [`Error::HeadersTooLarge`] (431);
//! - `HTTP/1.0` and `HTTP/1.x`; `HTTP/2.0` and above is [`Error::VersionNotSupported`] (505);
//! - HTTP/1.1 requests must carry exactly one `Host` header (RFC 9112 section 3.2), else 400;
//! - obsolete line folding, control characters and malformed tokens are [`Error::BadRequest`].
//!
//! Reads are bounded: the reader never buffers more than the limits above, whatever the peer
//! sends. The body of a request is not read here: [`Request::framing`] says how it is
//! delimited, and [`Request::keep_alive`] whether the client asks for the connection to stay
//! open after the response; the server decides what to do with both.

use std::fmt;
use std::io::{self, BufRead};

// The gallery's bounded line reader, `std` only as this module.
#[path = "../support/lines.rs"]
mod lines;

/// Size limits applied while reading a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, in bytes, without its line ending (longer: 414).
    pub request_line: usize,
    /// Longest header line, in bytes, without its line ending (longer: 431).
    pub header_line: usize,
    /// Most bytes in all header lines together (more: 431).
    pub headers_total: usize,
    /// Most header lines (more: 431).
    pub max_headers: usize,
}

/// The limits the example server uses.
pub const LIMITS: Limits = Limits {
    request_line: 8190,
    header_line: 8190,
    headers_total: 65_536,
    max_headers: 100,
};

/// Empty lines tolerated before the request line.
const MAX_LEADING_EMPTY_LINES: usize = 8;

/// The request method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Any other syntactically valid method (answered with 501).
    Other(String),
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Get => f.write_str("GET"),
            Method::Head => f.write_str("HEAD"),
            Method::Other(name) => f.write_str(name),
        }
    }
}

/// The protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    /// `HTTP/1.1` and any later `HTTP/1.x`.
    Http11,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        })
    }
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target exactly as sent (visible ASCII only).
    pub target: String,
    pub version: Version,
    /// Header names as sent, values with surrounding whitespace removed.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The comma-separated elements of every header named `name`, trimmed, empty ones left
    /// out (RFC 9110 section 5.6.1).
    fn list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(|element| element.trim_matches([' ', '\t']))
            .filter(|element| !element.is_empty())
    }

    /// Whether the client asks for the connection to stay open after the response (RFC 9112
    /// section 9.3): HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive` (and no `close`).
    pub fn keep_alive(&self) -> bool {
        let has = |option: &str| self.list("connection").any(|o| o.eq_ignore_ascii_case(option));
        match self.version {
            Version::Http11 => !has("close"),
            Version::Http10 => has("keep-alive") && !has("close"),
        }
    }

    /// How the request's body is delimited (RFC 9112 section 6.3), so that the next request on
    /// the connection can be found after it.
    pub fn framing(&self) -> Framing {
        if self.header("transfer-encoding").is_some() {
            return Framing::Encoded;
        }
        let mut length = None;
        for element in self.list("content-length") {
            let parsed = match element.bytes().all(|b| b.is_ascii_digit()) {
                true => element.parse::<u64>().ok(),
                false => None,
            };
            match (parsed, length) {
                (None, _) => return Framing::Invalid,
                (Some(n), Some(seen)) if n != seen => return Framing::Invalid,
                (Some(n), _) => length = Some(n),
            }
        }
        if length.is_none() && self.header("content-length").is_some() {
            // Present, but only empty elements.
            return Framing::Invalid;
        }
        match length {
            None | Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
        }
    }
}

/// How a request's body is delimited: [`Request::framing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (no `Content-Length`, or `Content-Length: 0`).
    None,
    /// `Content-Length`: this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding` (chunked, say): the body ends where its encoding says, which only
    /// decoding it finds.
    Encoded,
    /// A `Content-Length` that is not one decimal number (or several that disagree): the
    /// message's framing is invalid, and the request is answered with 400.
    Invalid,
}

/// Why no request could be read.
#[derive(Debug)]
pub enum Error {
    /// The connection ended before the first byte of a request: nothing to answer.
    Closed,
    /// Reading failed (timeout, reset, ...): nothing sensible to answer.
    Io(io::Error),
    /// The request is malformed (400); the text says why.
    BadRequest(&'static str),
    /// The request line is too long (414).
    UriTooLong,
    /// The header section is too large (431).
    HeadersTooLarge,
    /// An HTTP major version other than 1 (505).
    VersionNotSupported,
}

impl Error {
    /// The status code and reason phrase to answer with, if any.
    pub fn status(&self) -> Option<(u16, &'static str)> {
        match self {
            Error::Closed | Error::Io(_) => None,
            Error::BadRequest(_) => Some((400, "Bad Request")),
            Error::UriTooLong => Some((414, "URI Too Long")),
            Error::HeadersTooLarge => Some((431, "Request Header Fields Too Large")),
            Error::VersionNotSupported => Some((505, "HTTP Version Not Supported")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("connection closed before a request"),
            Error::Io(e) => write!(f, "read error: {e}"),
            Error::BadRequest(why) => write!(f, "bad request: {why}"),
            Error::UriTooLong => f.write_str("request line too long"),
            Error::HeadersTooLarge => f.write_str("request header fields too large"),
            Error::VersionNotSupported => f.write_str("HTTP version not supported"),
        }
    }
}

impl std::error::Error for Error {}

/// The outcome of reading one line.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A whole line; the buffer holds it without its line ending.
    Complete,
    /// End of input with no byte read.
    Eof,
    /// End of input in the middle of a line.
    Truncated,
    /// The line is longer than allowed; reading stopped at the limit.
    TooLong,
}

/// Reads one line ending in LF (an optional CR before it is removed) into `line`, holding at
/// most `max` bytes of content. Never reads past the limit, so never buffers unbounded input.
fn read_line<R: BufRead + ?Sized>(r: &mut R, max: usize, line: &mut Vec<u8>) -> io::Result<Line> {
    // Room for the content plus CR LF.
    Ok(match lines::read_line(r, max.saturating_add(2), line)? {
        lines::Line::Eof => Line::Eof,
        lines::Line::TooLong => Line::TooLong,
        lines::Line::Complete if line.last() != Some(&b'\n') => Line::Truncated,
        lines::Line::Complete => {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > max {
                Line::TooLong
            } else {
                Line::Complete
            }
        }
    })
}

/// `tchar` of RFC 9110 section 5.6.2: the characters of a method or a header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Reads and validates a request head (request line and headers) from `r`.
///
/// Consumes exactly the head: whatever follows the empty line stays in `r`.
pub fn read_request<R: BufRead + ?Sized>(r: &mut R, limits: &Limits) -> Result<Request, Error> {
    let mut line = Vec::new();
    let mut empty_lines = 0;
    loop {
        match read_line(r, limits.request_line, &mut line).map_err(Error::Io)? {
            Line::Complete if line.is_empty() => {
                empty_lines += 1;
                if empty_lines > MAX_LEADING_EMPTY_LINES {
                    return Err(Error::BadRequest("no request line"));
                }
            }
            Line::Complete => break,
            Line::Eof if empty_lines == 0 => return Err(Error::Closed),
            Line::Eof | Line::Truncated => return Err(Error::BadRequest("incomplete request line")),
            Line::TooLong => return Err(Error::UriTooLong),
        }
    }
    let (method, target, version) = parse_request_line(&line)?;

    let mut headers = Vec::new();
    let mut total = 0usize;
    loop {
        match read_line(r, limits.header_line, &mut line).map_err(Error::Io)? {
            Line::Complete if line.is_empty() => break,
            Line::Complete => {}
            Line::Eof | Line::Truncated => return Err(Error::BadRequest("incomplete headers")),
            Line::TooLong => return Err(Error::HeadersTooLarge),
        }
        total = total.saturating_add(line.len());
        if headers.len() >= limits.max_headers || total > limits.headers_total {
            return Err(Error::HeadersTooLarge);
        }
        headers.push(parse_header(&line)?);
    }

    let request = Request {
        method,
        target,
        version,
        headers,
    };
    let hosts = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 {
        return Err(Error::BadRequest("more than one Host header"));
    }
    if hosts == 0 && request.version == Version::Http11 {
        return Err(Error::BadRequest("HTTP/1.1 request without a Host header"));
    }
    Ok(request)
}

fn parse_request_line(line: &[u8]) -> Result<(Method, String, Version), Error> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::BadRequest("request line is not `METHOD target HTTP/x.y`"));
    };
    if !is_token(method) {
        return Err(Error::BadRequest("malformed method"));
    }
    if target.is_empty() || !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Error::BadRequest("malformed request target"));
    }
    let version = parse_version(version)?;
    // Both are ASCII, checked above.
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();
    let method = match method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other(method),
    };
    Ok((method, target, version))
}

fn parse_version(v: &[u8]) -> Result<Version, Error> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            match (major, minor) {
                (b'1', b'0') => Ok(Version::Http10),
                (b'1', _) => Ok(Version::Http11),
                (b'0', _) => Err(Error::BadRequest("unsupported HTTP version")),
                _ => Err(Error::VersionNotSupported),
            }
        }
        _ => Err(Error::BadRequest("malformed HTTP version")),
    }
}

fn parse_header(line: &[u8]) -> Result<(String, String), Error> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(Error::BadRequest("obsolete header line folding"));
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(Error::BadRequest("header line without a colon"));
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) {
        return Err(Error::BadRequest("malformed header name"));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Error::BadRequest("control character in a header value"));
    }
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(&value[start..end]).into_owned(),
    ))
}

/// A request target reduced to safe, decoded path segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPath {
    /// Decoded segments; none is empty, `.`, `..`, or holds `/`, `\` or NUL.
    pub segments: Vec<Vec<u8>>,
    /// Whether the path ends in `/` (the root `/` counts as ending in `/`).
    pub trailing_slash: bool,
}

impl UrlPath {
    /// The canonical, percent-encoded form of this path (always starts with `/`).
    pub fn encoded(&self) -> String {
        let mut out = String::from("/");
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&percent_encode(segment));
        }
        if self.trailing_slash && !self.segments.is_empty() {
            out.push('/');
        }
        out
    }
}

/// Why a request target cannot be mapped to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Syntax error: not origin-form, or bad percent-encoding (400).
    Malformed,
    /// Syntactically fine but refused: `..`, an encoded `/`, a backslash or NUL (403).
    Forbidden,
}

/// Maps a request target to decoded path segments.
///
/// Accepts origin-form (`/a/b?q`) and absolute-form (`http://host/a/b`); drops the query and
/// fragment; percent-decodes each segment separately, so `%2f` never becomes a separator.
/// Empty segments and `.` are skipped; `..` (however encoded), a decoded `/` or `\` and NUL are
/// [`PathError::Forbidden`].
pub fn parse_target(target: &str) -> Result<UrlPath, PathError> {
    let mut path = target;
    for scheme in ["http://", "https://"] {
        if path.len() >= scheme.len()
            && path.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            let rest = &path[scheme.len()..];
            path = rest.find('/').map_or("/", |i| &rest[i..]);
            break;
        }
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    if !path.starts_with('/') {
        return Err(PathError::Malformed);
    }
    let mut segments = Vec::new();
    for raw in path.split('/') {
        let segment = percent_decode(raw.as_bytes()).ok_or(PathError::Malformed)?;
        if segment.iter().any(|&b| b == b'/' || b == b'\\' || b == 0) {
            return Err(PathError::Forbidden);
        }
        match segment.as_slice() {
            b"" | b"." => {}
            b".." => return Err(PathError::Forbidden),
            _ => segments.push(segment),
        }
    }
    // The root is a directory named with its slash, however it was written (`/.`, `/%2e`).
    let trailing_slash = path.ends_with('/') || segments.is_empty();
    Ok(UrlPath {
        segments,
        trailing_slash,
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; `None` if a `%` is not followed by two hex digits.
pub fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = hex_value(*input.get(i + 1)?)?;
            let lo = hex_value(*input.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Encodes one path segment: everything but RFC 3986 unreserved characters becomes `%XX`.
pub fn percent_encode(segment: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(segment.len());
    for &b in segment {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Request, Error> {
        read_request(&mut &input[..], &LIMITS)
    }

    fn status(input: &[u8]) -> Option<u16> {
        parse(input).err().and_then(|e| e.status()).map(|(code, _)| code)
    }

    #[test]
    fn simple_get() {
        let r = parse(b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nAccept:  */* \r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, "/a/b?x=1");
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.header("host"), Some("h"));
        assert_eq!(r.header("ACCEPT"), Some("*/*"));
    }

    #[test]
    fn bare_lf_and_http10_without_host() {
        let r = parse(b"HEAD / HTTP/1.0\n\n").unwrap();
        assert_eq!(r.method, Method::Head);
        assert_eq!(r.version, Version::Http10);
        assert!(r.headers.is_empty());
    }

    #[test]
    fn leading_empty_lines_are_skipped_but_bounded() {
        assert!(parse(b"\r\n\r\nGET / HTTP/1.0\r\n\r\n").is_ok());
        assert_eq!(status(&b"\r\n".repeat(20)), Some(400));
    }

    #[test]
    fn head_stops_at_the_empty_line() {
        let mut input = &b"GET / HTTP/1.0\r\n\r\nBODY"[..];
        read_request(&mut input, &LIMITS).unwrap();
        assert_eq!(input, b"BODY");
    }

    #[test]
    fn keep_alive_by_version_and_connection_header() {
        let keep = |head: &[u8]| parse(head).unwrap().keep_alive();
        assert!(keep(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
        assert!(!keep(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n"
        ));
        assert!(!keep(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: te\r\nConnection: close\r\n\r\n"
        ));
        assert!(keep(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(keep(b"GET / HTTP/1.0\r\nConnection: foo,  keep-alive \r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
    }

    #[test]
    fn framing_of_the_body() {
        let framing = |headers: &str| {
            parse(format!("GET / HTTP/1.1\r\nHost: h\r\n{headers}\r\n").as_bytes())
                .unwrap()
                .framing()
        };
        assert_eq!(framing(""), Framing::None);
        assert_eq!(framing("Content-Length: 0\r\n"), Framing::None);
        assert_eq!(framing("Content-Length: 12\r\n"), Framing::Length(12));
        assert_eq!(
            framing("content-length: 5, 5\r\nContent-Length: 5\r\n"),
            Framing::Length(5)
        );
        assert_eq!(framing("Transfer-Encoding: chunked\r\n"), Framing::Encoded);
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            Framing::Encoded,
            "Transfer-Encoding overrides Content-Length"
        );
        assert_eq!(framing("Transfer-Encoding:\r\n"), Framing::Encoded);
        for bad in [
            "-1",
            "+3",
            "1 2",
            "0x10",
            "3, 4",
            "",
            ",",
            "99999999999999999999999",
        ] {
            assert_eq!(
                framing(&format!("Content-Length: {bad}\r\n")),
                Framing::Invalid,
                "{bad:?}"
            );
        }
        assert_eq!(
            framing("Content-Length: 3\r\nContent-Length: 4\r\n"),
            Framing::Invalid
        );
    }

    #[test]
    fn other_methods_parse_for_501() {
        let r = parse(b"DELETE /x HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Other("DELETE".into()));
    }

    #[test]
    fn closed_and_incomplete() {
        assert!(matches!(parse(b""), Err(Error::Closed)));
        assert_eq!(status(b"GET / HTTP/1.0"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: x\r\n"), Some(400));
    }

    #[test]
    fn malformed_request_lines() {
        for line in [
            &b"GET /\r\n\r\n"[..],
            b"GET  / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.0 x\r\n\r\n",
            b"G(T / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1\r\n\r\n",
            b"GET / http/1.0\r\n\r\n",
            b"GET / HTTP/0.9\r\n\r\n",
            b"GET /\xff HTTP/1.0\r\n\r\n",
            b"GET /\x00 HTTP/1.0\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            assert_eq!(status(line), Some(400), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn versions() {
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), Some(505));
        assert_eq!(status(b"GET / HTTP/9.9\r\n\r\n"), Some(505));
        let r = parse(b"GET / HTTP/1.7\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(r.version, Version::Http11);
    }

    #[test]
    fn host_rules() {
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"), Some(400));
    }

    #[test]
    fn malformed_headers() {
        for head in [
            &b"GET / HTTP/1.0\r\nNoColon\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.0\r\n: x\r\n\r\n",
            b"GET / HTTP/1.0\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.0\r\nA: b\x00c\r\n\r\n",
            b"GET / HTTP/1.0\r\nA: b\rc\r\n\r\n",
        ] {
            assert_eq!(status(head), Some(400), "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn limits() {
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', LIMITS.request_line));
        long.extend(b" HTTP/1.0\r\n\r\n");
        assert_eq!(status(&long), Some(414));

        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', LIMITS.request_line - 14));
        line.extend(b" HTTP/1.0\r\n\r\n");
        assert!(
            parse(&line).is_ok(),
            "a request line of exactly the limit is fine"
        );

        let mut big = b"GET / HTTP/1.0\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'v', LIMITS.header_line));
        big.extend(b"\r\n\r\n");
        assert_eq!(status(&big), Some(431));

        let mut many = b"GET / HTTP/1.0\r\n".to_vec();
        for i in 0..=LIMITS.max_headers {
            many.extend(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(status(&many), Some(431));

        let mut total = b"GET / HTTP/1.0\r\n".to_vec();
        let value = "v".repeat(LIMITS.header_line - 10);
        for i in 0..(LIMITS.headers_total / value.len() + 1) {
            total.extend(format!("X-{i:03}: {value}\r\n").as_bytes());
        }
        total.extend(b"\r\n");
        assert_eq!(status(&total), Some(431));
    }

    /// A reader that hands out one byte at a time and counts what it gave.
    struct Trickle<'a> {
        data: &'a [u8],
        given: usize,
    }

    impl io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.fill_buf()?.len().min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Trickle<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            Ok(&self.data[..self.data.len().min(1)])
        }
        fn consume(&mut self, n: usize) {
            self.data = &self.data[n..];
            self.given += n;
        }
    }

    #[test]
    fn reads_are_bounded() {
        let endless = vec![b'a'; 10 * LIMITS.request_line];
        let mut r = Trickle {
            data: &endless,
            given: 0,
        };
        assert!(matches!(read_request(&mut r, &LIMITS), Err(Error::UriTooLong)));
        assert!(r.given <= LIMITS.request_line + 2);

        let mut head = b"GET / HTTP/1.0\r\nX: ".to_vec();
        head.extend(vec![b'v'; 10 * LIMITS.header_line]);
        let mut r = Trickle {
            data: &head,
            given: 0,
        };
        assert!(matches!(
            read_request(&mut r, &LIMITS),
            Err(Error::HeadersTooLarge)
        ));
        assert!(r.given <= 16 + LIMITS.header_line + 2);
    }

    #[test]
    fn targets() {
        let p = parse_target("/a/b%20c/?q=1#f").unwrap();
        assert_eq!(p.segments, vec![b"a".to_vec(), b"b c".to_vec()]);
        assert!(p.trailing_slash);
        assert_eq!(p.encoded(), "/a/b%20c/");

        let root = parse_target("/").unwrap();
        assert!(root.segments.is_empty());
        assert!(root.trailing_slash);
        assert_eq!(root.encoded(), "/");
        // Found by fuzzing: these named the root without its slash, and the server answered
        // `301 Location: //`.
        for dotted in ["/.", "/%2e", "/./.", "/%2E/"] {
            assert_eq!(parse_target(dotted), Ok(root.clone()), "{dotted}");
        }

        let p = parse_target("//a//./b").unwrap();
        assert_eq!(p.segments, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(!p.trailing_slash);
        assert_eq!(p.encoded(), "/a/b", "never a protocol-relative `//host` path");

        let p = parse_target("HTTP://example.invalid/x").unwrap();
        assert_eq!(p.segments, vec![b"x".to_vec()]);
        assert!(parse_target("http://example.invalid")
            .unwrap()
            .segments
            .is_empty());
    }

    #[test]
    fn malformed_targets() {
        for t in ["*", "a/b", "", "/%", "/%4", "/%zz", "/a%g0"] {
            assert_eq!(parse_target(t), Err(PathError::Malformed), "{t}");
        }
    }

    #[test]
    fn traversal_is_forbidden() {
        for t in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/etc/passwd",
            "/%2E%2e",
            "/.%2e/x",
            "/a%2f..%2fb",
            "/a%2Fb",
            "/..%5c..%5cwindows",
            "/a\\..\\b",
            "/a%00b",
            "/a%5cb",
        ] {
            assert_eq!(parse_target(t), Err(PathError::Forbidden), "{t}");
        }
    }

    #[test]
    fn percent_roundtrip() {
        let all: Vec<u8> = (0..=255).collect();
        let encoded = percent_encode(&all);
        assert!(encoded.bytes().all(|b| b.is_ascii_graphic() && b != b'/'));
        assert_eq!(percent_decode(encoded.as_bytes()).unwrap(), all);
        assert_eq!(percent_encode(b"a b&c<d>.txt"), "a%20b%26c%3Cd%3E.txt");
    }

    /// A small deterministic generator, so the no-panic checks below need no extra crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn never_panics_on_random_input() {
        let alphabet = b"GETHOS /:%.\\\r\n\t\0aZ19HTTP/1.0\xff";
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let len = (xorshift(&mut state) % 96) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(xorshift(&mut state) % alphabet.len() as u64) as usize])
                .collect();
            let limits = Limits {
                request_line: (xorshift(&mut state) % 40) as usize,
                header_line: (xorshift(&mut state) % 40) as usize,
                headers_total: (xorshift(&mut state) % 80) as usize,
                max_headers: (xorshift(&mut state) % 4) as usize,
            };
            let _ = read_request(&mut &input[..], &limits);
            if let Ok(request) = read_request(&mut &input[..], &LIMITS) {
                let _ = (request.keep_alive(), request.framing());
            }
            if let Ok(text) = std::str::from_utf8(&input) {
                if let Ok(path) = parse_target(text) {
                    assert!(path.encoded().starts_with('/'));
                    assert!(!path.encoded().starts_with("//"));
                    for s in &path.segments {
                        assert!(!s.is_empty() && s != b"." && s != b"..");
                        assert!(!s.contains(&b'/') && !s.contains(&b'\\') && !s.contains(&0));
                    }
                }
            }
        }
    }

    #[test]
    fn zero_limits_do_not_panic() {
        let zero = Limits {
            request_line: 0,
            header_line: 0,
            headers_total: 0,
            max_headers: 0,
        };
        assert!(matches!(
            read_request(&mut &b"GET / HTTP/1.0\r\n\r\n"[..], &zero),
            Err(Error::UriTooLong)
        ));
        assert!(matches!(
            read_request(&mut &b"\r\n"[..], &zero),
            Err(Error::BadRequest(_))
        ));
    }
}
