//! The key schedules: TLS 1.3's HKDF-Expand-Label and secrets (RFC 8446 §7), the
//! TLS 1.2 PRF and key block (RFC 5246 §5, §6.3), and the Finished MACs of both.

use crypto_offload::prim::{hkdf_expand, hkdf_extract, hmac, HmacKey, Wiped};
use crypto_offload::{AeadAlg, AeadKey, CryptoError, HashAlg, Secret};

use super::handshake_header;

/// HKDF-Expand-Label (RFC 8446 §7.1).
pub fn hkdf_expand_label(
    alg: HashAlg,
    secret: &[u8],
    label: &[u8],
    context: &[u8],
    len: usize,
) -> Result<Secret, CryptoError> {
    let mut info = Vec::with_capacity(4 + 6 + label.len() + context.len());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    info.push((6 + label.len()) as u8);
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label);
    info.push(context.len() as u8);
    info.extend_from_slice(context);
    hkdf_expand(alg, secret, &info, len)
}

/// The TLS 1.2 PRF (RFC 5246 §5): P_hash(secret, label || seed).
pub fn prf12(
    alg: HashAlg,
    secret: &[u8],
    label: &[u8],
    seed: &[&[u8]],
    len: usize,
) -> Result<Secret, CryptoError> {
    Prf12::new(alg, secret)?.expand(label, seed, len)
}

/// The TLS 1.2 PRF keyed by one secret. Its HMAC key is set up once, so the outputs
/// under one master secret (the key block, both Finished) share the set-up: two hash
/// compressions each time, a fifth of a Finished's PRF.
pub struct Prf12(HmacKey);

impl Prf12 {
    pub fn new(alg: HashAlg, secret: &[u8]) -> Result<Self, CryptoError> {
        Ok(Prf12(HmacKey::new(alg, secret)?))
    }

    /// `len` bytes of P_hash(secret, label || seed). The chain values A(i) and each
    /// block stay on the stack and are wiped.
    pub fn expand(&self, label: &[u8], seed: &[&[u8]], len: usize) -> Result<Secret, CryptoError> {
        let mut ls = Vec::with_capacity(label.len() + 64);
        ls.extend_from_slice(label);
        for s in seed {
            ls.extend_from_slice(s);
        }
        let mut out = Secret::new(Vec::with_capacity(len));
        let (mut a, mut next, mut block) =
            (Wiped::<48>::new(), Wiped::<48>::new(), Wiped::<48>::new());
        let mut n = self.0.mac_into(&[&ls], &mut a)?;
        loop {
            let m = self.0.mac_into(&[&a[..n], &ls], &mut block)?;
            let take = (len - out.bytes().len()).min(m);
            out.extend(&block[..take]);
            if out.bytes().len() >= len {
                return Ok(out);
            }
            n = self.0.mac_into(&[&a[..n]], &mut next)?;
            std::mem::swap(&mut a, &mut next);
        }
    }
}

/// A record protection key for one direction and its IV (TLS 1.3: 12 bytes XORed with
/// the sequence number; TLS 1.2 GCM: the 4-byte salt; TLS 1.2 ChaCha20: 12 bytes).
#[derive(Debug)]
pub struct TrafficKey {
    pub key: AeadKey,
    pub iv: Secret,
}

impl TrafficKey {
    /// RFC 8446 §7.3: key and IV from a traffic secret.
    pub fn tls13(
        hash: HashAlg,
        aead: AeadAlg,
        secret: &[u8],
        enc: bool,
    ) -> Result<Self, CryptoError> {
        let key = hkdf_expand_label(hash, secret, b"key", b"", aead.key_len())?;
        let iv = hkdf_expand_label(hash, secret, b"iv", b"", 12)?;
        Ok(TrafficKey {
            key: AeadKey::new(aead, key.bytes(), enc)?,
            iv,
        })
    }
}

/// RFC 8446 §7.2: the next application traffic secret (KeyUpdate).
pub fn tls13_next_secret(hash: HashAlg, secret: &[u8]) -> Result<Secret, CryptoError> {
    hkdf_expand_label(hash, secret, b"traffic upd", b"", hash.output_len())
}

pub(crate) fn derive_secret(
    hash: HashAlg,
    secret: &[u8],
    label: &[u8],
    thash: &[u8],
) -> Result<Secret, CryptoError> {
    hkdf_expand_label(hash, secret, label, thash, hash.output_len())
}

/// RFC 8446 §7.1: the early secret, from the PSK when resuming, else from zeros.
pub(crate) fn early_secret(h: HashAlg, psk: Option<&[u8]>) -> Result<Secret, CryptoError> {
    let zeros = [0u8; 48];
    hkdf_extract(h, b"", psk.unwrap_or(&zeros[..h.output_len()]))
}

