//! Byte cursors for the wire formats. A [`Reader`] never reads out of bounds: every
//! accessor checks the length and returns [`Error::Decode`] instead of panicking.

use crate::error::Error;

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Error::Decode("message truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub fn u24(&mut self) -> Result<usize, Error> {
        let b = self.take(3)?;
        Ok((b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }

    /// A vector with a one-byte length prefix.
    pub fn vec8(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    /// A vector with a two-byte length prefix.
    pub fn vec16(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Fails with a decode error if bytes are left over.
    pub fn finish(&self, what: &'static str) -> Result<(), Error> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::Decode(what))
        }
    }
}

/// Iterate a list of big-endian u16 values whose length was already checked even.
pub fn u16s(list: &[u8]) -> impl Iterator<Item = u16> + '_ {
    list.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
}

pub fn put_u16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}

/// Start a length-prefixed block of `width` bytes; [`end_len`] fills the length in.
pub fn start_len(v: &mut Vec<u8>, width: usize) -> usize {
    let at = v.len();
    v.resize(at + width, 0);
    at
}

pub fn end_len(v: &mut [u8], at: usize, width: usize) {
    let n = v.len() - at - width;
    for i in 0..width {
        v[at + i] = (n >> (8 * (width - 1 - i))) as u8;
    }
}

/// Taken bytes at the front of a buffer that are given back once they are at least
/// this many and at least half of it.
const COMPACT_AFTER: usize = 32 * 1024;

/// Marks `n` more bytes of `buf`, read from `*pos` on, as taken; once all are, the
/// buffer empties. A buffer that is never read to its end (a peer slower than what is
/// appended behind it) would otherwise keep every byte ever written: once the taken
/// front is [`COMPACT_AFTER`] bytes and half the buffer, the rest moves to the front
/// (no more than was taken, so each byte moves at most once on average).
pub fn consume(buf: &mut Vec<u8>, pos: &mut usize, n: usize) {
    *pos = (*pos + n).min(buf.len());
    if *pos == buf.len() {
        buf.clear();
        *pos = 0;
    } else if *pos >= COMPACT_AFTER && *pos * 2 >= buf.len() {
        buf.drain(..*pos);
        *pos = 0;
    }
}

/// Handshake bytes from records, joined into whole messages (header included): a
/// message may span records and a record may hold several.
#[derive(Debug)]
pub struct HandshakeJoiner {
    buf: Vec<u8>,
    /// Largest message body accepted.
    max: usize,
}

impl HandshakeJoiner {
    pub fn new(max: usize) -> Self {
        HandshakeJoiner {
            buf: Vec::new(),
            max,
        }
    }

    /// A handshake record's content.
    pub fn push(&mut self, body: &[u8]) -> Result<(), Error> {
        if body.is_empty() {
            return Err(Error::Decode("empty handshake record"));
        }
        if self.buf.len() + body.len() > self.max + 4 {
            return Err(Error::Decode("handshake message too long"));
        }
        self.buf.extend_from_slice(body);
        Ok(())
    }

    /// The next whole message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = Reader::new(&self.buf[1..4]).u24()?;
        if len > self.max {
            return Err(Error::Decode("handshake message too long"));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let rest = self.buf.split_off(4 + len);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }

    /// No partial message is buffered (keys may change here).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Frees the buffer's capacity if it holds nothing.
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }
}

/// Frees `buf`'s capacity if everything in it was consumed (`pos` at its end).
pub fn release_if_drained(buf: &mut Vec<u8>, pos: &mut usize) {
    if *pos >= buf.len() {
        *buf = Vec::new();
        *pos = 0;
    }
}

/// The 4-byte handshake header for a message of `len` body bytes.
pub fn handshake_header(typ: u8, len: usize) -> [u8; 4] {
    [typ, (len >> 16) as u8, (len >> 8) as u8, len as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_overruns_without_panicking() {
        let mut r = Reader::new(&[0, 5, 1, 2]);
        assert_eq!(r.vec16(), Err(Error::Decode("message truncated")));
        let mut r = Reader::new(&[0xff, 0xff, 0xff]);
        assert!(r.u24().is_ok());
        assert!(r.u8().is_err());
        let mut r = Reader::new(&[1, 9, 7]);
        assert_eq!(r.vec8().unwrap(), &[9]);
        assert!(r.finish("x").is_err());
    }

    /// Written behind a reader that never catches up, the buffer stays bounded by what
    /// is unread (before, it kept every byte ever written until one full read).
    #[test]
    fn a_buffer_read_partly_forever_stays_bounded() {
        let (mut buf, mut pos) = (Vec::new(), 0usize);
        let mut written = 0u64;
        let mut read = 0u64;
        for round in 0..10_000u64 {
            buf.extend_from_slice(&[round as u8; 16 * 1024]);
            written += 16 * 1024;
            // Always leave some unread, 1 byte to 16 KiB.
            let n = (buf.len() - pos).saturating_sub(1 + (round as usize * 7919) % 16384);
            read += n as u64;
            consume(&mut buf, &mut pos, n);
            assert_eq!(buf.len() - pos, (written - read) as usize, "unread kept");
            // The next unread byte is the one written at offset `read`.
            assert_eq!(buf[pos], (read / (16 * 1024)) as u8, "kept in order");
            assert!(buf.len() <= 2 * (buf.len() - pos) + COMPACT_AFTER + 16 * 1024);
        }
        assert!(written > 100 << 20, "160 MiB went through");
    }

    #[test]
    fn length_prefixes() {
        let mut v = vec![0xaa];
        let at = start_len(&mut v, 3);
        v.extend_from_slice(&[1, 2, 3, 4]);
        end_len(&mut v, at, 3);
        assert_eq!(v, [0xaa, 0, 0, 4, 1, 2, 3, 4]);
    }
}
