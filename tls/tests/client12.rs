//! The client role's TLS 1.2 against three servers: our own server engine in memory,
//! OpenSSL's `s_server` over loopback TCP, and rustls in memory. Every TLS 1.2 suite
//! with ECDSA and RSA certificates, the extended master secret, resumption by ticket and
//! by session ID, client certificates, and the checks a client owes (downgrade
//! sentinel, renegotiation_info, no extended master secret).

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client_pump as pump;
use common::*;
use crypto_offload::{Group, ServerVerifier};
use tls::msgs::{suite, version};
use tls::KeyShare;
use tls::{ClientConfig, ClientConn, Error, Ticket};

const SUITES12: [u16; 6] = [
    suite::ECDHE_ECDSA_AES128_GCM_SHA256,
    suite::ECDHE_ECDSA_AES256_GCM_SHA384,
    suite::ECDHE_ECDSA_CHACHA20_POLY1305,
    suite::ECDHE_RSA_AES128_GCM_SHA256,
    suite::ECDHE_RSA_AES256_GCM_SHA384,
    suite::ECDHE_RSA_CHACHA20_POLY1305,
];

fn verifier() -> Arc<ServerVerifier> {
    let ca = ca().cert.to_pem().unwrap();
    Arc::new(ServerVerifier::new(Some(&ca), "test.example").unwrap())
}

fn cfg12(suites: &[u16]) -> Arc<ClientConfig> {
    Arc::new(ClientConfig {
        server_name: Some("test.example".into()),
        suites: suites.to_vec(),
        verifier: Some(verifier()),
        ..ClientConfig::default()
    })
}

fn share() -> KeyShare {
    KeyShare::generate(Group::X25519).unwrap()
}

fn engine_pair(
    server: Arc<tls::ServerConfig>,
    cfg: Arc<ClientConfig>,
    ticket: Option<&Ticket>,
) -> (ClientConn, Server, Result<(), Error>) {
    let mut c = ClientConn::new(cfg, share(), ticket, 0).unwrap();
    let mut s = Server::new(server, Wire::default());
    let r = pump(&mut c, &mut s);
    (c, s, r)
}

fn echo(c: &mut ClientConn, s: &mut Server) {
    let up: Vec<u8> = (0..40_000u32).map(|i| (i * 3) as u8).collect();
    assert_eq!(c.send(&up).unwrap(), up.len());
    pump(c, s).unwrap();
    assert_eq!(s.conn.plaintext(), &up[..]);
    let n = up.len();
    s.conn.consume_plaintext(n);
    s.conn.send(b"down").unwrap();
    pump(c, s).unwrap();
    assert_eq!(c.plaintext(), b"down");
}

#[test]
fn every_tls12_suite_with_our_server_and_resumption() {
    let server = Arc::new(config_with(&[Kind::P256, Kind::Rsa2048]));
    for s12 in SUITES12 {
        let cfg = cfg12(&[s12]);
        let (mut c, mut s, r) = engine_pair(server.clone(), cfg.clone(), None);
        r.unwrap_or_else(|e| panic!("{s12:#06x}: {e}"));
        assert!(c.is_established() && s.conn.is_established());
        assert_eq!((c.info().version, c.info().suite), (version::TLS12, s12));
        assert_eq!(c.info().peer.as_deref(), Some("CN=test.example"));
        assert!(!c.info().resumed);
        // Both ends export the same keying material (RFC 5705 with the EMS master).
        assert_eq!(
            c.export_keying_material(b"EXPORTER-test", None, 32)
                .unwrap()
                .bytes(),
            s.conn
                .export_keying_material(b"EXPORTER-test", None, 32)
                .unwrap()
                .bytes()
        );
        echo(&mut c, &mut s);
        // The server's RFC 5077 ticket resumes (an abbreviated handshake).
        let t = c.ticket().expect("a TLS 1.2 ticket").clone();
        assert_eq!(t.version(), version::TLS12);
        let (mut c, mut s, r) = engine_pair(server.clone(), cfg.clone(), Some(&t));
        r.unwrap();
        assert!(c.info().resumed, "{s12:#06x}");
        assert_eq!(s.conn.info().resumed, Some(tls::Resumed::Ticket));
        echo(&mut c, &mut s);
    }
}

