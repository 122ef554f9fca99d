//! TLS 1.2 (RFC 5246), server side, ECDHE only: ECDHE_ECDSA and ECDHE_RSA with
//! AES-GCM (RFC 5288) and ChaCha20-Poly1305 (RFC 7905), extended master secret
//! (RFC 7627), secure renegotiation indication with renegotiation refused (RFC 5746),
//! resumption by session ID (RFC 5246 §7.3) and by ticket (RFC 5077).
//!
//! Transcript: ClientHello, ServerHello, ServerKeyExchange and ClientKeyExchange are
//! kept as owned bytes; Certificate and ServerHelloDone are the certificate's shared
//! precomputed messages. Nothing is hashed as it passes: at the ClientKeyExchange one
//! job digests the whole buffer once, and that one pass yields the session hash, the
//! client Finished the server expects and (going on over that Finished and the
//! NewSessionTicket) the server's. An abbreviated handshake is one job and one pass
//! over ClientHello and ServerHello.
//!
//! Sessions: a client that supports tickets gets a ticket (and an empty session ID);
//! otherwise, with a store configured, a fresh 32-byte session ID whose session is
//! stored once the client's Finished has been checked. A ticket's resumption gets a
//! fresh ticket (RFC 5077 §3.3) under the current key, for the same session and its
//! remaining lifetime, when the key that sealed the presented one no longer seals
//! (libssl's choice too): a ticket under the sealing key opens for the key ring's whole
//! lifetime from now, so replacing it would cost a seal and a message for nothing.
//!
//! A resumption offer whose cipher list lacks the session's suite is refused with
//! illegal_parameter (RFC 5246 §7.4.1.2: the list "MUST include at least the
//! cipher_suite from that session").

use std::sync::Arc;

use crypto_offload::prim::{ct_eq, random};
use crypto_offload::{AeadAlg, EphemeralKey, Group, HashAlg, KeyKind, Secret};

use crate::jobs::server12::{
    tls12_finish, tls12_kx, tls12_resume, Tls12ClientCheck, Tls12Finish, Tls12FinishDone, Tls12Kx,
    Tls12KxDone, Tls12Resume, Tls12ResumeDone,
};
use crate::jobs::{call, Chunk, TrafficKey};

use crate::codec::{end_len, put_u16, start_len, Reader};
use crate::config::CertifiedKey;
use crate::error::Error;
use crate::msgs::{
    ext, group, hs, parse_certificate_verify, put_alpn_ext, put_ext, put_handshake, suite, version,
    ClientHello, CLIENT_SCHEMES12_SHA256, CLIENT_SCHEMES12_SHA384, DOWNGRADE_TLS12,
};
use crate::record::{Cipher, Protection};
use crate::server::{
    group_of, pick_scheme, sig_alg_of, suite_info, Pending, Resumed, ServerConn, State,
};
use crate::session::{Lookup, PendingLookup, Session};

/// What the ClientHello negotiated.
pub(crate) struct Plan {
    suite: u16,
    hash: HashAlg,
    aead: AeadAlg,
    /// A full handshake's key exchange and certificate; `None` when resuming.
    full: Option<FullPlan>,
    /// The session being resumed.
    resume: Option<Session>,
    ems: bool,
    secure_renegotiation: bool,
    point_formats: bool,
    client_random: [u8; 32],
    /// The ServerHello's session ID.
    session_id: Vec<u8>,
    /// Send a NewSessionTicket (full handshakes of clients that support tickets).
    issue_ticket: bool,
}

struct FullPlan {
    group_id: u16,
    group: Group,
    cert: Arc<CertifiedKey>,
    scheme: u16,
    /// The CertificateStatus to send after the Certificate (RFC 6066 §8).
    staple: Option<Arc<[u8]>>,
}

