//! The record layer: reassembling records from TCP bytes, and their protection.
//!
//! Incoming bytes collect in a bounded buffer until whole records exist; a record is
//! decrypted in place there. Outgoing records are written into the connection's
//! output buffer and sealed in place, so plaintext is copied once (into the output).
//!
//! Record protection (RFC 8446 §5.2-5.3; RFC 5246 §6.2.3.3 with RFC 5288 and
//! RFC 7905 nonces) runs here as direct calls on an [`AeadKey`]; batching them across
//! connections on the offload pool is issue 4.

use crypto_offload::{TrafficKey, TAG_LEN};

use crate::error::Error;
use crate::msgs::content;

/// Largest plaintext fragment (RFC 8446 §5.1, RFC 5246 §6.2.1).
pub const MAX_FRAGMENT: usize = 1 << 14;
/// Largest record body we accept: TLS 1.2 allows 2^14 + 2048 of ciphertext
/// (RFC 5246 §6.2.3); TLS 1.3 2^14 + 256, checked after we know the version.
pub const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 2048;
pub const HEADER: usize = 5;
/// How many TLS bytes the engine buffers before it stops accepting more.
pub const MAX_BUFFERED: usize = 2 * (HEADER + MAX_CIPHERTEXT);

/// Incoming TLS bytes, reassembled into records.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte.
    pos: usize,
}

/// A complete record in the deframer's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord {
    pub typ: u8,
    pub version: u16,
    /// Body range in the deframer's buffer.
    pub start: usize,
    pub end: usize,
}

impl Deframer {
    /// Room for more bytes before the bound.
    pub fn room(&self) -> usize {
        MAX_BUFFERED.saturating_sub(self.buf.len() - self.pos)
    }

    /// Append up to [`Deframer::room`] bytes; returns how many were taken.
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > MAX_BUFFERED / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let n = data.len().min(self.room());
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// The next whole record, if one is buffered.
    pub fn next_record(&mut self) -> Result<Option<RawRecord>, Error> {
        let avail = &self.buf[self.pos..];
        if avail.len() < HEADER {
            return Ok(None);
        }
        let typ = avail[0];
        let version = u16::from_be_bytes([avail[1], avail[2]]);
        let len = u16::from_be_bytes([avail[3], avail[4]]) as usize;
        if !(content::CHANGE_CIPHER_SPEC..=content::APPLICATION_DATA).contains(&typ) {
            return Err(Error::UnexpectedMessage("unknown record type"));
        }
        if avail[1] != 3 {
            return Err(Error::Decode("record version is not 3.x"));
        }
        if len > MAX_CIPHERTEXT {
            return Err(Error::RecordOverflow);
        }
        if avail.len() < HEADER + len {
            return Ok(None);
        }
        let start = self.pos + HEADER;
        self.pos = start + len;
        Ok(Some(RawRecord {
            typ,
            version,
            start,
            end: start + len,
        }))
    }

    pub fn body_mut(&mut self, r: &RawRecord) -> &mut [u8] {
        &mut self.buf[r.start..r.end]
    }

    pub fn header(&self, r: &RawRecord) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h.copy_from_slice(&self.buf[r.start - HEADER..r.start]);
        h
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Which nonce and AAD construction a key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    Tls13,
    /// TLS 1.2 AES-GCM: 4-byte salt + 8-byte explicit nonce sent in each record.
    Tls12Gcm,
    /// TLS 1.2 ChaCha20-Poly1305: 12-byte IV XOR sequence number, nothing explicit.
    Tls12Chacha,
}

/// One direction's record protection state.
#[derive(Debug)]
pub struct Cipher {
    pub key: TrafficKey,
    pub mode: Protection,
    pub seq: u64,
}

