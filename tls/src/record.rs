//! The record layer: reassembling records from TCP bytes, and their protection.
//!
//! Incoming bytes collect in a bounded buffer until whole records exist; a record is
//! decrypted in place there. Outgoing records are written into the connection's
//! output buffer and sealed in place, so plaintext is copied once (into the output).
//!
//! Record protection (RFC 8446 §5.2-5.3; RFC 5246 §6.2.3.3 with RFC 5288 and
//! RFC 7905 nonces) is laid out here, once, as [`AeadOp`]s: [`Cipher::seal`] and
//! [`Cipher::open`] run them at once on the calling core; with record offload on
//! (`ServerConn::set_record_offload`) the same ops go to a record job instead, the key
//! lent with them.

use crypto_offload::{AeadKey, AeadOp, Secret, TAG_LEN};

use crate::jobs::TrafficKey;

use crate::error::{alert, Error};
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
    /// The buffer is out with a record job.
    lent: bool,
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
        if self.lent {
            return 0;
        }
        MAX_BUFFERED.saturating_sub(self.buf.len() - self.pos)
    }

    /// Append up to [`Deframer::room`] bytes; returns how many were taken.
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.lent {
            return 0;
        }
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
        let r = self.peek_record(self.pos)?;
        if let Some(r) = &r {
            self.pos = r.end;
        }
        Ok(r)
    }

    /// The whole record whose header starts at `at`, if it is all buffered; the
    /// deframer does not move.
    pub fn peek_record(&self, at: usize) -> Result<Option<RawRecord>, Error> {
        let avail = self.buf.get(at..).unwrap_or_default();
        if self.lent || avail.len() < HEADER {
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
        let start = at + HEADER;
        Ok(Some(RawRecord {
            typ,
            version,
            start,
            end: start + len,
        }))
    }

    /// The buffered bytes (records' positions index into them).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Where the next unconsumed record starts.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The buffer, lent to a record job (records are opened in place there). Until
    /// [`Deframer::restore`] the deframer takes no bytes and has no records.
    pub fn lend(&mut self) -> Vec<u8> {
        self.lent = true;
        std::mem::take(&mut self.buf)
    }

    /// The buffer is back; everything before `pos` is consumed.
    pub fn restore(&mut self, buf: Vec<u8>, pos: usize) {
        self.buf = buf;
        self.pos = pos.min(self.buf.len());
        self.lent = false;
    }

    /// Frees the buffer's capacity if every byte in it was consumed (and it is not
    /// lent).
    pub fn release_if_drained(&mut self) {
        if !self.lent {
            crate::codec::release_if_drained(&mut self.buf, &mut self.pos);
        }
    }

    /// The lent buffer was lost with its job: start over empty.
    pub fn reset(&mut self) {
        *self = Deframer::default();
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
        !self.lent && self.pos == self.buf.len()
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
    /// `None` while lent to a record job ([`Cipher::lend`]).
    aead: Option<AeadKey>,
    iv: Secret,
    pub mode: Protection,
    pub seq: u64,
    /// A copy of the key made when it is first lent, so that an alert can still be
    /// sealed if the job carrying the key is lost.
    spare: Option<AeadKey>,
}

impl Cipher {
    pub fn new(key: TrafficKey, mode: Protection) -> Self {
        Cipher {
            aead: Some(key.key),
            iv: key.iv,
            mode,
            seq: 0,
            spare: None,
        }
    }

    fn nonce(&self, seq: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        let iv = self.iv.bytes();
        match self.mode {
            Protection::Tls13 | Protection::Tls12Chacha => {
                n.copy_from_slice(iv);
                for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
                    *b ^= s;
                }
            }
            Protection::Tls12Gcm => {
                n[..4].copy_from_slice(iv);
                n[4..].copy_from_slice(&seq.to_be_bytes());
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

    /// Reserve `n` sequence numbers; returns the first.
    pub(crate) fn reserve(&mut self, n: usize) -> Result<u64, Error> {
        // RFC 8446 §5.3 / RFC 5246 §6.1: sequence numbers MUST NOT wrap.
        let first = self.seq;
        self.seq = self
            .seq
            .checked_add(n as u64)
            .ok_or(Error::Misuse("record sequence number exhausted"))?;
        Ok(first)
    }

    fn key(&mut self) -> Result<&mut AeadKey, Error> {
        self.aead
            .as_mut()
            .ok_or(Error::Misuse("record key is lent to a record job"))
    }

    /// Lend the key to a record job (see [`crypto_offload::records`]); `spare`: keep a
    /// copy first (the write direction, which must still be able to seal an alert).
    pub(crate) fn lend(&mut self, spare: bool) -> Result<AeadKey, Error> {
        let key = self
            .aead
            .take()
            .ok_or(Error::Misuse("record key lent twice"))?;
        if spare && self.spare.is_none() {
            match key.try_clone() {
                Ok(k) => self.spare = Some(k),
                Err(e) => {
                    self.aead = Some(key);
                    return Err(e.into());
                }
            }
        }
        Ok(key)
    }

    /// The key is back from its job.
    pub(crate) fn restore(&mut self, key: AeadKey) {
        self.aead = Some(key);
    }

    /// The job holding the key was lost: carry on with the spare, if one was kept,
    /// from sequence number `seq` (the lost records never left).
    pub(crate) fn recover(&mut self, seq: u64) -> bool {
        match self.spare.take() {
            Some(k) if self.aead.is_none() => {
                self.aead = Some(k);
                self.seq = seq;
                true
            }
            other => {
                self.spare = other;
                self.aead.is_some()
            }
        }
    }

    /// Check a protected record's length and describe its open: the body is
    /// `buf[start..end]`, the record's sequence number `seq`.
    pub(crate) fn open_op(
        &self,
        seq: u64,
        header: [u8; HEADER],
        buf: &[u8],
        start: usize,
        end: usize,
    ) -> Result<AeadOp, Error> {
        let ex = self.explicit_len();
        let body = &buf[start..end];
        if body.len() < ex + TAG_LEN {
            return Err(Error::BadRecordMac);
        }
        let mut nonce = self.nonce(seq);
        if ex > 0 {
            nonce[4..].copy_from_slice(&body[..8]);
        }
        let ct_len = body.len() - ex - TAG_LEN;
        match self.mode {
            Protection::Tls13 => {
                if header[0] != content::APPLICATION_DATA {
                    return Err(Error::UnexpectedMessage(
                        "unprotected record after keys changed",
                    ));
                }
                if body_len_over_13(ct_len) {
                    return Err(Error::RecordOverflow);
                }
                Ok(AeadOp::new(nonce, &header, start + ex, ct_len))
            }
            Protection::Tls12Gcm | Protection::Tls12Chacha => {
                if ct_len > MAX_FRAGMENT {
                    return Err(Error::RecordOverflow);
                }
                let aad = aad12(seq, header[0], ct_len);
                Ok(AeadOp::new(nonce, &aad, start + ex, ct_len))
            }
        }
    }

    /// After an open: the record's content type and its content's length within the
    /// opened payload (TLS 1.3 takes both from the inner plaintext).
    pub(crate) fn opened(&self, outer: u8, payload: &[u8]) -> Result<(u8, usize), Error> {
        match self.mode {
            Protection::Tls13 => crypto_offload::records::tls13_inner(payload).ok_or(
                Error::UnexpectedMessage("protected record with no content type"),
            ),
            Protection::Tls12Gcm | Protection::Tls12Chacha => Ok((outer, payload.len())),
        }
    }

    /// Decrypt a record body in place. Returns the plaintext's range within `body`
    /// and, for TLS 1.3, the real content type from the inner plaintext.
    pub fn open(
        &mut self,
        header: [u8; HEADER],
        body: &mut [u8],
    ) -> Result<(u8, usize, usize), Error> {
        let op = self.open_op(self.seq, header, body, 0, body.len())?;
        let (payload, tag) = body[op.start..].split_at_mut(op.len);
        self.key()?
            .open(&op.nonce, &op.aad[..op.aad_len as usize], payload, tag)?;
        self.reserve(1)?;
        let (typ, len) = self.opened(header[0], payload)?;
        Ok((typ, op.start, op.start + len))
    }

    /// Append one record carrying `data` (≤ [`MAX_FRAGMENT`]) to `out`, still in
    /// plaintext with room for its tag, and describe its seal with sequence number
    /// `seq`. TLS 1.3 inner plaintexts are padded with zeros to a multiple of `pad_to`
    /// (0: none).
    pub(crate) fn seal_op(
        &self,
        seq: u64,
        out: &mut Vec<u8>,
        typ: u8,
        data: &[u8],
        pad_to: usize,
    ) -> AeadOp {
        let start = out.len();
        let nonce = self.nonce(seq);
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
        out.extend_from_slice(&[0u8; TAG_LEN]);
        if self.mode == Protection::Tls13 {
            AeadOp::new(nonce, &out[start..start + HEADER], pt_start, pt_len)
        } else {
            AeadOp::new(nonce, &aad12(seq, typ, pt_len), pt_start, pt_len)
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
        if self.aead.is_none() {
            return Err(Error::Misuse("record key is lent to a record job"));
        }
        let op = self.seal_op(self.seq, out, typ, data, pad_to);
        let (payload, tag) = out[op.start..].split_at_mut(op.len);
        let mut t = [0u8; TAG_LEN];
        let r = self
            .key()?
            .seal(&op.nonce, &op.aad[..op.aad_len as usize], payload, &mut t);
        if let Err(e) = r {
            out.truncate(op.start - HEADER - self.explicit_len());
            return Err(e.into());
        }
        tag.copy_from_slice(&t);
        self.reserve(1)?;
        Ok(())
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

/// Warning alerts in a row a TLS 1.2 peer may send before the connection ends.
const MAX_WARNINGS: u8 = 4;

/// What a received record's content is to either role, after the rules both share
/// ([`Inbound::content`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Content {
    /// Bytes of handshake messages, for the joiner.
    Handshake,
    /// Application data; the role checks its handshake is over.
    AppData,
    /// A well-formed change_cipher_spec; the role decides whether one may come now.
    ChangeCipherSpec,
    /// close_notify: the peer sends no more.
    PeerClosed,
    /// Nothing to act on (user_canceled, a TLS 1.2 warning within the bound).
    Nothing,
}

/// The rules for a received record's content that the server and the client roles
/// share, in one place: alerts (RFC 8446 §6, RFC 5246 §7.2), interleaving with a split
/// handshake message (RFC 8446 §5.1), record types. Kept per connection for the count of
/// warning alerts in a row.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    warnings: u8,
}

impl Inbound {
    /// Classifies an opened record of type `typ` and content `body`. `tls13`: the
    /// connection runs TLS 1.3 (before the version is known, TLS 1.2's alert rules
    /// apply); `joining`: part of a handshake message is buffered, waiting for the rest.
    pub(crate) fn content(
        &mut self,
        typ: u8,
        body: &[u8],
        tls13: bool,
        joining: bool,
    ) -> Result<Content, Error> {
        if typ != content::ALERT {
            self.warnings = 0;
        }
        match typ {
            content::HANDSHAKE => Ok(Content::Handshake),
            content::ALERT => {
                let [level, desc] = *body else {
                    return Err(Error::Decode("alert"));
                };
                // RFC 8446 §5.1: "if a handshake message is split over two or more
                // records, there MUST NOT be any other records between them".
                if joining {
                    return Err(Error::UnexpectedMessage("alert inside a handshake message"));
                }
                match (level, desc) {
                    (_, alert::CLOSE_NOTIFY) => Ok(Content::PeerClosed),
                    // RFC 8446 §6.1: user_canceled is followed by close_notify.
                    (_, alert::USER_CANCELED) => Ok(Content::Nothing),
                    // TLS 1.2 (RFC 5246 §7.2): a warning does not end the connection.
                    // A flood of them is a way to hold a peer busy: past MAX_WARNINGS in
                    // a row it ends with unexpected_message, as other stacks do. TLS 1.3
                    // has no warnings (RFC 8446 §6: every alert but close_notify and
                    // user_canceled is fatal, whatever its level).
                    (1, _) if !tls13 => {
                        self.warnings += 1;
                        if self.warnings > MAX_WARNINGS {
                            return Err(Error::UnexpectedMessage(
                                "too many warning alerts in a row",
                            ));
                        }
                        Ok(Content::Nothing)
                    }
                    (_, d) => Err(Error::PeerAlert(d)),
                }
            }
            content::CHANGE_CIPHER_SPEC => {
                if body != [1] || joining {
                    return Err(Error::UnexpectedMessage("change_cipher_spec"));
                }
                Ok(Content::ChangeCipherSpec)
            }
            content::APPLICATION_DATA => {
                // RFC 8446 §5.1 again (a KeyUpdate whose pieces have data between them,
                // say). TLS 1.2 may interleave (RFC 5246 §6.2.1).
                if tls13 && joining {
                    return Err(Error::UnexpectedMessage(
                        "application data inside a split handshake message",
                    ));
                }
                Ok(Content::AppData)
            }
            _ => Err(Error::UnexpectedMessage("unknown record type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_offload::AeadAlg;

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

    #[test]
    fn content_rules_shared_by_both_roles() {
        use content::{ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE};
        let mut r = Inbound::default();
        assert_eq!(
            r.content(HANDSHAKE, b"x", true, false),
            Ok(Content::Handshake)
        );
        assert_eq!(
            r.content(ALERT, &[1, 0], true, false),
            Ok(Content::PeerClosed)
        );
        assert_eq!(
            r.content(ALERT, &[2, 90], true, false),
            Ok(Content::Nothing)
        );
        assert_eq!(
            r.content(ALERT, &[1], true, false),
            Err(Error::Decode("alert"))
        );
        assert_eq!(
            r.content(ALERT, &[1, 0, 0], false, false),
            Err(Error::Decode("alert"))
        );
        // RFC 8446 §5.1: nothing between the pieces of a split handshake message.
        assert!(matches!(
            r.content(ALERT, &[1, 0], false, true),
            Err(Error::UnexpectedMessage(_))
        ));
        assert!(matches!(
            r.content(APPLICATION_DATA, b"x", true, true),
            Err(Error::UnexpectedMessage(_))
        ));
        // TLS 1.2 interleaves application data with handshake records.
        assert_eq!(
            r.content(APPLICATION_DATA, b"x", false, true),
            Ok(Content::AppData)
        );
        // TLS 1.3 has no warnings: every other alert is the peer's abort.
        assert_eq!(
            r.content(ALERT, &[1, 112], true, false),
            Err(Error::PeerAlert(112))
        );
        // TLS 1.2 warnings: up to MAX_WARNINGS in a row; another record type resets.
        for _ in 0..MAX_WARNINGS {
            assert_eq!(
                r.content(ALERT, &[1, 112], false, false),
                Ok(Content::Nothing)
            );
        }
        assert_eq!(
            r.content(APPLICATION_DATA, b"x", false, false),
            Ok(Content::AppData)
        );
        for _ in 0..MAX_WARNINGS {
            assert_eq!(
                r.content(ALERT, &[1, 112], false, false),
                Ok(Content::Nothing)
            );
        }
        assert!(matches!(
            r.content(ALERT, &[1, 112], false, false),
            Err(Error::UnexpectedMessage(_))
        ));
        assert_eq!(
            r.content(ALERT, &[2, 40], false, false),
            Err(Error::PeerAlert(40))
        );
        assert_eq!(
            r.content(CHANGE_CIPHER_SPEC, &[1], false, false),
            Ok(Content::ChangeCipherSpec)
        );
        for (body, joining) in [(&[2u8][..], false), (&[1, 1][..], false), (&[1][..], true)] {
            assert!(matches!(
                r.content(CHANGE_CIPHER_SPEC, body, false, joining),
                Err(Error::UnexpectedMessage(_))
            ));
        }
        assert!(matches!(
            r.content(24, b"hb", false, false),
            Err(Error::UnexpectedMessage(_))
        ));
    }
}
