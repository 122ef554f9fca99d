//! A second, independent client implementation against the engine: rustls (with its
//! ring provider), through in-memory pipes. Both versions, every suite rustls and the
//! engine share, every group, every certificate type; SNI, ALPN, resumption (TLS 1.2
//! tickets and session IDs, TLS 1.3 PSK), data both ways and close_notify.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::*;
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, SupportedCipherSuite};
use tls::{Resumed, ServerConfig, ServerConn};

fn roots() -> RootCertStore {
    let mut r = RootCertStore::empty();
    r.add(CertificateDer::from(ca().cert.to_der().unwrap()))
        .unwrap();
    r
}

fn client_config(
    version: &'static rustls::SupportedProtocolVersion,
    suite: SupportedCipherSuite,
    group: &'static dyn rustls::crypto::SupportedKxGroup,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let p = CryptoProvider {
        cipher_suites: vec![suite],
        kx_groups: vec![group],
        ..provider::default_provider()
    };
    let mut c = ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots())
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(c)
}

/// Move bytes both ways (running the engine's jobs inline) until neither side has
/// anything to say. Bytes the engine has no room for yet wait in `to_server`.
fn pump_with(
    client: &mut ClientConnection,
    server: &mut ServerConn,
    to_server: &mut Vec<u8>,
) -> Result<(), String> {
    for _ in 0..200 {
        let mut progressed = false;
        while client.wants_write() {
            client.write_tls(to_server).unwrap();
        }
        let n = server.read_tls(to_server);
        to_server.drain(..n);
        progressed |= n > 0;
        server.process().map_err(|e| format!("engine: {e}"))?;
        while let Some(job) = server.take_job() {
            server
                .complete(crypto_offload::run(job))
                .map_err(|e| format!("engine: {e}"))?;
        }
        let out = server.pending_tls().to_vec();
        server.consume_tls(out.len());
        if !out.is_empty() {
            progressed = true;
            let mut rd = &out[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client
                    .process_new_packets()
                    .map_err(|e| format!("rustls: {e}"))?;
            }
        }
        if !progressed && !client.wants_write() {
            return Ok(());
        }
        if server.tls_room() == 0 {
            return Ok(()); // the caller must take plaintext out first
        }
    }
    Err("no quiescence in 200 rounds".into())
}

fn pump(client: &mut ClientConnection, server: &mut ServerConn) -> Result<(), String> {
    let mut to_server = Vec::new();
    pump_with(client, server, &mut to_server)?;
    assert!(to_server.is_empty(), "use pump_with for bulk data");
    Ok(())
}

fn connect(
    cc: &Arc<ClientConfig>,
    sc: &Arc<ServerConfig>,
    host: &'static str,
) -> Result<(ClientConnection, ServerConn), String> {
    let mut client = ClientConnection::new(cc.clone(), ServerName::try_from(host).unwrap())
        .map_err(|e| e.to_string())?;
    let mut server = ServerConn::new(sc.clone(), 0);
    pump(&mut client, &mut server)?;
    if client.is_handshaking() || !server.is_established() {
        return Err("handshake did not finish".into());
    }
    Ok((client, server))
}

