//! TLS 1.3 (RFC 8446), server side: negotiation from the ClientHello, the
//! HelloRetryRequest, the one-job server flight (full, or resumed with a ticket's PSK in
//! psk_dhe_ke or psk_ke mode), the client Finished, NewSessionTicket and KeyUpdate.
//!
//! Tickets: one per connection, sent after the client's Finished has been checked,
//! sealed by the flight job (which already knows the client Finished, so the resumption
//! secret costs no second pass). Early data is never accepted, so the ticket's
//! obfuscated age is not checked; its lifetime is.
//!
//! Transcript: the messages are kept as bytes (the ClientHello owned, the Certificate
//! as the certificate's shared precomputed message) and hashed once, inside the flight
//! job, with snapshots at each point the key schedule needs. A full handshake is one
//! digest pass; a HelloRetryRequest adds one more (the hash of the first ClientHello
//! that RFC 8446 §4.4.1 puts in its place).

use std::sync::Arc;

use crypto_offload::prim::{ct_eq, hash, random};
use crypto_offload::{AeadAlg, HashAlg, KeyKind, Secret};

use crate::jobs::server13::{
    tls13_client_auth, tls13_flight, CertAuth, PskCheck, Tls13ClientAuth, Tls13ClientAuthDone,
    Tls13Continue, Tls13Flight, Tls13FlightDone,
};
use crate::jobs::{call, tls13_next_secret, Chunk, TrafficKey};

use crate::codec::{end_len, handshake_header, put_u16, start_len};
use crate::config::CertifiedKey;
use crate::error::Error;
use crate::msgs::{
    ext, hs, parse_certificate_verify, put_alpn_ext, put_ext, put_handshake, scheme, version,
    ClientHello, CLIENT_SCHEMES13, HRR_RANDOM,
};
use crate::record::{Cipher, Protection};
use crate::server::{
    group_of, pick_scheme, sig_alg_of, suite_info, Pending, Resumed, ServerConn, State,
};
use crate::session::{PskMode, Session};

/// After a HelloRetryRequest: what the second ClientHello must agree with.
pub(crate) struct Retry {
    suite: u16,
    group: u16,
    /// message_hash(ClientHello1), HelloRetryRequest.
    transcript: Vec<Chunk>,
    /// The compatibility CCS already went out after the HRR.
    ccs_sent: bool,
}

/// What the ClientHello negotiated.
pub(crate) struct Plan {
    suite: u16,
    hash: HashAlg,
    aead: AeadAlg,
    /// The (EC)DHE group; `None` for psk_ke.
    group: Option<u16>,
    /// `None` with a group: no usable key share, so a HelloRetryRequest for it.
    client_share: Option<Vec<u8>>,
    /// A full handshake's certificate and signature scheme.
    cert: Option<(Arc<CertifiedKey>, u16)>,
    resume: Option<Resume>,
    session_id: Vec<u8>,
    /// The client accepts tickets in a mode we serve.
    issue_ticket: bool,
}

/// The PSK offer this hello resumes with.
struct Resume {
    session: Session,
    /// Index of the chosen identity in the client's list.
    identity: u16,
    binder: Vec<u8>,
    /// Offset of the binders list in the ClientHello message (header included).
    binders_at: usize,
    mode: PskMode,
}

pub(crate) struct FlightCtx {
    compat_ccs: bool,
    hash: HashAlg,
    aead: AeadAlg,
    certificate_request: Option<Arc<[u8]>>,
    ticket_session: Option<Session>,
}

/// After a CertificateRequest: the client's Certificate, then (if it is not empty) its
/// CertificateVerify, then a job, then its Finished.
pub(crate) struct AwaitClientCert {
    cont: Box<Tls13Continue>,
    app_read: TrafficKey,
    secrets: Secrets,
    ticket_session: Option<Session>,
    /// Filled in at the Certificate.
    certificate: Vec<u8>,
    chain: Vec<Vec<u8>>,
}

pub(crate) struct ClientAuthCtx {
    app_read: TrafficKey,
    secrets: Secrets,
    peer: Option<Vec<u8>>,
}

pub(crate) struct AwaitFinished {
    expected: Secret,
    app_read: TrafficKey,
    secrets: Secrets,
    new_session_ticket: Option<Vec<u8>>,
}

