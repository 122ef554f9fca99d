//! Keying material exporters (RFC 5705, RFC 8446 §7.5) agree with OpenSSL's
//! `SSL_export_keying_material` on the other end of the connection: TLS 1.2 (SHA-256
//! and SHA-384 suites, resumed by ticket) and TLS 1.3 (both hashes, resumed by PSK),
//! with no context, an empty one and a non-empty one; what may not be exported is
//! refused (before the handshake, reserved labels, TLS 1.2 without the extended master
//! secret).

mod common;

use std::sync::Arc;

use common::*;
use openssl::ssl::{SslOptions, SslVersion};

const LABEL: &str = "EXPORTER-appliance-datagram";

/// The client's and the server's export for every context and two lengths.
fn agree(c: &openssl::ssl::SslRef, s: &tls::ServerConn, what: &str) {
    for context in [None, Some(&b""[..]), Some(&b"association 7"[..])] {
        for len in [32usize, 100] {
            let mut theirs = vec![0u8; len];
            c.export_keying_material(&mut theirs, LABEL, context)
                .unwrap();
            let ours = s
                .export_keying_material(LABEL.as_bytes(), context, len)
                .unwrap();
            assert_eq!(
                ours.bytes(),
                &theirs[..],
                "{what}, context {context:?}, {len} bytes"
            );
        }
    }
    // TLS 1.2 tells no context from an empty one; TLS 1.3 does not.
    let none = s
        .export_keying_material(LABEL.as_bytes(), None, 32)
        .unwrap();
    let empty = s
        .export_keying_material(LABEL.as_bytes(), Some(b""), 32)
        .unwrap();
    assert_eq!(
        none.bytes() == empty.bytes(),
        c.version_str() == "TLSv1.3",
        "{what}"
    );
    // Another label, another key.
    let other = s
        .export_keying_material(b"EXPORTER-other", None, 32)
        .unwrap();
    assert_ne!(other.bytes(), none.bytes());
}

#[test]
fn exports_match_openssl_for_every_version_hash_and_resumption() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    let cases: [(SslVersion, &str, SslOptions); 4] = [
        (
            SslVersion::TLS1_3,
            "TLS_AES_128_GCM_SHA256",
            SslOptions::empty(),
        ),
        (
            SslVersion::TLS1_3,
            "TLS_AES_256_GCM_SHA384",
            SslOptions::empty(),
        ),
        (
            SslVersion::TLS1_2,
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            SslOptions::empty(),
        ),
        (
            SslVersion::TLS1_2,
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            SslOptions::empty(),
        ),
    ];
    for (v, suite, opts) in cases {
        let ctx = client_ctx(v, v, |b| {
            if v == SslVersion::TLS1_3 {
                b.set_ciphersuites(suite).unwrap();
            } else {
                b.set_cipher_list(suite).unwrap();
            }
            b.set_options(opts);
        });
        let what = format!("{v:?} {suite} {opts:?}");
        let (mut c, mut s) = connect(&ctx, cfg.clone(), Some("test.example")).unwrap();
        // The TLS 1.3 client reads its ticket with the echo.
        echo(&mut c, &mut s, b"first");
        agree(c.ssl(), &s.conn, &what);
        let session = c.ssl().session().unwrap().to_owned();
        c.shutdown().unwrap();
        s.pump().unwrap();
        // Resumed: other secrets, the same agreement.
        let mut ssl = client_ssl(&ctx, Some("test.example"));
        // SAFETY: the session came from a connection of this same context.
        unsafe { ssl.set_session(&session).unwrap() };
        let (mut c2, mut s2) = connect_ssl(ssl, cfg.clone(), 0).unwrap();
        echo(&mut c2, &mut s2, b"again");
        assert!(c2.ssl().session_reused(), "{what}");
        agree(c2.ssl(), &s2.conn, &format!("{what}, resumed"));
        let a = s
            .conn
            .export_keying_material(LABEL.as_bytes(), None, 32)
            .unwrap();
        let b = s2
            .conn
            .export_keying_material(LABEL.as_bytes(), None, 32)
            .unwrap();
        assert_ne!(a.bytes(), b.bytes(), "{what}: each connection its own");
    }
}

/// RFC 7627 §5.4: without the extended master secret a TLS 1.2 master secret is not
/// bound to its handshake; nothing is exported from one.
#[test]
fn tls12_without_extended_master_secret_exports_nothing() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    // SslOptions 0x1 is SSL_OP_NO_EXTENDED_MASTER_SECRET (not named by the crate).
    let ctx = client_ctx(SslVersion::TLS1_2, SslVersion::TLS1_2, |b| {
        b.set_options(SslOptions::from_bits_retain(0x0000_0001));
    });
    let (_c, s) = connect(&ctx, cfg, Some("test.example")).unwrap();
    assert!(!s.conn.info().extended_master_secret);
    assert!(s
        .conn
        .export_keying_material(LABEL.as_bytes(), None, 32)
        .is_err());
}

#[test]
fn nothing_is_exported_before_the_handshake_or_under_a_reserved_label() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    let fresh = tls::ServerConn::new(cfg.clone(), 0);
    assert!(fresh
        .export_keying_material(LABEL.as_bytes(), None, 32)
        .is_err());
    let ctx = client_ctx(SslVersion::TLS1_2, SslVersion::TLS1_3, |_| {});
    let (_c, s) = connect(&ctx, cfg, Some("test.example")).unwrap();
    for label in [
        &b"master secret"[..],
        b"key expansion",
        b"client finished",
        b"tls13 c ap traffic",
        b"",
    ] {
        assert!(
            s.conn.export_keying_material(label, None, 32).is_err(),
            "{label:?}"
        );
    }
    assert!(s
        .conn
        .export_keying_material(LABEL.as_bytes(), None, 0)
        .is_err());
}
