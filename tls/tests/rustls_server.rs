//! The engine's client role against a second, independent server implementation:
//! rustls (ring provider), through in-memory pipes. Full handshakes with every suite,
//! resumption with rustls's tickets, a HelloRetryRequest (rustls offering only
//! P-384), and client certificates that rustls's own verifier checks; TLS 1.2 with
//! its session resumption and client certificates.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::*;
use crypto_offload::{Group, ServerVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{HandshakeKind, RootCertStore, ServerConfig, ServerConnection};
use tls::msgs::{group, suite};
use tls::KeyShare;
use tls::{ClientConfig, ClientConn, Ticket};

fn der_chain(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    openssl::x509::X509::stack_from_pem(pem)
        .unwrap()
        .iter()
        .map(|c| CertificateDer::from(c.to_der().unwrap()))
        .collect()
}

fn der_key(pem: &[u8]) -> PrivateKeyDer<'static> {
    let k = openssl::pkey::PKey::private_key_from_pem(pem).unwrap();
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.private_key_to_pkcs8().unwrap()))
}

/// A rustls TLS 1.3 server for test.example with `groups`; with `client_auth`, it
/// requires a client certificate from the test CA.
fn rustls_server(
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
    client_auth: bool,
) -> Arc<ServerConfig> {
    rustls_server_v(groups, client_auth, &rustls::version::TLS13)
}

fn rustls_server_v(
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
    client_auth: bool,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ServerConfig> {
    let p = Arc::new(CryptoProvider {
        kx_groups: groups,
        ..provider::default_provider()
    });
    let (chain, key) = leaf_pem(Kind::P256, &["test.example"]);
    let b = ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[version])
        .unwrap();
    let b = if client_auth {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca().cert.to_der().unwrap()))
            .unwrap();
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), p)
            .build()
            .unwrap();
        b.with_client_cert_verifier(v)
    } else {
        b.with_no_client_auth()
    };
    Arc::new(
        b.with_single_cert(der_chain(&chain), der_key(&key))
            .unwrap(),
    )
}

fn client_cfg(suites: &[u16], certificate: Option<Kind>) -> Arc<ClientConfig> {
    let ca = ca().cert.to_pem().unwrap();
    Arc::new(ClientConfig {
        server_name: Some("test.example".into()),
        suites: suites.to_vec(),
        verifier: Some(Arc::new(
            ServerVerifier::new(Some(&ca), "test.example").unwrap(),
        )),
        certificate: certificate.map(|k| {
            let (c, key) = leaf_pem(k, &["client.example"]);
            Arc::new(tls::CertifiedKey::from_pem(&c, &key).unwrap())
        }),
        ..ClientConfig::default()
    })
}

/// Moves bytes both ways until neither side has anything to say.
fn pump(c: &mut ClientConn, s: &mut ServerConnection) -> Result<(), String> {
    for _ in 0..100 {
        let out = c.pending_tls().to_vec();
        c.consume_tls(out.len());
        let mut rd = &out[..];
        loop {
            s.process_new_packets()
                .map_err(|e| format!("rustls: {e}"))?;
            if rd.is_empty() {
                break;
            }
            s.read_tls(&mut rd).unwrap();
        }
        let mut back = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut back).unwrap();
        }
        let mut at = 0;
        while at < back.len() {
            let n = c.read_tls(&back[at..]);
            c.process(0).map_err(|e| format!("engine: {e}"))?;
            at += n;
        }
        c.process(0).map_err(|e| format!("engine: {e}"))?;
        if out.is_empty() && back.is_empty() && c.pending_tls().is_empty() {
            return Ok(());
        }
    }
    Ok(())
}

fn connect(
    server: &Arc<ServerConfig>,
    cfg: &Arc<ClientConfig>,
    ticket: Option<&Ticket>,
) -> (ClientConn, ServerConnection) {
    let share = KeyShare::generate(Group::X25519).unwrap();
    let mut c = ClientConn::new(cfg.clone(), share, ticket, 0).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    pump(&mut c, &mut s).unwrap();
    assert!(c.is_established() && !s.is_handshaking());
    (c, s)
}

/// Data both ways, then close_notify from us.
fn exchange(c: &mut ClientConn, s: &mut ServerConnection) {
    let up: Vec<u8> = (0..30_000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(c.send(&up).unwrap(), up.len());
    pump(c, s).unwrap();
    let mut got = vec![0u8; up.len()];
    s.reader().read_exact(&mut got).unwrap();
    assert_eq!(got, up);
    s.writer().write_all(b"from rustls").unwrap();
    pump(c, s).unwrap();
    assert_eq!(c.plaintext(), b"from rustls");
    c.close();
    pump(c, s).unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        s.reader().read_to_end(&mut rest).unwrap(),
        0,
        "close_notify seen"
    );
}