/// The key_share extension of a ServerHello.
#[derive(Clone, Copy)]
enum ShareExt {
    /// A HelloRetryRequest names only the group.
    Retry,
    /// This many zero bytes where the flight job writes the server's public value.
    Public(usize),
    /// psk_ke: no key_share at all.
    Absent,
}

/// Application traffic secrets, kept for KeyUpdate; zeroized on drop.
pub(crate) struct Secrets {
    hash: HashAlg,
    aead: AeadAlg,
    client: Secret,
    server: Secret,
}

/// A TLS 1.3 ServerHello (RFC 8446 §4.1.3), or with [`ShareExt::Retry`] (and
/// `HRR_RANDOM`) a HelloRetryRequest. Returns it and the offset of the server's public
/// value (0 when there is none).
fn server_hello13(random: &[u8; 32], p: &Plan, share: ShareExt) -> (Vec<u8>, usize) {
    let mut sh = Vec::with_capacity(128);
    let mut share_at = 0;
    put_handshake(&mut sh, hs::SERVER_HELLO, |m| {
        put_u16(m, version::TLS12);
        m.extend_from_slice(random);
        m.push(p.session_id.len() as u8);
        m.extend_from_slice(&p.session_id);
        put_u16(m, p.suite);
        m.push(0);
        let at = start_len(m, 2);
        put_ext(m, ext::SUPPORTED_VERSIONS, |m| put_u16(m, version::TLS13));
        if let (Some(g), false) = (p.group, matches!(share, ShareExt::Absent)) {
            put_ext(m, ext::KEY_SHARE, |m| {
                put_u16(m, g);
                if let ShareExt::Public(n) = share {
                    put_u16(m, n as u16);
                    share_at = m.len();
                    m.resize(m.len() + n, 0);
                }
            });
        }
        if let (Some(r), false) = (&p.resume, matches!(share, ShareExt::Retry)) {
            put_ext(m, ext::PRE_SHARED_KEY, |m| put_u16(m, r.identity));
        }
        end_len(m, at, 2);
    });
    (sh, share_at)
}

impl ServerConn {
    pub(crate) fn tls13_negotiate(
        &mut self,
        ch: &ClientHello,
        retry: Option<&Retry>,
    ) -> Result<Plan, Error> {
        // RFC 8446 §4.1.2: legacy_compression_methods MUST be exactly one null byte.
        if ch.compression != [0] {
            return Err(Error::IllegalParameter("TLS 1.3 compression methods"));
        }
        let suite = match retry {
            Some(r) if ch.offers_suite(r.suite) => r.suite,
            Some(_) => {
                return Err(Error::IllegalParameter(
                    "second ClientHello dropped the suite",
                ))
            }
            None => self
                .cfg
                .suites13
                .iter()
                .copied()
                .find(|&s| ch.offers_suite(s))
                .ok_or(Error::NoCommonParameters("cipher suite"))?,
        };
        let info = suite_info(suite).ok_or(Error::Misuse("configured suite unknown"))?;
        let resume = self.tls13_psk(ch, info.hash)?;
        let cert = match resume {
            Some(_) => None,
            None => {
                if !ch.has_sig_algs() {
                    return Err(Error::MissingExtension("signature_algorithms"));
                }
                Some(
                    self.site_certs()
                        .iter()
                        .find_map(|c| pick_scheme(c.kind, true, ch).map(|s| (c.clone(), s)))
                        .ok_or(Error::NoCommonParameters("signature scheme"))?,
                )
            }
        };
        let needs_kx = resume.as_ref().is_none_or(|r| r.mode == PskMode::PskDheKe);
        let (group, client_share) = if needs_kx {
            let (g, share) = self.tls13_key_share(ch, retry)?;
            (Some(g), share)
        } else {
            (None, None)
        };
        let r = &self.cfg.resumption;
        let issue_ticket =
            r.tickets.is_some() && r.psk_modes.iter().any(|&m| ch.offers_psk_mode(m as u8));
        Ok(Plan {
            suite,
            hash: info.hash,
            aead: info.aead,
            group,
            client_share,
            cert,
            resume,
            session_id: ch.session_id.to_vec(),
            issue_ticket,
        })
    }

