//! HTTP/1.1 response framing (RFC 9112 §6.3): where each response in a byte stream
//! ends, so that the appliance can seal a TLS record at the end of a response instead
//! of waiting for more bytes (the "end of transaction" transmittal condition), and
//! clients (loadgen, httpload, health checks) know when a response is complete.
//!
//! It reads the status line, `Content-Length`, `Transfer-Encoding`, `Connection`
//! (whether the server closes after the response) and chunk-size lines, and skips
//! bodies without looking at them. It must not buffer a body, rewrite a byte, or grow
//! without bound: a response head is held at most [`MAX_HEAD`] bytes and a chunk-size
//! or trailer line [`MAX_LINE`]. It never panics on any input; what it cannot frame is
//! an [`Error`], after which the caller stops relying on it for that connection (the
//! bytes still flow; only the flush point is lost).
//!
//! Not known without the request: a response to `HEAD` (or a `2xx` to `CONNECT`) has
//! no body whatever its header fields say. The framer cannot see requests, so such a
//! response is taken to have the body its fields announce; the next response's bytes
//! then look like body or fail to parse, and the caller's other conditions (timer,
//! FIN) flush instead.

/// Longest response head (status line and header fields) held while looking for its end.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line.
pub const MAX_LINE: usize = 4096;

/// Why a byte stream cannot be framed as HTTP/1.1 responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    HeadTooLong,
    LineTooLong,
    BadStatusLine,
    BadHeaderField,
    BadContentLength,
    BadChunkSize,
    /// Chunk data not followed by CRLF.
    BadChunkEnd,
    /// A previous error: the framer stays failed.
    Failed,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::HeadTooLong => "response head longer than 64 KiB",
            Error::LineTooLong => "chunk-size or trailer line longer than 4 KiB",
            Error::BadStatusLine => "status line is not HTTP/1.x with a 3-digit code",
            Error::BadHeaderField => "header field without a name and colon",
            Error::BadContentLength => "Content-Length is not one decimal number",
            Error::BadChunkSize => "chunk size is not a hexadecimal number",
            Error::BadChunkEnd => "chunk data not followed by CRLF",
            Error::Failed => "framing failed earlier",
        })
    }
}

impl std::error::Error for Error {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the status line and header fields.
    Head,
    /// This many body bytes remain.
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    /// After chunk data: how many bytes of its CRLF have been seen (a bare LF is
    /// accepted too).
    ChunkDataEnd(u8),
    Trailers,
    /// The body ends when the connection closes.
    UntilClose,
    /// After `101 Switching Protocols`: no longer HTTP/1.1.
    Opaque,
    Failed,
}

/// What one [`ResponseFramer::feed`] call found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fed {
    /// Responses (interim `1xx` ones included) that ended within the data.
    pub ended: u32,
    /// Offset just past the last end, when `ended > 0`.
    pub last_end: usize,
}

/// Follows one connection's responses as their bytes pass.
#[derive(Debug, Clone)]
pub struct ResponseFramer {
    state: State,
    /// The head or line being collected.
    buf: Vec<u8>,
    responses: u64,
    /// Status code of the latest response head (0 before the first).
    status: u16,
    /// The latest response head says the server closes the connection after it.
    closes: bool,
}

impl Default for ResponseFramer {
    fn default() -> Self {
        ResponseFramer {
            state: State::Head,
            buf: Vec::new(),
            responses: 0,
            status: 0,
            closes: false,
        }
    }
}