#[test]
fn session_id_resumption_with_our_server() {
    // No tickets: the server keeps the session by ID in its store.
    let mut cfg = config_with(&[Kind::P256]);
    cfg.resumption.tickets = None;
    let server = Arc::new(cfg);
    let ccfg = cfg12(&[suite::ECDHE_ECDSA_AES128_GCM_SHA256]);
    let (c, _s, r) = engine_pair(server.clone(), ccfg.clone(), None);
    r.unwrap();
    let t = c.ticket().expect("a session by ID").clone();
    let (c, s, r) = engine_pair(server, ccfg, Some(&t));
    r.unwrap();
    assert!(c.info().resumed);
    assert_eq!(s.conn.info().resumed, Some(tls::Resumed::SessionId));
}

#[test]
fn both_versions_offered_the_server_chooses() {
    let mut both: Vec<u16> = vec![suite::TLS13_AES_128_GCM_SHA256];
    both.extend_from_slice(&SUITES12);
    let cfg = cfg12(&both);
    let (c, _s, r) = engine_pair(Arc::new(config_with(&[Kind::P256])), cfg.clone(), None);
    r.unwrap();
    assert_eq!(c.info().version, version::TLS13);
    let mut only12 = config_with(&[Kind::P256]);
    only12.tls13 = false;
    let (c, _s, r) = engine_pair(Arc::new(only12), cfg, None);
    r.unwrap();
    assert_eq!(c.info().version, version::TLS12);
}

/// How many times `needle` occurs in `hay`.
fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// A TLS 1.2 handshake makes no key it does not need: a configuration that offers TLS
/// 1.2 only makes none before the ServerKeyExchange (`without_share`: no key_share in
/// its ClientHello); one that offers both versions, answered by a TLS 1.2 server in the
/// share's group, sends that share's public value in its ClientKeyExchange (no second
/// key); in another group it makes a fresh key of that group.
#[test]
fn tls12_key_exchange_makes_no_key_it_does_not_need() {
    let mut only12 = config_with(&[Kind::P256]);
    only12.tls13 = false;
    let only12 = Arc::new(only12);
    // TLS 1.2 only: no share at all, a full handshake and a resumption.
    let cfg = cfg12(&SUITES12);
    assert_eq!(cfg.share_group(), None, "TLS 1.2 only: no share to make");
    let mut c = ClientConn::without_share(cfg.clone(), None, 0).unwrap();
    // The record's body is the ClientHello message (after its 4-byte header).
    let hello = c.pending_tls().to_vec();
    let ch = tls::msgs::ClientHello::parse(&hello[9..]).unwrap();
    assert_eq!(
        ch.key_shares().count(),
        0,
        "a TLS 1.2-only ClientHello with a key share"
    );
    assert!(ch.suites().count() >= SUITES12.len());
    let mut s = Server::new(only12.clone(), Wire::default());
    pump(&mut c, &mut s).unwrap();
    assert!(c.is_established());
    assert_eq!(c.info().version, version::TLS12);
    echo(&mut c, &mut s);
    let t = c.take_ticket().expect("a TLS 1.2 ticket");
    let mut c = ClientConn::without_share(cfg, Some(&t), 0).unwrap();
    let mut s = Server::new(only12.clone(), Wire::default());
    pump(&mut c, &mut s).unwrap();
    assert!(c.info().resumed);
    // Both offered: the ClientHello's X25519 share is the ECDHE key.
    let mut both: Vec<u16> = vec![suite::TLS13_AES_128_GCM_SHA256];
    both.extend_from_slice(&SUITES12);
    let both_cfg = cfg12(&both);
    assert_eq!(both_cfg.share_group(), Some(Group::X25519));
    let sh = share();
    let public = sh.public().to_vec();
    let mut c = ClientConn::new(both_cfg.clone(), sh, None, 0).unwrap();
    assert_eq!(
        occurrences(c.pending_tls(), &public),
        1,
        "the share in the ClientHello"
    );
    let mut s = Server::new(only12.clone(), Wire::default());
    let mut sent = Vec::new();
    common::client_pump_capture(&mut c, &mut s, &mut sent).unwrap();
    assert_eq!(c.info().version, version::TLS12);
    assert_eq!(
        occurrences(&sent, &public),
        2,
        "the share's public value in the ClientHello and the ClientKeyExchange"
    );
    echo(&mut c, &mut s);
    // A P-256 share offered, a server that only takes X25519 for TLS 1.2: a fresh key.
    let p256 = KeyShare::generate(Group::P256).unwrap();
    let public = p256.public().to_vec();
    let cfg = Arc::new(ClientConfig {
        groups: vec![tls::msgs::group::SECP256R1, tls::msgs::group::X25519],
        ..(*both_cfg).clone()
    });
    let mut x25519_only = config_with(&[Kind::P256]);
    x25519_only.tls13 = false;
    x25519_only.groups = vec![tls::msgs::group::X25519];
    let mut c = ClientConn::new(cfg, p256, None, 0).unwrap();
    let mut s = Server::new(Arc::new(x25519_only), Wire::default());
    let mut sent = Vec::new();
    common::client_pump_capture(&mut c, &mut s, &mut sent).unwrap();
    assert_eq!(c.info().version, version::TLS12);
    assert_eq!(c.info().group, Some(tls::msgs::group::X25519));
    assert_eq!(
        occurrences(&sent, &public),
        1,
        "the P-256 share only in the ClientHello"
    );
    echo(&mut c, &mut s);
    // And without_share refuses a configuration that offers TLS 1.3.
    assert!(matches!(
        ClientConn::without_share(both_cfg, None, 0),
        Err(Error::Misuse(_))
    ));
}