    /// The group to use and the client's share in it (`None`: ask with a retry).
    fn tls13_key_share(
        &self,
        ch: &ClientHello,
        retry: Option<&Retry>,
    ) -> Result<(u16, Option<Vec<u8>>), Error> {
        if ch.groups().is_none() {
            return Err(Error::MissingExtension("supported_groups"));
        }
        if !ch.has_key_shares() {
            return Err(Error::MissingExtension("key_share"));
        }
        if let Some(r) = retry {
            // RFC 8446 §4.1.2: the retried hello carries exactly the requested share.
            let mut shares = ch.key_shares();
            return match (shares.next(), shares.next()) {
                (Some((g, k)), None) if g == r.group => Ok((g, Some(k.to_vec()))),
                _ => Err(Error::IllegalParameter("second ClientHello key share")),
            };
        }
        // Our order of preference among the shares the client sent (so the hybrid wins
        // when it came with a share); a retry only when none of them is usable.
        for &g in self.cfg.groups.iter().filter(|&&g| ch.offers_group(g)) {
            if let Some((_, k)) = ch.key_shares().find(|&(s, _)| s == g) {
                return Ok((g, Some(k.to_vec())));
            }
        }
        let g = self
            .cfg
            .groups
            .iter()
            .copied()
            .find(|&g| ch.offers_group(g))
            .ok_or(Error::NoCommonParameters("group"))?;
        Ok((g, None))
    }

    /// RFC 8446 §4.2.11: the first offered ticket we can open and may resume, in a mode
    /// both sides accept. Anything else (another server's ticket, an expired one, a
    /// different hash or name) is skipped, and the handshake goes on in full.
    fn tls13_psk(&self, ch: &ClientHello, hash: HashAlg) -> Result<Option<Resume>, Error> {
        let r = &self.cfg.resumption;
        let Some(keys) = r.tickets.as_ref().filter(|_| ch.has_psk) else {
            return Ok(None);
        };
        if ch.psk_modes.is_none() {
            return Err(Error::MissingExtension("psk_key_exchange_modes"));
        }
        let Some(mode) = r
            .psk_modes
            .iter()
            .copied()
            .find(|&m| ch.offers_psk_mode(m as u8))
        else {
            return Ok(None);
        };
        for (i, (identity, _age, binder)) in ch.psks().enumerate() {
            let Some(session) = keys
                .open(self.now_ms, identity)
                .and_then(|p| Session::decode(p.bytes()).ok())
            else {
                continue;
            };
            let fits = session.version == version::TLS13
                && session.live(self.now_ms)
                && self.peer_acceptable(&session)
                && session.same_name(ch.sni)
                && suite_info(session.suite).is_some_and(|s| s.hash == hash);
            if fits {
                return Ok(Some(Resume {
                    session,
                    identity: i as u16,
                    binder: binder.to_vec(),
                    binders_at: 4 + ch.binders_at,
                    mode,
                }));
            }
        }
        Ok(None)
    }

