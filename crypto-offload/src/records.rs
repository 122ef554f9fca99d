//! Record protection in batches: the AEAD seals and opens of many records of many
//! connections as one job ([`crate::Job::Records`]), so bulk traffic costs one queue
//! round trip per poll iteration rather than one per record.
//!
//! The job knows AEAD, not TLS: the engine lays records out in a buffer and describes
//! each as an [`AeadOp`] (nonce, additional data, where the payload and its tag are).
//! The one piece of TLS here is [`tls13_inner`]: a TLS 1.3 open stops after a record
//! whose hidden content type is not application data, because such a record (a
//! KeyUpdate) can change the key the following records need.
//!
//! **Buffers and keys move.** A [`RecordWork`] owns its connection's record buffer and
//! the AEAD key of each direction it protects; the engine lends them and gets them
//! back in the completion. Payloads are encrypted and decrypted in place; nothing is
//! copied on the way to the worker or back. While a key is lent the connection
//! neither reads nor seals with it.

use crate::prim::{AeadKey, CryptoError, TAG_LEN};

/// One record's AEAD operation, in place in its [`AeadBatch`]'s buffer: the payload is
/// `buf[start..start + len]` and its tag the [`TAG_LEN`] bytes right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadOp {
    pub nonce: [u8; 12],
    /// Additional data: `aad[..aad_len]` (TLS 1.3: the 5-byte record header; TLS 1.2:
    /// 13 bytes of sequence number, type, version and length).
    pub aad: [u8; 13],
    pub aad_len: u8,
    pub start: usize,
    pub len: usize,
}

impl AeadOp {
    pub fn new(nonce: [u8; 12], aad: &[u8], start: usize, len: usize) -> Self {
        let mut a = [0u8; 13];
        let n = aad.len().min(13);
        a[..n].copy_from_slice(&aad[..n]);
        AeadOp {
            nonce,
            aad: a,
            aad_len: n as u8,
            start,
            len,
        }
    }

    /// The op's bytes, payload and tag, checked against the buffer's length.
    fn split<'a>(&self, buf: &'a mut [u8]) -> Option<(&'a mut [u8], &'a mut [u8])> {
        let end = self.start.checked_add(self.len)?.checked_add(TAG_LEN)?;
        let region = buf.get_mut(self.start..end)?;
        Some(region.split_at_mut(self.len))
    }
}

/// The records of one connection in one direction, with the key that protects them.
#[derive(Debug)]
pub struct AeadBatch {
    /// Lent by the engine; it comes back in the completion.
    pub key: AeadKey,
    /// The connection's record bytes (lent too).
    pub buf: Vec<u8>,
    pub ops: Vec<AeadOp>,
    /// `true`: these are opens of TLS 1.3 records, and the batch stops after the first
    /// whose inner content type is not application data (see the module docs).
    pub tls13_stop: bool,
    /// Set by the job: how many ops succeeded, in order. The ops after them were not
    /// run (their bytes are untouched) unless `error` says one failed.
    pub done: usize,
    /// Set by the job: why op number `done` failed (a bad tag, for an open).
    pub error: Option<CryptoError>,
}

impl AeadBatch {
    pub fn new(key: AeadKey, buf: Vec<u8>, ops: Vec<AeadOp>, tls13_stop: bool) -> Self {
        AeadBatch {
            key,
            buf,
            ops,
            tls13_stop,
            done: 0,
            error: None,
        }
    }

    /// Seal or open (as the key was made for) each op in turn, stopping at a failure.
    fn run(&mut self) {
        self.done = 0;
        self.error = None;
        let seal = self.key.is_sealing();
        for op in &self.ops {
            let Some((payload, tag)) = op.split(&mut self.buf) else {
                self.error = Some(CryptoError::Library("record op outside its buffer".into()));
                return;
            };
            let aad = &op.aad[..op.aad_len as usize];
            let r = if seal {
                let mut t = [0u8; TAG_LEN];
                let r = self.key.seal(&op.nonce, aad, payload, &mut t);
                tag.copy_from_slice(&t);
                r
            } else {
                self.key.open(&op.nonce, aad, payload, tag)
            };
            if let Err(e) = r {
                self.error = Some(e);
                return;
            }
            self.done += 1;
            if self.tls13_stop && !seal && tls13_inner(payload).map(|(t, _)| t) != Some(23) {
                return;
            }
        }
    }
}