/// A session the ClientHello may resume, before checking it fits the hello.
pub(crate) enum Candidate {
    /// The session, how it came, and whether a resumption should renew its ticket.
    Found(Session, Resumed, bool),
    /// The store has the lookup in flight.
    Wait(Box<dyn PendingLookup>),
    None,
}

pub(crate) struct KxCtx {
    plan: Plan,
    full: FullPlan,
    server_random: [u8; 32],
    transcript: Vec<Chunk>,
}

pub(crate) struct AwaitClientKx {
    plan: Plan,
    server_random: [u8; 32],
    transcript: Vec<Chunk>,
    key: EphemeralKey,
    /// The client's certificate chain (after a CertificateRequest; may be empty).
    chain: Vec<Vec<u8>>,
    /// With a non-empty chain: the client's public value, waiting for CertificateVerify.
    client_public: Vec<u8>,
}

pub(crate) struct FinishCtx {
    aead: AeadAlg,
    /// The client's certificate (verified by the job).
    peer: Option<Vec<u8>>,
    /// The session to store under this ID once the client's Finished checks out.
    store_as: Option<(Vec<u8>, Session)>,
}

pub(crate) struct ResumeCtx {
    aead: AeadAlg,
    /// Written with the CCS and Finished once the job is done (a copy: the job hashes
    /// the original).
    server_hello: Vec<u8>,
}

pub(crate) struct AwaitFinished {
    client_read: Option<Cipher>,
    /// Full handshake: the server's write key, NewSessionTicket and Finished, sent after
    /// the client's Finished. `None` when resuming: the server finished first.
    server_flight: Option<ServerFlight>,
    mode: Protection,
    client_verify: Secret,
    store_as: Option<(Vec<u8>, Session)>,
}

struct ServerFlight {
    write: TrafficKey,
    new_session_ticket: Option<Vec<u8>>,
    finished: Vec<u8>,
}

fn protection(aead: AeadAlg) -> Protection {
    if aead == AeadAlg::Chacha20Poly1305 {
        Protection::Tls12Chacha
    } else {
        Protection::Tls12Gcm
    }
}

impl ServerConn {
    /// The session a TLS 1.2 hello asks to resume: its ticket first, then its session
    /// ID in the store (`looked_up` carries a store answer that came in later).
    pub(crate) fn tls12_candidate(
        &self,
        ch: &ClientHello,
        looked_up: Option<Option<Secret>>,
    ) -> Candidate {
        let r = &self.cfg.resumption;
        if let (Some(keys), Some(t)) = (&r.tickets, ch.session_ticket) {
            if !t.is_empty() {
                // A ticket we cannot open (old key, another server) just means a full
                // handshake; the client gets a fresh one.
                if let Some((s, age)) = keys
                    .open_aged(self.now_ms, t)
                    .and_then(|(p, age)| Session::decode(p.bytes()).ok().map(|s| (s, age)))
                {
                    let renew = age != crypto_offload::TicketKeyAge::Sealing;
                    return Candidate::Found(s, Resumed::Ticket, renew);
                }
            }
        }
        let Some(store) = &r.store else {
            return Candidate::None;
        };
        if ch.session_id.is_empty() {
            return Candidate::None;
        }
        let answer = match looked_up {
            Some(a) => a,
            None => match store.lookup(ch.session_id, self.now_ms) {
                Lookup::Ready(a) => a,
                Lookup::Pending(p) => return Candidate::Wait(p),
            },
        };
        match answer.and_then(|e| Session::decode(e.bytes()).ok()) {
            Some(s) => Candidate::Found(s, Resumed::SessionId, false),
            None => Candidate::None,
        }
    }