impl Cipher {
    pub fn new(key: TrafficKey, mode: Protection) -> Self {
        Cipher { key, mode, seq: 0 }
    }

    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        let iv = self.key.iv.bytes();
        match self.mode {
            Protection::Tls13 | Protection::Tls12Chacha => {
                n.copy_from_slice(iv);
                for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
                    *b ^= s;
                }
            }
            Protection::Tls12Gcm => {
                n[..4].copy_from_slice(iv);
                n[4..].copy_from_slice(&self.seq.to_be_bytes());
            }
        }
        n
    }

    fn explicit_len(&self) -> usize {
        if self.mode == Protection::Tls12Gcm {
            8
        } else {
            0
        }
    }

    fn next_seq(&mut self) -> Result<(), Error> {
        // RFC 8446 §5.3 / RFC 5246 §6.1: sequence numbers MUST NOT wrap.
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(Error::Misuse("record sequence number exhausted"))?;
        Ok(())
    }

    /// Decrypt a record body in place. Returns the plaintext's range within `body`
    /// and, for TLS 1.3, the real content type from the inner plaintext.
    pub fn open(
        &mut self,
        header: [u8; HEADER],
        body: &mut [u8],
    ) -> Result<(u8, usize, usize), Error> {
        let ex = self.explicit_len();
        if body.len() < ex + TAG_LEN {
            return Err(Error::BadRecordMac);
        }
        let mut nonce = self.nonce();
        if ex > 0 {
            nonce[4..].copy_from_slice(&body[..8]);
        }
        let ct_end = body.len() - TAG_LEN;
        let (ct, tag) = body.split_at_mut(ct_end);
        let ct = &mut ct[ex..];
        match self.mode {
            Protection::Tls13 => {
                if header[0] != content::APPLICATION_DATA {
                    return Err(Error::UnexpectedMessage(
                        "unprotected record after keys changed",
                    ));
                }
                if body_len_over_13(ct.len()) {
                    return Err(Error::RecordOverflow);
                }
                self.key.key.open(&nonce, &header, ct, tag)?;
                self.next_seq()?;
                // RFC 8446 §5.4: the content type is the last non-zero byte.
                let mut end = ct.len();
                while end > 0 && ct[end - 1] == 0 {
                    end -= 1;
                }
                if end == 0 {
                    return Err(Error::UnexpectedMessage(
                        "protected record with no content type",
                    ));
                }
                Ok((ct[end - 1], ex, ex + end - 1))
            }
            Protection::Tls12Gcm | Protection::Tls12Chacha => {
                let aad = aad12(self.seq, header[0], ct.len());
                self.key.key.open(&nonce, &aad, ct, tag)?;
                self.next_seq()?;
                if ct.len() > MAX_FRAGMENT {
                    return Err(Error::RecordOverflow);
                }
                Ok((header[0], ex, ex + ct.len()))
            }
        }
    }

    /// Append one protected record carrying `data` (≤ [`MAX_FRAGMENT`]) to `out`.
    /// TLS 1.3 inner plaintexts are padded with zeros to a multiple of `pad_to` (0: none).
    pub fn seal(
        &mut self,
        out: &mut Vec<u8>,
        typ: u8,
        data: &[u8],
        pad_to: usize,
    ) -> Result<(), Error> {
        let start = out.len();
        let nonce = self.nonce();
        let ex = self.explicit_len();
        let outer = if self.mode == Protection::Tls13 {
            content::APPLICATION_DATA
        } else {
            typ
        };
        out.extend_from_slice(&[outer, 3, 3, 0, 0]);
        if ex > 0 {
            out.extend_from_slice(&nonce[4..]);
        }
        let pt_start = out.len();
        out.extend_from_slice(data);
        if self.mode == Protection::Tls13 {
            out.push(typ);
            if pad_to > 1 {
                let inner = data.len() + 1;
                let padded = inner.div_ceil(pad_to) * pad_to;
                let padded = padded.min(MAX_FRAGMENT + 1);
                out.resize(pt_start + padded.max(inner), 0);
            }
        }
        let pt_len = out.len() - pt_start;
        let body_len = ex + pt_len + TAG_LEN;
        out[start + 3..start + 5].copy_from_slice(&(body_len as u16).to_be_bytes());
        let mut tag = [0u8; TAG_LEN];
        if self.mode == Protection::Tls13 {
            let mut header = [0u8; HEADER];
            header.copy_from_slice(&out[start..start + HEADER]);
            self.key
                .key
                .seal(&nonce, &header, &mut out[pt_start..], &mut tag)?;
        } else {
            let aad = aad12(self.seq, typ, pt_len);
            self.key
                .key
                .seal(&nonce, &aad, &mut out[pt_start..], &mut tag)?;
        }
        out.extend_from_slice(&tag);
        self.next_seq()
    }
}

