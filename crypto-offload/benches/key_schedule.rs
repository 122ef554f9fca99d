//! The TLS 1.3 key schedule's primitives per call on one core: HMAC, HKDF-Expand-Label
//! and a transcript snapshot, for SHA-256 and SHA-384, and what a full TLS 1.3
//! handshake's schedule costs in them (22 HMACs, 4 snapshots: see the engine's jobs).
//! `openssl speed -evp sha256` in the same run gives the digest's own cost for scale.
//!
//!     cargo bench -p crypto-offload --bench key_schedule -- [--seconds S]
//!
//! Prints one markdown table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crypto_offload::prim::{hkdf_expand_label, hmac, HashAlg, TranscriptHash};

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
        let e = per_op(secs, || {
            black_box(
                hkdf_expand_label(alg, black_box(&key), b"c hs traffic", &msg[..32], 32).unwrap(),
            );
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
}
