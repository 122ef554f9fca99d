//! Crypto jobs: one job per handshake step, so a step costs one queue round trip.
//!
//! The TLS engine builds a [`Job`], hands it to whoever runs jobs (today [`run`], inline
//! on the calling core; the worker pool of issue 4 later), and gets a [`Done`] back.
//! Buffers move with the job: the transcript's chunks go in by value and shared
//! precomputed messages go in as `Arc`s, so nothing is copied on the way in or out.
//!
//! The jobs do a little TLS framing where a step's crypto depends on it (the
//! CertificateVerify and Finished messages enter the transcript the same job hashes);
//! everything else about the protocol stays in the engine.

use std::sync::Arc;

use crate::prim::*;

/// A piece of the handshake transcript: bytes this connection produced or received, or
/// a message precomputed once for a certificate and shared by every connection.
#[derive(Debug, Clone)]
pub enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

/// How much transcript hashing a job did: `passes` running hashes started, `bytes` fed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestCount {
    pub passes: u32,
    pub bytes: u64,
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

/// TLS 1.3 full handshake, server side, after an acceptable ClientHello: ECDHE, the key
/// schedule up to the application secrets, CertificateVerify and the server Finished,
/// and the client Finished the server expects. One running transcript hash.
#[derive(Debug)]
pub struct Tls13Flight {
    pub hash: HashAlg,
    pub aead: AeadAlg,
    pub group: Group,
    pub client_share: Vec<u8>,
    /// The transcript before ServerHello (ClientHello; or after a HelloRetryRequest the
    /// synthetic message_hash, the HRR and the second ClientHello).
    pub transcript: Vec<Chunk>,
    /// ServerHello with zeros where the server's key share goes, at `share_at`.
    pub server_hello: Vec<u8>,
    pub share_at: usize,
    pub encrypted_extensions: Vec<u8>,
    pub certificate: Arc<[u8]>,
    pub signer: Arc<SigningKey>,
    pub sig_alg: SigAlg,
    /// The SignatureScheme code written into CertificateVerify.
    pub scheme: u16,
}

/// What [`Tls13Flight`] produced.
#[derive(Debug)]
pub struct Tls13FlightDone {
    pub server_hello: Vec<u8>,
    pub encrypted_extensions: Vec<u8>,
    pub certificate: Arc<[u8]>,
    pub certificate_verify: Vec<u8>,
    pub server_finished: Vec<u8>,
    pub handshake_write: TrafficKey,
    pub handshake_read: TrafficKey,
    pub app_write: TrafficKey,
    pub app_read: TrafficKey,
    pub server_app_secret: Secret,
    pub client_app_secret: Secret,
    /// The verify_data the client's Finished must carry.
    pub client_finished: Secret,
    pub digest: DigestCount,
}

/// TLS 1.2 ECDHE, after ClientHello: an ephemeral key and the signed ServerKeyExchange.
#[derive(Debug)]
pub struct Tls12Kx {
    pub group: Group,
    /// The NamedGroup code written into the ServerECDHParams.
    pub group_id: u16,
    pub signer: Arc<SigningKey>,
    pub sig_alg: SigAlg,
    pub scheme: u16,
    pub client_random: [u8; 32],
    pub server_random: [u8; 32],
}

#[derive(Debug)]
pub struct Tls12KxDone {
    pub key: EphemeralKey,
    /// The whole ServerKeyExchange handshake message.
    pub server_key_exchange: Vec<u8>,
}

/// TLS 1.2 at the client's key exchange: premaster, master secret (extended master
/// secret when negotiated), key block, the client Finished the server expects and the
/// server Finished. The buffered transcript is digested once: the hash at
/// ClientKeyExchange serves the session hash and the client Finished, and the same
/// running hash goes on over the expected client Finished for the server's.
#[derive(Debug)]
pub struct Tls12Finish {
    pub hash: HashAlg,
    pub aead: AeadAlg,
    pub key: EphemeralKey,
    pub client_public: Vec<u8>,
    pub extended_master_secret: bool,
    pub client_random: [u8; 32],
    pub server_random: [u8; 32],
    /// ClientHello .. ClientKeyExchange.
    pub transcript: Vec<Chunk>,
}

#[derive(Debug)]
pub struct Tls12FinishDone {
    pub master_secret: Secret,
    pub client_write: TrafficKey,
    pub server_write: TrafficKey,
    pub client_verify: Secret,
    /// The server's Finished handshake message.
    pub server_finished: Vec<u8>,
    pub digest: DigestCount,
}

