//! Records seeds for the `tls_server` fuzz target: whole TLS 1.3 conversations of the
//! engine's client role with the target's own deterministic server, saved as the
//! bytes the client sent. Replayed by the target (same seed, same server), each one
//! drives the server through its encrypted states.
//!
//!     cd fuzz && cargo run --release --bin tls_server_seeds -- corpus/tls_server
//!
//! The files are checked in; run this again when the engine's wire output changes
//! (the test at the end of a recording checks the server reached what it should).

use std::path::PathBuf;
use std::sync::Arc;

use appliance_fuzz::{det_rand, server};
use crypto_offload::client::KeyShare;
use tls::msgs::{group, suite};
use tls::{ClientConfig, ClientConn, ServerConn, Ticket};

/// What the client does once the handshake is done.
#[derive(Clone, Copy)]
enum After {
    /// A request, the server's answer, close_notify.
    Data,
    /// A KeyUpdate asking for one back (the hostile client seals it under its current
    /// key and does not move on, so the server's next read fails: that path too).
    KeyUpdate,
}

struct Conversation {
    sent: Vec<u8>,
    server: ServerConn,
    client: ClientConn,
}

fn pump(conv: &mut Conversation) {
    for _ in 0..50 {
        let out = conv.client.pending_tls().to_vec();
        conv.client.consume_tls(out.len());
        conv.sent.extend_from_slice(&out);
        let mut rest = &out[..];
        while !rest.is_empty() {
            let n = conv.server.read_tls(rest);
            rest = &rest[n..];
            if let Err(e) = conv.server.process() {
                eprintln!("server: {e:?}");
            }
            while let Some(j) = conv.server.take_job() {
                let _ = conv.server.complete(crypto_offload::run(j));
            }
            if n == 0 {
                break;
            }
        }
        let back = conv.server.pending_tls().to_vec();
        conv.server.consume_tls(back.len());
        let c = &mut conv.client;
        det_rand::as_client(|| {
            c.read_tls(&back);
            if let Err(e) = c.process(0) {
                eprintln!("client: {e:?}");
            }
        });
        if out.is_empty() && back.is_empty() {
            return;
        }
    }
}

fn converse(groups: &[u16], suites: &[u16], ticket: Option<&Ticket>, after: After) -> Conversation {
    let router = server::router();
    det_rand::reset(server::CONNECTION_SEED);
    let cfg = Arc::new(ClientConfig {
        server_name: Some("fuzz.example".into()),
        groups: groups.to_vec(),
        suites: suites.to_vec(),
        ..ClientConfig::default()
    });
    let share_group = tls::client::group_of(groups[0]).expect("a known group");
    let client = det_rand::as_client(|| {
        let share = KeyShare::generate(share_group).unwrap();
        ClientConn::new(cfg, share, ticket, 0).unwrap()
    });
    let mut conv = Conversation {
        sent: Vec::new(),
        server: ServerConn::with_router(router, 0),
        client,
    };
    pump(&mut conv);
    assert!(conv.server.is_established(), "the handshake finished");
    match after {
        After::Data => {
            conv.client
                .send(b"GET / HTTP/1.1\r\nHost: fuzz.example\r\n\r\n")
                .unwrap();
            pump(&mut conv);
            let n = conv.server.plaintext().len();
            assert!(n > 0, "the request arrived");
            conv.server.consume_plaintext(n);
            conv.server
                .send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            pump(&mut conv);
            conv.client.close();
            pump(&mut conv);
            assert!(conv.server.peer_closed(), "close_notify arrived");
        }
        After::KeyUpdate => {
            conv.client
                .hostile_seal(&[(22, &[24, 0, 0, 1, 1])])
                .unwrap();
            pump(&mut conv);
        }
    }
    conv
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "corpus/tls_server".into()),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let aes = [suite::TLS13_AES_128_GCM_SHA256];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "tls13-x25519-aes128-data",
            converse(&[group::X25519], &aes, None, After::Data).sent,
        ),
        (
            "tls13-mlkem-hybrid-data",
            converse(&[group::X25519MLKEM768], &aes, None, After::Data).sent,
        ),
        (
            "tls13-p256-chacha-data",
            converse(
                &[group::SECP256R1],
                &[suite::TLS13_CHACHA20_POLY1305_SHA256],
                None,
                After::Data,
            )
            .sent,
        ),
        (
            "tls13-aes256-keyupdate",
            converse(
                &[group::X25519],
                &[suite::TLS13_AES_256_GCM_SHA384],
                None,
                After::KeyUpdate,
            )
            .sent,
        ),
        ("tls13-resumed-data", {
            let first = converse(&[group::X25519], &aes, None, After::Data);
            let ticket = first.client.ticket().cloned().expect("a ticket");
            let again = converse(&[group::X25519], &aes, Some(&ticket), After::Data);
            assert!(again.server.info().resumed.is_some(), "resumed");
            again.sent
        }),
    ];
    // Each seed must replay: the same server, fed only the recorded bytes, ends where
    // the conversation did.
    for (name, bytes) in &cases {
        det_rand::reset(server::CONNECTION_SEED);
        let mut s = ServerConn::with_router(server::router(), 0);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = s.read_tls(rest);
            rest = &rest[n..];
            let _ = s.process();
            while let Some(j) = s.take_job() {
                let _ = s.complete(crypto_offload::run(j));
            }
            let out = s.pending_tls().len();
            s.consume_tls(out);
            let p = s.plaintext().len();
            s.consume_plaintext(p);
            if n == 0 {
                break;
            }
        }
        assert!(
            s.is_established(),
            "{name}: replays to an established connection"
        );
        std::fs::write(dir.join(name), bytes).unwrap();
        println!("{name}: {} bytes", bytes.len());
    }
}