    pub(crate) fn tls12_negotiate(
        &mut self,
        ch: &ClientHello,
        candidate: Option<(Session, Resumed, bool)>,
    ) -> Result<Plan, Error> {
        if !ch.compression.contains(&0) {
            return Err(Error::IllegalParameter("no null compression method"));
        }
        // RFC 5746 §3.6: on an initial handshake renegotiated_connection must be empty.
        if ch.renegotiation_info.is_some_and(|r| !r.is_empty()) {
            return Err(Error::RenegotiationInfo);
        }
        let secure_renegotiation = ch.renegotiation_info.is_some()
            || ch.offers_suite(suite::EMPTY_RENEGOTIATION_INFO_SCSV);
        // RFC 8422 §5.1.2: we send uncompressed points only.
        if ch.point_formats.is_some_and(|f| !f.contains(&0)) {
            return Err(Error::IllegalParameter("no uncompressed point format"));
        }
        let mut plan = Plan {
            suite: 0,
            hash: HashAlg::Sha256,
            aead: AeadAlg::Aes128Gcm,
            full: None,
            resume: None,
            ems: ch.extended_master_secret,
            secure_renegotiation,
            point_formats: ch.point_formats.is_some(),
            client_random: ch.random,
            session_id: Vec::new(),
            issue_ticket: false,
        };
        if let Some((s, how, renew)) = candidate {
            if self.tls12_resumable(ch, &s)? {
                let info = suite_info(s.suite).ok_or(Error::Misuse("stored suite unknown"))?;
                plan.suite = s.suite;
                plan.hash = info.hash;
                plan.aead = info.aead;
                // RFC 5077 §3.4: a ticket's resumption echoes the client's session ID.
                plan.session_id = ch.session_id.to_vec();
                plan.ems = s.ems;
                // RFC 5077 §3.3: a ticket's resumption gets a fresh ticket, sealed under
                // the current key, when an older key sealed it (a client keeps resuming
                // across key rotations, as clients that rotate their tickets expect);
                // its session keeps the lifetime it had.
                plan.issue_ticket = how == Resumed::Ticket && renew;
                self.restore_peer(s.peer.clone());
                plan.resume = Some(s);
                self.info.resumed = Some(how);
                return Ok(plan);
            }
        }
        let (suite, info, full) = self.tls12_full_negotiate(ch)?;
        plan.suite = suite;
        plan.hash = info.hash;
        plan.aead = info.aead;
        plan.full = Some(full);
        let r = &self.cfg.resumption;
        if r.tickets.is_some() && ch.session_ticket.is_some() {
            plan.issue_ticket = true;
        } else if r.store.is_some() {
            plan.session_id = vec![0; 32];
            random(&mut plan.session_id)?;
        }
        Ok(plan)
    }

    /// Whether `s` may resume on this hello. RFC 7627 §5.3: a session made with the
    /// extended master secret must not resume without it (abort); one made without it
    /// does not resume when the client now offers it (full handshake).
    fn tls12_resumable(&self, ch: &ClientHello, s: &Session) -> Result<bool, Error> {
        let ours = s.version == version::TLS12
            && s.live(self.now_ms)
            && self.peer_acceptable(s)
            && s.same_name(ch.sni)
            && self.cfg.suites12.contains(&s.suite);
        // RFC 5246 §7.4.1.2: "If the session_id field is not empty (implying a session
        // resumption request), this vector MUST include at least the cipher_suite from
        // that session" (and so for a ticket, RFC 5077 §3.4).
        if ours && !ch.offers_suite(s.suite) {
            return Err(Error::IllegalParameter(
                "the resumed session's cipher suite is not offered",
            ));
        }
        let fits = ours && s.ems == ch.extended_master_secret;
        if fits || !s.ems || ch.extended_master_secret {
            return Ok(fits);
        }
        if s.version == version::TLS12 && s.live(self.now_ms) {
            return Err(Error::ResumptionWithoutEms);
        }
        Ok(false)
    }

