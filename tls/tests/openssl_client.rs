//! The engine against OpenSSL's libssl client, through in-memory pipes (no sockets):
//! versions × suites × groups × certificate types, HRR, SNI, ALPN, KeyUpdate, records
//! of every size, close_notify, and what old or broken clients get.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::*;
use openssl::ssl::SslVersion;
use tls::{ServerConfig, Site};

const V12: SslVersion = SslVersion::TLS1_2;
const V13: SslVersion = SslVersion::TLS1_3;

#[test]
fn tls13_every_suite_group_and_certificate() {
    let cfg = Arc::new(config_with(&[Kind::Rsa2048, Kind::P256, Kind::P384]));
    let suites = [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    ];
    // OpenSSL's names and the codes (RFC 8446 §4.2.7, RFC 8422).
    let groups = [
        ("X25519", 29),
        ("P-256", 23),
        ("P-384", 24),
        ("P-521", 25),
        ("X448", 30),
    ];
    let sigalgs = [
        ("rsa_pss_rsae_sha256", 0x0804),
        ("ecdsa_secp256r1_sha256", 0x0403),
        ("ecdsa_secp384r1_sha384", 0x0503),
    ];
    for suite in suites {
        for (group, id) in groups {
            for (sigalg, scheme) in sigalgs {
                let ctx = client_ctx(V13, V13, |b| {
                    b.set_ciphersuites(suite).unwrap();
                    b.set_groups_list(group).unwrap();
                    b.set_sigalgs_list(sigalg).unwrap();
                });
                let (mut c, mut s) = connect(&ctx, cfg.clone(), Some("test.example"))
                    .unwrap_or_else(|e| panic!("{suite} {group} {sigalg}: {e:?}"));
                assert_eq!(c.ssl().version_str(), "TLSv1.3");
                assert_eq!(
                    c.ssl().current_cipher().unwrap().standard_name().unwrap(),
                    suite
                );
                assert_eq!(s.conn.info().scheme, scheme);
                assert_eq!(s.conn.info().group, id);
                assert!(!s.conn.info().hello_retry);
                echo(
                    &mut c,
                    &mut s,
                    format!("hello over {suite} {group} {sigalg}").as_bytes(),
                );
            }
        }
    }
}

#[test]
fn tls12_every_suite_group_and_certificate() {
    let cfg = Arc::new(config_with(&[Kind::Rsa2048, Kind::P256, Kind::P384]));
    let cases = [
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "ecdsa_secp256r1_sha256"),
        ("ECDHE-ECDSA-AES256-GCM-SHA384", "ecdsa_secp384r1_sha384"),
        ("ECDHE-ECDSA-CHACHA20-POLY1305", "ecdsa_secp256r1_sha256"),
        ("ECDHE-RSA-AES128-GCM-SHA256", "rsa_pss_rsae_sha256"),
        ("ECDHE-RSA-AES256-GCM-SHA384", "RSA+SHA384"),
        ("ECDHE-RSA-CHACHA20-POLY1305", "RSA+SHA256"),
    ];
    for (cipher, sigalg) in cases {
        // TLS 1.2 clients check an ECDSA certificate's curve against their groups, so
        // the client offers all three and the server is limited to the one under test.
        for (group, id) in [
            ("X25519", 29),
            ("P-256", 23),
            ("P-384", 24),
            ("P-521", 25),
            ("X448", 30),
        ] {
            let mut one_group = (*cfg).clone();
            one_group.groups = vec![id];
            let ctx = client_ctx(V12, V12, |b| {
                b.set_cipher_list(cipher).unwrap();
                b.set_groups_list("X25519:P-256:P-384:P-521:X448").unwrap();
                b.set_sigalgs_list(sigalg).unwrap();
            });
            let (mut c, mut s) = connect(&ctx, Arc::new(one_group), Some("test.example"))
                .unwrap_or_else(|e| panic!("{cipher} {group}: {e:?}"));
            assert_eq!(s.conn.info().group, id);
            assert_eq!(c.ssl().version_str(), "TLSv1.2");
            assert_eq!(c.ssl().current_cipher().unwrap().name(), cipher);
            assert!(s.conn.info().extended_master_secret);
            echo(
                &mut c,
                &mut s,
                format!("hello over {cipher} {group}").as_bytes(),
            );
        }
    }
}

