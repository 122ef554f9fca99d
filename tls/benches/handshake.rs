//! Server-side handshakes per second on one core, no network, in one run: our engine,
//! OpenSSL's libssl server and rustls's (with its aws-lc-rs provider: AWS-LC's
//! primitives, the fastest software anchor), each against the same libssl client
//! through in-memory pipes, beside the per-core limit of the primitives every
//! handshake must run, measured now with `openssl speed` (OpenSSL's primitives: the
//! limit of the engine and libssl, not of rustls). Only the server's calls are timed.
//! The last two columns run the engine again with `[crypto] primitives = "aws-lc"`
//! (its X25519, its signatures and its AEADs on AWS-LC, the rest on OpenSSL).
//!
//!     cargo bench -p tls --bench handshake
//!     HANDSHAKE_ONLY="TLS 1.3 ECDSA" cargo bench -p tls --bench handshake   # one scenario
//!
//! Full handshakes run with resumption off on every server (no ticket to seal);
//! resumed ones with it on, the client offering the session of an earlier connection.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use openssl::ssl::{
    ErrorCode, Ssl, SslAcceptor, SslContext, SslMethod, SslOptions, SslSession,
    SslSessionCacheMode, SslStream, SslVersion,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Resume {
    Full,
    /// TLS 1.2 session ID (the server keeps the session).
    SessionId,
    /// TLS 1.2 RFC 5077 ticket, or a TLS 1.3 ticket (PSK with X25519).
    Ticket,
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    kind: Kind,
    version: SslVersion,
    cipher: &'static str,
    resume: Resume,
    /// The `openssl speed` signature whose per-op time, with two X25519 operations
    /// (key generation and agreement) when the handshake has an ECDHE, adds up to one
    /// handshake's unavoidable work. `None`: no signature (resumption).
    sign: Option<&'static str>,
    count: usize,
}

/// Seconds per operation from `openssl speed -seconds 2 ALG` (single core): the
/// figure after the last time column is operations (or signatures) per second.
fn speed(alg: &str) -> f64 {
    let o = Command::new("openssl")
        .args(["speed", "-seconds", "2", alg])
        .output()
        .expect("openssl CLI");
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().last().unwrap_or_default();
    let words: Vec<&str> = line.split_whitespace().collect();
    let last_time = words
        .iter()
        .rposition(|w| {
            w.strip_suffix('s')
                .is_some_and(|n| n.parse::<f64>().is_ok())
        })
        .unwrap_or_else(|| panic!("cannot read `openssl speed {alg}` output: {text}"));
    let per_sec: f64 = words
        .get(last_time + 1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("cannot read `openssl speed {alg}` output: {text}"));
    1.0 / per_sec
}

/// The libssl client context both servers face in a scenario.
fn scenario_client(s: &Scenario) -> SslContext {
    client_ctx(s.version, s.version, |b| {
        if s.version == SslVersion::TLS1_2 {
            b.set_cipher_list(s.cipher).unwrap();
        }
        b.set_groups_list("X25519:P-256").unwrap();
        if s.resume == Resume::SessionId {
            b.set_options(SslOptions::NO_TICKET);
        }
    })
}

/// A fresh client connection (offering `session` if given) and the wire it writes to.
fn new_client(ctx: &SslContext, session: Option<&SslSession>) -> (SslStream<ClientEnd>, Wire) {
    let wire = Wire::default();
    let mut ssl = Ssl::new(ctx).unwrap();
    ssl.set_hostname("test.example").unwrap();
    if let Some(sess) = session {
        // SAFETY: the session came from a connection of this same client context.
        unsafe { ssl.set_session(sess).unwrap() };
    }
    (SslStream::new(ssl, ClientEnd(wire.clone())).unwrap(), wire)
}