    fn tls12_full_negotiate(
        &self,
        ch: &ClientHello,
    ) -> Result<(u16, crate::server::SuiteInfo, FullPlan), Error> {
        let group_id = match ch.groups() {
            // The hybrid is TLS 1.3's only (draft-ietf-tls-ecdhe-mlkem §3).
            Some(_) => self
                .cfg
                .groups
                .iter()
                .copied()
                .find(|&g| g != group::X25519MLKEM768 && ch.offers_group(g)),
            // RFC 8422 §4: without the extension any curve may be used; pick P-256.
            None => self
                .cfg
                .groups
                .iter()
                .copied()
                .find(|&g| g == group::SECP256R1),
        }
        .ok_or(Error::NoCommonParameters("group"))?;
        let certs = self.site_certs();
        // RFC 8422 §5.1 asks for an ECDSA certificate on a curve the client listed in
        // supported_groups. Some clients (rustls) list only their key-exchange groups
        // there while their signature_algorithms accept ECDSA, so a certificate on a
        // listed curve is preferred, and failing that one the signature schemes accept.
        let choose = |strict_curves: bool| {
            self.cfg
                .suites12
                .iter()
                .copied()
                .filter(|&s| ch.offers_suite(s))
                .find_map(|s| {
                    let info = suite_info(s)?;
                    let want_ecdsa = info.ecdsa?;
                    certs.iter().find_map(|c| {
                        let listed = |g| ch.groups().is_none() || ch.offers_group(g);
                        let (is_ecdsa, curve_ok) = match c.kind {
                            KeyKind::Rsa { .. } => (false, true),
                            KeyKind::EcdsaP256 => (true, listed(group::SECP256R1)),
                            KeyKind::EcdsaP384 => (true, listed(group::SECP384R1)),
                        };
                        (is_ecdsa == want_ecdsa && (curve_ok || !strict_curves))
                            .then(|| pick_scheme(c.kind, false, ch))
                            .flatten()
                            .map(|sch| (s, info, c.clone(), sch))
                    })
                })
        };
        let chosen = choose(true).or_else(|| choose(false));
        let (suite, info, cert, scheme) =
            chosen.ok_or(Error::NoCommonParameters("cipher suite"))?;
        let staple = cert
            .staple
            .as_ref()
            .filter(|s| ch.status_request && s.valid())
            .map(|s| s.status12.clone());
        let full = FullPlan {
            group_id,
            group: group_of(group_id).ok_or(Error::Misuse("configured group unknown"))?,
            cert,
            scheme,
            staple,
        };
        Ok((suite, info, full))
    }

    fn server_hello12(&self, p: &Plan, server_random: &[u8; 32]) -> Vec<u8> {
        let mut sh = Vec::with_capacity(96 + p.session_id.len());
        put_handshake(&mut sh, hs::SERVER_HELLO, |m| {
            put_u16(m, version::TLS12);
            m.extend_from_slice(server_random);
            m.push(p.session_id.len() as u8);
            m.extend_from_slice(&p.session_id);
            put_u16(m, p.suite);
            m.push(0);
            let at = start_len(m, 2);
            if p.secure_renegotiation {
                put_ext(m, ext::RENEGOTIATION_INFO, |m| m.push(0));
            }
            if p.ems {
                put_ext(m, ext::EXTENDED_MASTER_SECRET, |_| {});
            }
            if p.point_formats {
                put_ext(m, ext::EC_POINT_FORMATS, |m| m.extend_from_slice(&[1, 0]));
            }
            // RFC 6066 §3: no server_name acknowledgement when resuming.
            if p.resume.is_none() && self.sni_acknowledged() {
                put_ext(m, ext::SERVER_NAME, |_| {});
            }
            if let Some(a) = &self.info.alpn {
                put_alpn_ext(m, a);
            }
            if p.issue_ticket {
                put_ext(m, ext::SESSION_TICKET, |_| {});
            }
            // RFC 6066 §8: an empty status_request says a CertificateStatus follows.
            if p.full.as_ref().is_some_and(|f| f.staple.is_some()) {
                put_ext(m, ext::STATUS_REQUEST, |_| {});
            }
            end_len(m, at, 2);
        });
        sh
    }