#[test]
fn client_certificates_in_tls12() {
    let mut server = config_with(&[Kind::P256, Kind::Rsa2048]);
    let ca_pem = ca().cert.to_pem().unwrap();
    server.client_auth = Some(Arc::new(tls::ClientAuth::from_pem(&ca_pem, true).unwrap()));
    let server = Arc::new(server);
    for kind in [Kind::P256, Kind::Rsa2048] {
        for s12 in [
            suite::ECDHE_ECDSA_AES128_GCM_SHA256,
            suite::ECDHE_ECDSA_AES256_GCM_SHA384,
        ] {
            let (chain, key) = leaf_pem(kind, &["client.example"]);
            let cfg = Arc::new(ClientConfig {
                certificate: Some(Arc::new(tls::CertifiedKey::from_pem(&chain, &key).unwrap())),
                ..(*cfg12(&[s12])).clone()
            });
            let (c, s, r) = engine_pair(server.clone(), cfg, None);
            r.unwrap_or_else(|e| panic!("{kind:?} {s12:#06x}: {e}"));
            assert!(c.info().certificate_sent);
            assert_eq!(
                s.conn.info().peer_subject.as_deref(),
                Some("CN=client.example")
            );
        }
    }
    // Without one: an empty Certificate, and the server refuses.
    let (c, _s, r) = engine_pair(server, cfg12(&[suite::ECDHE_ECDSA_AES128_GCM_SHA256]), None);
    assert!(r.is_err());
    assert!(c.info().certificate_requested && !c.info().certificate_sent);
}

/// A plaintext record with a TLS 1.2 ServerHello whose random ends in `random_tail`.
fn server_hello12(random_tail: &[u8; 8], exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut random = [7u8; 32];
    random[24..].copy_from_slice(random_tail);
    server_hello_record(&random, suite::ECDHE_ECDSA_AES128_GCM_SHA256, exts)
}

