//! The client role fed a server's bytes from one input: the ServerHello parser, the
//! record layer before and after keys, alerts and the handshake message reassembly
//! (what follows a ServerHello is protected, so real crypto stops the fuzzer there;
//! the EncryptedExtensions and NewSessionTicket parsers are reached directly).
#![no_main]
use std::sync::{Arc, OnceLock};

use crypto_offload::client::KeyShare;
use libfuzzer_sys::fuzz_target;
use tls::msgs::{EncryptedExtensions, NewSessionTicket, ServerHello};
use tls::{ClientConfig, ClientConn};

fn share() -> KeyShare {
    static S: OnceLock<KeyShare> = OnceLock::new();
    S.get_or_init(|| KeyShare::generate(crypto_offload::Group::X25519).unwrap())
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let _ = ServerHello::parse(data);
    let _ = EncryptedExtensions::parse(data);
    let _ = NewSessionTicket::parse(data);
    let cfg = Arc::new(ClientConfig::default());
    let mut c = ClientConn::new(cfg, share(), None, 0).unwrap();
    for piece in data.chunks(200) {
        c.read_tls(piece);
        if c.process(0).is_err() {
            break;
        }
    }
});
