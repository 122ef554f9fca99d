//! TLS 1.3 (RFC 8446), server side: negotiation from the ClientHello, the
//! HelloRetryRequest, the one-job server flight, the client Finished and KeyUpdate.
//!
//! Transcript: the messages are kept as bytes (the ClientHello owned, the Certificate
//! as the certificate's shared precomputed message) and hashed once, inside the flight
//! job, with snapshots at each point the key schedule needs. A full handshake is one
//! digest pass; a HelloRetryRequest adds one more (the hash of the first ClientHello
//! that RFC 8446 §4.4.1 puts in its place).

use std::sync::Arc;

use crypto_offload::job::{tls13_next_secret, Tls13Flight, Tls13FlightDone};
use crypto_offload::prim::{ct_eq, hash, random};
use crypto_offload::{AeadAlg, Chunk, HashAlg, Job, Secret, TrafficKey};

use crate::codec::{end_len, handshake_header, put_u16, start_len};
use crate::config::CertifiedKey;
use crate::error::Error;
use crate::msgs::{
    ext, hs, put_alpn_ext, put_ext, put_handshake, version, ClientHello, HRR_RANDOM,
};
use crate::record::{Cipher, Protection};
use crate::server::{group_of, pick_scheme, sig_alg_of, suite_info, Pending, ServerConn, State};

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
    group: u16,
    /// None: no usable key share, so a HelloRetryRequest for `group`.
    client_share: Option<Vec<u8>>,
    cert: Arc<CertifiedKey>,
    scheme: u16,
    session_id: Vec<u8>,
}

pub(crate) struct FlightCtx {
    compat_ccs: bool,
    hash: HashAlg,
    aead: AeadAlg,
}

pub(crate) struct AwaitFinished {
    expected: Secret,
    app_read: TrafficKey,
    secrets: Secrets,
}

/// Application traffic secrets, kept for KeyUpdate; zeroized on drop.
pub(crate) struct Secrets {
    hash: HashAlg,
    aead: AeadAlg,
    client: Secret,
    server: Secret,
}