#[test]
fn tls12_ecdsa_certificate_follows_the_clients_curves() {
    let cfg = Arc::new(config_with(&[Kind::P384, Kind::P256]));
    let ctx = client_ctx(V12, V12, |b| b.set_groups_list("X25519:P-256").unwrap());
    let (mut c, mut s) = connect(&ctx, cfg, Some("test.example")).unwrap();
    assert_eq!(
        s.conn.info().scheme,
        0x0403,
        "the P-256 certificate, not the P-384 one"
    );
    echo(&mut c, &mut s, b"curve checked");
}

#[test]
fn tls12_without_extended_master_secret() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    let ctx = client_ctx(V12, V12, |b| {
        b.set_options(openssl::ssl::SslOptions::from_bits_retain(0x0000_0001)); // SSL_OP_NO_EXTENDED_MASTER_SECRET
    });
    let (mut c, mut s) = connect(&ctx, cfg, Some("test.example")).unwrap();
    assert!(!s.conn.info().extended_master_secret);
    echo(&mut c, &mut s, b"no EMS");
}

#[test]
fn hello_retry_request_when_no_usable_share() {
    let mut cfg = config_with(&[Kind::P256]);
    // X448 first: libssl sends only an X448 share, which this server does not take.
    cfg.groups = vec![24];
    let cfg = Arc::new(cfg);
    let ctx = client_ctx(V13, V13, |b| b.set_groups_list("X448:P-384").unwrap());
    let (mut c, mut s) = connect(&ctx, cfg, Some("test.example")).unwrap();
    let info = s.conn.info().clone();
    assert!(info.hello_retry);
    assert_eq!(info.group, 24);
    // One pass for message_hash(ClientHello1), one for the flight.
    assert_eq!(info.digest.passes, 2);
    echo(&mut c, &mut s, b"after a retry");
}

#[test]
fn transcript_is_hashed_once_per_handshake() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    for (v, jobs) in [(V12, 2), (V13, 1)] {
        let ctx = client_ctx(v, v, |_| {});
        let (_c, s) = connect(&ctx, cfg.clone(), Some("test.example")).unwrap();
        let info = s.conn.info();
        assert_eq!(info.jobs, jobs, "{v:?}");
        assert_eq!(
            info.digest.passes, 1,
            "{v:?}: one digest pass over the buffered transcript"
        );
        assert!(
            info.digest.bytes > 500,
            "{v:?}: the transcript includes the certificate"
        );
    }
}

#[test]
fn sni_selects_the_site_and_its_certificate() {
    let (ca, ka) = leaf_pem(Kind::P256, &["a.example"]);
    let (cb, kb) = leaf_pem(Kind::P256, &["*.b.example"]);
    let a = Arc::new(tls::CertifiedKey::from_pem(&ca, &ka).unwrap());
    let b = Arc::new(tls::CertifiedKey::from_pem(&cb, &kb).unwrap());
    let cfg = Arc::new(ServerConfig::new(vec![Site::new(vec![a]), Site::new(vec![b])]).unwrap());
    for v in [V12, V13] {
        let ctx = client_ctx(v, v, |_| {});
        let (c, s) = connect(&ctx, cfg.clone(), Some("www.b.example")).unwrap();
        assert_eq!(s.conn.info().site, 1);
        assert_eq!(s.conn.info().sni.as_deref(), Some("www.b.example"));
        let peer = c.ssl().peer_certificate().unwrap();
        assert!(peer
            .subject_alt_names()
            .unwrap()
            .iter()
            .any(|n| n.dnsname() == Some("*.b.example")));
        // Unknown names get the default site (the client then refuses the name).
        let (_, s) = connect(
            &client_ctx(v, v, |b| b.set_verify(openssl::ssl::SslVerifyMode::NONE)),
            cfg.clone(),
            Some("other.example"),
        )
        .unwrap();
        assert_eq!(s.conn.info().site, 0);
    }
}

#[test]
fn alpn_negotiation_and_refusal() {
    let mut cfg = config_with(&[Kind::P256]);
    cfg.sites[0].alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    for v in [V12, V13] {
        let ctx = client_ctx(v, v, |b| {
            b.set_alpn_protos(b"\x08http/1.1\x06spdy/1").unwrap()
        });
        let (c, s) = connect(&ctx, cfg.clone(), Some("test.example")).unwrap();
        assert_eq!(c.ssl().selected_alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(s.conn.info().alpn.as_deref(), Some(&b"http/1.1"[..]));
        let ctx = client_ctx(v, v, |b| b.set_alpn_protos(b"\x06spdy/1").unwrap());
        let (client_err, server_err) = connect(&ctx, cfg.clone(), Some("test.example"))
            .err()
            .unwrap();
        assert_eq!(server_err, Some(tls::Error::NoApplicationProtocol));
        assert!(
            client_err.contains("no application protocol"),
            "{client_err}"
        );
    }
}

#[test]
fn records_of_every_size_both_ways() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    for v in [V12, V13] {
        let ctx = client_ctx(v, v, |_| {});
        let (mut c, mut s) = connect(&ctx, cfg.clone(), Some("test.example")).unwrap();
        let mut sizes: Vec<usize> = (0..=64).collect();
        sizes.extend([
            255, 256, 1000, 1500, 4096, 16383, 16384, 16385, 40000, 100_000,
        ]);
        for n in sizes {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            echo(&mut c, &mut s, &data);
        }
    }
}

