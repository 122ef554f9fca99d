//! The whole-engine target's server: an SNI router over two configurations (TLS 1.2 and
//! 1.3; TLS 1.2 only with optional client certificates for "*.b.example"), its P-256
//! key and self-signed certificate made from a fixed seed with fixed dates, so that the
//! seed recorder and the fuzzer build byte-identical servers.

use std::sync::{Arc, OnceLock};

use tls::{CertifiedKey, ServerConfig, Site, SniRouter};

/// The seed every connection of the target starts from.
pub const CONNECTION_SEED: u64 = 0x5eed_0001;

/// The router, made once per process (deterministically).
pub fn router() -> Arc<SniRouter> {
    static CFG: OnceLock<Arc<SniRouter>> = OnceLock::new();
    CFG.get_or_init(|| {
        use openssl::{asn1::Asn1Time, ec::*, hash::MessageDigest, nid::Nid, pkey::PKey, x509::*};
        crate::det_rand::reset(0x5eed_0000);
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut n = X509Name::builder().unwrap();
        n.append_entry_by_nid(Nid::COMMONNAME, "fuzz.example")
            .unwrap();
        let n = n.build();
        let mut b = X509::builder().unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&key).unwrap();
        // Fixed dates (2023-11-14 to 2043): the same certificate bytes on every day.
        b.set_not_before(&Asn1Time::from_unix(1_700_000_000).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(2_330_000_000).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let pem = b.build().to_pem().unwrap();
        let ck = CertifiedKey::from_pem(&pem, &key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let ck = Arc::new(ck);
        let mut site = Site::new(vec![ck.clone()]);
        site.names = vec!["*.b.example".into()];
        let mut b = ServerConfig::new(vec![site]).unwrap();
        b.tls13 = false;
        // Optional client certificates on the TLS 1.2 site: its client Certificate is
        // plaintext, so the fuzzer reaches that parser and state. (Not on the TLS 1.3
        // site: the engine's client role, which records the seeds, has no certificate.)
        b.client_auth = Some(Arc::new(tls::ClientAuth::from_pem(&pem, false).unwrap()));
        let cfg = ServerConfig::new(vec![Site::new(vec![ck])]).unwrap();
        // Ticket keys are made on first use: make them now, from the fixed seed, so a
        // recorded resumption's ticket opens in every run.
        for c in [&cfg, &b] {
            if let Some(k) = &c.resumption.tickets {
                k.rotate(0).unwrap();
            }
        }
        Arc::new(SniRouter::new(vec![Arc::new(cfg), Arc::new(b)]).unwrap())
    })
    .clone()
}