fn body_len_over_13(inner_len: usize) -> bool {
    // RFC 8446 §5.2: TLSInnerPlaintext is at most 2^14 + 1 bytes.
    inner_len > MAX_FRAGMENT + 1
}

/// TLS 1.2 AEAD additional data: seq_num + type + version + length (RFC 5246 §6.2.3.3).
fn aad12(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = typ;
    a[9] = 3;
    a[10] = 3;
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

/// Append an unprotected record (before keys exist), fragmenting at 2^14.
pub fn write_plain(out: &mut Vec<u8>, typ: u8, mut data: &[u8]) {
    loop {
        let n = data.len().min(MAX_FRAGMENT);
        out.extend_from_slice(&[typ, 3, 3]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&data[..n]);
        data = &data[n..];
        if data.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_offload::{AeadAlg, AeadKey, Secret};

    fn pair(alg: AeadAlg, mode: Protection) -> (Cipher, Cipher) {
        let k = vec![3u8; alg.key_len()];
        let iv = vec![9u8; if mode == Protection::Tls12Gcm { 4 } else { 12 }];
        let mk = |enc| {
            Cipher::new(
                TrafficKey {
                    key: AeadKey::new(alg, &k, enc).unwrap(),
                    iv: Secret::new(iv.clone()),
                },
                mode,
            )
        };
        (mk(true), mk(false))
    }

    #[test]
    fn seal_then_open_every_mode_and_size() {
        for (alg, mode) in [
            (AeadAlg::Aes128Gcm, Protection::Tls13),
            (AeadAlg::Chacha20Poly1305, Protection::Tls13),
            (AeadAlg::Aes256Gcm, Protection::Tls12Gcm),
            (AeadAlg::Chacha20Poly1305, Protection::Tls12Chacha),
        ] {
            let (mut w, mut r) = pair(alg, mode);
            let mut out = Vec::new();
            for size in [0usize, 1, 100, MAX_FRAGMENT] {
                let data = vec![0x5a; size];
                out.clear();
                w.seal(
                    &mut out,
                    content::APPLICATION_DATA,
                    &data,
                    if size == 1 { 64 } else { 0 },
                )
                .unwrap();
                let mut d = Deframer::default();
                assert_eq!(d.push(&out), out.len());
                let rec = d.next_record().unwrap().unwrap();
                let h = d.header(&rec);
                let (typ, s, e) = r.open(h, d.body_mut(&rec)).unwrap();
                assert_eq!(typ, content::APPLICATION_DATA);
                assert_eq!(&d.body_mut(&rec)[s..e], &data[..]);
            }
            // A flipped bit is bad_record_mac.
            out.clear();
            w.seal(&mut out, content::APPLICATION_DATA, b"x", 0)
                .unwrap();
            let n = out.len();
            out[n - 1] ^= 1;
            let mut d = Deframer::default();
            d.push(&out);
            let rec = d.next_record().unwrap().unwrap();
            let h = d.header(&rec);
            assert_eq!(
                r.open(h, d.body_mut(&rec)).unwrap_err(),
                Error::BadRecordMac
            );
        }
    }

    #[test]
    fn deframer_bounds() {
        let mut d = Deframer::default();
        d.push(&[22, 3, 1, 0xff, 0xff]);
        assert_eq!(d.next_record().unwrap_err(), Error::RecordOverflow);
        let mut d = Deframer::default();
        d.push(&[99, 3, 1, 0, 1, 0]);
        assert!(matches!(d.next_record(), Err(Error::UnexpectedMessage(_))));
        let mut d = Deframer::default();
        assert_eq!(d.push(&vec![0u8; MAX_BUFFERED + 10]), MAX_BUFFERED);
        assert_eq!(d.room(), 0);
    }
}
