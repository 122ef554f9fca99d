//! The server's side of a TLS 1.3 key exchange per core, by group: what
//! `crypto_offload::prim::respond` costs (a fresh key and the agreement for (EC)DHE;
//! for the post-quantum hybrid X25519MLKEM768 also the ML-KEM-768 encapsulation and
//! its key check), beside `openssl speed` for the same (EC)DH in the same run (one
//! derivation per op: the server does a key generation on top, so two of them are the
//! limit). OpenSSL 3.0 has no ML-KEM, so the hybrid row has no libcrypto limit; its
//! cost is shown against X25519's. The client's side of the hybrid (key generation and
//! decapsulation) is timed too: it is what a load generator pays per handshake. The
//! "on AWS-LC" rows are the same with `[crypto] primitives = "aws-lc"` (X25519 on
//! AWS-LC; the limit stays OpenSSL's).
//!
//!     cargo bench -p crypto-offload --bench key_exchange -- [--seconds S]
//!
//! Prints one markdown table.

use std::process::Command;
use std::time::{Duration, Instant};

use crypto_offload::prim::respond;
use crypto_offload::{EphemeralKey, Group};

/// Microseconds per operation of `f`, run for about `secs`.
fn per_op(secs: f64, mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..50 {
            f();
        }
        n += 50;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Microseconds per derivation from `openssl speed -seconds S ALG` (the figure after
/// the last time column is operations per second).
fn speed(alg: &str, secs: f64) -> Option<f64> {
    let secs = format!("{}", secs.ceil().max(1.0) as u64);
    let o = Command::new("openssl")
        .args(["speed", "-seconds", &secs, alg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().last()?;
    let ops: f64 = line.split_whitespace().last()?.parse().ok()?;
    (ops > 0.0).then(|| 1e6 / ops)
}

fn main() {
    let mut secs = 2.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                secs = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&s: &f64| s > 0.0)
                    .unwrap_or_else(|| {
                        eprintln!("--seconds needs a positive number");
                        std::process::exit(2)
                    })
            }
            "--bench" => {}
            o => {
                eprintln!("unknown argument {o:?} (known: --seconds S)");
                std::process::exit(2)
            }
        }
    }
    println!("| Group (server side, one core) | limit µs | respond µs | ÷ X25519 | client keygen + agree µs | share bytes (client / server) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut x25519_us = None;
    for (name, group, speed_alg) in [
        ("X25519", Group::X25519, Some("ecdhx25519")),
        ("X25519 on AWS-LC", Group::X25519, None),
        ("P-256", Group::P256, Some("ecdhp256")),
        ("P-384", Group::P384, Some("ecdhp384")),
        ("P-521", Group::P521, Some("ecdhp521")),
        ("X448", Group::X448, Some("ecdhx448")),
        ("X25519MLKEM768", Group::X25519MlKem768, None),
        ("X25519MLKEM768 on AWS-LC", Group::X25519MlKem768, None),
    ] {
        // `[crypto] primitives`: the AWS-LC row runs X25519 on AWS-LC, the rest on OpenSSL.
        let aws = name.ends_with("AWS-LC");
        crypto_offload::use_primitives(if aws {
            crypto_offload::Primitives::AwsLc
        } else {
            crypto_offload::Primitives::OpenSsl
        });
        let (_, client_share) = EphemeralKey::generate(group).unwrap();
        let (server_share, _) = respond(group, &client_share).unwrap();
        let server = per_op(secs, || {
            let r = respond(group, &client_share).unwrap();
            std::hint::black_box(r);
        });
        let client = per_op(secs, || {
            let (k, _) = EphemeralKey::generate(group).unwrap();
            // The agreement with a share made for another key still runs every step
            // (ML-KEM's implicit rejection), so its cost is the real one.
            let s = k.agree(&server_share).unwrap();
            std::hint::black_box(s);
        });
        let limit = speed_alg
            .and_then(|a| speed(a, secs))
            .map_or("—".to_string(), |us| format!("{:.1}", 2.0 * us));
        if group == Group::X25519 && !aws {
            x25519_us = Some(server);
        }
        let ratio = x25519_us.map_or("—".to_string(), |x| format!("{:.2}×", server / x));
        println!(
            "| {name} | {limit} | {server:.1} | {ratio} | {client:.1} | {} / {} |",
            client_share.len(),
            server_share.len()
        );
    }
}