/// After a handshake: read a byte the server sent (so a TLS 1.3 client takes its ticket
/// in), check resumption was what the scenario asked for, and close cleanly (libssl
/// does not resume a session whose connection was freed without close_notify).
fn finish_client(mut client: SslStream<ClientEnd>, s: &Scenario, offered: bool) -> SslSession {
    let mut b = [0u8; 1];
    client.read_exact(&mut b).unwrap();
    assert_eq!(client.ssl().session_reused(), offered, "{}", s.name);
    let session = client.ssl().session().unwrap().to_owned();
    client.shutdown().unwrap();
    session
}

fn engine_run(s: &Scenario) -> Duration {
    let mut cfg = config_with(&[s.kind]);
    cfg.groups = vec![29]; // X25519
    if s.resume == Resume::Full {
        cfg.resumption = tls::Resumption::disabled();
    }
    let cfg = Arc::new(cfg);
    let ctx = scenario_client(s);
    let mut server_time = Duration::ZERO;
    let mut session: Option<SslSession> = None;
    for _ in 0..s.count + 1 {
        let (mut client, wire) = new_client(&ctx, session.as_ref());
        let mut server = Server::new(cfg.clone(), wire);
        loop {
            match client.connect() {
                Ok(()) => break,
                Err(e) if e.code() == ErrorCode::WANT_READ => {
                    let t0 = Instant::now();
                    server.pump().expect("engine handshake");
                    server_time += t0.elapsed();
                }
                Err(e) => panic!("client: {e}"),
            }
        }
        let t0 = Instant::now();
        server.pump().unwrap();
        server_time += t0.elapsed();
        assert!(server.conn.is_established());
        server.conn.send(b"x").unwrap();
        server.pump().unwrap();
        let offered = session.is_some();
        let kept = finish_client(client, s, offered);
        if s.resume == Resume::Full {
            continue;
        }
        if !offered {
            // The first connection only makes the session; it is not counted.
            server_time = Duration::ZERO;
            session = Some(kept);
        }
    }
    server_time
}

fn libssl_run(s: &Scenario) -> Duration {
    let (chain, key) = cert_pem(s.kind);
    let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    let certs = openssl::x509::X509::stack_from_pem(chain).unwrap();
    a.set_certificate(&certs[0]).unwrap();
    for c in &certs[1..] {
        a.add_extra_chain_cert(c.clone()).unwrap();
    }
    a.set_private_key(&openssl::pkey::PKey::private_key_from_pem(key).unwrap())
        .unwrap();
    a.set_groups_list("X25519").unwrap();
    match s.resume {
        // Like our engine's full-handshake rows: no tickets, no session cache.
        Resume::Full => {
            a.set_options(SslOptions::NO_TICKET);
            a.set_session_cache_mode(SslSessionCacheMode::OFF);
            a.set_num_tickets(0).unwrap();
        }
        // Like our engine: one ticket per TLS 1.3 connection; a cache for session IDs.
        Resume::SessionId | Resume::Ticket => {
            a.set_session_cache_mode(SslSessionCacheMode::SERVER);
            a.set_session_id_context(b"bench").unwrap();
            a.set_num_tickets(1).unwrap();
        }
    }
    let acceptor = a.build();
    let ctx = scenario_client(s);
    let mut server_time = Duration::ZERO;
    let mut session: Option<SslSession> = None;
    for _ in 0..s.count + 1 {
        let (client, wire) = new_client(&ctx, session.as_ref());
        let mut client = client;
        let swapped = Wire {
            to_server: wire.to_client.clone(),
            to_client: wire.to_server.clone(),
        };
        let t0 = Instant::now();
        let mut server =
            SslStream::new(Ssl::new(acceptor.context()).unwrap(), ClientEnd(swapped)).unwrap();
        server_time += t0.elapsed();
        let mut server_done = false;
        loop {
            let c = client.connect();
            if !server_done {
                let t0 = Instant::now();
                match server.accept() {
                    Ok(()) => server_done = true,
                    Err(e) if e.code() == ErrorCode::WANT_READ => {}
                    Err(e) => panic!("libssl server: {e}"),
                }
                server_time += t0.elapsed();
            }
            match c {
                Ok(()) if server_done => break,
                Ok(()) => {}
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => panic!("client: {e}"),
            }
        }
        // Prove the session works both ways (untimed).
        client.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        server.write_all(b"y").unwrap();
        let offered = session.is_some();
        let kept = finish_client(client, s, offered);
        // A server connection freed without close_notify drops its session from the
        // cache, as the client side does.
        let _ = server.shutdown();
        if s.resume == Resume::Full {
            continue;
        }
        if !offered {
            server_time = Duration::ZERO;
            session = Some(kept);
        }
    }
    server_time
}

