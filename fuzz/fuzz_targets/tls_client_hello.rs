//! The ClientHello parser and every list accessor on what it accepts; the client
//! Certificate (both versions) and CertificateVerify parsers on the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tls::msgs::{parse_certificate, parse_certificate_verify, ClientHello};

fuzz_target!(|data: &[u8]| {
    for tls13 in [false, true] {
        if let Ok(chain) = parse_certificate(data, tls13) {
            assert!(chain.len() <= 16 && chain.iter().all(|c| !c.is_empty()));
        }
    }
    let _ = parse_certificate_verify(data);
    if let Ok(ch) = ClientHello::parse(data) {
        let _ = ch.suites().count();
        let _ = ch.groups().map(|g| g.count());
        let _ = ch.sig_algs().map(|g| g.count());
        let _ = ch.versions().map(|g| g.count());
        let _ = ch.alpn().map(|g| g.count());
        let _ = ch.key_shares().count();
        // Offered PSKs, and the binder offset the engine slices the hello with.
        let _ = ch.psks().count();
        if ch.has_psk {
            assert!(ch.binders_at + 2 <= data.len());
        }
    }
});