#[test]
fn record_padding_is_accepted_by_the_client() {
    let mut cfg = config_with(&[Kind::P256]);
    cfg.record_padding = 256;
    let cfg = Arc::new(cfg);
    let ctx = client_ctx(V13, V13, |_| {});
    let (mut c, mut s) = connect(&ctx, cfg, Some("test.example")).unwrap();
    s.conn.send(b"x").unwrap();
    let n = s.conn.pending_tls().len();
    assert_eq!(
        n,
        5 + 256 + 16,
        "one byte padded to 256 plus header and tag"
    );
    s.pump().unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
}

extern "C" {
    fn SSL_key_update(s: *mut openssl_sys::SSL, updatetype: std::ffi::c_int) -> std::ffi::c_int;
}

#[test]
fn key_update_requested_and_not() {
    use foreign_types::ForeignTypeRef;
    let cfg = Arc::new(config_with(&[Kind::P256]));
    let ctx = client_ctx(V13, V13, |_| {});
    let (mut c, mut s) = connect(&ctx, cfg, Some("test.example")).unwrap();
    for requested in [0, 1, 1, 0] {
        assert_eq!(unsafe { SSL_key_update(c.ssl().as_ptr(), requested) }, 1);
        // The KeyUpdate goes out with the next write.
        echo(
            &mut c,
            &mut s,
            format!("after key update {requested}").as_bytes(),
        );
    }
}

#[test]
fn close_notify_both_ways() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    for v in [V12, V13] {
        let ctx = client_ctx(v, v, |_| {});
        let (mut c, mut s) = connect(&ctx, cfg.clone(), Some("test.example")).unwrap();
        c.write_all(b"last words").unwrap();
        c.shutdown().unwrap();
        s.pump().unwrap();
        assert_eq!(s.conn.plaintext(), b"last words");
        assert!(s.conn.peer_closed());
        s.conn.close();
        s.pump().unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}

#[test]
fn old_versions_get_protocol_version() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    for v in [SslVersion::TLS1, SslVersion::TLS1_1] {
        let ctx = client_ctx(v, v, |b| {
            b.set_cipher_list("DEFAULT@SECLEVEL=0").unwrap();
            b.set_security_level(0);
        });
        let (client_err, server_err) = connect(&ctx, cfg.clone(), Some("test.example"))
            .err()
            .unwrap();
        assert_eq!(server_err, Some(tls::Error::ProtocolVersion), "{v:?}");
        assert!(
            client_err.contains("protocol version"),
            "{v:?}: {client_err}"
        );
    }
}

#[test]
fn no_common_suite_gets_handshake_failure() {
    // Only ECDSA suites offered, but the site has only an RSA certificate.
    let cfg = Arc::new(config_with(&[Kind::Rsa2048]));
    let ctx = client_ctx(V12, V12, |b| {
        b.set_cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256").unwrap()
    });
    let (client_err, server_err) = connect(&ctx, cfg, Some("test.example")).err().unwrap();
    assert_eq!(
        server_err,
        Some(tls::Error::NoCommonParameters("cipher suite"))
    );
    assert!(client_err.contains("handshake failure"), "{client_err}");
}

#[test]
fn tls12_only_server_with_tls13_client_and_downgrade_sentinel() {
    let mut cfg = config_with(&[Kind::P256]);
    cfg.tls13 = false;
    let ctx = client_ctx(V12, V13, |_| {});
    let (mut c, mut s) = connect(&ctx, Arc::new(cfg), Some("test.example")).unwrap();
    assert_eq!(c.ssl().version_str(), "TLSv1.2");
    echo(&mut c, &mut s, b"1.2 only");
    // A 1.3-capable server that negotiates 1.2 with a 1.3 client would set the
    // sentinel, which libssl refuses: so the 1.3 server must pick 1.3 for it.
    let cfg = Arc::new(config_with(&[Kind::P256]));
    let (c, _) = connect(&ctx, cfg, Some("test.example")).unwrap();
    assert_eq!(c.ssl().version_str(), "TLSv1.3");
}