    pub(crate) fn tls12_start(&mut self, mut p: Plan, msg: Vec<u8>) -> Result<(), Error> {
        self.info.suite = p.suite;
        self.info.extended_master_secret = p.ems;
        let mut server_random = [0u8; 32];
        random(&mut server_random)?;
        if self.cfg.tls13 {
            // RFC 8446 §4.1.3: a TLS 1.3 server negotiating TLS 1.2 says so.
            server_random[24..].copy_from_slice(&DOWNGRADE_TLS12);
        }
        let sh = self.server_hello12(&p, &server_random);
        let mut transcript = Vec::with_capacity(6);
        transcript.push(Chunk::Owned(msg));
        if let Some(s) = p.resume.take() {
            let ctx = ResumeCtx {
                aead: p.aead,
                server_hello: sh.clone(),
            };
            transcript.push(Chunk::Owned(sh));
            let ticket = if p.issue_ticket {
                self.ticket_request(&s).map(|mut t| {
                    // The hint is what is left of the session's lifetime.
                    let ends = s.created_ms + u64::from(s.lifetime_s) * 1000;
                    t.lifetime_s = (ends.saturating_sub(self.now_ms) / 1000) as u32;
                    t
                })
            } else {
                None
            };
            let job = Tls12Resume {
                ticket,
                hash: p.hash,
                aead: p.aead,
                master_secret: s.secret,
                client_random: p.client_random,
                server_random,
                transcript,
            };
            self.emit_job(
                call(move || tls12_resume(job)),
                Pending::Tls12Resume(Box::new(ctx)),
            );
            return Ok(());
        }
        transcript.push(Chunk::Owned(sh));
        let full = p
            .full
            .take()
            .ok_or(Error::Misuse("TLS 1.2 plan without a key exchange"))?;
        self.info.group = full.group_id;
        self.info.scheme = full.scheme;
        let job = Tls12Kx {
            group: full.group,
            group_id: full.group_id,
            signer: full.cert.key.clone(),
            sig_alg: sig_alg_of(full.scheme),
            scheme: full.scheme,
            client_random: p.client_random,
            server_random,
        };
        let ctx = KxCtx {
            plan: p,
            full,
            server_random,
            transcript,
        };
        self.emit_job(call(move || tls12_kx(job)), Pending::Tls12Kx(Box::new(ctx)));
        Ok(())
    }

    pub(crate) fn tls12_kx_done(&mut self, ctx: KxCtx, d: Tls12KxDone) -> Result<(), Error> {
        let KxCtx {
            plan,
            full,
            server_random,
            mut transcript,
        } = ctx;
        let Tls12KxDone {
            key,
            server_key_exchange,
        } = d;
        // ServerHello, Certificate, ServerKeyExchange, (CertificateRequest,)
        // ServerHelloDone: one write.
        let Chunk::Owned(sh) = &transcript[1] else {
            return Err(Error::Misuse("transcript layout"));
        };
        let request = self.cfg.client_auth.as_ref().map(|a| match plan.hash {
            HashAlg::Sha256 => a.request12_sha256.clone(),
            HashAlg::Sha384 => a.request12_sha384.clone(),
        });
        let mut msgs: Vec<&[u8]> = vec![sh, &full.cert.cert12];
        if let Some(st) = &full.staple {
            msgs.push(st);
        }
        msgs.push(&server_key_exchange);
        if let Some(r) = &request {
            msgs.push(r);
        }
        msgs.push(&full.cert.server_hello_done);
        self.write_plain_handshake(&msgs);
        self.info.ocsp_stapled = full.staple.is_some();
        transcript.push(Chunk::Shared(full.cert.cert12.clone()));
        if let Some(st) = &full.staple {
            transcript.push(Chunk::Shared(st.clone()));
        }
        transcript.push(Chunk::Owned(server_key_exchange));
        if let Some(r) = &request {
            transcript.push(Chunk::Shared(r.clone()));
        }
        transcript.push(Chunk::Shared(full.cert.server_hello_done.clone()));
        let w = Box::new(AwaitClientKx {
            plan,
            server_random,
            transcript,
            key,
            chain: Vec::new(),
            client_public: Vec::new(),
        });
        self.state = if request.is_some() {
            State::Tls12ClientCert(w)
        } else {
            State::Tls12ClientKx(w)
        };
        Ok(())
    }