    pub(crate) fn tls13_start(
        &mut self,
        mut p: Plan,
        msg: Vec<u8>,
        retry: Option<Box<Retry>>,
    ) -> Result<(), Error> {
        self.info.suite = p.suite;
        self.info.group = p.group.unwrap_or(0);
        self.info.scheme = p.cert.as_ref().map_or(0, |c| c.1);
        // The client may send one compatibility CCS before its next flight (RFC 8446 §D.4).
        self.ccs_allowed = true;
        let (mut transcript, ccs_sent) = match retry {
            Some(r) => (r.transcript, r.ccs_sent),
            None => (Vec::with_capacity(1), false),
        };
        let kx = match (p.group, p.client_share.take()) {
            (Some(g), Some(share)) => Some((
                group_of(g).ok_or(Error::Misuse("configured group unknown"))?,
                share,
            )),
            (Some(_), None) => return self.hello_retry(p, msg),
            (None, _) => None,
        };
        // RFC 8446 §5.1: handshake messages MUST NOT span a key change.
        if !self.hs_buffer_empty() {
            return Err(Error::UnexpectedMessage(
                "data after ClientHello in its record",
            ));
        }
        transcript.push(Chunk::Owned(msg));

        let mut server_random = [0u8; 32];
        random(&mut server_random)?;
        let share = match &kx {
            Some((g, _)) => ShareExt::Public(g.server_share_len()),
            None => ShareExt::Absent,
        };
        let (sh, share_at) = server_hello13(&server_random, &p, share);
        let psk = p.resume.take().map(|r| {
            self.info.resumed = Some(match r.mode {
                PskMode::PskDheKe => Resumed::PskDheKe,
                PskMode::PskKe => Resumed::PskKe,
            });
            self.restore_peer(r.session.peer.clone());
            PskCheck {
                psk: r.session.secret,
                binder: r.binder,
                binders_at: r.binders_at,
            }
        });
        let ee = self.encrypted_extensions();
        let mut ticket_session = self.ticket_session13(&p)?;
        if let Some(t) = ticket_session.as_mut() {
            // A resumed connection's next ticket carries the same client identity.
            t.peer = self.info.peer_certificate.clone();
        }
        // A full handshake asks for a client certificate when the vserver wants one; a
        // resumption keeps the identity its session was made with.
        let certificate_request = match (&self.cfg.client_auth, &p.cert) {
            (Some(a), Some(_)) => Some(a.request13.clone()),
            _ => None,
        };
        // Without a certificate request the flight job seals the ticket now; with one,
        // the client-certificate job does, once the peer is known.
        let ticket = match &certificate_request {
            None => ticket_session.as_ref().and_then(|s| self.ticket_request(s)),
            Some(_) => None,
        };
        let stapling = self.status_request;
        let mut stapled = false;
        let job = Tls13Flight {
            hash: p.hash,
            aead: p.aead,
            kx,
            psk,
            transcript,
            server_hello: sh,
            share_at,
            encrypted_extensions: ee,
            auth: p.cert.map(|(c, scheme)| CertAuth {
                // RFC 8446 §4.4.2.1: the response in the leaf's CertificateEntry.
                certificate: match c.staple.as_ref().filter(|s| stapling && s.valid()) {
                    Some(s) => {
                        stapled = true;
                        s.cert13.clone()
                    }
                    None => c.cert13.clone(),
                },
                signer: c.key.clone(),
                sig_alg: sig_alg_of(scheme),
                scheme,
            }),
            certificate_request: certificate_request.clone(),
            ticket,
            server_share: None,
        };
        self.info.ocsp_stapled = stapled;
        let ctx = FlightCtx {
            compat_ccs: !ccs_sent && !p.session_id.is_empty(),
            hash: p.hash,
            aead: p.aead,
            certificate_request,
            ticket_session,
        };
        self.emit_job(
            call(move || tls13_flight(job)),
            Pending::Tls13Flight(Box::new(ctx)),
        );
        Ok(())
    }

    /// The session a ticket for this connection will carry, if the client takes one
    /// (its secret and, with a client certificate, its peer come later).
    fn ticket_session13(&self, p: &Plan) -> Result<Option<Session>, Error> {
        if !p.issue_ticket {
            return Ok(None); // also false without ticket keys
        }
        let mut age_add = [0u8; 4];
        random(&mut age_add)?;
        let mut s = self.new_session(version::TLS13, p.suite);
        s.age_add = u32::from_be_bytes(age_add);
        Ok(Some(s))
    }

    fn encrypted_extensions(&self) -> Vec<u8> {
        let mut ee = Vec::with_capacity(32);
        put_handshake(&mut ee, hs::ENCRYPTED_EXTENSIONS, |m| {
            let at = start_len(m, 2);
            if self.info.resumed.is_none() && self.sni_acknowledged() {
                put_ext(m, ext::SERVER_NAME, |_| {});
            }
            if let Some(p) = &self.info.alpn {
                put_alpn_ext(m, p);
            }
            end_len(m, at, 2);
        });
        ee
    }

