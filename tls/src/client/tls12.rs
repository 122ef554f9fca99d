//! The client role's TLS 1.2 handshake (RFC 5246): ECDHE key exchange (RFC 8422) with
//! an ECDSA or RSA server, the extended master secret (RFC 7627, required), secure
//! renegotiation's empty extension (RFC 5746; renegotiation itself is refused),
//! resumption by ticket (RFC 5077) or session ID, and a client certificate when the
//! server asks. The protocol lives here; the math is `crypto_offload`'s primitives
//! (PRF, key block, ECDHE, signatures), run on the calling thread.
//!
//! Full: ServerHello, Certificate, ServerKeyExchange, [CertificateRequest],
//! ServerHelloDone → [Certificate], ClientKeyExchange, [CertificateVerify],
//! ChangeCipherSpec, Finished → [NewSessionTicket], ChangeCipherSpec, Finished.
//! Abbreviated: ServerHello (our session ID echoed), [NewSessionTicket],
//! ChangeCipherSpec, Finished → ChangeCipherSpec, Finished.

use std::sync::Arc;

use crypto_offload::prim::{ct_eq, verify_signature};

use crate::jobs::client13::KeyShare;
use crate::jobs::schedule::prf12;
use crate::jobs::{tls12_finished, tls12_keys, Prf12, TrafficKey};
use crypto_offload::{
    AeadAlg, CryptoError, Group, HashAlg, Secret, ServerVerifier, SigAlg, SigningKey,
    TranscriptHash,
};

use super::{group_of, AwaitHello, ClientConfig, ClientConn, State, Ticket};
use crate::error::Error;
use crate::msgs::{
    content, group, hs, parse_certificate, parse_certificate_request12, parse_new_session_ticket12,
    scheme, suite, version, ServerHello, ServerKeyExchange12,
};
use crate::record::{Cipher, Protection, MAX_FRAGMENT};
use crate::server::{pick_scheme_of, sig_alg_of, suite_info};

/// A session's lifetime when the server gives no hint (OpenSSL's default timeout).
const DEFAULT_LIFETIME_S: u32 = 300;

/// A TLS 1.2 handshake in progress.
pub(super) struct Handshake12 {
    pub(super) hash: HashAlg,
    pub(super) aead: AeadAlg,
    /// An ECDHE_ECDSA suite (else ECDHE_RSA).
    pub(super) ecdsa: bool,
    pub(super) ticket_expected: bool,
    pub(super) client_random: [u8; 32],
    pub(super) server_random: [u8; 32],
    /// The server's session ID (what a later session-ID resumption offers).
    pub(super) session_id: Vec<u8>,
    /// Every handshake message so far, for a CertificateVerify that signs them all;
    /// the running hash serves the master secret and the Finished messages.
    pub(super) transcript: Vec<u8>,
    pub(super) th: TranscriptHash,
    pub(super) chain: Option<Vec<Vec<u8>>>,
    /// The server's group and public value.
    pub(super) kx: Option<(u16, Vec<u8>)>,
    /// The ServerKeyExchange's scheme, signed parameters and signature, checked in
    /// the key-exchange step.
    pub(super) ske_sig: Option<(u16, Vec<u8>, Vec<u8>)>,
    /// A CertificateRequest's signature schemes.
    pub(super) cert_request: Option<Vec<u16>>,
    /// Set once the keys exist: after ServerHelloDone (full) or ServerHello (resumed).
    pub(super) master: Option<Secret>,
    pub(super) server_write: Option<TrafficKey>,
    /// Resumed: our keys wait for the server's Finished (we finish second).
    pub(super) client_write: Option<TrafficKey>,
    pub(super) resumed: bool,
    pub(super) new_ticket: Option<(u32, Vec<u8>)>,
    pub(super) ccs_seen: bool,
    /// The key share the ClientHello offered for TLS 1.3: the ECDHE key when the
    /// server's group is its group (never sent anywhere else, used once), so a full
    /// handshake makes no second key.
    pub(super) offered_share: Option<KeyShare>,
}

