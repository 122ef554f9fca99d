//! TLS 1.2 (RFC 5246), server side, ECDHE only: ECDHE_ECDSA and ECDHE_RSA with
//! AES-GCM (RFC 5288) and ChaCha20-Poly1305 (RFC 7905), extended master secret
//! (RFC 7627), secure renegotiation indication with renegotiation refused (RFC 5746).
//!
//! Transcript: ClientHello, ServerHello, ServerKeyExchange and ClientKeyExchange are
//! kept as owned bytes; Certificate and ServerHelloDone are the certificate's shared
//! precomputed messages. Nothing is hashed as it passes: at the ClientKeyExchange one
//! job digests the whole buffer once, and that one pass yields the session hash, the
//! client Finished the server expects and (going on over that Finished) the server's.

use std::sync::Arc;

use crypto_offload::job::{Tls12Finish, Tls12FinishDone, Tls12Kx, Tls12KxDone};
use crypto_offload::prim::{ct_eq, random};
use crypto_offload::{
    AeadAlg, Chunk, EphemeralKey, Group, HashAlg, Job, KeyKind, Secret, TrafficKey,
};

use crate::codec::{end_len, put_u16, start_len, Reader};
use crate::config::CertifiedKey;
use crate::error::Error;
use crate::msgs::{
    ext, group, hs, put_alpn_ext, put_ext, put_handshake, suite, version, ClientHello,
    DOWNGRADE_TLS12,
};
use crate::record::{Cipher, Protection};
use crate::server::{group_of, pick_scheme, sig_alg_of, suite_info, Pending, ServerConn, State};

/// What the ClientHello negotiated.
pub(crate) struct Plan {
    suite: u16,
    hash: HashAlg,
    aead: AeadAlg,
    group_id: u16,
    group: Group,
    cert: Arc<CertifiedKey>,
    scheme: u16,
    ems: bool,
    secure_renegotiation: bool,
    point_formats: bool,
    client_random: [u8; 32],
}

pub(crate) struct KxCtx {
    plan: Plan,
    server_random: [u8; 32],
    transcript: Vec<Chunk>,
}

pub(crate) struct AwaitClientKx {
    plan: Plan,
    server_random: [u8; 32],
    transcript: Vec<Chunk>,
    key: EphemeralKey,
}

pub(crate) struct FinishCtx {
    aead: AeadAlg,
}

pub(crate) struct AwaitFinished {
    client_read: Option<Cipher>,
    server_write: TrafficKey,
    mode: Protection,
    client_verify: Secret,
    server_finished: Vec<u8>,
}

fn protection(aead: AeadAlg) -> Protection {
    if aead == AeadAlg::Chacha20Poly1305 {
        Protection::Tls12Chacha
    } else {
        Protection::Tls12Gcm
    }
}

