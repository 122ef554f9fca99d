//! Crypto jobs: one job per handshake step, so a step costs one queue round trip.
//!
//! The TLS engine builds a [`Job`], hands it to whoever runs jobs ([`run`], inline on
//! the calling core, or a worker of [`crate::Pool`]), and gets a [`Done`] back.
//! Buffers move with the job: the transcript's chunks go in by value and shared
//! precomputed messages go in as `Arc`s, so nothing is copied on the way in or out.
//!
//! The jobs do a little TLS framing where a step's crypto depends on it (the
//! CertificateVerify and Finished messages enter the transcript the same job hashes);
//! everything else about the protocol stays in the engine.

use std::sync::Arc;

use crate::prim::*;
use crate::records::RecordJob;
use crate::ticket::TicketKeys;

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

/// TLS 1.3 server flight after an acceptable ClientHello, full or resumed: (EC)DHE
/// and/or the PSK, the key schedule up to the application secrets, the binder check,
/// CertificateVerify, the server Finished, the client Finished the server expects, and
/// a NewSessionTicket for the next connection. One running transcript hash.
#[derive(Debug)]
pub struct Tls13Flight {
    pub hash: HashAlg,
    pub aead: AeadAlg,
    /// (EC)DHE group and the client's share; `None` for a psk_ke resumption.
    pub kx: Option<(Group, Vec<u8>)>,
    /// A resumption: the PSK and the binder to check.
    pub psk: Option<PskCheck>,
    /// The transcript before ServerHello (ClientHello; or after a HelloRetryRequest the
    /// synthetic message_hash, the HRR and the second ClientHello).
    pub transcript: Vec<Chunk>,
    /// ServerHello with zeros where the server's key share goes, at `share_at`.
    pub server_hello: Vec<u8>,
    pub share_at: usize,
    pub encrypted_extensions: Vec<u8>,
    /// A full handshake authenticates with a certificate; a resumption does not.
    pub auth: Option<CertAuth>,
    /// Ask for a client certificate: the precomputed CertificateRequest. The client
    /// Finished then depends on the client's reply, so the job hands its running hash
    /// and secrets on ([`Tls13FlightDone::client_auth`]) instead of computing it.
    pub certificate_request: Option<Arc<[u8]>>,
    /// Seal a ticket for the client's next connection (without a certificate request).
    pub ticket: Option<TicketRequest>,
    /// A key share made ahead of time, with its public value, for the `kx` group (a
    /// known-answer test, or a pool of keys made off the handshake path); `None`: the
    /// job makes one.
    pub server_share: Option<(EphemeralKey, Vec<u8>)>,
}

/// The TLS 1.3 handshake state a client-certificate step continues from: the running
/// transcript hash (through the server Finished), the client handshake traffic secret
/// and the master secret.
#[derive(Debug)]
pub struct Tls13Continue {
    pub hash: HashAlg,
    th: TranscriptHash,
    client_hs: Secret,
    master: Secret,
}

/// TLS 1.3 after the client's Certificate (and CertificateVerify, when the chain is not
/// empty): verify the chain against the CA store and the signature over the transcript,
/// then the client Finished the server expects and the ticket. Same hash pass.
#[derive(Debug)]
pub struct Tls13ClientAuth {
    pub state: Box<Tls13Continue>,
    /// The client's Certificate message, and its chain (DER, leaf first; may be empty).
    pub certificate: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
    pub roots: Arc<CaStore>,
    /// The CertificateVerify message, its algorithm and signature (non-empty chains).
    pub certificate_verify: Option<(Vec<u8>, SigAlg, Vec<u8>)>,
    /// TLS 1.3 binds ECDSA schemes to a curve: the key kind the scheme requires.
    pub required_kind: Option<KeyKind>,
    pub ticket: Option<TicketRequest>,
}

#[derive(Debug)]
pub struct Tls13ClientAuthDone {
    pub client_finished: Secret,
    /// The verified leaf's subject (none for an empty chain).
    pub peer_subject: Option<String>,
    pub new_session_ticket: Option<Vec<u8>>,
    pub digest: DigestCount,
}

/// RFC 8446 §4.2.11.2: the PSK a ticket carried and the client's binder for it.
#[derive(Debug)]
pub struct PskCheck {
    pub psk: Secret,
    pub binder: Vec<u8>,
    /// Where, in the last transcript chunk (the ClientHello), the binders list starts:
    /// the binder covers the transcript up to there.
    pub binders_at: usize,
}