    /// RFC 8446 §4.1.4: ask for a share in `p.group`; the first ClientHello is replaced
    /// in the transcript by its hash (§4.4.1).
    fn hello_retry(&mut self, p: Plan, ch1: Vec<u8>) -> Result<(), Error> {
        self.info.hello_retry = true;
        let digest = hash(p.hash, &ch1)?;
        self.info.digest.passes += 1;
        self.info.digest.bytes += ch1.len() as u64;
        let mut message_hash = handshake_header(hs::MESSAGE_HASH, digest.len()).to_vec();
        message_hash.extend_from_slice(&digest);
        let group = p.group.ok_or(Error::Misuse("retry without a group"))?;
        let (hrr, _) = server_hello13(&HRR_RANDOM, &p, ShareExt::Retry);
        self.write_plain_handshake(&[&hrr]);
        let ccs_sent = !p.session_id.is_empty();
        if ccs_sent {
            self.write_ccs();
        }
        self.state = State::RetriedClientHello(Box::new(Retry {
            suite: p.suite,
            group,
            transcript: vec![Chunk::Owned(message_hash), Chunk::Owned(hrr)],
            ccs_sent,
        }));
        Ok(())
    }

    pub(crate) fn tls13_flight_done(
        &mut self,
        ctx: FlightCtx,
        d: Tls13FlightDone,
    ) -> Result<(), Error> {
        self.info.digest.passes += d.digest.passes;
        self.info.digest.bytes += d.digest.bytes;
        self.core.exporter = Some(d.exporter);
        // ServerHello (and the compatibility CCS) in the clear, then EE, Certificate,
        // CertificateVerify and Finished under the handshake key: one write.
        self.write_plain_handshake(&[&d.server_hello]);
        if ctx.compat_ccs {
            self.write_ccs();
        }
        self.core.write = Some(Cipher::new(d.handshake_write, Protection::Tls13));
        #[cfg(feature = "hostile")]
        for (typ, body) in std::mem::take(&mut self.hostile_before_flight) {
            self.core.hostile_seal(&[(typ, &body)])?;
        }
        let mut msgs: Vec<&[u8]> = vec![&d.encrypted_extensions];
        if let Some(cr) = &ctx.certificate_request {
            msgs.push(cr);
        }
        if let Some(c) = &d.certificate {
            msgs.push(c);
            msgs.push(&d.certificate_verify);
        }
        msgs.push(&d.server_finished);
        self.write_protected_handshake(&msgs)?;
        self.core.write = Some(Cipher::new(d.app_write, Protection::Tls13));
        self.core.read = Some(Cipher::new(d.handshake_read, Protection::Tls13));
        let secrets = Secrets {
            hash: ctx.hash,
            aead: ctx.aead,
            client: d.client_app_secret,
            server: d.server_app_secret,
        };
        self.state = match (d.client_auth, d.client_finished) {
            (Some(cont), _) => State::Tls13ClientCert(Box::new(AwaitClientCert {
                cont,
                app_read: d.app_read,
                secrets,
                ticket_session: ctx.ticket_session,
                certificate: Vec::new(),
                chain: Vec::new(),
            })),
            (None, Some(expected)) => State::Tls13Finished(Box::new(AwaitFinished {
                expected,
                app_read: d.app_read,
                secrets,
                new_session_ticket: d.new_session_ticket,
            })),
            (None, None) => return Err(Error::Misuse("flight without a client Finished")),
        };
        Ok(())
    }

    /// RFC 8446 §4.4.2: the client's Certificate (possibly empty) after our request.
    pub(crate) fn tls13_client_certificate(
        &mut self,
        mut w: Box<AwaitClientCert>,
        msg: Vec<u8>,
    ) -> Result<(), Error> {
        w.chain = self.client_chain(&msg, true)?;
        w.certificate = msg;
        if w.chain.is_empty() {
            return self.tls13_client_auth_job(w, None);
        }
        self.state = State::Tls13ClientCv(w);
        Ok(())
    }

    /// RFC 8446 §4.4.3: the client's CertificateVerify; the checks run in a job.
    pub(crate) fn tls13_client_verify(
        &mut self,
        w: Box<AwaitClientCert>,
        msg: Vec<u8>,
    ) -> Result<(), Error> {
        let (scheme, sig) = parse_certificate_verify(&msg[4..])?;
        if !CLIENT_SCHEMES13.contains(&scheme) {
            return Err(Error::IllegalParameter(
                "CertificateVerify scheme not requested",
            ));
        }
        let sig = sig.to_vec();
        self.tls13_client_auth_job(w, Some((msg, scheme, sig)))
    }