/// One handshake step's crypto.
#[derive(Debug)]
pub enum Job {
    Tls13Flight(Box<Tls13Flight>),
    Tls12Kx(Box<Tls12Kx>),
    Tls12Finish(Box<Tls12Finish>),
}

/// A job's result.
#[derive(Debug)]
pub enum Done {
    Tls13Flight(Box<Tls13FlightDone>),
    Tls12Kx(Box<Tls12KxDone>),
    Tls12Finish(Box<Tls12FinishDone>),
}

/// Run a job on the calling thread (inline mode).
pub fn run(job: Job) -> Result<Done, CryptoError> {
    Ok(match job {
        Job::Tls13Flight(j) => Done::Tls13Flight(Box::new(tls13_flight(*j)?)),
        Job::Tls12Kx(j) => Done::Tls12Kx(Box::new(tls12_kx(*j)?)),
        Job::Tls12Finish(j) => Done::Tls12Finish(Box::new(tls12_finish(*j)?)),
    })
}

fn handshake_header(typ: u8, len: usize) -> [u8; 4] {
    [typ, (len >> 16) as u8, (len >> 8) as u8, len as u8]
}

fn derive_secret(
    hash: HashAlg,
    secret: &[u8],
    label: &[u8],
    thash: &[u8],
) -> Result<Secret, CryptoError> {
    hkdf_expand_label(hash, secret, label, thash, hash.output_len())
}

fn finished_mac(hash: HashAlg, base: &[u8], thash: &[u8]) -> Result<Secret, CryptoError> {
    let fk = hkdf_expand_label(hash, base, b"finished", b"", hash.output_len())?;
    hmac(hash, fk.bytes(), &[thash])
}

fn tls13_flight(j: Tls13Flight) -> Result<Tls13FlightDone, CryptoError> {
    let h = j.hash;
    let (eph, public) = EphemeralKey::generate(j.group)?;
    let shared = eph.agree(&j.client_share)?;
    let mut sh = j.server_hello;
    sh.get_mut(j.share_at..j.share_at + public.len())
        .ok_or_else(|| CryptoError::Library("ServerHello template too short".into()))?
        .copy_from_slice(&public);

    let mut th = TranscriptHash::new(h)?;
    for c in &j.transcript {
        th.update(c.as_ref())?;
    }
    th.update(&sh)?;
    let hello_hash = th.current()?;

    // RFC 8446 §7.1 key schedule, without a PSK.
    let zeros = [0u8; 48];
    let empty_hash = hash(h, b"")?;
    let early = hkdf_extract(h, b"", &zeros[..h.output_len()])?;
    let derived = derive_secret(h, early.bytes(), b"derived", &empty_hash)?;
    let hs = hkdf_extract(h, derived.bytes(), shared.bytes())?;
    let c_hs = derive_secret(h, hs.bytes(), b"c hs traffic", &hello_hash)?;
    let s_hs = derive_secret(h, hs.bytes(), b"s hs traffic", &hello_hash)?;
    let derived = derive_secret(h, hs.bytes(), b"derived", &empty_hash)?;
    let master = hkdf_extract(h, derived.bytes(), &zeros[..h.output_len()])?;

    th.update(&j.encrypted_extensions)?;
    th.update(&j.certificate)?;
    // RFC 8446 §4.4.3: 64 spaces, the context string, a zero byte, the transcript hash.
    let cert_hash = th.current()?;
    let sig = j.signer.sign(
        j.sig_alg,
        &[
            &[0x20u8; 64],
            b"TLS 1.3, server CertificateVerify\0",
            &cert_hash,
        ],
    )?;
    let mut cv = Vec::with_capacity(8 + sig.len());
    cv.extend_from_slice(&handshake_header(15, 4 + sig.len()));
    cv.extend_from_slice(&j.scheme.to_be_bytes());
    cv.extend_from_slice(&(sig.len() as u16).to_be_bytes());
    cv.extend_from_slice(&sig);
    th.update(&cv)?;

    let sf_mac = finished_mac(h, s_hs.bytes(), &th.current()?)?;
    let mut sf = Vec::with_capacity(4 + h.output_len());
    sf.extend_from_slice(&handshake_header(20, h.output_len()));
    sf.extend_from_slice(sf_mac.bytes());
    th.update(&sf)?;
    let server_done_hash = th.current()?;

    let client_finished = finished_mac(h, c_hs.bytes(), &server_done_hash)?;
    let c_ap = derive_secret(h, master.bytes(), b"c ap traffic", &server_done_hash)?;
    let s_ap = derive_secret(h, master.bytes(), b"s ap traffic", &server_done_hash)?;

    Ok(Tls13FlightDone {
        server_hello: sh,
        encrypted_extensions: j.encrypted_extensions,
        certificate: j.certificate,
        certificate_verify: cv,
        server_finished: sf,
        handshake_write: TrafficKey::tls13(h, j.aead, s_hs.bytes(), true)?,
        handshake_read: TrafficKey::tls13(h, j.aead, c_hs.bytes(), false)?,
        app_write: TrafficKey::tls13(h, j.aead, s_ap.bytes(), true)?,
        app_read: TrafficKey::tls13(h, j.aead, c_ap.bytes(), false)?,
        server_app_secret: s_ap,
        client_app_secret: c_ap,
        client_finished,
        digest: DigestCount {
            passes: 1,
            bytes: th.bytes,
        },
    })
}