    /// RFC 5246 §7.4.6: the client's Certificate after our request (may be empty).
    pub(crate) fn tls12_client_certificate(
        &mut self,
        mut w: Box<AwaitClientKx>,
        msg: Vec<u8>,
    ) -> Result<(), Error> {
        w.chain = self.client_chain(&msg, false)?;
        w.transcript.push(Chunk::Owned(msg));
        self.state = State::Tls12ClientKx(w);
        Ok(())
    }

    /// RFC 5246 §7.4.8: the client's CertificateVerify; checked in the finishing job.
    pub(crate) fn tls12_client_verify(
        &mut self,
        w: Box<AwaitClientKx>,
        msg: Vec<u8>,
    ) -> Result<(), Error> {
        let auth = self.client_auth()?;
        let (scheme, sig) = parse_certificate_verify(&msg[4..])?;
        let asked: &[u16] = match w.plan.hash {
            HashAlg::Sha256 => &CLIENT_SCHEMES12_SHA256,
            HashAlg::Sha384 => &CLIENT_SCHEMES12_SHA384,
        };
        if !asked.contains(&scheme) {
            return Err(Error::IllegalParameter(
                "CertificateVerify scheme not requested",
            ));
        }
        let signature = sig.to_vec();
        let mut w = *w;
        let check = Tls12ClientCheck {
            roots: auth.roots.clone(),
            chain: std::mem::take(&mut w.chain),
            certificate_verify: msg,
            sig_alg: sig_alg_of(scheme),
            signature,
        };
        self.tls12_finish_job(w, Some(check));
        Ok(())
    }

    pub(crate) fn tls12_client_kx(
        &mut self,
        mut w: Box<AwaitClientKx>,
        msg: Vec<u8>,
    ) -> Result<(), Error> {
        // RFC 8422 §5.7: ClientECDiffieHellmanPublic, a point with a one-byte length.
        let mut r = Reader::new(&msg[4..]);
        let client_public = r.vec8()?.to_vec();
        r.finish("ClientKeyExchange")?;
        if client_public.is_empty() {
            return Err(Error::Decode("empty ClientKeyExchange"));
        }
        w.transcript.push(Chunk::Owned(msg));
        w.client_public = client_public;
        if !w.chain.is_empty() {
            self.state = State::Tls12ClientCv(w);
            return Ok(());
        }
        self.tls12_finish_job(*w, None);
        Ok(())
    }

    fn tls12_finish_job(&mut self, w: AwaitClientKx, client_auth: Option<Tls12ClientCheck>) {
        let AwaitClientKx {
            plan,
            server_random,
            transcript,
            key,
            chain: _,
            client_public,
        } = w;
        let mut session = self.new_session(version::TLS12, plan.suite);
        session.ems = plan.ems;
        session.peer = client_auth.as_ref().and_then(|c| c.chain.first().cloned());
        let ticket = if plan.issue_ticket {
            self.ticket_request(&session)
        } else {
            None
        };
        let session_peer = session.peer.clone();
        let store_as = (!plan.session_id.is_empty()).then(|| (plan.session_id.clone(), session));
        let job = Tls12Finish {
            hash: plan.hash,
            aead: plan.aead,
            key,
            client_public,
            extended_master_secret: plan.ems,
            client_random: plan.client_random,
            server_random,
            transcript,
            ticket,
            client_auth,
        };
        self.emit_job(
            call(move || tls12_finish(job)),
            Pending::Tls12Finish(Box::new(FinishCtx {
                aead: plan.aead,
                peer: session_peer,
                store_as,
            })),
        );
    }