/// rustls's server for a scenario: aws-lc-rs, X25519 only (as the others), the
/// scenario's version; no resumption for full handshakes, a session cache for TLS 1.2
/// session IDs, stateless tickets (one per TLS 1.3 connection) otherwise.
fn rustls_config(s: &Scenario) -> Arc<rustls::ServerConfig> {
    use rustls::crypto::{aws_lc_rs as provider, CryptoProvider};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let (chain, key) = cert_pem(s.kind);
    let certs: Vec<CertificateDer<'static>> = openssl::x509::X509::stack_from_pem(chain)
        .unwrap()
        .iter()
        .map(|c| CertificateDer::from(c.to_der().unwrap()))
        .collect();
    let der = openssl::pkey::PKey::private_key_from_pem(key)
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap();
    let p = CryptoProvider {
        kx_groups: vec![provider::kx_group::X25519],
        ..provider::default_provider()
    };
    let version = if s.version == SslVersion::TLS1_2 {
        &rustls::version::TLS12
    } else {
        &rustls::version::TLS13
    };
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)))
        .unwrap();
    match s.resume {
        Resume::Full => {
            c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            c.send_tls13_tickets = 0;
        }
        Resume::SessionId => c.send_tls13_tickets = 0,
        Resume::Ticket => {
            c.ticketer = provider::Ticketer::new().unwrap();
            c.send_tls13_tickets = 1;
        }
    }
    Arc::new(c)
}

/// Feeds rustls what the client wrote and writes out what it has to say.
fn rustls_pump(server: &mut rustls::ServerConnection, wire: &Wire) {
    let input = std::mem::take(&mut *wire.to_server.borrow_mut());
    let mut rd = &input[..];
    while !rd.is_empty() {
        server.read_tls(&mut rd).unwrap();
        server.process_new_packets().expect("rustls server");
    }
    let mut out = wire.to_client.borrow_mut();
    while server.wants_write() {
        server.write_tls(&mut *out).unwrap();
    }
}

fn rustls_run(s: &Scenario) -> Duration {
    let cfg = rustls_config(s);
    let ctx = scenario_client(s);
    let mut server_time = Duration::ZERO;
    let mut session: Option<SslSession> = None;
    for _ in 0..s.count + 1 {
        let (mut client, wire) = new_client(&ctx, session.as_ref());
        let t0 = Instant::now();
        let mut server = rustls::ServerConnection::new(cfg.clone()).unwrap();
        server_time += t0.elapsed();
        let mut client_done = false;
        loop {
            if !client_done {
                match client.connect() {
                    Ok(()) => client_done = true,
                    Err(e) if e.code() == ErrorCode::WANT_READ => {}
                    Err(e) => panic!("client: {e}"),
                }
            }
            let t0 = Instant::now();
            rustls_pump(&mut server, &wire);
            server_time += t0.elapsed();
            if client_done && !server.is_handshaking() {
                break;
            }
        }
        // Prove the session works (untimed): a byte to the client, which takes a TLS
        // 1.3 ticket in with it.
        server.writer().write_all(b"x").unwrap();
        rustls_pump(&mut server, &wire);
        let offered = session.is_some();
        let kept = finish_client(client, s, offered);
        if s.resume == Resume::Full {
            continue;
        }
        if !offered {
            server_time = Duration::ZERO;
            session = Some(kept);
        }
    }
    server_time
}