/// RFC 8446 §4.2.11.2: the PSK binder, a Finished-style MAC over the hash of the
/// ClientHello up to its binders list, keyed from the early secret.
pub(crate) fn binder_mac(h: HashAlg, early: &Secret, thash: &[u8]) -> Result<Secret, CryptoError> {
    let binder_key = derive_secret(h, early.bytes(), b"res binder", h.empty_hash())?;
    finished_mac(h, binder_key.bytes(), thash)
}

/// A whole Finished message (header and MAC) keyed by a handshake traffic secret.
pub(crate) fn finished_message(
    h: HashAlg,
    base: &Secret,
    thash: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mac = finished_mac(h, base.bytes(), thash)?;
    let mut m = Vec::with_capacity(4 + mac.bytes().len());
    m.extend_from_slice(&handshake_header(20, mac.bytes().len()));
    m.extend_from_slice(mac.bytes());
    Ok(m)
}

/// The client's and the server's application traffic secrets, over the transcript
/// through the server's Finished.
pub(crate) fn app_secrets(
    h: HashAlg,
    master: &Secret,
    server_done: &[u8],
) -> Result<(Secret, Secret), CryptoError> {
    Ok((
        derive_secret(h, master.bytes(), b"c ap traffic", server_done)?,
        derive_secret(h, master.bytes(), b"s ap traffic", server_done)?,
    ))
}

/// RFC 8446 §7.1 from the early secret: the handshake secret (from the (EC)DHE secret,
/// or zeros for psk_ke) and, over the transcript through the ServerHello, the client's
/// and the server's handshake traffic secrets and the master secret.
pub(crate) fn tls13_handshake_secrets(
    h: HashAlg,
    early: &Secret,
    shared: Option<&Secret>,
    hello_hash: &[u8],
) -> Result<(Secret, Secret, Secret), CryptoError> {
    let zeros = [0u8; 48];
    let n = h.output_len();
    let derived = derive_secret(h, early.bytes(), b"derived", h.empty_hash())?;
    let hs = hkdf_extract(
        h,
        derived.bytes(),
        shared.map_or(&zeros[..n], |s| s.bytes()),
    )?;
    let c_hs = derive_secret(h, hs.bytes(), b"c hs traffic", hello_hash)?;
    let s_hs = derive_secret(h, hs.bytes(), b"s hs traffic", hello_hash)?;
    let derived = derive_secret(h, hs.bytes(), b"derived", h.empty_hash())?;
    let master = hkdf_extract(h, derived.bytes(), &zeros[..n])?;
    Ok((c_hs, s_hs, master))
}

pub(crate) fn finished_mac(
    hash: HashAlg,
    base: &[u8],
    thash: &[u8],
) -> Result<Secret, CryptoError> {
    let fk = hkdf_expand_label(hash, base, b"finished", b"", hash.output_len())?;
    hmac(hash, fk.bytes(), &[thash])
}

/// RFC 5246 §6.3 key block; AEAD suites have no MAC keys. GCM: a 4-byte salt
/// (RFC 5288 §3); ChaCha20-Poly1305: a 12-byte IV (RFC 7905 §2). Returns the client's
/// and the server's write keys, each set up to seal on its own side (`client_side`:
/// the caller is the client, so the client's key seals and the server's opens).
pub fn tls12_keys(
    prf: &Prf12,
    aead: AeadAlg,
    client_random: &[u8; 32],
    server_random: &[u8; 32],
    client_side: bool,
) -> Result<(TrafficKey, TrafficKey), CryptoError> {
    let klen = aead.key_len();
    let ivlen = if aead == AeadAlg::Chacha20Poly1305 {
        12
    } else {
        4
    };
    let kb = prf.expand(
        b"key expansion",
        &[server_random, client_random],
        2 * (klen + ivlen),
    )?;
    let kb = kb.bytes();
    let client_write = TrafficKey {
        key: AeadKey::new(aead, &kb[..klen], client_side)?,
        iv: Secret::new(kb[2 * klen..2 * klen + ivlen].to_vec()),
    };
    let server_write = TrafficKey {
        key: AeadKey::new(aead, &kb[klen..2 * klen], !client_side)?,
        iv: Secret::new(kb[2 * klen + ivlen..2 * (klen + ivlen)].to_vec()),
    };
    Ok((client_write, server_write))
}

/// A TLS 1.2 Finished message: 12 bytes of PRF over the transcript hash (`label`:
/// "client finished" or "server finished").
pub fn tls12_finished(prf: &Prf12, label: &[u8], thash: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let v = prf.expand(label, &[thash], 12)?;
    let mut m = handshake_header(20, 12).to_vec();
    m.extend_from_slice(v.bytes());
    Ok(m)
}
