//! The client role fed a server's bytes from one input: the ServerHello parser, the
//! record layer before and after keys, alerts and the handshake message reassembly.
//! The first byte chooses what the client offers: TLS 1.3 only, both versions, or TLS
//! 1.2 only (then without a key share, `ClientConn::without_share`). A TLS 1.3
//! server's flight is protected, so real crypto stops the fuzzer after its ServerHello;
//! a TLS 1.2 server's flight up to ServerHelloDone is plaintext, so the fuzzer walks the
//! TLS 1.2 state machine (Certificate, ServerKeyExchange, CertificateRequest,
//! ServerHelloDone) with nothing verified. The parsers of messages
//! behind the keys (EncryptedExtensions, CertificateRequest, NewSessionTicket of both
//! versions) are reached directly.
#![no_main]
use std::sync::{Arc, OnceLock};

use tls::KeyShare;
use libfuzzer_sys::fuzz_target;
use tls::msgs::{
    parse_certificate_request12, parse_new_session_ticket12, suite, CertificateRequest13,
    EncryptedExtensions, NewSessionTicket, ServerHello, ServerKeyExchange12,
};
use tls::{ClientConfig, ClientConn};

fn share() -> KeyShare {
    static S: OnceLock<KeyShare> = OnceLock::new();
    S.get_or_init(|| KeyShare::generate(crypto_offload::Group::X25519).unwrap())
        .clone()
}

fn configs() -> &'static [Arc<ClientConfig>; 3] {
    static C: OnceLock<[Arc<ClientConfig>; 3]> = OnceLock::new();
    C.get_or_init(|| {
        let with = |suites: Vec<u16>| {
            Arc::new(ClientConfig {
                suites,
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                ..ClientConfig::default()
            })
        };
        let tls12: Vec<u16> = suite::ALL.iter().copied().filter(|s| s >> 8 != 0x13).collect();
        [
            Arc::new(ClientConfig::default()),
            with(suite::ALL.to_vec()),
            with(tls12),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = ServerHello::parse(data);
    let _ = EncryptedExtensions::parse(data);
    let _ = NewSessionTicket::parse(data);
    let _ = CertificateRequest13::parse(data);
    let _ = ServerKeyExchange12::parse(data);
    let _ = parse_certificate_request12(data);
    let _ = parse_new_session_ticket12(data);
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let cfg = configs()[usize::from(which) % 3].clone();
    // TLS 1.2 only: the client makes no key share (as backend legs with
    // `versions = ["1.2"]` do), so its ECDHE key is made after ServerHelloDone.
    let mut c = match cfg.share_group() {
        Some(_) => ClientConn::new(cfg, share(), None, 0).unwrap(),
        None => ClientConn::without_share(cfg, None, 0).unwrap(),
    };
    for piece in rest.chunks(200) {
        c.read_tls(piece);
        if c.process(0).is_err() {
            break;
        }
    }
});