/// `data` from the client to the engine and back.
fn echo(client: &mut ClientConnection, server: &mut ServerConn, data: &[u8]) {
    client.writer().write_all(data).unwrap();
    let mut got = Vec::new();
    let mut to_server = Vec::new();
    while got.len() < data.len() {
        pump_with(client, server, &mut to_server).unwrap();
        let p = server.plaintext().to_vec();
        assert!(!p.is_empty(), "engine produced no plaintext");
        server.consume_plaintext(p.len());
        got.extend_from_slice(&p);
    }
    assert_eq!(got, data);
    // Back in pieces: rustls holds at most 16 KiB of unread plaintext.
    let mut back = Vec::new();
    for piece in got.chunks(8192) {
        let mut sent = 0;
        while sent < piece.len() {
            sent += server.send(&piece[sent..]).unwrap();
        }
        pump(client, server).unwrap();
        let mut buf = vec![0u8; 16384];
        loop {
            match client.reader().read(&mut buf) {
                Ok(n) if n > 0 => back.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    }
    assert_eq!(back, data);
}

/// The post-quantum hybrid X25519MLKEM768 with rustls's aws-lc-rs provider (AWS-LC's
/// ML-KEM: an implementation independent of the engine's libcrux). `client_groups` in
/// the client's order of preference; rustls sends a share for the first (and, for the
/// hybrid first, an X25519 share beside it).
fn pq_connect(
    client_groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
    server_groups: &[u16],
) -> (ClientConnection, ServerConn) {
    let p = CryptoProvider {
        kx_groups: client_groups,
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let cc = ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots())
        .with_no_client_auth();
    let mut sc = config_with(&[Kind::P256]);
    sc.groups = server_groups.to_vec();
    connect(&Arc::new(cc), &Arc::new(sc), "test.example").unwrap()
}

#[test]
fn post_quantum_hybrid_with_rustls_aws_lc() {
    use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
    use rustls::NamedGroup;
    let all = tls::config::DEFAULT_GROUPS;
    // Chrome's and Firefox's offer: the hybrid first, X25519 beside it.
    let (mut c, mut s) = pq_connect(vec![X25519MLKEM768, X25519], &all);
    assert_eq!(s.info().group, 0x11ec);
    assert_eq!(
        c.negotiated_key_exchange_group().map(|g| g.name()),
        Some(NamedGroup::X25519MLKEM768)
    );
    assert_eq!(c.handshake_kind(), Some(HandshakeKind::Full));
    echo(&mut c, &mut s, &vec![3u8; 30_000]);
    // A client preferring X25519 sends only that share: taken as it is, no retry.
    let (c, s) = pq_connect(vec![X25519, X25519MLKEM768], &all);
    assert_eq!(s.info().group, 29);
    assert_eq!(c.handshake_kind(), Some(HandshakeKind::Full));
    // A server that speaks only the hybrid asks for its share with a retry.
    let (mut c, mut s) = pq_connect(vec![X25519, X25519MLKEM768], &[0x11ec]);
    assert_eq!(s.info().group, 0x11ec);
    assert_eq!(
        c.handshake_kind(),
        Some(HandshakeKind::FullWithHelloRetryRequest)
    );
    echo(&mut c, &mut s, b"after a retry for the hybrid");
}

fn groups() -> [(&'static dyn rustls::crypto::SupportedKxGroup, u16); 3] {
    [
        (provider::kx_group::X25519, 29),
        (provider::kx_group::SECP256R1, 23),
        (provider::kx_group::SECP384R1, 24),
    ]
}

#[test]
fn tls13_every_suite_group_and_certificate() {
    use provider::cipher_suite::*;
    for kind in [Kind::Rsa2048, Kind::P256, Kind::P384] {
        let sc = Arc::new(config_with(&[kind]));
        for suite in [
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            for (group, code) in groups() {
                let cc = client_config(&rustls::version::TLS13, suite, group, &[]);
                let (mut c, mut s) = connect(&cc, &sc, "test.example")
                    .unwrap_or_else(|e| panic!("{kind:?} {suite:?} {code}: {e}"));
                assert_eq!(s.info().version, 0x0304);
                assert_eq!(s.info().suite, u16::from(suite.suite()));
                assert_eq!(s.info().group, code);
                assert_eq!(c.negotiated_cipher_suite(), Some(suite));
                echo(&mut c, &mut s, b"rustls over TLS 1.3");
            }
        }
    }
}

#[test]
fn tls12_every_suite_and_group() {
    use provider::cipher_suite::*;
    let sc = Arc::new(config_with(&[Kind::P256, Kind::Rsa2048]));
    for suite in [
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ] {
        for (group, code) in groups() {
            let cc = client_config(&rustls::version::TLS12, suite, group, &[]);
            let (mut c, mut s) = connect(&cc, &sc, "test.example")
                .unwrap_or_else(|e| panic!("{suite:?} {code}: {e}"));
            assert_eq!(s.info().version, 0x0303);
            assert_eq!(s.info().suite, u16::from(suite.suite()));
            assert!(s.info().extended_master_secret);
            echo(&mut c, &mut s, &vec![7u8; 40_000]);
        }
    }
}

#[test]
fn sni_and_alpn() {
    let (chain, key) = leaf_pem(Kind::P256, &["*.sites.example"]);
    let other = Arc::new(tls::CertifiedKey::from_pem(&chain, &key).unwrap());
    let mut second = tls::Site::new(vec![other]);
    second.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let sc =
        Arc::new(ServerConfig::new(vec![tls::Site::new(vec![cert(Kind::P256)]), second]).unwrap());
    let suite = provider::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let cc = client_config(
        &rustls::version::TLS13,
        suite,
        provider::kx_group::X25519,
        &[b"http/1.1", b"h2"],
    );
    let (c, s) = connect(&cc, &sc, "a.sites.example").unwrap();
    assert_eq!(s.info().site, 1);
    // Server preference: h2 before http/1.1.
    assert_eq!(c.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(s.info().alpn.as_deref(), Some(&b"h2"[..]));
    // The default site has no ALPN configured: the offer is ignored.
    let (c, s) = connect(&cc, &sc, "test.example").unwrap();
    assert_eq!((s.info().site, c.alpn_protocol()), (0, None));
}

#[test]
fn resumption_both_versions() {
    use provider::cipher_suite::*;
    let sc = Arc::new(config_with(&[Kind::P256]));
    let cases = [
        (
            &rustls::version::TLS13,
            TLS13_AES_128_GCM_SHA256,
            Resumed::PskDheKe,
        ),
        (
            &rustls::version::TLS12,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            Resumed::Ticket,
        ),
    ];
    for (v, suite, how) in cases {
        // One client config: its session cache carries the session to the next connection.
        let cc = client_config(v, suite, provider::kx_group::X25519, &[]);
        let (mut c, mut s) = connect(&cc, &sc, "test.example").unwrap();
        echo(&mut c, &mut s, b"first");
        assert_eq!(c.handshake_kind(), Some(HandshakeKind::Full));
        let (mut c, mut s) = connect(&cc, &sc, "test.example").unwrap();
        assert_eq!(c.handshake_kind(), Some(HandshakeKind::Resumed), "{v:?}");
        assert_eq!(s.info().resumed, Some(how));
        echo(&mut c, &mut s, b"second");
    }
    // TLS 1.2 without tickets on the server: a session ID from the store.
    let mut no_tickets = config_with(&[Kind::P256]);
    no_tickets.resumption.tickets = None;
    let sc = Arc::new(no_tickets);
    let cc = client_config(
        &rustls::version::TLS12,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        provider::kx_group::X25519,
        &[],
    );
    connect(&cc, &sc, "test.example").unwrap();
    let (c, s) = connect(&cc, &sc, "test.example").unwrap();
    assert_eq!(c.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(s.info().resumed, Some(Resumed::SessionId));
}

#[test]
fn close_notify_from_rustls() {
    let sc = Arc::new(config_with(&[Kind::P384]));
    let cc = client_config(
        &rustls::version::TLS13,
        provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
        provider::kx_group::SECP384R1,
        &[],
    );
    let (mut c, mut s) = connect(&cc, &sc, "test.example").unwrap();
    echo(&mut c, &mut s, b"bye");
    c.send_close_notify();
    pump(&mut c, &mut s).unwrap();
    assert!(s.peer_closed());
    s.close();
    pump(&mut c, &mut s).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        c.reader().read(&mut buf).unwrap(),
        0,
        "clean EOF at the client"
    );
}

/// A client certificate resolver that presents `cert` but signs with `key`, which need
/// not belong to it (rustls does not check; that is the point here).
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

fn identity(cert_pem: &[u8], key_pem: &[u8]) -> Arc<rustls::sign::CertifiedKey> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let chain = openssl::x509::X509::stack_from_pem(cert_pem).unwrap();
    let der = openssl::pkey::PKey::private_key_from_pem(key_pem)
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap();
    let key =
        provider::sign::any_supported_type(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)))
            .unwrap();
    Arc::new(rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from(chain[0].to_der().unwrap())],
        key,
    ))
}

