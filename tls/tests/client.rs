//! The engine's client role against two servers: our own server engine in memory, and
//! OpenSSL's `s_server` over loopback TCP (an independent implementation: it checks
//! our binders, Finished and KeyUpdate handling, and says when it resumed).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client_pump as pump;
use common::*;
use crypto_offload::{Group, ServerVerifier};
use tls::msgs::{group, suite};
use tls::KeyShare;
use tls::{ClientConfig, ClientConn, Error, Ticket};

fn verifier(name: &str) -> Arc<ServerVerifier> {
    let ca = ca().cert.to_pem().unwrap();
    Arc::new(ServerVerifier::new(Some(&ca), name).unwrap())
}

fn client_cfg(verify: Option<Arc<ServerVerifier>>) -> Arc<ClientConfig> {
    Arc::new(ClientConfig {
        server_name: Some("test.example".into()),
        verifier: verify,
        ..ClientConfig::default()
    })
}

fn x25519() -> KeyShare {
    KeyShare::generate(Group::X25519).unwrap()
}

fn engine_pair(
    server: Arc<tls::ServerConfig>,
    cfg: Arc<ClientConfig>,
    share: KeyShare,
    ticket: Option<&Ticket>,
) -> (ClientConn, Server, Result<(), Error>) {
    let mut c = ClientConn::new(cfg, share, ticket, 0).unwrap();
    let mut s = Server::new(server, Wire::default());
    let r = pump(&mut c, &mut s);
    (c, s, r)
}

#[test]
fn full_handshakes_with_our_server_every_suite_and_key() {
    for kind in [Kind::P256, Kind::P384, Kind::Rsa2048] {
        let server = Arc::new(config_with(&[kind]));
        for s13 in [
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let cfg = Arc::new(ClientConfig {
                suites: vec![s13],
                ..(*client_cfg(Some(verifier("test.example")))).clone()
            });
            let (mut c, mut s, r) = engine_pair(server.clone(), cfg, x25519(), None);
            r.unwrap();
            assert!(c.is_established() && s.conn.is_established(), "{kind:?}");
            assert_eq!(c.info().suite, s13);
            assert!(!c.info().resumed);
            assert_eq!(c.info().peer.as_deref(), Some("CN=test.example"));
            // Both ends export the same keying material (RFC 8446 §7.5).
            let label = b"EXPORTER-appliance-datagram";
            assert_eq!(
                c.export_keying_material(label, Some(b"7"), 44)
                    .unwrap()
                    .bytes(),
                s.conn
                    .export_keying_material(label, Some(b"7"), 44)
                    .unwrap()
                    .bytes()
            );
            // Application data both ways, more than one record each.
            let up: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
            assert_eq!(c.send(&up).unwrap(), up.len());
            pump(&mut c, &mut s).unwrap();
            assert_eq!(s.conn.plaintext(), &up[..]);
            let down: Vec<u8> = up.iter().rev().copied().collect();
            s.conn.send(&down).unwrap();
            pump(&mut c, &mut s).unwrap();
            assert_eq!(c.plaintext(), &down[..]);
            c.close();
            pump(&mut c, &mut s).unwrap();
            assert!(s.conn.peer_closed());
        }
    }
}

