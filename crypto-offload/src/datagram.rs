//! Secure datagram protection (the format is `socks_wire::datagram`'s): per
//! association, one AEAD key and IV per direction, from the control connection's
//! keying material exporter (the caller exports it: [`LABEL`], the association id as
//! context, [`DatagramKeys::material_len`] bytes), in the control connection's AEAD. Sealing and opening are one AEAD call each on the
//! caller's buffer, in place.
//!
//! The layout this module knows is only "13 header bytes (the AAD), the body, a 16-byte
//! tag"; the caller writes and parses the header, keeps the sequence counter and the
//! replay window.

use crate::prim::{AeadAlg, AeadKey, TAG_LEN};
use crate::CryptoError;
use zeroize::Zeroize;

/// The exporter label the keys are derived with (the same as `socks_wire`'s).
pub const LABEL: &[u8] = b"EXPORTER-appliance-datagram";
/// The clear header's length (the AAD).
pub const HEADER_LEN: usize = 13;

/// One direction: its key and IV.
pub struct Direction {
    key: AeadKey,
    iv: [u8; 12],
}

impl Drop for Direction {
    fn drop(&mut self) {
        // The key lives in OpenSSL's cipher context, which cleanses it when freed.
        self.iv.zeroize();
    }
}

/// An association's keys, from one side's point of view.
pub struct DatagramKeys {
    pub send: Direction,
    pub recv: Direction,
}

impl std::fmt::Debug for DatagramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatagramKeys({:?})", self.send.key.alg())
    }
}

impl DatagramKeys {
    /// Bytes of exporter output the keys take: a key per direction, then an IV per
    /// direction (client's first each time).
    pub fn material_len(alg: AeadAlg) -> usize {
        2 * alg.key_len() + 24
    }

    /// The keys of one association for the server (`server = true`: sends with the
    /// server's key) or the client, from the control connection's exporter output
    /// (ours, or another TLS library's `export_keying_material`):
    /// [`DatagramKeys::material_len`] bytes for [`LABEL`] with the association id
    /// (big-endian) as context.
    pub fn from_material(alg: AeadAlg, b: &[u8], server: bool) -> Result<Self, CryptoError> {
        let k = alg.key_len();
        if b.len() != Self::material_len(alg) {
            return Err(CryptoError::Unavailable(format!(
                "datagram keys need {} bytes of keying material, not {}",
                Self::material_len(alg),
                b.len()
            )));
        }
        let (ck, sk) = (&b[..k], &b[k..2 * k]);
        let mut civ = [0u8; 12];
        let mut siv = [0u8; 12];
        civ.copy_from_slice(&b[2 * k..2 * k + 12]);
        siv.copy_from_slice(&b[2 * k + 12..]);
        let (send, recv) = if server {
            ((sk, siv), (ck, civ))
        } else {
            ((ck, civ), (sk, siv))
        };
        let keys = DatagramKeys {
            send: Direction {
                key: AeadKey::new(alg, send.0, true)?,
                iv: send.1,
            },
            recv: Direction {
                key: AeadKey::new(alg, recv.0, false)?,
                iv: recv.1,
            },
        };
        civ.zeroize();
        siv.zeroize();
        Ok(keys)
    }

    /// How many datagrams may be sealed under the send key before the association
    /// must end (and a new one, with new keys, be made): the AEAD's confidentiality
    /// limit for packets of at most 2^16 bytes, as QUIC sets it (RFC 9001 §6.6): 2^23
    /// for AES-GCM; ChaCha20-Poly1305's (2^62) is beyond any sequence number used.
    pub fn seal_limit(&self) -> u64 {
        match self.send.key.alg() {
            AeadAlg::Chacha20Poly1305 => 1 << 62,
            _ => 1 << 23,
        }
    }

    /// Seals `d` in place: `d` is the 13-byte header, the body, and 16 bytes of room
    /// for the tag; `seq` is the header's sequence number.
    pub fn seal(&mut self, seq: u64, d: &mut [u8]) -> Result<(), CryptoError> {
        let (aad, rest) = split(d)?;
        let at = rest.len() - TAG_LEN;
        let (body, tag) = rest.split_at_mut(at);
        let mut t = [0u8; TAG_LEN];
        let nonce = nonce(&self.send.iv, seq);
        self.send.key.seal(&nonce, aad, body, &mut t)?;
        tag.copy_from_slice(&t);
        Ok(())
    }

    /// Opens `d` in place (the same layout); on failure the body is garbage.
    pub fn open(&mut self, seq: u64, d: &mut [u8]) -> Result<(), CryptoError> {
        let (aad, rest) = split(d)?;
        let at = rest.len() - TAG_LEN;
        let (body, tag) = rest.split_at_mut(at);
        let nonce = nonce(&self.recv.iv, seq);
        self.recv.key.open(&nonce, aad, body, tag)
    }
}

fn split(d: &mut [u8]) -> Result<(&[u8], &mut [u8]), CryptoError> {
    if d.len() < HEADER_LEN + TAG_LEN {
        return Err(CryptoError::BadTag);
    }
    let (a, b) = d.split_at_mut(HEADER_LEN);
    Ok((a, b))
}

fn nonce(iv: &[u8; 12], seq: u64) -> [u8; 12] {
    let mut n = *iv;
    for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
        *b ^= s;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keying material as an exporter would give it for association `id`.
    fn material(alg: AeadAlg, id: u8) -> Vec<u8> {
        (0..DatagramKeys::material_len(alg))
            .map(|i| (i as u8).wrapping_mul(31) ^ id)
            .collect()
    }

    fn datagram(seq: u64, body: &[u8]) -> Vec<u8> {
        let mut d = vec![0x81, 0, 0, 0, 7];
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(body);
        d.extend_from_slice(&[0; TAG_LEN]);
        d
    }

    #[test]
    fn each_side_opens_what_the_other_sealed_and_nothing_else() {
        for alg in [
            AeadAlg::Aes128Gcm,
            AeadAlg::Aes256Gcm,
            AeadAlg::Chacha20Poly1305,
        ] {
            let m = material(alg, 7);
            let mut server = DatagramKeys::from_material(alg, &m, true).unwrap();
            let mut client = DatagramKeys::from_material(alg, &m, false).unwrap();
            let mut d = datagram(3, b"\0\0\0\x01\x0a\x4d\0\x02\0\x35query");
            client.seal(3, &mut d).unwrap();
            assert!(!d.windows(5).any(|w| w == b"query"), "{alg:?}: encrypted");
            let sealed = d.clone();
            server.open(3, &mut d).unwrap();
            assert_eq!(&d[HEADER_LEN + 10..d.len() - TAG_LEN], b"query");
            // A flipped bit in the header (the AAD), the body or the tag; another
            // sequence number; the wrong direction; another association's keys.
            for i in [0usize, 8, 20, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[i] ^= 1;
                assert!(server.open(3, &mut bad).is_err(), "{alg:?}: byte {i}");
            }
            assert!(server.open(4, &mut sealed.clone()).is_err());
            assert!(client.open(3, &mut sealed.clone()).is_err());
            let mut other = DatagramKeys::from_material(alg, &material(alg, 8), true).unwrap();
            assert!(
                DatagramKeys::from_material(alg, &m[1..], true).is_err(),
                "length"
            );
            assert!(other.open(3, &mut sealed.clone()).is_err());
            assert!(server.open(0, &mut [0u8; 20]).is_err(), "too short");
            let limit = if alg == AeadAlg::Chacha20Poly1305 {
                1 << 62
            } else {
                1 << 23
            };
            assert_eq!(server.seal_limit(), limit, "{alg:?}");
        }
    }
}
