//! The TLS 1.3 key schedule's primitives per call on one core: HMAC, HKDF-Expand-Label
//! and a transcript snapshot, for SHA-256 and SHA-384, and what a full TLS 1.3
//! handshake's schedule costs in them (22 HMACs, 4 snapshots: see the engine's jobs);
//! then the CertificateVerify signature (ECDSA P-256 and P-384, RSA-2048 PSS over the
//! 130-byte TLS 1.3 content) on each primitive backend (`[crypto] primitives`) beside
//! `openssl speed`'s signature in the same run, OpenSSL's floor.
//!
//!     cargo bench -p crypto-offload --bench key_schedule -- [--seconds S]
//!
//! Prints one markdown table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crypto_offload::prim::{
    hkdf_expand, hmac, use_primitives, AeadAlg, AeadKey, HashAlg, Primitives, SigAlg, SigningKey,
    TranscriptHash,
};

/// Microseconds per signature from `openssl speed -seconds 2 ALG` (the sign/s column,
/// second to last).
fn speed_sign(alg: &str) -> Option<f64> {
    let o = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "2", alg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let words: Vec<&str> = text.lines().last()?.split_whitespace().collect();
    let per_sec: f64 = words.get(words.len().checked_sub(2)?)?.parse().ok()?;
    (per_sec > 0.0).then(|| 1e6 / per_sec)
}

/// Microseconds per call of `f`, run for about `secs`.
fn per_op(secs: f64, mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let secs = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    println!("| hash | HMAC (32 B key, 64 B message) µs | HKDF-Expand-Label µs | transcript snapshot µs | a TLS 1.3 handshake's schedule (22 HMACs + 4 snapshots) µs |");
    println!("|---|---:|---:|---:|---:|");
    for (alg, name) in [(HashAlg::Sha256, "SHA-256"), (HashAlg::Sha384, "SHA-384")] {
        let key = vec![0x42u8; alg.output_len()];
        let msg = [7u8; 64];
        let h = per_op(secs, || {
            black_box(hmac(alg, black_box(&key), &[&msg]).unwrap());
        });
        // HKDF-Expand-Label (RFC 8446 §7.1; the `tls` crate's) is HKDF-Expand over
        // this info: the length, "tls13 " and the label, the context.
        let info = [&[0, 32, 18][..], b"tls13 c hs traffic", &[32], &msg[..32]].concat();
        let e = per_op(secs, || {
            black_box(hkdf_expand(alg, black_box(&key), &info, 32).unwrap());
        });
        let mut t = TranscriptHash::new(alg).unwrap();
        t.update(&[1u8; 700]).unwrap();
        let s = per_op(secs, || {
            black_box(t.current().unwrap());
        });
        println!(
            "| {name} | {h:.3} | {e:.3} | {s:.3} | {:.1} |",
            22.0 * h + 4.0 * s
        );
    }
    println!();
    println!("| AEAD key set-up (a record key: 4 per TLS 1.3 handshake) | µs |");
    println!("|---|---:|");
    for (alg, name, len) in [
        (AeadAlg::Aes128Gcm, "AES-128-GCM", 16),
        (AeadAlg::Aes256Gcm, "AES-256-GCM", 32),
        (AeadAlg::Chacha20Poly1305, "ChaCha20-Poly1305", 32),
    ] {
        let key = vec![0x11u8; len];
        let t = per_op(secs, || {
            black_box(AeadKey::new(alg, black_box(&key), true).unwrap());
        });
        println!("| {name} | {t:.3} |");
    }
    println!();
    println!("| CertificateVerify signature | engine µs (OpenSSL) | engine µs (AWS-LC primitives) | openssl speed µs | OpenSSL engine ÷ floor | AWS-LC ÷ OpenSSL engine |");
    println!("|---|---:|---:|---:|---:|---:|");
    let ec = |nid| {
        let group = openssl::ec::EcGroup::from_curve_name(nid).unwrap();
        let ec = openssl::ec::EcKey::generate(&group).unwrap();
        SigningKey::from_pem(&ec.private_key_to_pem().unwrap()).unwrap()
    };
    let rsa = || {
        let r = openssl::rsa::Rsa::generate(2048).unwrap();
        SigningKey::from_pem(&r.private_key_to_pem().unwrap()).unwrap()
    };
    for (name, key, alg, speed_alg) in [
        (
            "ECDSA P-256",
            ec(openssl::nid::Nid::X9_62_PRIME256V1),
            SigAlg::EcdsaSha256,
            "ecdsap256",
        ),
        (
            "ECDSA P-384",
            ec(openssl::nid::Nid::SECP384R1),
            SigAlg::EcdsaSha384,
            "ecdsap384",
        ),
        (
            "RSA-2048 PSS-SHA256",
            rsa(),
            SigAlg::RsaPssSha256,
            "rsa2048",
        ),
    ] {
        let content = [0x20u8; 130];
        let run = |p| {
            use_primitives(p);
            let t = per_op(secs, || {
                black_box(key.sign(alg, &[black_box(&content)]).unwrap());
            });
            use_primitives(Primitives::OpenSsl);
            t
        };
        let (t, aws) = (run(Primitives::OpenSsl), run(Primitives::AwsLc));
        match speed_sign(speed_alg) {
            Some(f) => println!(
                "| {name} | {t:.1} | {aws:.1} | {f:.1} | {:.2}× | {:.2}× |",
                t / f,
                aws / t
            ),
            None => println!(
                "| {name} | {t:.1} | {aws:.1} | (openssl speed unreadable) | | {:.2}× |",
                aws / t
            ),
        }
    }
}