/// The server's certificate message and the key that signs CertificateVerify.
#[derive(Debug)]
pub struct CertAuth {
    pub certificate: Arc<[u8]>,
    pub signer: Arc<SigningKey>,
    pub sig_alg: SigAlg,
    /// The SignatureScheme code written into CertificateVerify.
    pub scheme: u16,
}

/// A ticket to seal: the engine's encoded session state, to which the job appends the
/// secret it derives (TLS 1.2: the master secret; TLS 1.3: the ticket's PSK).
#[derive(Debug)]
pub struct TicketRequest {
    pub keys: Arc<TicketKeys>,
    pub now_ms: u64,
    pub state: Vec<u8>,
    /// ticket_lifetime(_hint), seconds.
    pub lifetime_s: u32,
    /// TLS 1.3 only: ticket_age_add.
    pub age_add: u32,
}

/// What [`Tls13Flight`] produced.
#[derive(Debug)]
pub struct Tls13FlightDone {
    pub server_hello: Vec<u8>,
    pub encrypted_extensions: Vec<u8>,
    /// Certificate and CertificateVerify (absent when resuming).
    pub certificate: Option<Arc<[u8]>>,
    pub certificate_verify: Vec<u8>,
    pub server_finished: Vec<u8>,
    pub handshake_write: TrafficKey,
    pub handshake_read: TrafficKey,
    pub app_write: TrafficKey,
    pub app_read: TrafficKey,
    pub server_app_secret: Secret,
    pub client_app_secret: Secret,
    /// RFC 8446 §7.5: what the connection exports keying material from.
    pub exporter: crate::exporter::Exporter,
    /// The verify_data the client's Finished must carry (`None` when a client
    /// certificate was requested: see `client_auth`).
    pub client_finished: Option<Secret>,
    /// NewSessionTicket (plaintext handshake message), to send once the client's
    /// Finished has been checked (RFC 8446 §4.6.1).
    pub new_session_ticket: Option<Vec<u8>>,
    /// With a certificate request: where [`Tls13ClientAuth`] carries on.
    pub client_auth: Option<Box<Tls13Continue>>,
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
/// secret when negotiated), key block, the client Finished the server expects, a
/// NewSessionTicket when asked, and the server Finished. The buffered transcript is
/// digested once: the hash at ClientKeyExchange serves the session hash and the client
/// Finished, and the same running hash goes on over the expected client Finished and
/// the ticket for the server's.
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
    /// RFC 5077: seal a ticket and send it before the server's Finished.
    pub ticket: Option<TicketRequest>,
    /// A client certificate to verify, with its CertificateVerify.
    pub client_auth: Option<Tls12ClientCheck>,
}

/// TLS 1.2 client authentication: the chain (DER, leaf first), the CertificateVerify
/// message and its signature. The signature's hash is the suite's (the server asked
/// only for those), so it is checked against the transcript hash snapshot at
/// ClientKeyExchange: no second pass.
#[derive(Debug)]
pub struct Tls12ClientCheck {
    pub roots: Arc<CaStore>,
    pub chain: Vec<Vec<u8>>,
    pub certificate_verify: Vec<u8>,
    pub sig_alg: SigAlg,
    pub signature: Vec<u8>,
}

#[derive(Debug)]
pub struct Tls12FinishDone {
    /// The verified client certificate's subject.
    pub peer_subject: Option<String>,
    pub master_secret: Secret,
    /// RFC 5705: what the connection exports keying material from.
    pub exporter: crate::exporter::Exporter,
    pub client_write: TrafficKey,
    pub server_write: TrafficKey,
    pub client_verify: Secret,
    /// NewSessionTicket (RFC 5077 §3.3), when asked for; it precedes the server CCS.
    pub new_session_ticket: Option<Vec<u8>>,
    /// The server's Finished handshake message.
    pub server_finished: Vec<u8>,
    pub digest: DigestCount,
}