/// A TLS 1.3 ServerHello (RFC 8446 §4.1.3). With `share_len`, the key_share carries
/// that many zeros where the flight job writes the server's public value (its offset is
/// returned); without, it names only the group: a HelloRetryRequest (with `HRR_RANDOM`).
fn server_hello13(random: &[u8; 32], p: &Plan, share_len: Option<usize>) -> (Vec<u8>, usize) {
    let mut sh = Vec::with_capacity(96 + share_len.unwrap_or(0));
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
        put_ext(m, ext::KEY_SHARE, |m| {
            put_u16(m, p.group);
            if let Some(n) = share_len {
                put_u16(m, n as u16);
                share_at = m.len();
                m.resize(m.len() + n, 0);
            }
        });
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
        if !ch.has_sig_algs() {
            return Err(Error::MissingExtension("signature_algorithms"));
        }
        let (cert, scheme) = self
            .site_certs()
            .iter()
            .find_map(|c| pick_scheme(c.kind, true, ch).map(|s| (c.clone(), s)))
            .ok_or(Error::NoCommonParameters("signature scheme"))?;
        if ch.groups().is_none() {
            return Err(Error::MissingExtension("supported_groups"));
        }
        if !ch.has_key_shares() {
            return Err(Error::MissingExtension("key_share"));
        }
        let (group, client_share) = match retry {
            Some(r) => {
                // RFC 8446 §4.1.2: the retried hello carries exactly the requested share.
                let mut shares = ch.key_shares();
                match (shares.next(), shares.next()) {
                    (Some((g, k)), None) if g == r.group => (g, Some(k.to_vec())),
                    _ => return Err(Error::IllegalParameter("second ClientHello key share")),
                }
            }
            None => {
                let usable = |g: u16| self.cfg.groups.contains(&g) && ch.offers_group(g);
                match ch.key_shares().find(|&(g, _)| usable(g)) {
                    Some((g, k)) => (g, Some(k.to_vec())),
                    None => {
                        let g = self
                            .cfg
                            .groups
                            .iter()
                            .copied()
                            .find(|&g| ch.offers_group(g))
                            .ok_or(Error::NoCommonParameters("group"))?;
                        (g, None)
                    }
                }
            }
        };
        Ok(Plan {
            suite,
            hash: info.hash,
            aead: info.aead,
            group,
            client_share,
            cert,
            scheme,
            session_id: ch.session_id.to_vec(),
        })
    }

    pub(crate) fn tls13_start(
        &mut self,
        mut p: Plan,
        msg: Vec<u8>,
        retry: Option<Box<Retry>>,
    ) -> Result<(), Error> {
        self.info.suite = p.suite;
        self.info.group = p.group;
        self.info.scheme = p.scheme;
        // The client may send one compatibility CCS before its next flight (RFC 8446 §D.4).
        self.ccs_allowed = true;
        let (mut transcript, ccs_sent) = match retry {
            Some(r) => (r.transcript, r.ccs_sent),
            None => (Vec::with_capacity(1), false),
        };
        let Some(client_share) = p.client_share.take() else {
            return self.hello_retry(p, msg);
        };
        // RFC 8446 §5.1: handshake messages MUST NOT span a key change.
        if !self.hs_buffer_empty() {
            return Err(Error::UnexpectedMessage(
                "data after ClientHello in its record",
            ));
        }
        transcript.push(Chunk::Owned(msg));
        let group = group_of(p.group).ok_or(Error::Misuse("configured group unknown"))?;

        let mut server_random = [0u8; 32];
        random(&mut server_random)?;
        let (sh, share_at) = server_hello13(&server_random, &p, Some(group.public_len()));
        let ee = self.encrypted_extensions();
        let job = Tls13Flight {
            hash: p.hash,
            aead: p.aead,
            group,
            client_share,
            transcript,
            server_hello: sh,
            share_at,
            encrypted_extensions: ee,
            certificate: p.cert.cert13.clone(),
            signer: p.cert.key.clone(),
            sig_alg: sig_alg_of(p.scheme),
            scheme: p.scheme,
        };
        let ctx = FlightCtx {
            compat_ccs: !ccs_sent && !p.session_id.is_empty(),
            hash: p.hash,
            aead: p.aead,
        };
        self.emit_job(
            Job::Tls13Flight(Box::new(job)),
            Pending::Tls13Flight(Box::new(ctx)),
        );
        Ok(())
    }

    fn encrypted_extensions(&self) -> Vec<u8> {
        let mut ee = Vec::with_capacity(32);
        put_handshake(&mut ee, hs::ENCRYPTED_EXTENSIONS, |m| {
            let at = start_len(m, 2);
            if self.sni_acknowledged() {
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
        let (hrr, _) = server_hello13(&HRR_RANDOM, &p, None);
        self.write_plain_handshake(&[&hrr]);
        let ccs_sent = !p.session_id.is_empty();
        if ccs_sent {
            self.write_ccs();
        }
        self.state = State::RetriedClientHello(Box::new(Retry {
            suite: p.suite,
            group: p.group,
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
        // ServerHello (and the compatibility CCS) in the clear, then EE, Certificate,
        // CertificateVerify and Finished under the handshake key: one write.
        self.write_plain_handshake(&[&d.server_hello]);
        if ctx.compat_ccs {
            self.write_ccs();
        }
        self.write = Some(Cipher::new(d.handshake_write, Protection::Tls13));
        self.write_protected_handshake(&[
            &d.encrypted_extensions,
            &d.certificate,
            &d.certificate_verify,
            &d.server_finished,
        ])?;
        self.write = Some(Cipher::new(d.app_write, Protection::Tls13));
        self.read = Some(Cipher::new(d.handshake_read, Protection::Tls13));
        self.state = State::Tls13Finished(Box::new(AwaitFinished {
            expected: d.client_finished,
            app_read: d.app_read,
            secrets: Secrets {
                hash: ctx.hash,
                aead: ctx.aead,
                client: d.client_app_secret,
                server: d.server_app_secret,
            },
        }));
        Ok(())
    }

    pub(crate) fn tls13_finished(&mut self, w: AwaitFinished, msg: &[u8]) -> Result<(), Error> {
        if !ct_eq(&msg[4..], w.expected.bytes()) {
            return Err(Error::BadFinished);
        }
        if !self.hs_buffer_empty() {
            return Err(Error::UnexpectedMessage(
                "data after Finished in its record",
            ));
        }
        self.ccs_allowed = false;
        self.read = Some(Cipher::new(w.app_read, Protection::Tls13));
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
        self.read = Some(Cipher::new(
            TrafficKey::tls13(s.hash, s.aead, s.client.bytes(), false)?,
            Protection::Tls13,
        ));
        if requested {
            self.write_protected_handshake(&[&[hs::KEY_UPDATE, 0, 0, 1, 0]])?;
            s.server = tls13_next_secret(s.hash, s.server.bytes())?;
            self.write = Some(Cipher::new(
                TrafficKey::tls13(s.hash, s.aead, s.server.bytes(), true)?,
                Protection::Tls13,
            ));
        }
        self.state = State::Traffic(t);
        Ok(())
    }
}
