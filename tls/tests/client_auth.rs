//! Client certificate authentication against OpenSSL's libssl client: both versions,
//! ECDSA and RSA client keys, required and optional, untrusted chains, bad signatures,
//! and the identity carried across resumption.

mod common;

use std::sync::Arc;

use common::*;
use openssl::pkey::PKey;
use openssl::ssl::{SslContext, SslContextBuilder, SslOptions, SslVersion};
use openssl::x509::X509;
use tls::{ClientAuth, Resumed, ServerConfig};

const V12: SslVersion = SslVersion::TLS1_2;
const V13: SslVersion = SslVersion::TLS1_3;
const HOST: Option<&str> = Some("test.example");

fn server(required: bool) -> Arc<ServerConfig> {
    let mut cfg = config_with(&[Kind::P256, Kind::Rsa2048]);
    let ca_pem = ca().cert.to_pem().unwrap();
    cfg.client_auth = Some(Arc::new(ClientAuth::from_pem(&ca_pem, required).unwrap()));
    Arc::new(cfg)
}

fn with_identity(b: &mut SslContextBuilder, chain_pem: &[u8], key_pem: &[u8]) {
    let chain = X509::stack_from_pem(chain_pem).unwrap();
    b.set_certificate(&chain[0]).unwrap();
    b.set_private_key(&PKey::private_key_from_pem(key_pem).unwrap())
        .unwrap();
}

fn client(v: SslVersion, kind: Option<Kind>, cipher: Option<&str>) -> SslContext {
    let id = kind.map(|k| leaf_pem(k, &["client.example"]));
    client_ctx(v, v, |b| {
        if let Some((c, k)) = &id {
            with_identity(b, c, k);
        }
        if let Some(c) = cipher {
            b.set_cipher_list(c).unwrap();
        }
    })
}

#[test]
fn tls13_client_certificates_of_every_kind() {
    let cfg = server(true);
    for kind in [Kind::P256, Kind::P384, Kind::Rsa2048] {
        let ctx = client(V13, Some(kind), None);
        let (mut c, mut s) =
            connect(&ctx, cfg.clone(), HOST).unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        echo(&mut c, &mut s, b"authenticated");
        let info = s.conn.info();
        assert_eq!(info.peer_subject.as_deref(), Some("CN=client.example"));
        assert!(info.peer_certificate.is_some());
        // The flight, then the client's certificate: one pass over the transcript.
        assert_eq!((info.jobs, info.digest.passes), (2, 1), "{kind:?}");
    }
}

#[test]
fn tls12_client_certificates_with_both_suite_hashes() {
    let cfg = server(true);
    for kind in [Kind::P256, Kind::Rsa2048] {
        for cipher in [
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ] {
            let ctx = client(V12, Some(kind), Some(cipher));
            let (mut c, mut s) = connect(&ctx, cfg.clone(), HOST)
                .unwrap_or_else(|e| panic!("{kind:?} {cipher}: {e:?}"));
            echo(&mut c, &mut s, b"authenticated");
            let info = s.conn.info();
            assert_eq!(info.peer_subject.as_deref(), Some("CN=client.example"));
            // The CertificateVerify is checked against the transcript hash at
            // ClientKeyExchange: still one pass.
            assert_eq!((info.jobs, info.digest.passes), (2, 1), "{kind:?} {cipher}");
        }
    }
}

#[test]
fn required_without_a_certificate_is_refused_optional_is_anonymous() {
    for (v, alert) in [(V13, 116u8), (V12, 40)] {
        let ctx = client(v, None, None);
        let (_, e) = connect(&ctx, server(true), HOST)
            .err()
            .expect("no certificate, required");
        assert_eq!(e, Some(tls::Error::CertificateRequired { tls13: v == V13 }));
        assert_eq!(e.unwrap().alert(), Some(alert));

        let (mut c, mut s) = connect(&ctx, server(false), HOST).unwrap();
        echo(&mut c, &mut s, b"anonymous");
        assert_eq!(s.conn.info().peer_subject, None);
    }
}

