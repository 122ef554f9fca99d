//! The TLS 1.3 server's handshake steps: the whole flight after an acceptable
//! ClientHello ([`Tls13Flight`]), and the client-certificate check that continues it
//! ([`Tls13ClientAuth`]).

use std::sync::Arc;

use crypto_offload::prim::*;

use super::schedule::*;
use super::*;

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

pub(crate) fn tls13_flight(j: Tls13Flight) -> Result<Tls13FlightDone, CryptoError> {
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
                None => crypto_offload::prim::respond(*group, client_share)?,
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
    let psk = super::client13::ticket_psk(h, res_master.bytes(), &nonce)?;
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

pub(crate) fn tls13_client_auth(j: Tls13ClientAuth) -> Result<Tls13ClientAuthDone, CryptoError> {
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