    fn tls13_client_auth_job(
        &mut self,
        w: Box<AwaitClientCert>,
        cv: Option<(Vec<u8>, u16, Vec<u8>)>,
    ) -> Result<(), Error> {
        let auth = self.client_auth()?;
        let AwaitClientCert {
            cont,
            app_read,
            secrets,
            ticket_session,
            certificate,
            chain,
        } = *w;
        let peer = chain.first().cloned();
        let ticket = ticket_session.and_then(|mut s| {
            s.peer = peer.clone();
            self.ticket_request(&s)
        });
        let required_kind = match cv.as_ref().map(|c| c.1) {
            Some(scheme::ECDSA_SECP256R1_SHA256) => Some(KeyKind::EcdsaP256),
            Some(scheme::ECDSA_SECP384R1_SHA384) => Some(KeyKind::EcdsaP384),
            _ => None,
        };
        let job = Tls13ClientAuth {
            state: cont,
            certificate,
            chain,
            roots: auth.roots.clone(),
            certificate_verify: cv.map(|(m, s, sig)| (m, sig_alg_of(s), sig)),
            required_kind,
            ticket,
        };
        self.emit_job(
            call(move || tls13_client_auth(job)),
            Pending::Tls13ClientAuth(Box::new(ClientAuthCtx {
                app_read,
                secrets,
                peer,
            })),
        );
        Ok(())
    }

    pub(crate) fn tls13_client_auth_done(
        &mut self,
        ctx: ClientAuthCtx,
        d: Tls13ClientAuthDone,
    ) -> Result<(), Error> {
        self.info.digest.bytes += d.digest.bytes;
        self.info.peer_subject = d.peer_subject;
        self.info.peer_certificate = ctx.peer;
        self.state = State::Tls13Finished(Box::new(AwaitFinished {
            expected: d.client_finished,
            app_read: ctx.app_read,
            secrets: ctx.secrets,
            new_session_ticket: d.new_session_ticket,
        }));
        Ok(())
    }

    pub(crate) fn tls13_finished(&mut self, w: AwaitFinished, msg: &[u8]) -> Result<(), Error> {
        // A Finished that is padded or cut short does not decode (its verify_data has
        // the one length the suite fixes: RFC 5246 §7.4.9, RFC 8446 §4.4.4): that is
        // decode_error, before any comparison.
        if msg.len() - 4 != w.expected.bytes().len() {
            return Err(Error::Decode("Finished of the wrong length"));
        }
        if !ct_eq(&msg[4..], w.expected.bytes()) {
            return Err(Error::BadFinished);
        }
        if !self.hs_buffer_empty() {
            return Err(Error::UnexpectedMessage(
                "data after Finished in its record",
            ));
        }
        self.ccs_allowed = false;
        self.core.read = Some(Cipher::new(w.app_read, Protection::Tls13));
        if let Some(nst) = &w.new_session_ticket {
            self.write_protected_handshake(&[nst])?;
        }
        self.start_traffic(Some(w.secrets));
        Ok(())
    }

    /// RFC 8446 §4.6.3: the client's KeyUpdate; answer one that asks for it.
    pub(crate) fn tls13_key_update(
        &mut self,
        mut t: Box<crate::server::Traffic>,
        msg: &[u8],
    ) -> Result<(), Error> {
        let requested = match &msg[4..] {
            [0] => false,
            [1] => true,
            [_] => return Err(Error::IllegalParameter("KeyUpdate value")),
            _ => return Err(Error::Decode("KeyUpdate")),
        };
        if !self.hs_buffer_empty() {
            return Err(Error::UnexpectedMessage(
                "data after KeyUpdate in its record",
            ));
        }
        let s = t
            .tls13
            .as_mut()
            .ok_or(Error::Misuse("KeyUpdate without TLS 1.3 secrets"))?;
        s.client = tls13_next_secret(s.hash, s.client.bytes())?;
        self.core.read = Some(Cipher::new(
            TrafficKey::tls13(s.hash, s.aead, s.client.bytes(), false)?,
            Protection::Tls13,
        ));
        if requested {
            self.write_protected_handshake(&[&[hs::KEY_UPDATE, 0, 0, 1, 0]])?;
            s.server = tls13_next_secret(s.hash, s.server.bytes())?;
            self.core.write = Some(Cipher::new(
                TrafficKey::tls13(s.hash, s.aead, s.server.bytes(), true)?,
                Protection::Tls13,
            ));
        }
        self.state = State::Traffic(t);
        Ok(())
    }
}