#[test]
fn p256_key_share_and_alpn() {
    let mut server = config_with(&[Kind::P256]);
    server.sites[0].alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let cfg = Arc::new(ClientConfig {
        alpn: vec![b"http/1.1".to_vec()],
        ..(*client_cfg(None)).clone()
    });
    let share = KeyShare::generate(Group::P256).unwrap();
    let (c, _s, r) = engine_pair(Arc::new(server), cfg, share, None);
    r.unwrap();
    assert_eq!(c.info().group, Some(group::SECP256R1));
    assert_eq!(c.info().alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(c.info().peer, None, "not verified, so no subject");
}

#[test]
fn post_quantum_hybrid_share_with_our_server() {
    let cfg = Arc::new(ClientConfig {
        groups: vec![group::X25519MLKEM768, group::X25519],
        ..(*client_cfg(Some(verifier("test.example")))).clone()
    });
    let share = KeyShare::generate(Group::X25519MlKem768).unwrap();
    let (mut c, mut s, r) = engine_pair(Arc::new(config_with(&[Kind::P256])), cfg, share, None);
    r.unwrap();
    assert_eq!(c.info().group, Some(group::X25519MLKEM768));
    assert_eq!(s.conn.info().group, group::X25519MLKEM768);
    c.send(b"over ML-KEM and X25519").unwrap();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(s.conn.plaintext(), b"over ML-KEM and X25519");
}

#[test]
fn ticket_resumption_with_our_server_and_a_reused_ticket() {
    let server = Arc::new(config_with(&[Kind::P256]));
    let cfg = client_cfg(Some(verifier("test.example")));
    let (c, _s, r) = engine_pair(server.clone(), cfg.clone(), x25519(), None);
    r.unwrap();
    let ticket = c.ticket().expect("the server sent a ticket").clone();
    // The same ticket twice (the load generator's --reuse-ticket), and one key share
    // for both connections (--reuse-key-share).
    let share = x25519();
    for _ in 0..2 {
        let (c, s, r) = engine_pair(server.clone(), cfg.clone(), share.clone(), Some(&ticket));
        r.unwrap();
        assert!(c.info().resumed && c.is_established());
        assert!(s.conn.info().resumed.is_some(), "the server resumed too");
        assert_eq!(c.info().peer, None, "a resumption sends no certificate");
        assert!(c.ticket().is_some(), "a fresh ticket came with it");
    }
}

#[test]
fn verification_failures_are_errors_and_alerts() {
    let server = Arc::new(config_with(&[Kind::P256]));
    // A name the certificate does not carry.
    let (c, s, r) = engine_pair(
        server.clone(),
        client_cfg(Some(verifier("other.example"))),
        x25519(),
        None,
    );
    assert!(
        matches!(r, Err(Error::BadCertificate { .. })),
        "wrong name: {r:?}"
    );
    assert!(c.is_closed());
    assert_eq!(
        s.conn.error(),
        Some(&Error::PeerAlert(42)),
        "bad_certificate"
    );
    // A CA nobody configured: the system store does not know the test CA.
    let system = Arc::new(ServerVerifier::new(None, "test.example").unwrap());
    let (_c, s, r) = engine_pair(server, client_cfg(Some(system)), x25519(), None);
    assert!(
        matches!(
            r,
            Err(Error::BadCertificate {
                unknown_ca: true,
                ..
            })
        ),
        "unknown CA: {r:?}"
    );
    assert_eq!(s.conn.error(), Some(&Error::PeerAlert(48)), "unknown_ca");
}

#[test]
fn what_the_client_role_does_not_do_is_a_clear_error() {
    // A TLS 1.2-only server refuses our TLS 1.3-only hello with protocol_version.
    let mut s12 = config_with(&[Kind::P256]);
    s12.tls13 = false;
    let (_c, _s, r) = engine_pair(Arc::new(s12), client_cfg(None), x25519(), None);
    assert_eq!(r.unwrap_err(), Error::PeerAlert(70));
    // A server whose groups we do not offer at all ends it with handshake_failure.
    let mut p521 = config_with(&[Kind::P256]);
    p521.groups = vec![group::SECP521R1];
    let (_c, _s, r) = engine_pair(Arc::new(p521), client_cfg(None), x25519(), None);
    assert_eq!(r.unwrap_err(), Error::PeerAlert(40));
    // A key share for a group the configuration does not offer is the caller's mistake.
    let cfg = Arc::new(ClientConfig {
        groups: vec![group::X25519],
        ..ClientConfig::default()
    });
    let p256 = KeyShare::generate(Group::P256).unwrap();
    assert!(matches!(
        ClientConn::new(cfg, p256, None, 0),
        Err(Error::Misuse(_))
    ));
    assert!(ClientConfig {
        suites: vec![0x009c], // TLS_RSA_WITH_AES_128_GCM_SHA256: no forward secrecy
        ..ClientConfig::default()
    }
    .validate()
    .unwrap_err()
    .contains("not one the client role has"));
}

/// RFC 8446 §5: a ChangeCipherSpec that arrives protected (inside an encrypted record,
/// here under the server's handshake key before EncryptedExtensions) is
/// unexpected_message; only the plaintext compatibility CCS is dropped.
#[test]
fn a_protected_change_cipher_spec_is_unexpected_message() {
    let mut c = ClientConn::new(client_cfg(None), x25519(), None, 0).unwrap();
    let mut s = Server::new(Arc::new(config_with(&[Kind::P256])), Wire::default());
    s.conn.hostile_before_flight(vec![(20, vec![1])]);
    let r = pump(&mut c, &mut s);
    assert_eq!(
        r.unwrap_err(),
        Error::UnexpectedMessage("change_cipher_spec")
    );
    assert!(c.is_closed());
    assert_eq!(
        s.conn.error(),
        Some(&Error::PeerAlert(10)),
        "unexpected_message"
    );
    // The same server without the protected record: the handshake completes.
    let (c, _s, r) = engine_pair(
        Arc::new(config_with(&[Kind::P256])),
        client_cfg(None),
        x25519(),
        None,
    );
    r.unwrap();
    assert!(c.is_established());
}

#[test]
fn garbage_from_the_server_is_an_error_not_a_panic() {
    let cfg = client_cfg(None);
    for input in [
        &b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"[..], // empty ServerHello
        b"\x17\x03\x03\x00\x05hello",                 // data before keys
        b"\x16\x03\x03\x00\x05\x02\x00\x00\x01\x03",  // truncated
        b"\x15\x03\x03\x00\x02\x02\x28",              // handshake_failure
        b"\x16\x03\x03\x00\x04\x0b\x00\x00\x00",      // Certificate first
        b"\x99\x03\x03\x00\x01\x00",                  // unknown record type
    ] {
        let mut c = ClientConn::new(cfg.clone(), x25519(), None, 0).unwrap();
        c.read_tls(input);
        assert!(c.process(0).is_err(), "{input:?}");
        assert!(c.is_closed());
    }
}

// ----- against openssl s_server

struct SServer {
    child: Child,
    port: u16,
    out: BufReader<std::process::ChildStdout>,
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_server` with the test certificate; `extra` flags appended. It listens on
/// a port the kernel chose for it (read back from its `ACCEPT host:port` line): a port
/// picked here and released first could be taken by a test running beside this one.
fn s_server(extra: &[&str]) -> SServer {
    // A directory per server: tests run in parallel threads, and one rewriting the
    // files another s_server is still loading made that one exit before it listened.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tls-client-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (chain, key) = cert_pem(Kind::P256);
    std::fs::write(dir.join("cert.pem"), chain).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0"])
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .args(["-tls1_3", "-naccept", "20"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port = s_server_port(&mut out);
    SServer { child, port, out }
}

/// Runs a connection over TCP until `done` says so (or 10 s pass).
fn drive(
    c: &mut ClientConn,
    tcp: &mut TcpStream,
    mut done: impl FnMut(&mut ClientConn) -> bool,
) -> Result<(), Error> {
    tcp.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 32 * 1024];
    while start.elapsed() < Duration::from_secs(10) {
        let out = c.pending_tls().to_vec();
        tcp.write_all(&out).unwrap();
        c.consume_tls(out.len());
        if done(c) {
            return Ok(());
        }
        match tcp.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                assert_eq!(c.read_tls(&buf[..n]), n);
                c.process(0)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the connection did not finish in 10 s");
}

/// A GET to `s_server -www`; returns its status page.
fn www_get(
    port: u16,
    cfg: &Arc<ClientConfig>,
    share: KeyShare,
    t: Option<&Ticket>,
) -> (ClientConn, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut c = ClientConn::new(cfg.clone(), share, t, 0).unwrap();
    drive(&mut c, &mut tcp, |c| c.is_established()).unwrap();
    c.send(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    drive(&mut c, &mut tcp, |c| c.peer_closed()).unwrap();
    let page = String::from_utf8_lossy(c.plaintext()).into_owned();
    (c, page)
}

#[test]
fn openssl_s_server_full_and_resumed() {
    let srv = s_server(&["-www"]);
    let cfg = client_cfg(Some(verifier("test.example")));
    let (c, page) = www_get(srv.port, &cfg, x25519(), None);
    assert!(
        page.contains("New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256"),
        "{page}"
    );
    assert_eq!(c.info().peer.as_deref(), Some("CN=test.example"));
    let ticket = c.ticket().expect("s_server sends tickets").clone();
    // OpenSSL checks our binder and says it resumed; then once more with the same
    // ticket (s_server's tickets are not single-use).
    for _ in 0..2 {
        let (c, page) = www_get(srv.port, &cfg, x25519(), Some(&ticket));
        assert!(page.contains("Reused, TLSv1.3"), "{page}");
        assert!(c.info().resumed);
    }
    // A ChaCha20 suite and a P-256 share.
    let cha = Arc::new(ClientConfig {
        suites: vec![suite::TLS13_CHACHA20_POLY1305_SHA256],
        ..(*cfg).clone()
    });
    let (_c, page) = www_get(
        srv.port,
        &cha,
        KeyShare::generate(Group::P256).unwrap(),
        None,
    );
    assert!(
        page.contains("Cipher is TLS_CHACHA20_POLY1305_SHA256"),
        "{page}"
    );
}

#[test]
fn openssl_s_server_key_update_requested() {
    // -msg: s_server prints every handshake message it sends and receives.
    let mut srv = s_server(&["-msg"]);
    let mut tcp = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    let mut c = ClientConn::new(client_cfg(None), x25519(), None, 0).unwrap();
    drive(&mut c, &mut tcp, |c| c.is_established()).unwrap();
    // "K" on s_server's console sends a KeyUpdate that asks for ours; the next line
    // goes to us under the server's new key.
    let stdin = srv.child.stdin.as_mut().unwrap();
    stdin.write_all(b"K\n").unwrap();
    stdin.flush().unwrap();
    // s_server takes a console line as a command only if it arrives alone.
    let until = Instant::now() + Duration::from_millis(300);
    drive(&mut c, &mut tcp, |_| Instant::now() > until).unwrap();
    let stdin = srv.child.stdin.as_mut().unwrap();
    stdin
        .write_all(b"from s_server after its update\n")
        .unwrap();
    stdin.flush().unwrap();
    let want = b"from s_server after its update";
    drive(&mut c, &mut tcp, |c| {
        c.plaintext().windows(want.len()).any(|w| w == want)
    })
    .unwrap();
    assert_eq!(c.info().key_updates, 1);
    // Our answer went out with the read; data after it is under our new key.
    c.send(b"from us after ours\n").unwrap();
    drive(&mut c, &mut tcp, |_| true).unwrap();
    let mut seen = Vec::new();
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        line.clear();
        if srv.out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push(line.trim().to_string());
        if line.contains("from us after ours") {
            break;
        }
    }
    let received_updates = seen
        .iter()
        .filter(|l| l.starts_with("<<<") && l.contains("KeyUpdate"))
        .count();
    assert_eq!(received_updates, 1, "s_server got our KeyUpdate: {seen:?}");
    assert!(
        seen.iter().any(|l| l.contains("from us after ours")),
        "s_server read our data under the updated key: {seen:?}"
    );
}

// ----- client certificates (RFC 8446 §4.3.2, §4.4.2, §4.4.3)

fn with_certificate(kind: Kind) -> Arc<ClientConfig> {
    let (chain, key) = leaf_pem(kind, &["client.example"]);
    Arc::new(ClientConfig {
        certificate: Some(Arc::new(tls::CertifiedKey::from_pem(&chain, &key).unwrap())),
        ..(*client_cfg(Some(verifier("test.example")))).clone()
    })
}

#[test]
fn client_certificates_with_our_server() {
    let mut server = config_with(&[Kind::P256]);
    let ca_pem = ca().cert.to_pem().unwrap();
    server.client_auth = Some(Arc::new(tls::ClientAuth::from_pem(&ca_pem, true).unwrap()));
    let server = Arc::new(server);
    for kind in [Kind::P256, Kind::P384, Kind::Rsa2048] {
        let (mut c, mut s, r) = engine_pair(server.clone(), with_certificate(kind), x25519(), None);
        r.unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(c.info().certificate_requested && c.info().certificate_sent);
        assert_eq!(
            s.conn.info().peer_subject.as_deref(),
            Some("CN=client.example"),
            "{kind:?}"
        );
        c.send(b"as client.example").unwrap();
        pump(&mut c, &mut s).unwrap();
        assert_eq!(s.conn.plaintext(), b"as client.example");
    }
    // Without a certificate the client answers with an empty one; a server that
    // requires one refuses with certificate_required (RFC 8446 §4.4.2.4).
    let (c, s, r) = engine_pair(server.clone(), client_cfg(None), x25519(), None);
    assert_eq!(
        r.unwrap_err(),
        Error::PeerAlert(116),
        "{:?}",
        s.conn.error()
    );
    assert!(c.info().certificate_requested && !c.info().certificate_sent);
    // One that only asks goes on anonymously.
    let mut optional = config_with(&[Kind::P256]);
    optional.client_auth = Some(Arc::new(tls::ClientAuth::from_pem(&ca_pem, false).unwrap()));
    let (c, s, r) = engine_pair(Arc::new(optional), client_cfg(None), x25519(), None);
    r.unwrap();
    assert!(c.is_established() && s.conn.info().peer_subject.is_none());
}

#[test]
fn client_certificates_with_openssl_s_server() {
    let dir = std::env::temp_dir().join(format!("tls-client-cca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca().cert.to_pem().unwrap()).unwrap();
    let ca = dir.join("ca.pem");
    // -Verify: a certificate is required; -www's page names the client's subject.
    let srv = s_server(&["-www", "-Verify", "2", "-CAfile", ca.to_str().unwrap()]);
    for kind in [Kind::P256, Kind::Rsa2048] {
        let (c, page) = www_get(srv.port, &with_certificate(kind), x25519(), None);
        assert!(c.info().certificate_sent, "{kind:?}");
        assert!(page.contains("New, TLSv1.3"), "{kind:?}: {page}");
        assert!(
            page.contains("client.example"),
            "{kind:?}: s_server did not see our certificate: {page}"
        );
    }
    // Without one, s_server refuses it with certificate_required once it has read
    // our (empty) Certificate and Finished: the alert is what we read next.
    let mut tcp = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    let mut c = ClientConn::new(client_cfg(None), x25519(), None, 0).unwrap();
    drive(&mut c, &mut tcp, |c| c.is_established()).unwrap();
    assert!(c.info().certificate_requested && !c.info().certificate_sent);
    let _ = c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = drive(&mut c, &mut tcp, |c| c.peer_closed());
    assert_eq!(
        r,
        Err(Error::PeerAlert(116)),
        "{page:?}",
        page = c.plaintext()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- HelloRetryRequest (RFC 8446 §4.1.4)

#[test]
fn hello_retry_request_with_our_server_full_and_resumed() {
    // A server that only takes P-384 answers an X25519 share with a HelloRetryRequest.
    let mut p384 = config_with(&[Kind::P256]);
    p384.groups = vec![group::SECP384R1];
    let server = Arc::new(p384);
    let cfg = client_cfg(Some(verifier("test.example")));
    let (mut c, mut s, r) = engine_pair(server.clone(), cfg.clone(), x25519(), None);
    r.unwrap();
    assert!(c.is_established() && c.info().retried);
    assert_eq!(c.info().group, Some(group::SECP384R1));
    c.send(b"after a retry").unwrap();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(s.conn.plaintext(), b"after a retry");
    // The ticket is offered again in the second ClientHello with its binder over the
    // rewritten transcript: the server checks it and resumes.
    let ticket = c.ticket().expect("a ticket").clone();
    let (c, s, r) = engine_pair(server, cfg, x25519(), Some(&ticket));
    r.unwrap();
    assert!(c.info().retried && c.info().resumed);
    assert!(s.conn.info().resumed.is_some());
}

#[test]
fn hello_retry_request_with_openssl_s_server_and_its_cookie() {
    // -groups P-384: a HelloRetryRequest for our X25519 share; -stateless: s_server
    // puts a cookie in it and only goes on when the second ClientHello echoes it.
    for extra in [
        &["-groups", "P-384"][..],
        &["-groups", "P-384", "-stateless"],
    ] {
        let mut args = vec!["-www"];
        args.extend_from_slice(extra);
        let srv = s_server(&args);
        let cfg = client_cfg(Some(verifier("test.example")));
        let (c, page) = www_get(srv.port, &cfg, x25519(), None);
        assert!(c.info().retried, "{extra:?}");
        assert_eq!(c.info().group, Some(group::SECP384R1));
        assert!(page.contains("New, TLSv1.3"), "{extra:?}: {page}");
        let ticket = c.ticket().expect("s_server sends tickets").clone();
        let (c, page) = www_get(srv.port, &cfg, x25519(), Some(&ticket));
        assert!(c.info().retried && c.info().resumed, "{extra:?}");
        assert!(page.contains("Reused, TLSv1.3"), "{extra:?}: {page}");
    }
}

/// A plaintext record holding a HelloRetryRequest for `suite` with `exts` (type,
/// body) after supported_versions.
fn hrr_record(suite: u16, exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut all = vec![(43u16, vec![3, 4])];
    all.extend_from_slice(exts);
    server_hello_record(&tls::msgs::HRR_RANDOM, suite, &all)
}

#[test]
fn hello_retry_requests_the_rfc_refuses() {
    let aes = suite::TLS13_AES_128_GCM_SHA256;
    let g = |g: u16| g.to_be_bytes().to_vec();
    let cases: Vec<(&str, Vec<u8>, Error)> = vec![
        // "corresponds to a group which was provided in the key_share extension in
        // the original ClientHello": illegal_parameter.
        (
            "same group",
            hrr_record(aes, &[(51, g(group::X25519))]),
            Error::IllegalParameter(""),
        ),
        // "was not offered in supported_groups": illegal_parameter.
        (
            "group not offered",
            hrr_record(aes, &[(51, g(group::SECP521R1))]),
            Error::IllegalParameter(""),
        ),
        // "would not result in any change in the ClientHello": illegal_parameter.
        (
            "no change",
            hrr_record(aes, &[]),
            Error::IllegalParameter(""),
        ),
        // A suite we did not offer.
        (
            "suite",
            hrr_record(0x1305, &[(51, g(group::SECP384R1))]),
            Error::IllegalParameter(""),
        ),
        // An empty cookie is malformed (cookie<1..2^16-1>).
        (
            "empty cookie",
            hrr_record(aes, &[(44, vec![0, 0])]),
            Error::Decode(""),
        ),
        // A second HelloRetryRequest: unexpected_message.
        (
            "twice",
            [
                hrr_record(aes, &[(51, g(group::SECP384R1))]),
                hrr_record(aes, &[(51, g(group::SECP256R1))]),
            ]
            .concat(),
            Error::UnexpectedMessage(""),
        ),
    ];
    for (what, input, want) in cases {
        let mut c = ClientConn::new(client_cfg(None), x25519(), None, 0).unwrap();
        c.read_tls(&input);
        let e = c.process(0).unwrap_err();
        assert_eq!(
            std::mem::discriminant(&e),
            std::mem::discriminant(&want),
            "{what}: {e}"
        );
        assert_eq!(e.alert(), want.alert(), "{what}");
        assert!(c.is_closed(), "{what}");
    }
}