impl ResponseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Complete responses seen so far.
    pub fn responses(&self) -> u64 {
        self.responses
    }

    /// Status code of the latest response head seen (an interim `1xx` one included),
    /// 0 before the first. A client reads it once the response has ended.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The latest response head says the connection closes after this response:
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive` (RFC 9112 §9.3).
    pub fn closes(&self) -> bool {
        self.closes
    }

    /// Between responses: everything fed so far belongs to complete responses.
    pub fn at_boundary(&self) -> bool {
        self.state == State::Head && self.buf.is_empty()
    }

    /// The current response's body runs until the connection closes (no length was
    /// given), or the stream stopped being HTTP/1.1 (`101`).
    pub fn until_close(&self) -> bool {
        matches!(self.state, State::UntilClose | State::Opaque)
    }

    /// Follows `data`, the next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) -> Result<Fed, Error> {
        let mut fed = Fed::default();
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Failed => return Err(Error::Failed),
                State::UntilClose | State::Opaque => return Ok(fed),
                State::Fixed(n) => {
                    let take = (data.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    i += take;
                    let left = n - take as u64;
                    self.state = State::Fixed(left);
                    if left == 0 {
                        self.end(&mut fed, i);
                    }
                }
                State::ChunkData(n) => {
                    let take = (data.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkDataEnd(0)
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkDataEnd(seen) => {
                    let b = data[i];
                    i += 1;
                    self.state = match (seen, b) {
                        (0, b'\r') => State::ChunkDataEnd(1),
                        (_, b'\n') => State::ChunkSize,
                        _ => return self.fail(Error::BadChunkEnd),
                    };
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    // Collect up to the end of the line (or of the head).
                    let limit = if self.state == State::Head {
                        MAX_HEAD
                    } else {
                        MAX_LINE
                    };
                    let Some(nl) = data[i..].iter().position(|&b| b == b'\n') else {
                        if self.buf.len() + data.len() - i > limit {
                            return self.fail(too_long(self.state));
                        }
                        self.buf.extend_from_slice(&data[i..]);
                        return Ok(fed);
                    };
                    let line_end = i + nl + 1;
                    if self.buf.len() + line_end - i > limit {
                        return self.fail(too_long(self.state));
                    }
                    self.buf.extend_from_slice(&data[i..line_end]);
                    i = line_end;
                    if let Err(e) = self.line_done(&mut fed, i) {
                        return self.fail(e);
                    }
                }
            }
        }
        Ok(fed)
    }

    fn fail(&mut self, e: Error) -> Result<Fed, Error> {
        self.state = State::Failed;
        self.buf = Vec::new();
        Err(e)
    }

    fn end(&mut self, fed: &mut Fed, at: usize) {
        self.state = State::Head;
        self.buf.clear();
        self.responses += 1;
        fed.ended += 1;
        fed.last_end = at;
    }

    /// `buf` ends with a LF: act on the line (or, in a head, on the head if complete).
    fn line_done(&mut self, fed: &mut Fed, at: usize) -> Result<(), Error> {
        match self.state {
            State::Head => {
                let b = &self.buf;
                let done = b.ends_with(b"\n\r\n") || b.ends_with(b"\n\n");
                // Blank lines before a status line are ignored (RFC 9112 §2.2).
                if b == b"\r\n" || b == b"\n" {
                    self.buf.clear();
                    return Ok(());
                }
                if done {
                    let head = std::mem::take(&mut self.buf);
                    let Head { code, body, closes } = parse_head(&head)?;
                    self.status = code;
                    self.closes = closes;
                    self.buf = head;
                    self.buf.clear();
                    match body {
                        Body::None => self.end(fed, at),
                        Body::Fixed(0) => self.end(fed, at),
                        Body::Fixed(n) => self.state = State::Fixed(n),
                        Body::Chunked => self.state = State::ChunkSize,
                        Body::UntilClose => self.state = State::UntilClose,
                        Body::Switch => {
                            self.end(fed, at);
                            self.state = State::Opaque;
                        }
                    }
                }
                Ok(())
            }
            State::ChunkSize => {
                let size = parse_chunk_size(trim_eol(&self.buf))?;
                self.buf.clear();
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                Ok(())
            }
            State::Trailers => {
                let empty = trim_eol(&self.buf).is_empty();
                self.buf.clear();
                if empty {
                    self.end(fed, at);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn too_long(s: State) -> Error {
    if s == State::Head {
        Error::HeadTooLong
    } else {
        Error::LineTooLong
    }
}

fn trim_eol(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

enum Body {
    None,
    Fixed(u64),
    Chunked,
    UntilClose,
    Switch,
}

/// The body a response head announces (RFC 9112 §6.3, without the request).
fn parse_head(head: &[u8]) -> Result<Head, Error> {
    let mut lines = head.split(|&b| b == b'\n').map(trim_eol);
    let status = lines.next().ok_or(Error::BadStatusLine)?;
    let (minor, code) = parse_status(status)?;
    let (mut close, mut keep_alive) = (false, false);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let colon = l
            .iter()
            .position(|&b| b == b':')
            .filter(|&c| c > 0)
            .ok_or(Error::BadHeaderField)?;
        let (name, value) = (&l[..colon], trim(&l[colon + 1..]));
        if name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(Error::BadHeaderField);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // A list of one repeated value is allowed (RFC 9110 §8.6).
            for v in value.split(|&b| b == b',').map(trim) {
                let n = parse_decimal(v).ok_or(Error::BadContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::BadContentLength);
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(trim) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the final coding matters: chunked last frames the body.
            let last = value.split(|&b| b == b',').map(trim).next_back();
            chunked = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
        }
    }
    let body = match code {
        101 => Body::Switch,
        100..=199 | 204 | 304 => Body::None,
        _ => match (chunked, length) {
            (Some(true), _) => Body::Chunked,
            (Some(false), _) => Body::UntilClose,
            (None, Some(n)) => Body::Fixed(n),
            (None, None) => Body::UntilClose,
        },
    };
    Ok(Head {
        code,
        body,
        closes: close || (minor == 0 && !keep_alive),
    })
}

/// What a response head says.
struct Head {
    code: u16,
    body: Body,
    closes: bool,
}

/// The status line's minor version and code.
/// "HTTP/1.x SSS[ reason]": the minor version and the status code (100 to 599, RFC
/// 9110 §15).
fn parse_status(l: &[u8]) -> Result<(u8, u16), Error> {
    let rest = l.strip_prefix(b"HTTP/1.").ok_or(Error::BadStatusLine)?;
    match rest {
        [v, b' ', a, b, c, tail @ ..]
            if v.is_ascii_digit()
                && [a, b, c].iter().all(|d| d.is_ascii_digit())
                && (tail.is_empty() || tail[0] == b' ') =>
        {
            let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            if !(100..=599).contains(&code) {
                return Err(Error::BadStatusLine);
            }
            Ok((v - b'0', code))
        }
        _ => Err(Error::BadStatusLine),
    }
}

/// The status code of the HTTP/1.x status line at the start of `a`, for a client that
/// needs no more than that (a health check): `None` while the line is incomplete and
/// could still be one, an error as soon as it cannot.
pub fn status_code(a: &[u8]) -> Option<Result<u16, Error>> {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = a.len().min(PREFIX.len());
    if a[..n] != PREFIX[..n] {
        return Some(Err(Error::BadStatusLine));
    }
    let end = a.iter().position(|&b| b == b'\n')?;
    Some(parse_status(trim_eol(&a[..=end])).map(|(_, code)| code))
}

/// Where the message head at the start of `buf` ends (just past its empty line), once
/// it is all there: what a server needs before it answers a request it does not
/// forward.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(3).position(|w| w == b"\n\r\n").map(|i| i + 3);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `1a3f` or `1a3f;name=value` (extensions are skipped).
fn parse_chunk_size(l: &[u8]) -> Result<u64, Error> {
    let end = l.iter().position(|&b| b == b';').unwrap_or(l.len());
    let digits = trim(&l[..end]);
    if digits.is_empty() || digits.len() > 15 {
        return Err(Error::BadChunkSize);
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16).ok_or(Error::BadChunkSize)?;
        Ok(n * 16 + u64::from(v))
    })
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.0 200 OK\r\n"), Some(Ok(200)));
        assert_eq!(status_code(b"HTTP/1.1 503\r\n"), Some(Ok(503)));
        assert_eq!(status_code(b"HTTP/1.1 404 Not Found\n"), Some(Ok(404)));
        assert_eq!(status_code(b"HTTP/1.1 20"), None);
        assert_eq!(status_code(b"HTT"), None);
        assert_eq!(status_code(b""), None);
        let bad = Some(Err(Error::BadStatusLine));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), bad);
        assert_eq!(status_code(b"HTTP/2 200\r\n"), bad);
        assert_eq!(status_code(b"HTTP/1.1 2000 x\r\n"), bad);
        assert_eq!(status_code(b"HTTP/1.1 099 x\r\n"), bad);
        assert_eq!(status_code(b"HTTP/1.1 abc x\r\n"), bad);
        assert_eq!(status_code(b"HTTP/1.1\r\n"), bad);
    }

    #[test]
    fn heads_end_at_their_empty_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(head_len(b"GET / HTTP/1.1\nHost: a\n\nbody"), Some(24));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_len(b""), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; returns the stream offsets where
    /// responses ended.
    fn ends(stream: &[u8], step: usize) -> Result<Vec<usize>, Error> {
        let mut f = ResponseFramer::new();
        let mut out = Vec::new();
        let mut base = 0;
        for piece in stream.chunks(step.max(1)) {
            let fed = f.feed(piece)?;
            if fed.ended > 0 {
                out.push(base + fed.last_end);
            }
            base += piece.len();
        }
        Ok(out)
    }

    #[test]
    fn content_length_ends_exactly_at_the_body_end_in_every_split() {
        let a = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello";
        let b = b"HTTP/1.1 404 Not Found\r\ncontent-length:  3 \r\n\r\nno!";
        let stream = [&a[..], &b[..]].concat();
        for step in 1..stream.len() {
            let e = ends(&stream, step).unwrap();
            // With coarse pieces, both ends may fall in one piece: the last is kept.
            assert_eq!(*e.last().unwrap(), stream.len(), "step {step}");
            if step == 1 {
                assert_eq!(e, vec![a.len(), stream.len()]);
            }
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n\
4;ext=1\r\nwiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
        for step in 1..r.len() {
            assert_eq!(ends(r, step).unwrap(), vec![r.len()], "step {step}");
        }
        let mut f = ResponseFramer::new();
        assert_eq!(f.feed(&r[..r.len() - 1]).unwrap().ended, 0);
        assert!(!f.at_boundary());
        assert_eq!(f.feed(&r[r.len() - 1..]).unwrap().ended, 1);
        assert!(f.at_boundary());
        assert_eq!(f.responses(), 1);
        assert_eq!(f.status(), 200);
        f.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert_eq!(f.status(), 404);
        assert!(!f.closes());
        f.feed(b"HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert!(f.closes());
        f.feed(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert!(!f.closes());
    }

    #[test]
    fn bodiless_statuses_interim_and_until_close() {
        let s =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n\
HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.0 200 OK\r\n\r\nbody until the connection closes";
        let mut f = ResponseFramer::new();
        assert_eq!(f.status(), 0);
        let fed = f.feed(s).unwrap();
        assert_eq!(fed.ended, 3);
        assert!(f.until_close());
        // The latest head's status: the until-close 200, after 100, 204 and 304.
        assert_eq!(f.status(), 200);
        // ...an HTTP/1.0 one: the connection closes after it.
        assert!(f.closes());
        assert!(!f.at_boundary());
        // A non-chunked final coding also runs until close.
        let mut f = ResponseFramer::new();
        f.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd")
            .unwrap();
        assert!(f.until_close());
        // 101: the stream is no longer HTTP; later bytes are not parsed.
        let mut f = ResponseFramer::new();
        let fed = f
            .feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
            .unwrap();
        assert_eq!(fed.ended, 1);
        assert!(f.until_close());
        // Bare LF line ends are accepted.
        assert_eq!(
            ends(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 3).unwrap(),
            vec![37]
        );
    }

    #[test]
    fn each_malformation_is_its_error_and_sticks() {
        let cases: &[(&[u8], Error)] = &[
            (b"HTTP/2 200 OK\r\n\r\n", Error::BadStatusLine),
            (b"HTTP/1.1 20 OK\r\n\r\n", Error::BadStatusLine),
            (
                b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                Error::BadHeaderField,
            ),
            (
                b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
                Error::BadHeaderField,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Error::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                Error::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                Error::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Error::BadChunkSize,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX",
                Error::BadChunkEnd,
            ),
        ];
        for (input, want) in cases {
            let mut f = ResponseFramer::new();
            assert_eq!(
                f.feed(input).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                f.feed(b"HTTP/1.1 200 OK\r\n\r\n").unwrap_err(),
                Error::Failed
            );
        }
        let mut f = ResponseFramer::new();
        let long = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(f.feed(&long).unwrap_err(), Error::HeadTooLong);
        let mut f = ResponseFramer::new();
        f.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let first_err = (0..=MAX_LINE).find_map(|_| f.feed(b"0").err());
        assert_eq!(first_err, Some(Error::LineTooLong));
        assert_eq!(f.feed(b"0").unwrap_err(), Error::Failed);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"HTP/1.0 2\r\n:chunkedCcontent-length;abcf";
        for round in 0..2000 {
            let mut f = ResponseFramer::new();
            let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
            for _ in 0..(round % 200) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.push(if x % 4 == 0 {
                    x as u8
                } else {
                    alphabet[(x >> 8) as usize % alphabet.len()]
                });
            }
            for piece in input.chunks(1 + round % 9) {
                let _ = f.feed(piece);
            }
        }
    }
}
