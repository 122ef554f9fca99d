//! The whole server engine fed from one input, jobs run inline (real crypto: the
//! ClientHello path and the alert paths are what this reaches). The connection sits
//! on an SNI router over two configurations, so the choice is fuzzed too.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tls::{CertifiedKey, ServerConfig, ServerConn, Site, SniRouter};

fn router() -> Arc<SniRouter> {
    static CFG: OnceLock<Arc<SniRouter>> = OnceLock::new();
    CFG.get_or_init(|| {
        // A P-256 self-signed certificate made at start-up.
        use openssl::{asn1::Asn1Time, ec::*, hash::MessageDigest, nid::Nid, pkey::PKey, x509::*};
        let key = PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap()).unwrap();
        let mut n = X509Name::builder().unwrap();
        n.append_entry_by_nid(Nid::COMMONNAME, "fuzz.example").unwrap();
        let n = n.build();
        let mut b = X509::builder().unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let pem = b.build().to_pem().unwrap();
        let ck = CertifiedKey::from_pem(&pem, &key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let ck = Arc::new(ck);
        // The second configuration: TLS 1.2 only, for "*.b.example", no client auth.
        let mut site = Site::new(vec![ck.clone()]);
        site.names = vec!["*.b.example".into()];
        let mut b = ServerConfig::new(vec![site]).unwrap();
        b.tls13 = false;
        let mut cfg = ServerConfig::new(vec![Site::new(vec![ck])]).unwrap();
        // Optional client certificates: the TLS 1.2 client Certificate is plaintext, so
        // the fuzzer reaches its parser and state.
        cfg.client_auth = Some(Arc::new(tls::ClientAuth::from_pem(&pem, false).unwrap()));
        Arc::new(SniRouter::new(vec![Arc::new(cfg), Arc::new(b)]).unwrap())
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut c = ServerConn::with_router(router(), 0);
    for piece in data.chunks(300) {
        c.read_tls(piece);
        let _ = c.process();
        while let Some(j) = c.take_job() {
            let _ = c.complete(crypto_offload::run(j));
        }
        let n = c.pending_tls().len();
        c.consume_tls(n);
    }
});