/// TLS 1.2 abbreviated handshake (RFC 5246 §7.3) on a resumed master secret: keys from
/// the new randoms, the server Finished over ClientHello and ServerHello, and the client
/// Finished expected over those and the server's. One running transcript hash.
#[derive(Debug)]
pub struct Tls12Resume {
    pub hash: HashAlg,
    pub aead: AeadAlg,
    pub master_secret: Secret,
    pub client_random: [u8; 32],
    pub server_random: [u8; 32],
    /// ClientHello, ServerHello.
    pub transcript: Vec<Chunk>,
    /// RFC 5077 §3.3: a fresh ticket for the resumed session, sent after the
    /// ServerHello (its secret is the master secret).
    pub ticket: Option<TicketRequest>,
}

#[derive(Debug)]
pub struct Tls12ResumeDone {
    /// RFC 5705: what the connection exports keying material from.
    pub exporter: crate::exporter::Exporter,
    pub client_write: TrafficKey,
    pub server_write: TrafficKey,
    pub client_verify: Secret,
    /// NewSessionTicket, when asked for: it follows the ServerHello.
    pub new_session_ticket: Option<Vec<u8>>,
    pub server_finished: Vec<u8>,
    pub digest: DigestCount,
}

/// A step defined by a crate above this one (the TLS client role's handshake crypto,
/// built from this crate's primitives): it runs where jobs run, inline or on a worker,
/// and its result goes back unopened to whoever made it.
pub struct Call(pub Box<dyn FnOnce() -> Result<CallResult, CryptoError> + Send>);

/// What a [`Call`] returns: the caller's own type, downcast where it is taken back.
pub type CallResult = Box<dyn std::any::Any + Send>;

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Call")
    }
}

/// One handshake step's crypto.
#[derive(Debug)]
pub enum Job {
    Tls13Flight(Box<Tls13Flight>),
    Tls12Kx(Box<Tls12Kx>),
    Tls12Finish(Box<Tls12Finish>),
    Tls12Resume(Box<Tls12Resume>),
    Tls13ClientAuth(Box<Tls13ClientAuth>),
    /// Record protection for many connections ([`crate::records`]).
    Records(RecordJob),
    /// A password against its stored hash ([`crate::password`]).
    PasswordCheck(Box<crate::password::PasswordCheck>),
    /// A step another crate defined ([`Call`]).
    Call(Call),
}

/// A job's result.
#[derive(Debug)]
pub enum Done {
    Tls13Flight(Box<Tls13FlightDone>),
    Tls12Kx(Box<Tls12KxDone>),
    Tls12Finish(Box<Tls12FinishDone>),
    Tls12Resume(Box<Tls12ResumeDone>),
    Tls13ClientAuth(Box<Tls13ClientAuthDone>),
    /// The same items, their records protected (or each batch's failure noted).
    Records(RecordJob),
    /// Whether the password matched.
    PasswordCheck(bool),
    /// A [`Call`]'s result.
    Call(CallResult),
}

/// Run a job on the calling thread (inline mode).
pub fn run(job: Job) -> Result<Done, CryptoError> {
    Ok(match job {
        Job::Tls13Flight(j) => Done::Tls13Flight(Box::new(tls13_flight(*j)?)),
        Job::Tls12Kx(j) => Done::Tls12Kx(Box::new(tls12_kx(*j)?)),
        Job::Tls12Finish(j) => Done::Tls12Finish(Box::new(tls12_finish(*j)?)),
        Job::Tls12Resume(j) => Done::Tls12Resume(Box::new(tls12_resume(*j)?)),
        Job::Tls13ClientAuth(j) => Done::Tls13ClientAuth(Box::new(tls13_client_auth(*j)?)),
        Job::Records(j) => Done::Records(crate::records::run_records(j)),
        Job::PasswordCheck(j) => Done::PasswordCheck(crate::password::check(&j)?),
        Job::Call(c) => Done::Call((c.0)()?),
    })
}

