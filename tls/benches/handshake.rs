//! Server-side full handshakes per second on one core, no network, in one run:
//! our engine and OpenSSL's libssl server, each against the same libssl client through
//! in-memory pipes, beside the per-core limit of the primitives every handshake must
//! run, measured now with `openssl speed`. Only the server's calls are timed.
//!
//!     cargo bench -p tls --bench handshake
//!
//! Not measured yet: resumed handshakes (the engine has no resumption yet) and rustls
//! (not a dependency yet).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use openssl::ssl::{
    ErrorCode, Ssl, SslAcceptor, SslContext, SslMethod, SslOptions, SslSessionCacheMode, SslStream,
    SslVersion,
};

struct Scenario {
    name: &'static str,
    kind: Kind,
    version: SslVersion,
    cipher: &'static str,
    /// `openssl speed` algorithms whose per-op times add up to one handshake's
    /// unavoidable work: the signature, and two X25519 operations (key generation
    /// and agreement).
    sign: &'static str,
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
    })
}

/// A fresh client connection and the wire it writes to.
fn new_client(ctx: &SslContext) -> (SslStream<ClientEnd>, Wire) {
    let wire = Wire::default();
    let mut ssl = Ssl::new(ctx).unwrap();
    ssl.set_hostname("test.example").unwrap();
    (SslStream::new(ssl, ClientEnd(wire.clone())).unwrap(), wire)
}

fn engine_run(s: &Scenario) -> Duration {
    let mut cfg = config_with(&[s.kind]);
    cfg.groups = vec![29]; // X25519
    let cfg = Arc::new(cfg);
    let ctx = scenario_client(s);
    let mut server_time = Duration::ZERO;
    for _ in 0..s.count {
        let (mut client, wire) = new_client(&ctx);
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
    // Like our engine today: no tickets, no session cache.
    a.set_options(SslOptions::NO_TICKET);
    a.set_session_cache_mode(SslSessionCacheMode::OFF);
    a.set_num_tickets(0).unwrap();
    let acceptor = a.build();
    let ctx = scenario_client(s);
    let mut server_time = Duration::ZERO;
    for _ in 0..s.count {
        let (mut client, wire) = new_client(&ctx);
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
    }
    server_time
}

fn main() {
    let scenarios = [
        Scenario {
            name: "TLS 1.2 ECDHE-RSA-2048 AES128-GCM",
            kind: Kind::Rsa2048,
            version: SslVersion::TLS1_2,
            cipher: "ECDHE-RSA-AES128-GCM-SHA256",
            sign: "rsa2048",
            count: 200,
        },
        Scenario {
            name: "TLS 1.2 ECDHE-ECDSA-P256 AES128-GCM",
            kind: Kind::P256,
            version: SslVersion::TLS1_2,
            cipher: "ECDHE-ECDSA-AES128-GCM-SHA256",
            sign: "ecdsap256",
            count: 1000,
        },
        Scenario {
            name: "TLS 1.3 ECDSA-P256 X25519 AES128-GCM",
            kind: Kind::P256,
            version: SslVersion::TLS1_3,
            cipher: "",
            sign: "ecdsap256",
            count: 1000,
        },
    ];
    let x25519 = speed("ecdhx25519");
    println!("openssl speed: X25519 {:.1} µs/op", x25519 * 1e6);
    println!(
        "| Handshake (server side, one core) | limit µs | engine µs | engine hs/s | engine % of limit | libssl µs | engine ÷ libssl speed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for s in &scenarios {
        let sign = speed(s.sign);
        let limit = sign + 2.0 * x25519;
        // Warm up both, then measure.
        let warm = Scenario { count: 20, ..*s };
        engine_run(&warm);
        libssl_run(&warm);
        let ours = engine_run(s).as_secs_f64() / s.count as f64;
        let theirs = libssl_run(s).as_secs_f64() / s.count as f64;
        println!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.0}% | {:.1} | {:.2}× |",
            s.name,
            limit * 1e6,
            ours * 1e6,
            1.0 / ours,
            limit / ours * 100.0,
            theirs * 1e6,
            theirs / ours
        );
    }
}