fn main() {
    let full = |name, kind, version, cipher, sign, count| Scenario {
        name,
        kind,
        version,
        cipher,
        resume: Resume::Full,
        sign: Some(sign),
        count,
    };
    let resumed = |name, version, cipher, resume| Scenario {
        name,
        kind: Kind::P256,
        version,
        cipher,
        resume,
        sign: None,
        count: 2000,
    };
    let v12 = SslVersion::TLS1_2;
    let v13 = SslVersion::TLS1_3;
    let scenarios = [
        full(
            "TLS 1.2 ECDHE-RSA-2048 AES128-GCM",
            Kind::Rsa2048,
            v12,
            "ECDHE-RSA-AES128-GCM-SHA256",
            "rsa2048",
            200,
        ),
        full(
            "TLS 1.2 ECDHE-ECDSA-P256 AES128-GCM",
            Kind::P256,
            v12,
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ecdsap256",
            1000,
        ),
        full(
            "TLS 1.3 ECDSA-P256 X25519 AES128-GCM",
            Kind::P256,
            v13,
            "",
            "ecdsap256",
            1000,
        ),
        resumed(
            "TLS 1.2 resumed, session ID",
            v12,
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            Resume::SessionId,
        ),
        resumed(
            "TLS 1.2 resumed, ticket",
            v12,
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            Resume::Ticket,
        ),
        resumed("TLS 1.3 resumed, PSK + X25519", v13, "", Resume::Ticket),
    ];
    let x25519 = speed("ecdhx25519");
    println!("openssl speed: X25519 {:.1} µs/op", x25519 * 1e6);
    println!(
        "| Handshake (server side, one core) | limit µs | engine µs | engine hs/s | engine % of limit | libssl µs | engine ÷ libssl speed | rustls (aws-lc-rs) µs | engine ÷ rustls speed | engine, AWS-LC primitives µs | that ÷ rustls speed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // `HANDSHAKE_ONLY=TEXT` runs only the scenarios whose name contains TEXT (to profile one).
    let only = std::env::var("HANDSHAKE_ONLY").unwrap_or_default();
    for s in scenarios.iter().filter(|s| s.name.contains(only.as_str())) {
        // The asymmetric work no server can skip: the signature of a full handshake,
        // and key generation plus agreement when there is an (EC)DHE.
        let ecdhe = s.version == v13 || s.resume == Resume::Full;
        let limit = s.sign.map_or(0.0, speed) + if ecdhe { 2.0 * x25519 } else { 0.0 };
        // Warm up all three, then measure.
        let warm = Scenario { count: 20, ..*s };
        engine_run(&warm);
        libssl_run(&warm);
        rustls_run(&warm);
        let ours = engine_run(s).as_secs_f64() / s.count as f64;
        let theirs = libssl_run(s).as_secs_f64() / s.count as f64;
        let rustls = rustls_run(s).as_secs_f64() / s.count as f64;
        // The engine again with `[crypto] primitives = "aws-lc"` (its X25519 and its
        // signatures on AWS-LC).
        crypto_offload::use_primitives(crypto_offload::Primitives::AwsLc);
        engine_run(&warm);
        let aws = engine_run(s).as_secs_f64() / s.count as f64;
        crypto_offload::use_primitives(crypto_offload::Primitives::OpenSsl);
        let (limit_col, pct) = if limit > 0.0 {
            (
                format!("{:.1}", limit * 1e6),
                format!("{:.0}%", limit / ours * 100.0),
            )
        } else {
            ("—".into(), "—".into())
        };
        println!(
            "| {} | {} | {:.1} | {:.0} | {} | {:.1} | {:.2}× | {:.1} | {:.2}× | {:.1} | {:.2}× |",
            s.name,
            limit_col,
            ours * 1e6,
            1.0 / ours,
            pct,
            theirs * 1e6,
            theirs / ours,
            rustls * 1e6,
            rustls / ours,
            aws * 1e6,
            rustls / aws
        );
    }
}