/// One connection's share of a record job: what it reads, what it writes, or both.
#[derive(Debug)]
pub struct RecordWork {
    /// The caller's tag for the connection (the job does not look at it).
    pub owner: u64,
    pub open: Option<AeadBatch>,
    pub seal: Option<AeadBatch>,
}

impl RecordWork {
    /// Records this work protects (ops in both directions).
    pub fn ops(&self) -> usize {
        self.open.as_ref().map_or(0, |b| b.ops.len())
            + self.seal.as_ref().map_or(0, |b| b.ops.len())
    }
}

/// Record protection for many connections: one job, one queue round trip.
#[derive(Debug, Default)]
pub struct RecordJob {
    pub items: Vec<RecordWork>,
}

impl RecordJob {
    /// Records in the job.
    pub fn ops(&self) -> usize {
        self.items.iter().map(RecordWork::ops).sum()
    }
}

/// Runs every item. A failing record stops only its own batch (it is reported there);
/// the job itself does not fail.
pub(crate) fn run_records(mut job: RecordJob) -> RecordJob {
    for item in &mut job.items {
        if let Some(b) = item.open.as_mut() {
            b.run();
        }
        if let Some(b) = item.seal.as_mut() {
            b.run();
        }
    }
    job
}

/// RFC 8446 §5.4: a TLS 1.3 inner plaintext's content type is its last non-zero byte;
/// returns it and the content's length (without the type and the zero padding), or
/// `None` when every byte is zero.
pub fn tls13_inner(plaintext: &[u8]) -> Option<(u8, usize)> {
    let end = plaintext.iter().rposition(|&b| b != 0)?;
    Some((plaintext[end], end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prim::AeadAlg;

    fn keys(alg: AeadAlg) -> (AeadKey, AeadKey) {
        let k = vec![7u8; alg.key_len()];
        (
            AeadKey::new(alg, &k, true).unwrap(),
            AeadKey::new(alg, &k, false).unwrap(),
        )
    }

    /// Records of `sizes` laid out back to back, each followed by its tag's room.
    fn layout(sizes: &[usize], fill: impl Fn(usize) -> u8) -> (Vec<u8>, Vec<AeadOp>) {
        let mut buf = Vec::new();
        let mut ops = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let start = buf.len();
            buf.extend((0..n).map(|j| fill(i * 31 + j)));
            buf.extend_from_slice(&[0u8; TAG_LEN]);
            let mut nonce = [0u8; 12];
            nonce[11] = i as u8;
            ops.push(AeadOp::new(
                nonce,
                &[23, 3, 3, (n >> 8) as u8, n as u8],
                start,
                n,
            ));
        }
        (buf, ops)
    }

    #[test]
    fn sealed_batches_open_back_and_match_one_by_one_sealing() {
        for alg in [
            AeadAlg::Aes128Gcm,
            AeadAlg::Aes256Gcm,
            AeadAlg::Chacha20Poly1305,
        ] {
            let (seal, open) = keys(alg);
            let sizes = [1usize, 100, 16385, 0, 4096];
            let (buf, ops) = layout(&sizes, |j| (j % 251) as u8 + 1);
            let plain = buf.clone();
            let job = RecordJob {
                items: vec![RecordWork {
                    owner: 9,
                    open: None,
                    seal: Some(AeadBatch::new(seal, buf, ops.clone(), false)),
                }],
            };
            let mut job = run_records(job);
            let mut s = job.items.pop().unwrap().seal.unwrap();
            assert_eq!((s.done, s.error.is_none()), (sizes.len(), true));
            // Each record equals a one-record seal with the same nonce and AAD.
            for op in &ops {
                let mut one = plain[op.start..op.start + op.len].to_vec();
                let mut tag = [0u8; TAG_LEN];
                s.key
                    .seal(&op.nonce, &op.aad[..5], &mut one, &mut tag)
                    .unwrap();
                assert_eq!(&s.buf[op.start..op.start + op.len], &one[..]);
                assert_eq!(&s.buf[op.start + op.len..op.start + op.len + TAG_LEN], &tag);
                if op.len > 0 {
                    assert_ne!(
                        &s.buf[op.start..op.start + op.len],
                        &plain[op.start..op.start + op.len]
                    );
                }
            }
            let mut o = AeadBatch::new(open, std::mem::take(&mut s.buf), ops, false);
            o.run();
            assert_eq!((o.done, o.error.is_none()), (sizes.len(), true));
            for op in &o.ops {
                assert_eq!(
                    &o.buf[op.start..op.start + op.len],
                    &plain[op.start..op.start + op.len]
                );
            }
        }
    }

    #[test]
    fn a_bad_tag_stops_its_batch_at_that_record_and_no_other() {
        let (seal, open) = keys(AeadAlg::Aes128Gcm);
        let (buf, ops) = layout(&[50, 50, 50], |_| 0x41);
        let mut s = AeadBatch::new(seal, buf, ops.clone(), false);
        s.run();
        let mut sealed = std::mem::take(&mut s.buf);
        let good = sealed.clone();
        sealed[ops[1].start] ^= 1;
        let (_, open2) = keys(AeadAlg::Aes128Gcm);
        let job = RecordJob {
            items: vec![
                RecordWork {
                    owner: 1,
                    open: Some(AeadBatch::new(open, sealed, ops.clone(), false)),
                    seal: None,
                },
                RecordWork {
                    owner: 2,
                    open: Some(AeadBatch::new(open2, good, ops, false)),
                    seal: None,
                },
            ],
        };
        let job = run_records(job);
        let bad = job.items[0].open.as_ref().unwrap();
        assert_eq!(
            (bad.done, bad.error.clone()),
            (1, Some(CryptoError::BadTag))
        );
        let fine = job.items[1].open.as_ref().unwrap();
        assert_eq!((fine.done, fine.error.is_none()), (3, true));
    }

    #[test]
    fn a_tls13_open_stops_after_a_record_that_is_not_application_data() {
        let (mut seal, open) = keys(AeadAlg::Chacha20Poly1305);
        // Inner plaintexts: data(23), a KeyUpdate (22) with padding, data (23).
        let inners: [&[u8]; 3] = [
            b"hello\x17",
            b"\x18\x00\x00\x01\x00\x16\x00\x00",
            b"after\x17",
        ];
        let mut buf = Vec::new();
        let mut ops = Vec::new();
        for (i, p) in inners.iter().enumerate() {
            let start = buf.len();
            buf.extend_from_slice(p);
            buf.extend_from_slice(&[0u8; TAG_LEN]);
            ops.push(AeadOp::new(
                [i as u8; 12],
                &[23, 3, 3, 0, 0],
                start,
                p.len(),
            ));
        }
        for op in &ops {
            let (payload, tag) = op.split(&mut buf).unwrap();
            let mut t = [0u8; TAG_LEN];
            seal.seal(&op.nonce, &op.aad[..5], payload, &mut t).unwrap();
            tag.copy_from_slice(&t);
        }
        let third = buf[ops[2].start..].to_vec();
        let mut o = AeadBatch::new(open, buf, ops.clone(), true);
        o.run();
        assert_eq!((o.done, o.error.is_none()), (2, true));
        assert_eq!(
            tls13_inner(&o.buf[ops[1].start..ops[1].start + ops[1].len]),
            Some((22, 5))
        );
        // The record after the KeyUpdate is untouched ciphertext.
        assert_eq!(&o.buf[ops[2].start..], &third[..]);
    }

    #[test]
    fn an_op_outside_its_buffer_is_an_error_not_a_panic() {
        let (seal, _) = keys(AeadAlg::Aes128Gcm);
        let mut b = AeadBatch::new(
            seal,
            vec![0u8; 40],
            vec![
                AeadOp::new([0; 12], &[], 0, 10),
                AeadOp::new([0; 12], &[], 30, 10),
                AeadOp::new([0; 12], &[], usize::MAX - 3, 10),
            ],
            false,
        );
        b.run();
        assert_eq!(b.done, 1);
        assert!(matches!(b.error, Some(CryptoError::Library(_))));
    }

    #[test]
    fn inner_content_type() {
        assert_eq!(tls13_inner(b"abc\x17\x00\x00"), Some((0x17, 3)));
        assert_eq!(tls13_inner(b"\x15"), Some((0x15, 0)));
        assert_eq!(tls13_inner(b"\x00\x00"), None);
        assert_eq!(tls13_inner(b""), None);
    }
}