#[test]
fn client_certificates_from_rustls() {
    let mut sc = config_with(&[Kind::P256]);
    let ca_pem = ca().cert.to_pem().unwrap();
    sc.client_auth = Some(Arc::new(tls::ClientAuth::from_pem(&ca_pem, true).unwrap()));
    let sc = Arc::new(sc);
    let (cert, key) = leaf_pem(Kind::P384, &["rustls.client"]);
    let (_, other_key) = leaf_pem(Kind::P384, &["rustls.client"]);
    let suites = [
        (
            &rustls::version::TLS13,
            provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            &rustls::version::TLS12,
            provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
    ];
    for (v, suite) in suites {
        for (signing_key, good) in [(&key, true), (&other_key, false)] {
            let p = CryptoProvider {
                cipher_suites: vec![suite],
                ..provider::default_provider()
            };
            let cc = ClientConfig::builder_with_provider(Arc::new(p))
                .with_protocol_versions(&[v])
                .unwrap()
                .with_root_certificates(roots())
                .with_client_cert_resolver(Arc::new(Presents(identity(&cert, signing_key))));
            let r = connect(&Arc::new(cc), &sc, "test.example");
            if good {
                let (mut c, mut s) = r.unwrap_or_else(|e| panic!("{v:?}: {e}"));
                echo(&mut c, &mut s, b"rustls with a client certificate");
                assert_eq!(s.info().peer_subject.as_deref(), Some("CN=rustls.client"));
            } else {
                let e = r.err().expect("a signature by the wrong key");
                assert!(
                    e.contains("peer CertificateVerify does not verify"),
                    "{v:?}: {e}"
                );
            }
        }
    }
}