fn tls12_kx(j: Tls12Kx) -> Result<Tls12KxDone, CryptoError> {
    let (key, public) = EphemeralKey::generate(j.group)?;
    // RFC 8422 §5.4: ServerECDHParams = curve_type named_curve(3), NamedCurve, point.
    let mut params = Vec::with_capacity(4 + public.len());
    params.push(3);
    params.extend_from_slice(&j.group_id.to_be_bytes());
    params.push(public.len() as u8);
    params.extend_from_slice(&public);
    let sig = j
        .signer
        .sign(j.sig_alg, &[&j.client_random, &j.server_random, &params])?;
    let body = params.len() + 4 + sig.len();
    let mut ske = Vec::with_capacity(4 + body);
    ske.extend_from_slice(&handshake_header(12, body));
    ske.extend_from_slice(&params);
    ske.extend_from_slice(&j.scheme.to_be_bytes());
    ske.extend_from_slice(&(sig.len() as u16).to_be_bytes());
    ske.extend_from_slice(&sig);
    Ok(Tls12KxDone {
        key,
        server_key_exchange: ske,
    })
}

fn tls12_finish(j: Tls12Finish) -> Result<Tls12FinishDone, CryptoError> {
    let h = j.hash;
    let pms = j.key.agree(&j.client_public)?;
    let mut th = TranscriptHash::new(h)?;
    for c in &j.transcript {
        th.update(c.as_ref())?;
    }
    let session_hash = th.current()?;
    let master = if j.extended_master_secret {
        // RFC 7627 §4.
        prf12(
            h,
            pms.bytes(),
            b"extended master secret",
            &[&session_hash],
            48,
        )?
    } else {
        prf12(
            h,
            pms.bytes(),
            b"master secret",
            &[&j.client_random, &j.server_random],
            48,
        )?
    };
    // RFC 5246 §6.3; AEAD suites have no MAC keys. GCM: 4-byte salt (RFC 5288 §3);
    // ChaCha20-Poly1305: a 12-byte IV (RFC 7905 §2).
    let klen = j.aead.key_len();
    let ivlen = if j.aead == AeadAlg::Chacha20Poly1305 {
        12
    } else {
        4
    };
    let kb = prf12(
        h,
        master.bytes(),
        b"key expansion",
        &[&j.server_random, &j.client_random],
        2 * (klen + ivlen),
    )?;
    let kb = kb.bytes();
    let client_write = TrafficKey {
        key: AeadKey::new(j.aead, &kb[..klen], false)?,
        iv: Secret::new(kb[2 * klen..2 * klen + ivlen].to_vec()),
    };
    let server_write = TrafficKey {
        key: AeadKey::new(j.aead, &kb[klen..2 * klen], true)?,
        iv: Secret::new(kb[2 * klen + ivlen..2 * (klen + ivlen)].to_vec()),
    };
    let client_verify = prf12(h, master.bytes(), b"client finished", &[&session_hash], 12)?;
    // The client's Finished as it must be, so the running hash covers it without
    // waiting for the record: the engine checks the real one against `client_verify`.
    th.update(&handshake_header(20, 12))?;
    th.update(client_verify.bytes())?;
    let server_verify = prf12(h, master.bytes(), b"server finished", &[&th.current()?], 12)?;
    let mut server_finished = handshake_header(20, 12).to_vec();
    server_finished.extend_from_slice(server_verify.bytes());
    Ok(Tls12FinishDone {
        master_secret: master,
        client_write,
        server_write,
        client_verify,
        server_finished,
        digest: DigestCount {
            passes: 1,
            bytes: th.bytes,
        },
    })
}
