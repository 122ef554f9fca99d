//! Known-answer tests of the primitives that need a trace: RFC 8448's X25519 exchange on
//! both backends. (The TLS key schedules' and steps' known-answer tests are in the
//! `tls` crate, beside the steps: `tls/src/jobs/kat.rs`.)

use crate::prim::*;

/// Bytes from hex digits, whitespace ignored (the RFCs print them spaced).
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

// RFC 8448 §3, "Simple 1-RTT Handshake": the client's share, the server's private key
// and its public value (in the trace's ServerHello), and the shared secret.
const CLIENT_SHARE: &str =
    "99 38 1d e5 60 e4 bd 43 d2 3d 8e 43 5a 7d ba fe b3 c0 6e 51 c1 3c ae 4d 54 13 69 1e 52 9a af 2c";
const SERVER_PRIVATE: &str =
    "b1 58 0e ea df 6d d5 89 b8 ef 4f 2d 56 52 57 8c c8 10 e9 98 01 91 ec 8d 05 83 08 ce a2 16 a2 1e";
const SERVER_PUBLIC: &str =
    "c9 82 88 76 11 20 95 fe 66 76 2b db f7 c6 72 e1 56 d6 cc 25 3b 83 3d f1 dd 69 b1 b0 4e 75 1f 0f";
const SHARED: &str =
    "8b d4 05 4f b5 5b 9d 63 fd fb ac f9 f0 4b 9f 0d 35 e6 d6 3f 53 75 63 ef d4 62 72 90 0f 89 49 2d";

/// RFC 8448 §3's X25519 exchange on each backend: the server's private key gives the
/// trace's public value, and with the client's share, the trace's shared secret.
#[test]
fn rfc8448_x25519_on_both_backends() {
    for p in [Primitives::OpenSsl, Primitives::AwsLc] {
        let (server, public) =
            EphemeralKey::x25519_from_private_with(&hex(SERVER_PRIVATE), p).unwrap();
        assert_eq!(public, hex(SERVER_PUBLIC), "{p:?}");
        let shared = server.agree(&hex(CLIENT_SHARE)).unwrap();
        assert_eq!(shared.bytes(), hex(SHARED), "{p:?}");
    }
}