/// A self-signed client certificate nobody configured.
fn stranger() -> (Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::X509Name;
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, "stranger").unwrap();
    let n = n.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(&n).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

#[test]
fn untrusted_client_certificate_gets_unknown_ca() {
    let (chain, key) = stranger();
    for v in [V13, V12] {
        let ctx = client_ctx(v, v, |b| with_identity(b, &chain, &key));
        let (_, e) = connect(&ctx, server(false), HOST)
            .err()
            .expect("untrusted certificate");
        let e = e.expect("the engine failed");
        assert!(
            matches!(
                e,
                tls::Error::BadCertificate {
                    unknown_ca: true,
                    ..
                }
            ),
            "{v:?}: {e:?}"
        );
        assert_eq!(e.alert(), Some(48));
    }
}

/// Flip the last byte of a plaintext CertificateVerify in `wire`, if there is one.
fn corrupt_certificate_verify(wire: &mut [u8]) -> bool {
    let mut at = 0;
    while at + 5 <= wire.len() {
        let len = u16::from_be_bytes([wire[at + 3], wire[at + 4]]) as usize;
        let (start, end) = (at + 5, (at + 5 + len).min(wire.len()));
        if wire[at] == 22 {
            let mut m = start;
            while m + 4 <= end {
                let mlen = (wire[m + 1] as usize) << 16
                    | (wire[m + 2] as usize) << 8
                    | wire[m + 3] as usize;
                if wire[m] == 15 && m + 4 + mlen <= end {
                    wire[m + 4 + mlen - 1] ^= 1;
                    return true;
                }
                m += 4 + mlen;
            }
        }
        at = end;
    }
    false
}

#[test]
fn tls12_bad_certificate_verify_gets_decrypt_error() {
    use openssl::ssl::{ErrorCode, SslStream};
    let ctx = client(V12, Some(Kind::P256), None);
    let wire = Wire::default();
    let mut c = SslStream::new(client_ssl(&ctx, HOST), ClientEnd(wire.clone())).unwrap();
    let mut s = Server::new(server(true), wire.clone());
    let mut corrupted = false;
    let mut result = Ok(());
    for _ in 0..10 {
        match c.connect() {
            Err(e) if e.code() == ErrorCode::WANT_READ => {}
            _ => break,
        }
        corrupted |= corrupt_certificate_verify(&mut wire.to_server.borrow_mut());
        result = s.pump();
        if result.is_err() {
            break;
        }
    }
    assert!(corrupted, "the client sent a CertificateVerify");
    assert_eq!(result, Err(tls::Error::BadCertificateVerify));
    assert_eq!(tls::Error::BadCertificateVerify.alert(), Some(51));
}

#[test]
fn resumed_sessions_keep_the_client_identity() {
    let cfg = server(true);
    for (v, how) in [(V13, Resumed::PskDheKe), (V12, Resumed::Ticket)] {
        let id = leaf_pem(Kind::P256, &["client.example"]);
        let ctx = client_ctx(v, v, |b| {
            with_identity(b, &id.0, &id.1);
            b.set_options(SslOptions::empty());
        });
        let (mut c, mut s) = connect(&ctx, cfg.clone(), HOST).unwrap();
        echo(&mut c, &mut s, b"first");
        let session = c.ssl().session().unwrap().to_owned();
        c.shutdown().unwrap();
        let mut ssl = client_ssl(&ctx, HOST);
        unsafe { ssl.set_session(&session).unwrap() };
        let (mut c, mut s) = connect_ssl(ssl, cfg.clone(), 1_000).unwrap();
        echo(&mut c, &mut s, b"second");
        assert!(c.ssl().session_reused(), "{v:?}");
        let info = s.conn.info();
        assert_eq!(info.resumed, Some(how));
        assert_eq!(info.peer_subject.as_deref(), Some("CN=client.example"));
        assert_eq!(info.jobs, 1, "a resumed handshake asks for no certificate");
    }
}