#[test]
fn full_handshakes_and_resumption_with_rustls() {
    let server = rustls_server(provider::default_provider().kx_groups, false);
    for s13 in [
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
    ] {
        let cfg = client_cfg(&[s13], None);
        let (mut c, mut s) = connect(&server, &cfg, None);
        assert_eq!(c.info().suite, s13);
        assert_eq!(s.handshake_kind(), Some(HandshakeKind::Full));
        assert_eq!(c.info().peer.as_deref(), Some("CN=test.example"));
        exchange(&mut c, &mut s);
        let ticket = c.ticket().expect("rustls sends tickets").clone();
        let (mut c, mut s) = connect(&server, &cfg, Some(&ticket));
        assert!(c.info().resumed);
        assert_eq!(s.handshake_kind(), Some(HandshakeKind::Resumed));
        exchange(&mut c, &mut s);
    }
}

#[test]
fn hello_retry_request_from_rustls() {
    // rustls offering only P-384 answers our X25519 share with a HelloRetryRequest.
    let server = rustls_server(vec![provider::kx_group::SECP384R1], false);
    let cfg = client_cfg(&[suite::TLS13_AES_128_GCM_SHA256], None);
    let (mut c, mut s) = connect(&server, &cfg, None);
    assert!(c.info().retried);
    assert_eq!(c.info().group, Some(group::SECP384R1));
    assert_eq!(
        s.handshake_kind(),
        Some(HandshakeKind::FullWithHelloRetryRequest)
    );
    exchange(&mut c, &mut s);
    // The ticket through a second retry: the binder covers the rewritten transcript.
    let ticket = c.ticket().expect("a ticket").clone();
    let (c, s) = connect(&server, &cfg, Some(&ticket));
    assert!(c.info().retried && c.info().resumed);
    assert_eq!(s.handshake_kind(), Some(HandshakeKind::Resumed));
}

#[test]
fn client_certificates_that_rustls_verifies() {
    let server = rustls_server(provider::default_provider().kx_groups, true);
    for kind in [Kind::P256, Kind::P384, Kind::Rsa2048] {
        let cfg = client_cfg(&[suite::TLS13_AES_128_GCM_SHA256], Some(kind));
        let (mut c, mut s) = connect(&server, &cfg, None);
        assert!(c.info().certificate_sent, "{kind:?}");
        // rustls verified the chain and the CertificateVerify; the leaf is ours.
        let peer = s.peer_certificates().expect("rustls has our certificate");
        let ours = &cfg.certificate.as_ref().unwrap().chain;
        assert_eq!(peer[0].as_ref(), &ours[0][..], "{kind:?}");
        exchange(&mut c, &mut s);
    }
    // Without a certificate, rustls refuses (certificate_required).
    let cfg = client_cfg(&[suite::TLS13_AES_128_GCM_SHA256], None);
    let share = KeyShare::generate(Group::X25519).unwrap();
    let mut c = ClientConn::new(cfg, share, None, 0).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    let r = pump(&mut c, &mut s);
    assert!(
        r.unwrap_err().contains("rustls"),
        "rustls accepted no certificate"
    );
    assert!(c.info().certificate_requested && !c.info().certificate_sent);
}

#[test]
fn tls12_with_rustls_full_resumed_and_client_certificates() {
    let server = rustls_server_v(
        provider::default_provider().kx_groups,
        false,
        &rustls::version::TLS12,
    );
    for s12 in [
        suite::ECDHE_ECDSA_AES128_GCM_SHA256,
        suite::ECDHE_ECDSA_AES256_GCM_SHA384,
        suite::ECDHE_ECDSA_CHACHA20_POLY1305,
    ] {
        let cfg = client_cfg(&[s12], None);
        let (mut c, mut s) = connect(&server, &cfg, None);
        assert_eq!((c.info().version, c.info().suite), (0x0303, s12));
        assert_eq!(s.handshake_kind(), Some(HandshakeKind::Full));
        exchange(&mut c, &mut s);
        let t = c.ticket().expect("a session").clone();
        let (mut c, mut s) = connect(&server, &cfg, Some(&t));
        assert!(c.info().resumed, "{s12:#06x}");
        assert_eq!(s.handshake_kind(), Some(HandshakeKind::Resumed));
        exchange(&mut c, &mut s);
    }
    let server = rustls_server_v(
        provider::default_provider().kx_groups,
        true,
        &rustls::version::TLS12,
    );
    for kind in [Kind::P256, Kind::Rsa2048] {
        let cfg = client_cfg(&[suite::ECDHE_ECDSA_AES128_GCM_SHA256], Some(kind));
        let (mut c, mut s) = connect(&server, &cfg, None);
        assert!(c.info().certificate_sent, "{kind:?}");
        let peer = s.peer_certificates().expect("rustls has our certificate");
        assert_eq!(
            peer[0].as_ref(),
            &cfg.certificate.as_ref().unwrap().chain[0][..]
        );
        exchange(&mut c, &mut s);
    }
}
