//! The ClientHello parser and every list accessor on what it accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tls::msgs::ClientHello;

fuzz_target!(|data: &[u8]| {
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
