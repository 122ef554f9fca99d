//! The TLS 1.3 client role's handshake crypto (RFC 8446 §7.1, from the client's side),
//! in two steps shaped like the server's jobs: after the ServerHello, the (EC)DHE and
//! the key schedule to the handshake traffic keys ([`tls13_client_hello`]); after the
//! server's Finished, the server's authentication, the Finished check, the client
//! Finished and the application keys ([`tls13_client_finish`]). One running transcript
//! hash goes from the first step to the second.
//!
//! The client role ([`crate::ClientConn`]) runs them on its calling thread, or hands
//! each to its caller as a job for the pool ([`super::call`]; re-encryption towards
//! TLS backends from a poll-mode core does).

use std::sync::Arc;

use crypto_offload::prim::*;

use super::schedule::{
    app_secrets, binder_mac, derive_secret, early_secret, finished_mac, finished_message,
    hkdf_expand_label, tls13_handshake_secrets, TrafficKey,
};
use super::{handshake_header, verify_certificate_verify13, Chunk};

/// The client's key share: one per connection, or one reused by many (the load
/// generator's cheapening; the server's work is unchanged).
#[derive(Debug, Clone)]
pub struct KeyShare {
    key: Arc<EphemeralKey>,
    public: Vec<u8>,
}

impl KeyShare {
    pub fn generate(group: Group) -> Result<Self, CryptoError> {
        let (key, public) = EphemeralKey::generate(group)?;
        Ok(KeyShare {
            key: Arc::new(key),
            public,
        })
    }

    /// An X25519 share from known private bytes (known-answer tests).
    pub fn x25519_from_private(private: &[u8]) -> Result<Self, CryptoError> {
        let (key, public) = EphemeralKey::x25519_from_private(private)?;
        Ok(KeyShare {
            key: Arc::new(key),
            public,
        })
    }

    pub fn group(&self) -> Group {
        self.key.group()
    }

    /// The public value as sent in the ClientHello.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret with a peer's public value of the same group (TLS 1.2's
    /// premaster secret).
    pub fn agree(&self, peer: &[u8]) -> Result<Secret, CryptoError> {
        self.key.agree(peer)
    }
}

/// RFC 8446 §4.2.11.2: the PSK binder over the ClientHello up to its binders list.
pub fn psk_binder(
    hash_alg: HashAlg,
    psk: &[u8],
    truncated_hello: &[u8],
) -> Result<Secret, CryptoError> {
    let early = early_secret(hash_alg, Some(psk))?;
    binder_mac(hash_alg, &early, &hash(hash_alg, truncated_hello)?)
}

/// RFC 8446 §4.6.1: the PSK a NewSessionTicket stands for.
pub fn ticket_psk(
    hash_alg: HashAlg,
    resumption_master: &[u8],
    nonce: &[u8],
) -> Result<Secret, CryptoError> {
    hkdf_expand_label(
        hash_alg,
        resumption_master,
        b"resumption",
        nonce,
        hash_alg.output_len(),
    )
}

/// After the ServerHello.
#[derive(Debug)]
pub struct Tls13ClientHello {
    pub hash: HashAlg,
    pub aead: AeadAlg,
    pub share: KeyShare,
    /// The server's key share (same group).
    pub server_share: Vec<u8>,
    /// The PSK, when the server accepted the one offered.
    pub psk: Option<Secret>,
    /// ClientHello and ServerHello, as sent and received.
    pub transcript: Vec<Chunk>,
}

/// The handshake state between the two steps.
#[derive(Debug)]
pub struct Tls13ClientState {
    hash: HashAlg,
    aead: AeadAlg,
    th: TranscriptHash,
    client_hs: Secret,
    server_hs: Secret,
    master: Secret,
}

#[derive(Debug)]
pub struct Tls13ClientHelloDone {
    /// The server's handshake traffic key (opens its encrypted flight).
    pub handshake_read: TrafficKey,
    /// The client's handshake traffic key (seals its Finished).
    pub handshake_write: TrafficKey,
    pub state: Box<Tls13ClientState>,
}

pub fn tls13_client_hello(j: Tls13ClientHello) -> Result<Tls13ClientHelloDone, CryptoError> {
    let h = j.hash;
    let shared = j.share.key.agree(&j.server_share)?;
    let early = early_secret(h, j.psk.as_ref().map(|p| p.bytes()))?;
    let mut th = TranscriptHash::new(h)?;
    for c in &j.transcript {
        th.update(c.as_ref())?;
    }
    let (client_hs, server_hs, master) =
        tls13_handshake_secrets(h, &early, Some(&shared), &th.current()?)?;
    Ok(Tls13ClientHelloDone {
        handshake_read: TrafficKey::tls13(h, j.aead, server_hs.bytes(), false)?,
        handshake_write: TrafficKey::tls13(h, j.aead, client_hs.bytes(), true)?,
        state: Box::new(Tls13ClientState {
            hash: h,
            aead: j.aead,
            th,
            client_hs,
            server_hs,
            master,
        }),
    })
}