impl Handshake12 {
    fn add(&mut self, msg: &[u8]) -> Result<(), Error> {
        self.transcript.extend_from_slice(msg);
        self.th.update(msg)?;
        Ok(())
    }
}

/// The Protection of a TLS 1.2 suite's AEAD.
fn protection(aead: AeadAlg) -> Protection {
    if aead == AeadAlg::Chacha20Poly1305 {
        Protection::Tls12Chacha
    } else {
        Protection::Tls12Gcm
    }
}

fn finished_message(
    h: HashAlg,
    master: &Secret,
    label: &[u8],
    thash: &[u8],
) -> Result<Vec<u8>, Error> {
    Ok(tls12_finished(
        &Prf12::new(h, master.bytes())?,
        label,
        thash,
    )?)
}

/// The schemes a TLS 1.2 ClientHello offers: the configured ones, and PKCS#1 v1.5
/// for RSA servers that sign only with it (TLS 1.2 allows it; TLS 1.3 does not).
pub(super) fn offered_schemes12(cfg: &ClientConfig) -> Vec<u16> {
    let mut v = cfg.schemes.clone();
    for s in [scheme::RSA_PKCS1_SHA256, scheme::RSA_PKCS1_SHA384] {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

impl ClientConn {
    /// A TLS 1.2 ServerHello: the checks RFC 5246, 7627, 5746 and 8446 (downgrade
    /// protection) ask of a client, then the full or the abbreviated handshake.
    pub(super) fn server_hello12(
        &mut self,
        w: AwaitHello,
        sh: &ServerHello,
        msg: &[u8],
    ) -> Result<(), Error> {
        if sh.legacy_version != version::TLS12 {
            return Err(Error::ProtocolVersion);
        }
        // RFC 8446 §4.1.3: a TLS 1.3 server that answers with TLS 1.2 says so in the
        // last eight bytes of its random; a client that offered TLS 1.3 MUST check.
        if self.cfg.offers(true) && sh.random.get(24..) == Some(&b"DOWNGRD\x01"[..]) {
            return Err(Error::IllegalParameter(
                "TLS 1.2 ServerHello with the downgrade sentinel",
            ));
        }
        if sh.unsolicited || sh.key_share.is_some() || sh.psk.is_some() {
            return Err(Error::IllegalParameter("unsolicited ServerHello extension"));
        }
        if !self.cfg.suites.contains(&sh.suite) || suite::is_tls13(sh.suite) {
            return Err(Error::IllegalParameter("cipher suite not offered"));
        }
        let info = suite_info(sh.suite).ok_or(Error::IllegalParameter("cipher suite"))?;
        // RFC 5746 §3.4: the server's renegotiated_connection must be empty in a first
        // handshake. (A server without the extension is accepted: renegotiation is
        // refused whatever it says.)
        if sh.renegotiation_info.is_some_and(|r| !r.is_empty()) {
            return Err(Error::RenegotiationInfo);
        }
        // RFC 7627 §5.2: a client MAY abort without the extended master secret; this
        // one requires it (the master secret then covers the whole handshake).
        if !sh.ems {
            return Err(Error::NoCommonParameters(
                "extended master secret (RFC 7627)",
            ));
        }
        if let Some(p) = sh.alpn {
            if !self.cfg.alpn.iter().any(|o| o == p) {
                return Err(Error::IllegalParameter("ALPN protocol not offered"));
            }
            self.info.alpn = Some(p.to_vec());
        }
        let resumed = w
            .offered
            .as_ref()
            .filter(|t| t.version == version::TLS12)
            .filter(|_| !w.session_id.is_empty() && sh.session_id == w.session_id.as_slice());
        if let Some(t) = resumed {
            if t.suite != sh.suite {
                // RFC 5246 §7.4.1.3: a resumed session keeps its suite.
                return Err(Error::IllegalParameter(
                    "resumed session with another suite",
                ));
            }
            if !t.ticket.is_empty() {
                self.offered_ticket12 = Some(t.ticket.clone());
            }
        }
        let mut server_random = [0u8; 32];
        server_random.copy_from_slice(sh.random);
        let mut th = TranscriptHash::new(info.hash)?;
        th.update(&w.client_hello)?;
        th.update(msg)?;
        let mut transcript = w.client_hello;
        transcript.extend_from_slice(msg);
        self.info.version = version::TLS12;
        self.info.suite = sh.suite;
        self.info.group = None;
        let h = Box::new(Handshake12 {
            hash: info.hash,
            aead: info.aead,
            ecdsa: info.ecdsa == Some(true),
            ticket_expected: sh.ticket_ack,
            client_random: w.random,
            server_random,
            session_id: sh.session_id.to_vec(),
            transcript,
            th,
            chain: None,
            kx: None,
            ske_sig: None,
            cert_request: None,
            master: None,
            server_write: None,
            client_write: None,
            resumed: false,
            new_ticket: None,
            ccs_seen: false,
            offered_share: w.share,
        });
        let resumed = resumed.cloned();
        self.start12(h, resumed.as_ref())
    }

    /// After a TLS 1.2 ServerHello: what it settled (checked by the caller), and the
    /// keys at once when it resumed the offered session.
    fn start12(&mut self, mut h: Box<Handshake12>, resume: Option<&Ticket>) -> Result<(), Error> {
        if let Some(t) = resume {
            let master = t.psk.clone();
            let (client_write, server_write) = tls12_keys(
                &Prf12::new(h.hash, master.bytes())?,
                h.aead,
                &h.client_random,
                &h.server_random,
                true,
            )?;
            h.master = Some(master);
            h.client_write = Some(client_write);
            h.server_write = Some(server_write);
            h.resumed = true;
            self.info.resumed = true;
        }
        self.state = State::Tls12(h);
        Ok(())
    }

    /// One handshake message of a TLS 1.2 handshake.
    pub(super) fn message12(
        &mut self,
        mut h: Box<Handshake12>,
        typ: u8,
        msg: Vec<u8>,
    ) -> Result<(), Error> {
        let body = &msg[4..];
        let full_flight = h.master.is_none();
        match typ {
            hs::CERTIFICATE if full_flight && h.chain.is_none() => {
                let chain = parse_certificate(body, false)?;
                if chain.is_empty() {
                    return Err(Error::Decode("the server sent no certificate"));
                }
                h.add(&msg)?;
                h.chain = Some(chain);
            }
            hs::SERVER_KEY_EXCHANGE if full_flight && h.chain.is_some() && h.kx.is_none() => {
                let ske = ServerKeyExchange12::parse(body)?;
                self.check_server_key_exchange(&h, &ske)?;
                h.kx = Some((ske.group, ske.public.to_vec()));
                h.ske_sig = Some((ske.scheme, ske.params.to_vec(), ske.signature.to_vec()));
                h.add(&msg)?;
            }
            hs::CERTIFICATE_REQUEST
                if full_flight && h.kx.is_some() && h.cert_request.is_none() =>
            {
                h.cert_request = Some(parse_certificate_request12(body)?);
                h.add(&msg)?;
            }
            hs::SERVER_HELLO_DONE if full_flight && h.kx.is_some() => {
                if !body.is_empty() {
                    return Err(Error::Decode("ServerHelloDone with a body"));
                }
                h.add(&msg)?;
                if !self.core.hs_buf.is_empty() {
                    return Err(Error::UnexpectedMessage(
                        "handshake data after ServerHelloDone in the same record",
                    ));
                }
                return self.client_flight12(h);
            }
            hs::NEW_SESSION_TICKET
                if !full_flight && h.ticket_expected && h.new_ticket.is_none() && !h.ccs_seen =>
            {
                let (lifetime, ticket) = parse_new_session_ticket12(body)?;
                h.new_ticket = Some((lifetime, ticket.to_vec()));
                h.add(&msg)?;
            }
            hs::FINISHED if h.ccs_seen => return self.server_finished12(h, &msg),
            // RFC 5746 §4.2 is not offered: a HelloRequest gets no new handshake (RFC
            // 5246 §7.4.1.1: the client MAY ignore it).
            hs::HELLO_REQUEST if body.is_empty() && full_flight && h.chain.is_none() => {}
            _ => {
                return Err(Error::UnexpectedMessage(
                    "out of order in the server's TLS 1.2 flight",
                ))
            }
        }
        self.state = State::Tls12(h);
        Ok(())
    }

    /// The ServerKeyExchange: a group we offered, a scheme we offered that fits the
    /// suite. Its signature (and the chain) is checked in the key-exchange step, before
    /// anything is sent.
    fn check_server_key_exchange(
        &mut self,
        h: &Handshake12,
        ske: &ServerKeyExchange12,
    ) -> Result<(), Error> {
        self.info.group = Some(ske.group);
        if !self.cfg.groups.contains(&ske.group)
            || ske.group == group::X25519MLKEM768
            || group_of(ske.group).is_none()
        {
            return Err(Error::IllegalParameter(
                "ServerKeyExchange group not offered",
            ));
        }
        if !offered_schemes12(&self.cfg).contains(&ske.scheme) {
            return Err(Error::IllegalParameter("signature scheme not offered"));
        }
        let ecdsa_scheme = matches!(
            ske.scheme,
            scheme::ECDSA_SECP256R1_SHA256
                | scheme::ECDSA_SECP384R1_SHA384
                | scheme::ECDSA_SECP521R1_SHA512
        );
        if ecdsa_scheme != h.ecdsa {
            return Err(Error::IllegalParameter(
                "signature scheme does not fit the suite",
            ));
        }
        Ok(())
    }

    /// After ServerHelloDone: one step checks the server (chain, name, the
    /// ServerKeyExchange signature) and makes our flight: [Certificate],
    /// ClientKeyExchange, [CertificateVerify], then ChangeCipherSpec and Finished.
    fn client_flight12(&mut self, mut h: Box<Handshake12>) -> Result<(), Error> {
        let (g, server_public) = h.kx.clone().ok_or(Error::Misuse("no key exchange"))?;
        let group = group_of(g).ok_or(Error::IllegalParameter("group"))?;
        let verify = match (&self.cfg.verifier, h.ske_sig.take(), &h.chain) {
            (Some(v), Some((s, params, sig)), Some(chain)) => Some(Verify12 {
                verifier: v.clone(),
                chain: chain.clone(),
                sig_alg: sig_alg_of(s),
                params,
                signature: sig,
            }),
            _ => None,
        };
        let mut cert = None;
        if let Some(accepts) = &h.cert_request {
            self.info.certificate_requested = true;
            let chosen = self.cfg.certificate.as_ref().and_then(|ck| {
                pick_scheme_of(ck.kind, false, |s| accepts.contains(&s)).map(|s| (ck.clone(), s))
            });
            cert = Some(match chosen {
                Some((ck, s)) => (ck.cert12.to_vec(), Some((ck.key.clone(), sig_alg_of(s), s))),
                None => (vec![hs::CERTIFICATE, 0, 0, 3, 0, 0, 0], None),
            });
        }
        let job = Flight12 {
            hash: h.hash,
            aead: h.aead,
            group,
            share: h.offered_share.take().filter(|s| s.group() == group),
            server_public,
            verify,
            cert,
            client_random: h.client_random,
            server_random: h.server_random,
            transcript: std::mem::take(&mut h.transcript),
            th: h.th.clone(),
        };
        self.step(move || flight12(job), super::Then::Flight12(h))
    }

    /// The key exchange is done: our flight, ChangeCipherSpec and Finished go out.
    pub(super) fn flight12_done(
        &mut self,
        mut h: Box<Handshake12>,
        d: Flight12Done,
    ) -> Result<(), Error> {
        if d.peer.is_some() {
            self.info.peer = d.peer;
        }
        self.info.certificate_sent = d.certificate_sent;
        for part in d.flight.chunks(MAX_FRAGMENT) {
            crate::record::write_plain(&mut self.core.out, content::HANDSHAKE, part);
        }
        crate::record::write_plain(&mut self.core.out, content::CHANGE_CIPHER_SPEC, &[1]);
        let mut write = Cipher::new(d.client_write, protection(h.aead));
        write.seal(&mut self.core.out, content::HANDSHAKE, &d.finished, 0)?;
        self.core.write = Some(write);
        self.core.exporter = Some(crate::exporter::Exporter::tls12(
            h.hash,
            d.master.clone(),
            &h.client_random,
            &h.server_random,
        ));
        h.transcript = d.transcript;
        h.th = d.th;
        h.master = Some(d.master);
        h.server_write = Some(d.server_write);
        self.state = State::Tls12(h);
        Ok(())
    }

    /// The server's ChangeCipherSpec: its keys from here on (at a record boundary).
    pub(super) fn change_cipher_spec12(&mut self) -> Result<(), Error> {
        let State::Tls12(h) = &mut self.state else {
            return Err(Error::UnexpectedMessage("ChangeCipherSpec"));
        };
        if h.ccs_seen || !self.core.hs_buf.is_empty() {
            return Err(Error::UnexpectedMessage("ChangeCipherSpec"));
        }
        // A ticket the server promised comes first (RFC 5077 §3.3).
        if h.ticket_expected && h.new_ticket.is_none() {
            return Err(Error::UnexpectedMessage(
                "ChangeCipherSpec before the promised NewSessionTicket",
            ));
        }
        let key = h.server_write.take().ok_or(Error::UnexpectedMessage(
            "ChangeCipherSpec before the key exchange",
        ))?;
        self.core.read = Some(Cipher::new(key, protection(h.aead)));
        h.ccs_seen = true;
        Ok(())
    }

    /// The server's Finished: checked; a resumed handshake answers with ours. The
    /// session is kept for the next connection.
    fn server_finished12(&mut self, mut h: Box<Handshake12>, msg: &[u8]) -> Result<(), Error> {
        if !self.core.hs_buf.is_empty() {
            return Err(Error::UnexpectedMessage(
                "handshake data after Finished in the same record",
            ));
        }
        let master = h.master.clone().ok_or(Error::Misuse("no master secret"))?;
        if msg.len() != 16 {
            return Err(Error::Decode("Finished length"));
        }
        let expected = finished_message(h.hash, &master, b"server finished", &h.th.current()?)?;
        if !ct_eq(&expected, msg) {
            return Err(Error::BadFinished);
        }
        h.add(msg)?;
        if h.resumed {
            let finished = finished_message(h.hash, &master, b"client finished", &h.th.current()?)?;
            let key = h
                .client_write
                .take()
                .ok_or(Error::Misuse("no client key"))?;
            crate::record::write_plain(&mut self.core.out, content::CHANGE_CIPHER_SPEC, &[1]);
            let mut write = Cipher::new(key, protection(h.aead));
            write.seal(&mut self.core.out, content::HANDSHAKE, &finished, 0)?;
            self.core.write = Some(write);
            self.core.exporter = Some(crate::exporter::Exporter::tls12(
                h.hash,
                master.clone(),
                &h.client_random,
                &h.server_random,
            ));
        }
        // The session: the server's new ticket, or its session ID (or, resumed
        // without a new ticket, the one we offered again).
        let (lifetime_s, ticket) = match h.new_ticket.take() {
            Some((l, t)) => (
                if l == 0 {
                    DEFAULT_LIFETIME_S
                } else {
                    l.min(604_800)
                },
                t,
            ),
            None => (
                DEFAULT_LIFETIME_S,
                self.offered_ticket12.take().unwrap_or_default(),
            ),
        };
        if !ticket.is_empty() || !h.session_id.is_empty() {
            self.ticket = Some(Ticket {
                suite: self.info.suite,
                version: version::TLS12,
                ticket,
                session_id: h.session_id.clone(),
                psk: master,
                age_add: 0,
                received_ms: self.now_ms,
                lifetime_s,
            });
        }
        self.state = State::Traffic12;
        Ok(())
    }
}

/// The server's authentication in a TLS 1.2 full handshake.
struct Verify12 {
    verifier: Arc<ServerVerifier>,
    chain: Vec<Vec<u8>>,
    sig_alg: SigAlg,
    /// ServerECDHParams as signed, and the signature.
    params: Vec<u8>,
    signature: Vec<u8>,
}

/// A key, its signature algorithm and the scheme's code.
type Signer = (Arc<SigningKey>, SigAlg, u16);

/// The TLS 1.2 client's key-exchange step (a job): check the server, ECDHE, the
/// extended master secret, our CertificateVerify and Finished, the key block.
struct Flight12 {
    hash: HashAlg,
    aead: AeadAlg,
    group: Group,
    /// The offered key share, when it is of `group`.
    share: Option<KeyShare>,
    server_public: Vec<u8>,
    verify: Option<Verify12>,
    /// Asked for a certificate: our Certificate message, and its signer (none with an
    /// empty one).
    cert: Option<(Vec<u8>, Option<Signer>)>,
    client_random: [u8; 32],
    server_random: [u8; 32],
    transcript: Vec<u8>,
    th: TranscriptHash,
}

pub(super) struct Flight12Done {
    /// [Certificate], ClientKeyExchange, [CertificateVerify], as plaintext messages.
    flight: Vec<u8>,
    finished: Vec<u8>,
    master: Secret,
    client_write: TrafficKey,
    server_write: TrafficKey,
    transcript: Vec<u8>,
    th: TranscriptHash,
    /// The verified server certificate's subject.
    peer: Option<String>,
    certificate_sent: bool,
}

fn flight12(mut j: Flight12) -> Result<Flight12Done, CryptoError> {
    let mut peer = None;
    if let Some(v) = &j.verify {
        peer = Some(v.verifier.verify(&v.chain)?);
        let leaf = v.chain.first().ok_or(CryptoError::BadSignature)?;
        verify_signature(
            leaf,
            v.sig_alg,
            &[&j.client_random, &j.server_random, &v.params],
            &v.signature,
        )?;
    }
    let share = match j.share.take() {
        Some(share) => share,
        None => KeyShare::generate(j.group)?,
    };
    let pms = share.agree(&j.server_public)?;
    let add = |j: &mut Flight12, m: &[u8]| -> Result<(), CryptoError> {
        j.transcript.extend_from_slice(m);
        j.th.update(m)
    };
    let mut flight = Vec::new();
    let mut signer = None;
    if let Some((cert_msg, s)) = j.cert.take() {
        add(&mut j, &cert_msg)?;
        flight.extend_from_slice(&cert_msg);
        signer = s;
    }
    let public = share.public();
    let mut cke = vec![hs::CLIENT_KEY_EXCHANGE, 0, 0, (public.len() + 1) as u8];
    cke.push(public.len() as u8);
    cke.extend_from_slice(public);
    add(&mut j, &cke)?;
    flight.extend_from_slice(&cke);
    // RFC 7627 §3: the session hash is over every message through ClientKeyExchange.
    let session_hash = j.th.current()?;
    let master = prf12(
        j.hash,
        pms.bytes(),
        b"extended master secret",
        &[&session_hash],
        48,
    )?;
    let certificate_sent = signer.is_some();
    if let Some((key, alg, s)) = signer {
        // RFC 5246 §7.4.8: the signature covers every handshake message so far.
        let sig = key.sign(alg, &[&j.transcript])?;
        let mut cv = vec![hs::CERTIFICATE_VERIFY, 0, 0, 0];
        cv.extend_from_slice(&s.to_be_bytes());
        cv.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        cv.extend_from_slice(&sig);
        let n = cv.len() - 4;
        cv[1..4].copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        add(&mut j, &cv)?;
        flight.extend_from_slice(&cv);
    }
    let prf = Prf12::new(j.hash, master.bytes())?;
    let finished = tls12_finished(&prf, b"client finished", &j.th.current()?)?;
    add(&mut j, &finished)?;
    let (client_write, server_write) =
        tls12_keys(&prf, j.aead, &j.client_random, &j.server_random, true)?;
    Ok(Flight12Done {
        flight,
        finished,
        master,
        client_write,
        server_write,
        transcript: j.transcript,
        th: j.th,
        peer,
        certificate_sent,
    })
}