#[test]
fn tls12_server_hellos_a_client_refuses() {
    let ems = (23u16, vec![]);
    let reneg = (0xff01u16, vec![0]);
    let mut both: Vec<u16> = vec![suite::TLS13_AES_128_GCM_SHA256];
    both.extend_from_slice(&SUITES12);
    let cases: Vec<(&str, &[u16], Vec<u8>, u8)> = vec![
        // RFC 8446 §4.1.3: "MUST check ... If a match is found, the client MUST abort
        // the handshake with an "illegal_parameter" alert."
        (
            "downgrade sentinel",
            &both,
            server_hello12(b"DOWNGRD\x01", &[ems.clone(), reneg.clone()]),
            47,
        ),
        // RFC 7627 §5.2: without the extended master secret the client aborts.
        (
            "no EMS",
            &SUITES12,
            server_hello12(&[0; 8], std::slice::from_ref(&reneg)),
            40,
        ),
        // RFC 5746 §3.4: a non-empty renegotiated_connection in a first handshake.
        (
            "renegotiation_info",
            &SUITES12,
            server_hello12(&[0; 8], &[ems.clone(), (0xff01, vec![1, 9])]),
            40,
        ),
        // A TLS 1.3 extension in a TLS 1.2 ServerHello.
        (
            "key_share",
            &SUITES12,
            server_hello12(&[0; 8], &[ems.clone(), (51, vec![0, 29, 0, 1, 9])]),
            47,
        ),
        // A suite not offered.
        (
            "suite",
            &[suite::ECDHE_RSA_AES128_GCM_SHA256],
            server_hello12(&[0; 8], std::slice::from_ref(&ems)),
            47,
        ),
        // A TLS 1.2 answer to a TLS 1.3-only hello.
        (
            "version",
            &[suite::TLS13_AES_128_GCM_SHA256],
            server_hello12(&[0; 8], std::slice::from_ref(&ems)),
            70,
        ),
    ];
    for (what, suites, input, alert) in cases {
        let mut c = ClientConn::new(cfg12(suites), share(), None, 0).unwrap();
        c.read_tls(&input);
        let e = c.process(0).unwrap_err();
        assert_eq!(e.alert(), Some(alert), "{what}: {e}");
        assert!(c.is_closed(), "{what}");
    }
}

// ----- against openssl s_server