    pub(crate) fn tls12_finish_done(
        &mut self,
        ctx: FinishCtx,
        d: Tls12FinishDone,
    ) -> Result<(), Error> {
        self.info.digest.passes += d.digest.passes;
        self.info.digest.bytes += d.digest.bytes;
        self.info.peer_subject = d.peer_subject;
        self.info.peer_certificate = ctx.peer;
        self.core.exporter = Some(d.exporter);
        let mode = protection(ctx.aead);
        let store_as = ctx.store_as.map(|(id, mut s)| {
            s.secret = d.master_secret;
            (id, s)
        });
        self.state = State::Tls12Ccs(Box::new(AwaitFinished {
            client_read: Some(Cipher::new(d.client_write, mode)),
            server_flight: Some(ServerFlight {
                write: d.server_write,
                new_session_ticket: d.new_session_ticket,
                finished: d.server_finished,
            }),
            mode,
            client_verify: d.client_verify,
            store_as,
        }));
        Ok(())
    }

    /// Abbreviated handshake: ServerHello, CCS and the server's Finished in one write,
    /// then the client's CCS and Finished.
    pub(crate) fn tls12_resume_done(
        &mut self,
        ctx: ResumeCtx,
        d: Tls12ResumeDone,
    ) -> Result<(), Error> {
        self.info.digest.passes += d.digest.passes;
        self.info.digest.bytes += d.digest.bytes;
        self.core.exporter = Some(d.exporter);
        match &d.new_session_ticket {
            Some(nst) => self.write_plain_handshake(&[&ctx.server_hello, nst]),
            None => self.write_plain_handshake(&[&ctx.server_hello]),
        }
        self.write_ccs();
        let mode = protection(ctx.aead);
        self.core.write = Some(Cipher::new(d.server_write, mode));
        self.write_protected_handshake(&[&d.server_finished])?;
        self.state = State::Tls12Ccs(Box::new(AwaitFinished {
            client_read: Some(Cipher::new(d.client_write, mode)),
            server_flight: None,
            mode,
            client_verify: d.client_verify,
            store_as: None,
        }));
        Ok(())
    }

    pub(crate) fn tls12_ccs(&mut self, mut w: Box<AwaitFinished>) -> Result<(), Error> {
        self.core.read = w.client_read.take();
        self.state = State::Tls12Finished(w);
        Ok(())
    }

    pub(crate) fn tls12_finished(&mut self, w: AwaitFinished, msg: &[u8]) -> Result<(), Error> {
        // A Finished that is padded or cut short does not decode (its verify_data has
        // the one length the suite fixes: RFC 5246 §7.4.9, RFC 8446 §4.4.4): that is
        // decode_error, before any comparison.
        if msg.len() - 4 != w.client_verify.bytes().len() {
            return Err(Error::Decode("Finished of the wrong length"));
        }
        if !ct_eq(&msg[4..], w.client_verify.bytes()) {
            return Err(Error::BadFinished);
        }
        if !self.hs_buffer_empty() {
            return Err(Error::UnexpectedMessage("data after Finished"));
        }
        if let Some(f) = w.server_flight {
            if let Some(nst) = &f.new_session_ticket {
                self.write_plain_handshake(&[nst]);
            }
            self.write_ccs();
            self.core.write = Some(Cipher::new(f.write, w.mode));
            self.write_protected_handshake(&[&f.finished])?;
        }
        // RFC 5246 §7.3: a session becomes resumable once its handshake has finished.
        if let (Some((id, s)), Some(store)) = (w.store_as, &self.cfg.resumption.store) {
            let expires = s.created_ms + u64::from(s.lifetime_s) * 1000;
            store.put(&id, s.encode(), expires);
        }
        self.start_traffic(None);
        Ok(())
    }
}