pub(crate) fn handshake_header(typ: u8, len: usize) -> [u8; 4] {
    [typ, (len >> 16) as u8, (len >> 8) as u8, len as u8]
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

/// RFC 8446 §4.4.3: check a CertificateVerify signature made with `leaf`'s key over
/// the transcript hash `thash`, under `context` ("TLS 1.3, server CertificateVerify"
/// or the client's, with its zero byte).
pub(crate) fn verify_certificate_verify13(
    leaf: &[u8],
    alg: SigAlg,
    context: &[u8],
    thash: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    verify_signature(leaf, alg, &[&[0x20u8; 64], context, thash], sig)
}

pub(crate) fn finished_mac(
    hash: HashAlg,
    base: &[u8],
    thash: &[u8],
) -> Result<Secret, CryptoError> {
    let fk = hkdf_expand_label(hash, base, b"finished", b"", hash.output_len())?;
    hmac(hash, fk.bytes(), &[thash])
}

fn tls13_flight(j: Tls13Flight) -> Result<Tls13FlightDone, CryptoError> {
    let h = j.hash;
    // RFC 8446 §7.1 key schedule; the early secret comes from the PSK when resuming.
    let early = early_secret(h, j.psk.as_ref().map(|p| p.psk.bytes()))?;

    let mut th = TranscriptHash::new(h)?;
    let (last, before) = j
        .transcript
        .split_last()
        .ok_or_else(|| CryptoError::Library("empty transcript".into()))?;
    for c in before {
        th.update(c.as_ref())?;
    }
    let last = last.as_ref();
    if let Some(p) = &j.psk {
        // RFC 8446 §4.2.11.2: the binder is a Finished-style MAC over the transcript up
        // to the binders list, keyed from the early secret.
        let prefix = last
            .get(..p.binders_at)
            .ok_or_else(|| CryptoError::Library("binder offset outside the hello".into()))?;
        th.update(prefix)?;
        let expected = binder_mac(h, &early, &th.current()?)?;
        if !ct_eq(expected.bytes(), &p.binder) {
            return Err(CryptoError::BadBinder);
        }
        th.update(&last[p.binders_at..])?;
    } else {
        th.update(last)?;
    }

    let mut sh = j.server_hello;
    let shared = match &j.kx {
        Some((group, client_share)) => {
            let (public, shared) = match j.server_share {
                Some((k, p)) if k.group() == *group => {
                    let shared = k.agree(client_share)?;
                    (p, shared)
                }
                Some(_) => {
                    return Err(CryptoError::Library(
                        "the key share made ahead is for another group".into(),
                    ))
                }
                None => crate::prim::respond(*group, client_share)?,
            };
            sh.get_mut(j.share_at..j.share_at + public.len())
                .ok_or_else(|| CryptoError::Library("ServerHello template too short".into()))?
                .copy_from_slice(&public);
            Some(shared)
        }
        None => None,
    };
    th.update(&sh)?;
    let hello_hash = th.current()?;

    let (c_hs, s_hs, master) = tls13_handshake_secrets(h, &early, shared.as_ref(), &hello_hash)?;

    th.update(&j.encrypted_extensions)?;
    if let Some(cr) = &j.certificate_request {
        th.update(cr)?;
    }
    let mut cv = Vec::new();
    if let Some(a) = &j.auth {
        th.update(&a.certificate)?;
        // RFC 8446 §4.4.3: 64 spaces, the context string, a zero byte, the transcript hash.
        let cert_hash = th.current()?;
        let sig = a.signer.sign(
            a.sig_alg,
            &[
                &[0x20u8; 64],
                b"TLS 1.3, server CertificateVerify\0",
                &cert_hash,
            ],
        )?;
        cv.reserve(8 + sig.len());
        cv.extend_from_slice(&handshake_header(15, 4 + sig.len()));
        cv.extend_from_slice(&a.scheme.to_be_bytes());
        cv.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        cv.extend_from_slice(&sig);
        th.update(&cv)?;
    }

    let sf = finished_message(h, &s_hs, &th.current()?)?;
    th.update(&sf)?;
    let server_done_hash = th.current()?;

    let (c_ap, s_ap) = app_secrets(h, &master, &server_done_hash)?;
    let exporter = crate::exporter::Exporter::Tls13 {
        hash: h,
        secret: derive_secret(h, master.bytes(), b"exp master", &server_done_hash)?,
    };

    let (client_finished, new_session_ticket, client_auth) = if j.certificate_request.is_some() {
        let state = Tls13Continue {
            hash: h,
            th: th.clone(),
            client_hs: c_hs.clone(),
            master: master.clone(),
        };
        (None, None, Some(Box::new(state)))
    } else {
        let client_finished = finished_mac(h, c_hs.bytes(), &server_done_hash)?;
        let nst = match &j.ticket {
            Some(t) => Some(ticket13(h, &master, &mut th, &client_finished, t)?),
            None => None,
        };
        (Some(client_finished), nst, None)
    };

    Ok(Tls13FlightDone {
        server_hello: sh,
        encrypted_extensions: j.encrypted_extensions,
        certificate: j.auth.map(|a| a.certificate),
        certificate_verify: cv,
        server_finished: sf,
        handshake_write: TrafficKey::tls13(h, j.aead, s_hs.bytes(), true)?,
        handshake_read: TrafficKey::tls13(h, j.aead, c_hs.bytes(), false)?,
        app_write: TrafficKey::tls13(h, j.aead, s_ap.bytes(), true)?,
        app_read: TrafficKey::tls13(h, j.aead, c_ap.bytes(), false)?,
        server_app_secret: s_ap,
        client_app_secret: c_ap,
        exporter,
        client_finished,
        new_session_ticket,
        client_auth,
        digest: DigestCount {
            passes: 1,
            bytes: th.bytes,
        },
    })
}

/// RFC 8446 §4.6.1 and §7.1: a NewSessionTicket. The resumption master secret covers
/// the client Finished, which the server already knows; the PSK comes from it and the
/// ticket nonce (one ticket per connection, so a fixed nonce is unique).
fn ticket13(
    h: HashAlg,
    master: &Secret,
    th: &mut TranscriptHash,
    client_finished: &Secret,
    t: &TicketRequest,
) -> Result<Vec<u8>, CryptoError> {
    let n = h.output_len();
    th.update(&handshake_header(20, n))?;
    th.update(client_finished.bytes())?;
    let res_master = derive_secret(h, master.bytes(), b"res master", &th.current()?)?;
    let nonce = [0u8; 1];
    let psk = crate::client::ticket_psk(h, res_master.bytes(), &nonce)?;
    let ticket = seal_state(t, &psk)?;
    let body = 4 + 4 + 1 + nonce.len() + 2 + ticket.len() + 2;
    let mut m = Vec::with_capacity(4 + body);
    m.extend_from_slice(&handshake_header(4, body));
    m.extend_from_slice(&t.lifetime_s.to_be_bytes());
    m.extend_from_slice(&t.age_add.to_be_bytes());
    m.push(nonce.len() as u8);
    m.extend_from_slice(&nonce);
    m.extend_from_slice(&(ticket.len() as u16).to_be_bytes());
    m.extend_from_slice(&ticket);
    m.extend_from_slice(&[0, 0]); // no extensions (no early data)
    Ok(m)
}

fn tls13_client_auth(j: Tls13ClientAuth) -> Result<Tls13ClientAuthDone, CryptoError> {
    let Tls13Continue {
        hash: h,
        mut th,
        client_hs,
        master,
    } = *j.state;
    let start = th.bytes;
    th.update(&j.certificate)?;
    let mut peer_subject = None;
    if let Some((cv, alg, sig)) = &j.certificate_verify {
        let leaf = j.chain.first().ok_or(CryptoError::BadSignature)?;
        peer_subject = Some(j.roots.verify_chain(&j.chain)?);
        if let Some(k) = j.required_kind {
            if certificate_key_kind(leaf)? != Some(k) {
                return Err(CryptoError::BadSignature);
            }
        }
        verify_certificate_verify13(
            leaf,
            *alg,
            b"TLS 1.3, client CertificateVerify\0",
            &th.current()?,
            sig,
        )?;
        th.update(cv)?;
    }
    let client_finished = finished_mac(h, client_hs.bytes(), &th.current()?)?;
    let new_session_ticket = match &j.ticket {
        Some(t) => Some(ticket13(h, &master, &mut th, &client_finished, t)?),
        None => None,
    };
    Ok(Tls13ClientAuthDone {
        client_finished,
        peer_subject,
        new_session_ticket,
        digest: DigestCount {
            passes: 0, // the flight job's pass, continued
            bytes: th.bytes - start,
        },
    })
}

/// A ticket over the engine's state with `secret` appended; the plaintext is wiped.
fn seal_state(t: &TicketRequest, secret: &Secret) -> Result<Vec<u8>, CryptoError> {
    let mut plain = Secret::new(Vec::with_capacity(t.state.len() + secret.bytes().len()));
    plain.extend(&t.state);
    plain.extend(secret.bytes());
    t.keys.seal(t.now_ms, plain.bytes())
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
    let mut peer_subject = None;
    if let Some(c) = &j.client_auth {
        let leaf = c.chain.first().ok_or(CryptoError::BadSignature)?;
        peer_subject = Some(c.roots.verify_chain(&c.chain)?);
        // RFC 5246 §7.4.8: the signature covers every handshake message before it.
        verify_prehashed(leaf, c.sig_alg, &session_hash, &c.signature)?;
        th.update(&c.certificate_verify)?;
    }
    let finished_hash = if j.client_auth.is_some() {
        th.current()?
    } else {
        session_hash.clone()
    };
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
    let (client_write, server_write) = tls12_keys(
        h,
        j.aead,
        &master,
        &j.client_random,
        &j.server_random,
        false,
    )?;
    let client_verify = prf12(h, master.bytes(), b"client finished", &[&finished_hash], 12)?;
    // The client's Finished as it must be, so the running hash covers it without
    // waiting for the record: the engine checks the real one against `client_verify`.
    th.update(&handshake_header(20, 12))?;
    th.update(client_verify.bytes())?;
    let new_session_ticket = match &j.ticket {
        Some(t) => {
            let m = new_session_ticket12(t, &master)?;
            th.update(&m)?;
            Some(m)
        }
        None => None,
    };
    let server_finished = tls12_finished(h, &master, b"server finished", &th.current()?)?;
    Ok(Tls12FinishDone {
        peer_subject,
        exporter: crate::exporter::Exporter::tls12(
            h,
            master.clone(),
            &j.client_random,
            &j.server_random,
        ),
        master_secret: master,
        client_write,
        server_write,
        client_verify,
        new_session_ticket,
        server_finished,
        digest: DigestCount {
            passes: 1,
            bytes: th.bytes,
        },
    })
}

/// RFC 5246 §6.3 key block; AEAD suites have no MAC keys. GCM: a 4-byte salt
/// (RFC 5288 §3); ChaCha20-Poly1305: a 12-byte IV (RFC 7905 §2). Returns the client's
/// and the server's write keys, each set up to seal on its own side (`client_side`:
/// the caller is the client, so the client's key seals and the server's opens).
pub fn tls12_keys(
    h: HashAlg,
    aead: AeadAlg,
    master: &Secret,
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
    let kb = prf12(
        h,
        master.bytes(),
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
pub fn tls12_finished(
    h: HashAlg,
    master: &Secret,
    label: &[u8],
    thash: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let v = prf12(h, master.bytes(), label, &[thash], 12)?;
    let mut m = handshake_header(20, 12).to_vec();
    m.extend_from_slice(v.bytes());
    Ok(m)
}

/// RFC 5077 §3.3: a NewSessionTicket message sealing `t`'s state with `master`.
fn new_session_ticket12(t: &TicketRequest, master: &Secret) -> Result<Vec<u8>, CryptoError> {
    let ticket = seal_state(t, master)?;
    let body = 4 + 2 + ticket.len();
    let mut m = Vec::with_capacity(4 + body);
    m.extend_from_slice(&handshake_header(4, body));
    m.extend_from_slice(&t.lifetime_s.to_be_bytes());
    m.extend_from_slice(&(ticket.len() as u16).to_be_bytes());
    m.extend_from_slice(&ticket);
    Ok(m)
}

fn tls12_resume(j: Tls12Resume) -> Result<Tls12ResumeDone, CryptoError> {
    let h = j.hash;
    let (client_write, server_write) = tls12_keys(
        h,
        j.aead,
        &j.master_secret,
        &j.client_random,
        &j.server_random,
        false,
    )?;
    let mut th = TranscriptHash::new(h)?;
    for c in &j.transcript {
        th.update(c.as_ref())?;
    }
    let new_session_ticket = match &j.ticket {
        Some(t) => {
            let m = new_session_ticket12(t, &j.master_secret)?;
            th.update(&m)?;
            Some(m)
        }
        None => None,
    };
    // RFC 5246 §7.3: in an abbreviated handshake the server finishes first.
    let server_finished = tls12_finished(h, &j.master_secret, b"server finished", &th.current()?)?;
    th.update(&server_finished)?;
    let client_verify = prf12(
        h,
        j.master_secret.bytes(),
        b"client finished",
        &[&th.current()?],
        12,
    )?;
    Ok(Tls12ResumeDone {
        exporter: crate::exporter::Exporter::tls12(
            h,
            j.master_secret,
            &j.client_random,
            &j.server_random,
        ),
        client_write,
        server_write,
        client_verify,
        new_session_ticket,
        server_finished,
        digest: DigestCount {
            passes: 1,
            bytes: th.bytes,
        },
    })
}