/// How a server authenticated in a full handshake.
#[derive(Debug)]
pub struct ServerAuth {
    /// The Certificate message, as received.
    pub certificate: Vec<u8>,
    /// Its chain (DER, leaf first).
    pub chain: Vec<Vec<u8>>,
    /// The CertificateVerify message, as received, and what it carries.
    pub certificate_verify: Vec<u8>,
    pub sig_alg: SigAlg,
    pub signature: Vec<u8>,
    /// Check the chain and the name, then the signature; `None` checks neither (the
    /// load generator's `--no-verify`: the server's Finished is still checked).
    pub verifier: Option<Arc<ServerVerifier>>,
}

/// The client's answer to a CertificateRequest (RFC 8446 §4.4.2, §4.4.3).
#[derive(Debug)]
pub struct ClientAuth {
    /// The CertificateRequest message, as received.
    pub certificate_request: Vec<u8>,
    /// The Certificate message to send: precomputed per configured certificate when
    /// the request's context is empty, or an empty one when no certificate suits.
    pub certificate: Chunk,
    /// The key that signs the CertificateVerify, its algorithm and scheme code;
    /// `None` with an empty Certificate (no CertificateVerify is sent).
    pub signer: Option<(Arc<SigningKey>, SigAlg, u16)>,
}

/// After the server's Finished.
#[derive(Debug)]
pub struct Tls13ClientFinish {
    pub state: Box<Tls13ClientState>,
    pub encrypted_extensions: Vec<u8>,
    /// The server asked for a certificate.
    pub client_auth: Option<ClientAuth>,
    /// `None` in a PSK resumption (no certificate).
    pub auth: Option<ServerAuth>,
    /// The server's Finished message, as received.
    pub server_finished: Vec<u8>,
}

#[derive(Debug)]
pub struct Tls13ClientFinishDone {
    /// The client's flight, to send under the handshake key: its Certificate and
    /// CertificateVerify if the server asked for them, and its Finished.
    pub client_finished: Vec<u8>,
    pub app_read: TrafficKey,
    pub app_write: TrafficKey,
    pub server_app_secret: Secret,
    pub client_app_secret: Secret,
    /// For the PSKs of the server's NewSessionTickets ([`ticket_psk`]).
    pub resumption_master: Secret,
    /// RFC 8446 §7.5: what the connection exports keying material from.
    pub exporter: crate::exporter::Exporter,
    /// The verified server certificate's subject (`None` when not verified).
    pub peer: Option<String>,
}

pub fn tls13_client_finish(j: Tls13ClientFinish) -> Result<Tls13ClientFinishDone, CryptoError> {
    let mut st = *j.state;
    let h = st.hash;
    st.th.update(&j.encrypted_extensions)?;
    if let Some(ca) = &j.client_auth {
        st.th.update(&ca.certificate_request)?;
    }
    let mut peer = None;
    if let Some(a) = &j.auth {
        st.th.update(&a.certificate)?;
        if let Some(v) = &a.verifier {
            peer = Some(v.verify(&a.chain)?);
            let leaf = a.chain.first().ok_or(CryptoError::BadSignature)?;
            verify_certificate_verify13(
                leaf,
                a.sig_alg,
                b"TLS 1.3, server CertificateVerify\0",
                &st.th.current()?,
                &a.signature,
            )?;
        }
        st.th.update(&a.certificate_verify)?;
    }
    let expected = finished_mac(h, st.server_hs.bytes(), &st.th.current()?)?;
    let got = j.server_finished.get(4..).unwrap_or_default();
    if !ct_eq(expected.bytes(), got) {
        return Err(CryptoError::BadFinished);
    }
    st.th.update(&j.server_finished)?;
    let server_done = st.th.current()?;
    let (client_app_secret, server_app_secret) = app_secrets(h, &st.master, &server_done)?;
    let exporter = crate::exporter::Exporter::Tls13 {
        hash: h,
        secret: derive_secret(h, st.master.bytes(), b"exp master", &server_done)?,
    };
    let mut client_finished = Vec::new();
    if let Some(ca) = &j.client_auth {
        st.th.update(ca.certificate.as_ref())?;
        client_finished.extend_from_slice(ca.certificate.as_ref());
        if let Some((key, alg, scheme)) = &ca.signer {
            // RFC 8446 §4.4.3: 64 spaces, the context string, a zero byte, the
            // transcript hash through the client's Certificate.
            let sig = key.sign(
                *alg,
                &[
                    &[0x20u8; 64],
                    b"TLS 1.3, client CertificateVerify\0",
                    &st.th.current()?,
                ],
            )?;
            let at = client_finished.len();
            client_finished.extend_from_slice(&handshake_header(15, 4 + sig.len()));
            client_finished.extend_from_slice(&scheme.to_be_bytes());
            client_finished.extend_from_slice(&(sig.len() as u16).to_be_bytes());
            client_finished.extend_from_slice(&sig);
            st.th.update(&client_finished[at..])?;
        }
    }
    let finished = finished_message(h, &st.client_hs, &st.th.current()?)?;
    st.th.update(&finished)?;
    client_finished.extend_from_slice(&finished);
    let resumption_master = derive_secret(h, st.master.bytes(), b"res master", &st.th.current()?)?;
    Ok(Tls13ClientFinishDone {
        client_finished,
        app_read: TrafficKey::tls13(h, st.aead, server_app_secret.bytes(), false)?,
        app_write: TrafficKey::tls13(h, st.aead, client_app_secret.bytes(), true)?,
        server_app_secret,
        client_app_secret,
        resumption_master,
        exporter,
        peer,
    })
}