impl ServerConn {
    pub(crate) fn tls12_negotiate(&mut self, ch: &ClientHello) -> Result<Plan, Error> {
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
        let group_id = match ch.groups() {
            Some(_) => self
                .cfg
                .groups
                .iter()
                .copied()
                .find(|&g| ch.offers_group(g)),
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
        let chosen = self
            .cfg
            .suites12
            .iter()
            .copied()
            .filter(|&s| ch.offers_suite(s))
            .find_map(|s| {
                let info = suite_info(s)?;
                let want_ecdsa = info.ecdsa?;
                certs.iter().find_map(|c| {
                    // RFC 8422 §5.1: an ECDSA certificate's curve must be one the client
                    // listed in supported_groups (when it sent the extension).
                    let (is_ecdsa, curve_ok) = match c.kind {
                        KeyKind::Rsa { .. } => (false, true),
                        KeyKind::EcdsaP256 => (
                            true,
                            ch.groups().is_none() || ch.offers_group(group::SECP256R1),
                        ),
                        KeyKind::EcdsaP384 => (
                            true,
                            ch.groups().is_none() || ch.offers_group(group::SECP384R1),
                        ),
                    };
                    (is_ecdsa == want_ecdsa && curve_ok)
                        .then(|| pick_scheme(c.kind, false, ch))
                        .flatten()
                        .map(|sch| (s, info, c.clone(), sch))
                })
            });
        let (suite, info, cert, scheme) =
            chosen.ok_or(Error::NoCommonParameters("cipher suite"))?;
        Ok(Plan {
            suite,
            hash: info.hash,
            aead: info.aead,
            group_id,
            group: group_of(group_id).ok_or(Error::Misuse("configured group unknown"))?,
            cert,
            scheme,
            ems: ch.extended_master_secret,
            secure_renegotiation,
            point_formats: ch.point_formats.is_some(),
            client_random: ch.random,
        })
    }

    pub(crate) fn tls12_start(&mut self, p: Plan, msg: Vec<u8>) -> Result<(), Error> {
        self.info.suite = p.suite;
        self.info.group = p.group_id;
        self.info.scheme = p.scheme;
        self.info.extended_master_secret = p.ems;
        let mut server_random = [0u8; 32];
        random(&mut server_random)?;
        if self.cfg.tls13 {
            // RFC 8446 §4.1.3: a TLS 1.3 server negotiating TLS 1.2 says so.
            server_random[24..].copy_from_slice(&DOWNGRADE_TLS12);
        }
        let mut sh = Vec::with_capacity(96);
        put_handshake(&mut sh, hs::SERVER_HELLO, |m| {
            put_u16(m, version::TLS12);
            m.extend_from_slice(&server_random);
            m.push(0); // no session id: no session cache yet
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
            if self.sni_acknowledged() {
                put_ext(m, ext::SERVER_NAME, |_| {});
            }
            if let Some(a) = &self.info.alpn {
                put_alpn_ext(m, a);
            }
            end_len(m, at, 2);
        });
        let job = Tls12Kx {
            group: p.group,
            group_id: p.group_id,
            signer: p.cert.key.clone(),
            sig_alg: sig_alg_of(p.scheme),
            scheme: p.scheme,
            client_random: p.client_random,
            server_random,
        };
        let mut transcript = Vec::with_capacity(6);
        transcript.push(Chunk::Owned(msg));
        transcript.push(Chunk::Owned(sh));
        let ctx = KxCtx {
            plan: p,
            server_random,
            transcript,
        };
        self.emit_job(Job::Tls12Kx(Box::new(job)), Pending::Tls12Kx(Box::new(ctx)));
        Ok(())
    }

    pub(crate) fn tls12_kx_done(&mut self, ctx: KxCtx, d: Tls12KxDone) -> Result<(), Error> {
        let KxCtx {
            plan,
            server_random,
            mut transcript,
        } = ctx;
        let Tls12KxDone {
            key,
            server_key_exchange,
        } = d;
        // ServerHello, Certificate, ServerKeyExchange, ServerHelloDone: one write.
        let Chunk::Owned(sh) = &transcript[1] else {
            return Err(Error::Misuse("transcript layout"));
        };
        self.write_plain_handshake(&[
            sh,
            &plan.cert.cert12,
            &server_key_exchange,
            &plan.cert.server_hello_done,
        ]);
        transcript.push(Chunk::Shared(plan.cert.cert12.clone()));
        transcript.push(Chunk::Owned(server_key_exchange));
        transcript.push(Chunk::Shared(plan.cert.server_hello_done.clone()));
        self.state = State::Tls12ClientKx(Box::new(AwaitClientKx {
            plan,
            server_random,
            transcript,
            key,
        }));
        Ok(())
    }

    pub(crate) fn tls12_client_kx(&mut self, w: AwaitClientKx, msg: Vec<u8>) -> Result<(), Error> {
        let AwaitClientKx {
            plan,
            server_random,
            mut transcript,
            key,
        } = w;
        // RFC 8422 §5.7: ClientECDiffieHellmanPublic, a point with a one-byte length.
        let mut r = Reader::new(&msg[4..]);
        let client_public = r.vec8()?.to_vec();
        r.finish("ClientKeyExchange")?;
        if client_public.is_empty() {
            return Err(Error::Decode("empty ClientKeyExchange"));
        }
        transcript.push(Chunk::Owned(msg));
        let job = Tls12Finish {
            hash: plan.hash,
            aead: plan.aead,
            key,
            client_public,
            extended_master_secret: plan.ems,
            client_random: plan.client_random,
            server_random,
            transcript,
        };
        self.emit_job(
            Job::Tls12Finish(Box::new(job)),
            Pending::Tls12Finish(Box::new(FinishCtx { aead: plan.aead })),
        );
        Ok(())
    }

    pub(crate) fn tls12_finish_done(
        &mut self,
        ctx: FinishCtx,
        d: Tls12FinishDone,
    ) -> Result<(), Error> {
        self.info.digest.passes += d.digest.passes;
        self.info.digest.bytes += d.digest.bytes;
        let mode = protection(ctx.aead);
        self.state = State::Tls12Ccs(Box::new(AwaitFinished {
            client_read: Some(Cipher::new(d.client_write, mode)),
            server_write: d.server_write,
            mode,
            client_verify: d.client_verify,
            server_finished: d.server_finished,
        }));
        Ok(())
    }

    pub(crate) fn tls12_ccs(&mut self, mut w: Box<AwaitFinished>) -> Result<(), Error> {
        self.read = w.client_read.take();
        self.state = State::Tls12Finished(w);
        Ok(())
    }

    pub(crate) fn tls12_finished(&mut self, w: AwaitFinished, msg: &[u8]) -> Result<(), Error> {
        if !ct_eq(&msg[4..], w.client_verify.bytes()) {
            return Err(Error::BadFinished);
        }
        if !self.hs_buffer_empty() {
            return Err(Error::UnexpectedMessage("data after Finished"));
        }
        self.write_ccs();
        self.write = Some(Cipher::new(w.server_write, w.mode));
        self.write_protected_handshake(&[&w.server_finished])?;
        self.start_traffic(None);
        Ok(())
    }
}
