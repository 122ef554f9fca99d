//! Byte-level builders for crafted peer input: ClientHellos with every field settable
//! and records of any type, version and length. For negative tests (`tls/tests`, the
//! table-driven corpus in `tests/`) and fuzz seeds; behind the `hostile` feature, so
//! the appliance never links it.
//!
//! Nothing here validates: writing wrong lengths, values and orders on purpose is the
//! point. The encoders are the RFC 8446 §3 presentation-language vectors.

use crate::msgs::{ext, group, scheme, suite};

/// `b` with a 2-byte length in front.
pub fn v16(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

/// `b` with a 1-byte length in front.
pub fn v8(b: &[u8]) -> Vec<u8> {
    let mut v = vec![b.len() as u8];
    v.extend_from_slice(b);
    v
}

/// 16-bit values, big-endian, back to back.
pub fn u16s(l: &[u16]) -> Vec<u8> {
    l.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// A server_name extension body with one host_name entry.
pub fn sni(name: &[u8]) -> Vec<u8> {
    let mut entry = vec![0u8];
    entry.extend_from_slice(&v16(name));
    v16(&entry)
}

/// A key_share extension body (client form) from (group, key_exchange) entries.
pub fn key_shares(entries: &[(u16, &[u8])]) -> Vec<u8> {
    let mut s = Vec::new();
    for (g, k) in entries {
        s.extend_from_slice(&g.to_be_bytes());
        s.extend_from_slice(&v16(k));
    }
    v16(&s)
}

/// A handshake message: type, 24-bit length, body.
pub fn handshake(typ: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![typ];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend_from_slice(body);
    m
}

/// One record: type, version 0x0303, length, fragment.
pub fn record(typ: u8, fragment: &[u8]) -> Vec<u8> {
    record_with(typ, 0x0303, fragment)
}

/// One record with the given legacy_record_version.
pub fn record_with(typ: u8, version: u16, fragment: &[u8]) -> Vec<u8> {
    let mut r = vec![typ];
    r.extend_from_slice(&version.to_be_bytes());
    r.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
    r.extend_from_slice(fragment);
    r
}

/// A ClientHello to be written as records: every field settable.
#[derive(Clone, Debug)]
pub struct Hello {
    pub legacy_version: u16,
    pub random: [u8; 32],
    pub session_id: Vec<u8>,
    pub suites: Vec<u16>,
    pub compression: Vec<u8>,
    /// In order, duplicates allowed.
    pub exts: Vec<(u16, Vec<u8>)>,
}

impl Hello {
    /// What a TLS 1.3 client offers (also TLS 1.2): SNI "test.example", an X25519
    /// share, ECDSA and PSS.
    pub fn tls13() -> Hello {
        Hello {
            legacy_version: 0x0303,
            random: [7; 32],
            session_id: Vec::new(),
            suites: vec![
                suite::TLS13_AES_128_GCM_SHA256,
                suite::ECDHE_ECDSA_AES128_GCM_SHA256,
            ],
            compression: vec![0],
            exts: vec![
                (ext::SERVER_NAME, sni(b"test.example")),
                (ext::SUPPORTED_VERSIONS, v8(&u16s(&[0x0304, 0x0303]))),
                (
                    ext::SUPPORTED_GROUPS,
                    v16(&u16s(&[group::X25519, group::SECP256R1])),
                ),
                (
                    ext::SIGNATURE_ALGORITHMS,
                    v16(&u16s(&[
                        scheme::ECDSA_SECP256R1_SHA256,
                        scheme::RSA_PSS_RSAE_SHA256,
                    ])),
                ),
                // Any 32 bytes are an X25519 public value.
                (ext::KEY_SHARE, key_shares(&[(group::X25519, &[9u8; 32])])),
            ],
        }
    }

    /// A TLS 1.2-only client.
    pub fn tls12() -> Hello {
        let mut h = Hello::tls13();
        h.exts
            .retain(|(t, _)| *t != ext::SUPPORTED_VERSIONS && *t != ext::KEY_SHARE);
        h.suites = vec![suite::ECDHE_ECDSA_AES128_GCM_SHA256];
        h.exts.push((ext::EC_POINT_FORMATS, v8(&[0])));
        h
    }

    /// Sets extension `typ` (replacing the first of that type, or appending).
    pub fn set(mut self, typ: u16, body: Vec<u8>) -> Hello {
        match self.exts.iter_mut().find(|(t, _)| *t == typ) {
            Some(e) => e.1 = body,
            None => self.exts.push((typ, body)),
        }
        self
    }

    /// Appends extension `typ` even when one of that type is there.
    pub fn push(mut self, typ: u16, body: Vec<u8>) -> Hello {
        self.exts.push((typ, body));
        self
    }

    /// Removes every extension of type `typ`.
    pub fn without(mut self, typ: u16) -> Hello {
        self.exts.retain(|(t, _)| *t != typ);
        self
    }

    /// The ClientHello body (what follows the handshake header).
    pub fn body(&self) -> Vec<u8> {
        let mut b = self.legacy_version.to_be_bytes().to_vec();
        b.extend_from_slice(&self.random);
        b.extend_from_slice(&v8(&self.session_id));
        b.extend_from_slice(&v16(&u16s(&self.suites)));
        b.extend_from_slice(&v8(&self.compression));
        let mut e = Vec::new();
        for (t, body) in &self.exts {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&v16(body));
        }
        b.extend_from_slice(&v16(&e));
        b
    }

    /// The handshake message.
    pub fn message(&self) -> Vec<u8> {
        handshake(1, &self.body())
    }

    /// As handshake records of at most 16,384 bytes each (record version 0x0301, as
    /// clients send their first flight).
    pub fn records(&self) -> Vec<u8> {
        self.records_of(16_384)
    }

    /// As handshake records of at most `size` bytes each.
    pub fn records_of(&self, size: usize) -> Vec<u8> {
        let m = self.message();
        let mut out = Vec::new();
        for piece in m.chunks(size.max(1)) {
            out.extend_from_slice(&record_with(22, 0x0301, piece));
        }
        out
    }
}