struct SServer {
    child: Child,
    port: u16,
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s_server(kind: Kind, extra: &[&str]) -> SServer {
    // A directory per server (parallel tests must not rewrite files another s_server
    // is loading).
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("tls-client12-{}-{kind:?}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (chain, key) = cert_pem(kind);
    std::fs::write(dir.join("cert.pem"), chain).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca().cert.to_pem().unwrap()).unwrap();
    // Port 0: the kernel chooses, and s_server's `ACCEPT host:port` line says which (a
    // port picked here and released first could be taken by a test beside this one).
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0"])
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .arg("-CAfile")
        .arg(dir.join("ca.pem"))
        .args(["-tls1_2", "-www", "-naccept", "20"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port = s_server_port(&mut out);
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    SServer { child, port }
}

/// A GET to `s_server -www`; returns the connection and its status page.
fn www_get(port: u16, cfg: &Arc<ClientConfig>, t: Option<&Ticket>) -> (ClientConn, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut c = ClientConn::new(cfg.clone(), share(), t, 0).unwrap();
    let mut sent = false;
    let start = Instant::now();
    let mut buf = vec![0u8; 32 * 1024];
    while start.elapsed() < Duration::from_secs(10) && !c.peer_closed() {
        if c.is_established() && !sent {
            c.send(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            sent = true;
        }
        let out = c.pending_tls().to_vec();
        tcp.write_all(&out).unwrap();
        c.consume_tls(out.len());
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                assert_eq!(c.read_tls(&buf[..n]), n);
                c.process(0).unwrap();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let page = String::from_utf8_lossy(c.plaintext()).into_owned();
    (c, page)
}

#[test]
fn openssl_s_server_tls12_full_resumed_and_client_certificates() {
    for (kind, suites) in [
        (Kind::P256, &SUITES12[..3]),
        (Kind::Rsa2048, &SUITES12[3..]),
    ] {
        let srv = s_server(kind, &[]);
        for &s12 in suites {
            let cfg = cfg12(&[s12]);
            let (c, page) = www_get(srv.port, &cfg, None);
            assert!(page.contains("New, TLSv1.2"), "{kind:?} {s12:#06x}: {page}");
            assert_eq!(c.info().suite, s12);
            let t = c.ticket().expect("s_server's ticket").clone();
            let (c, page) = www_get(srv.port, &cfg, Some(&t));
            assert!(
                page.contains("Reused, TLSv1.2"),
                "{kind:?} {s12:#06x}: {page}"
            );
            assert!(c.info().resumed);
        }
    }
    // Session IDs (-no_ticket) and a required client certificate (-Verify).
    let srv = s_server(Kind::P256, &["-no_ticket", "-Verify", "2"]);
    let (chain, key) = leaf_pem(Kind::P256, &["client.example"]);
    let cfg = Arc::new(ClientConfig {
        certificate: Some(Arc::new(tls::CertifiedKey::from_pem(&chain, &key).unwrap())),
        ..(*cfg12(&[suite::ECDHE_ECDSA_AES128_GCM_SHA256])).clone()
    });
    let (c, page) = www_get(srv.port, &cfg, None);
    assert!(page.contains("New, TLSv1.2"), "{page}");
    assert!(page.contains("client.example"), "{page}");
    assert!(c.info().certificate_sent);
    let t = c.ticket().expect("a session by ID").clone();
    let (c, page) = www_get(srv.port, &cfg, Some(&t));
    assert!(page.contains("Reused, TLSv1.2"), "{page}");
    assert!(c.info().resumed);
}

/// [`pump`] with the client's handshake steps as jobs, each run on another thread (as
/// the crypto pool would); returns how many ran.
fn pump_jobs(c: &mut ClientConn, s: &mut Server) -> Result<usize, Error> {
    let mut jobs = 0;
    for _ in 0..50 {
        pump(c, s)?;
        let Some(job) = c.take_job() else {
            if !c.awaiting_job() {
                return Ok(jobs);
            }
            panic!("waiting with no job to run");
        };
        assert!(c.awaiting_job());
        let done = std::thread::spawn(move || crypto_offload::run(job))
            .join()
            .unwrap();
        jobs += 1;
        c.complete(done)?;
    }
    Ok(jobs)
}

#[test]
fn handshake_steps_as_jobs_in_both_versions() {
    let server = Arc::new(config_with(&[Kind::P256]));
    for (suites, full_jobs, resumed_jobs) in [
        (&[suite::TLS13_AES_128_GCM_SHA256][..], 2, 2),
        (&[suite::ECDHE_ECDSA_AES128_GCM_SHA256][..], 1, 0),
    ] {
        let cfg = cfg12(suites);
        let mut ticket = None;
        for want in [full_jobs, resumed_jobs] {
            let mut c = ClientConn::new(cfg.clone(), share(), ticket.as_ref(), 0).unwrap();
            c.set_jobs(true);
            let mut s = Server::new(server.clone(), Wire::default());
            let jobs = pump_jobs(&mut c, &mut s).unwrap();
            assert!(c.is_established() && s.conn.is_established(), "{suites:?}");
            assert_eq!(jobs, want, "{suites:?} resumed {}", c.info().resumed);
            assert_eq!(c.info().peer.is_some(), !c.info().resumed);
            echo(&mut c, &mut s);
            ticket = c.ticket().cloned();
        }
    }
    // A failed step (a certificate for another name) fails the connection with its
    // alert, as inline.
    let cfg = Arc::new(ClientConfig {
        verifier: Some(Arc::new(
            ServerVerifier::new(Some(&ca().cert.to_pem().unwrap()), "other.example").unwrap(),
        )),
        ..(*cfg12(&[suite::ECDHE_ECDSA_AES128_GCM_SHA256])).clone()
    });
    let mut c = ClientConn::new(cfg, share(), None, 0).unwrap();
    c.set_jobs(true);
    let mut s = Server::new(server, Wire::default());
    let e = pump_jobs(&mut c, &mut s).unwrap_err();
    assert!(matches!(e, Error::BadCertificate { .. }), "{e}");
    assert!(c.is_closed());
    assert_eq!(c.pending_tls()[..2], [21, 3], "the alert is queued");
}
