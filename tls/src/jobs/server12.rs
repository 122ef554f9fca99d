//! The TLS 1.2 server's handshake steps: the signed ServerKeyExchange ([`Tls12Kx`]),
//! the key exchange to the server Finished ([`Tls12Finish`]), and the abbreviated
//! handshake on a resumed session ([`Tls12Resume`]).

use std::sync::Arc;

use crypto_offload::prim::*;

use super::schedule::*;
use super::*;

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

pub(crate) fn tls12_kx(j: Tls12Kx) -> Result<Tls12KxDone, CryptoError> {
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

pub(crate) fn tls12_finish(j: Tls12Finish) -> Result<Tls12FinishDone, CryptoError> {
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
    let prf = Prf12::new(h, master.bytes())?;
    let (client_write, server_write) =
        tls12_keys(&prf, j.aead, &j.client_random, &j.server_random, false)?;
    let client_verify = prf.expand(b"client finished", &[&finished_hash], 12)?;
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
    let server_finished = tls12_finished(&prf, b"server finished", &th.current()?)?;
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

pub(crate) fn tls12_resume(j: Tls12Resume) -> Result<Tls12ResumeDone, CryptoError> {
    let h = j.hash;
    let prf = Prf12::new(h, j.master_secret.bytes())?;
    let (client_write, server_write) =
        tls12_keys(&prf, j.aead, &j.client_random, &j.server_random, false)?;
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
    let server_finished = tls12_finished(&prf, b"server finished", &th.current()?)?;
    th.update(&server_finished)?;
    let client_verify = prf.expand(b"client finished", &[&th.current()?], 12)?;
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
