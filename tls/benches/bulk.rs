//! The record path alone, no network: what one core spends per MiB moving bulk
//! application data through the engine, beside the AEAD's own limit measured in the
//! same run (`openssl speed -evp aes-128-gcm -bytes 16384`).
//!
//!     cargo bench -p tls --bench bulk [-- --mib N]
//!
//! Both directions of an established connection (a libssl client through in-memory
//! pipes, TLS 1.3 and TLS 1.2 with AES-128-GCM), doing what the appliance's pumps do
//! with the engine, with plain buffers in place of the sockets:
//! - **seal** (a download: backend bytes to the client): plaintext staged from a
//!   "socket buffer" in 16 KiB reads, sealed into full 16 KiB records
//!   (`seal_staged`), the records copied out to a "send buffer";
//! - **open** (an upload): records the client sealed beforehand fed to `read_tls` in
//!   64 KiB reads, `process`, the plaintext copied out and consumed.
//!
//! Only the engine's calls and those copies are timed. Each direction's output is
//! checked once against what went in (the client decrypts the server's records; the
//! server's plaintext is compared), so the figure is for bytes that arrive intact.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use openssl::ssl::SslVersion;

const MIB: usize = 1 << 20;
/// What one socket read hands the engine (the appliance's ring gives up to a
/// contiguous piece of its buffer).
const READ: usize = 16 * 1024;
const TLS_READ: usize = 64 * 1024;

/// AES-128-GCM bytes per second on one core from `openssl speed` at 16 KiB.
fn gcm_limit() -> f64 {
    let o = Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            "2",
            "-evp",
            "aes-128-gcm",
            "-bytes",
            "16384",
        ])
        .output()
        .expect("openssl CLI");
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("AES-128-GCM"))
        .unwrap_or_else(|| panic!("cannot read `openssl speed` output: {text}"));
    let kb: f64 = line
        .split_whitespace()
        .last()
        .and_then(|w| w.strip_suffix('k'))
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("cannot read `openssl speed` output: {text}"));
    kb * 1000.0
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

struct Pair {
    client: openssl::ssl::SslStream<ClientEnd>,
    server: Server,
}

fn pair(version: SslVersion) -> Pair {
    let ctx = client_ctx(version, version, |b| {
        if version == SslVersion::TLS1_2 {
            b.set_cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256").unwrap();
        } else {
            b.set_ciphersuites("TLS_AES_128_GCM_SHA256").unwrap();
        }
    });
    let mut cfg = config_with(&[Kind::P256]);
    cfg.resumption = tls::Resumption::disabled();
    let (client, server) = connect(&ctx, Arc::new(cfg), Some("test.example"))
        .unwrap_or_else(|(c, s)| panic!("handshake: client {c}, server {s:?}"));
    Pair { client, server }
}

/// Puts what the server "transmitted" on the wire for the client to read.
fn to_client(p: &Pair, bytes: &[u8]) {
    p.server
        .wire
        .to_client
        .borrow_mut()
        .extend_from_slice(bytes);
}

/// Seals `mib` MiB of `data` (1 MiB) the way `seal_down` does; returns the time spent
/// and the bytes that went out. With `check`, the client decrypts them.
fn seal(p: &mut Pair, data: &[u8], mib: usize, check: bool) -> (Duration, usize) {
    let mut sendbuf = Vec::with_capacity(256 * 1024);
    let mut wire_bytes = 0;
    let mut got = Vec::new();
    let t0 = Instant::now();
    for _ in 0..mib {
        let mut pos = 0;
        while pos < data.len() {
            let t = &mut p.server.conn;
            let n = t.stage(&data[pos..(pos + READ).min(data.len())]);
            pos += n;
            t.seal_staged(tls::record::MAX_FRAGMENT, pos == data.len())
                .unwrap();
            // The flush: records into the socket's send buffer, which "transmits"
            // (empties) once it holds a window's worth.
            let out = t.pending_tls();
            sendbuf.extend_from_slice(out);
            let m = out.len();
            t.consume_tls(m);
            if sendbuf.len() >= 192 * 1024 {
                wire_bytes += sendbuf.len();
                if check {
                    to_client(p, &sendbuf);
                }
                sendbuf.clear();
            }
        }
    }
    wire_bytes += sendbuf.len();
    let elapsed = t0.elapsed();
    if check {
        to_client(p, &sendbuf);
        let mut buf = vec![0u8; MIB];
        while got.len() < mib * data.len() {
            let n = p.client.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.chunks(data.len()).all(|c| c == data),
            "the client read back what was sealed"
        );
    }
    (elapsed, wire_bytes)
}

/// Whether `got` is the periodic `data` from offset `at` (compared slice by slice).
fn matches(data: &[u8], at: usize, got: &[u8]) -> bool {
    let mut off = at % data.len();
    let mut rest = got;
    while !rest.is_empty() {
        let n = rest.len().min(data.len() - off);
        if rest[..n] != data[off..off + n] {
            return false;
        }
        rest = &rest[n..];
        off = 0;
    }
    true
}

/// Opens `mib` MiB the client sealed (outside the timing), the way `tls_step` does.
/// The comparison with what was sealed is timed apart and left out.
fn open(p: &mut Pair, data: &[u8], mib: usize) -> Duration {
    for _ in 0..mib {
        p.client.write_all(data).unwrap();
    }
    let records = std::mem::take(&mut *p.server.wire.to_server.borrow_mut());
    let mut sink = Vec::with_capacity(256 * 1024);
    let mut matched = 0usize;
    let mut ok = true;
    let mut pos = 0;
    let mut checking = Duration::ZERO;
    let t0 = Instant::now();
    while pos < records.len() {
        let t = &mut p.server.conn;
        let want = t.tls_room().min(TLS_READ).min(records.len() - pos);
        let n = t.read_tls(&records[pos..pos + want]);
        pos += n;
        t.process().unwrap();
        let plain = t.plaintext();
        sink.extend_from_slice(plain);
        let m = plain.len();
        t.consume_plaintext(m);
        if n == 0 && m == 0 {
            panic!("the engine took no record bytes and gave no plaintext");
        }
        if sink.len() >= 192 * 1024 {
            let c0 = Instant::now();
            ok &= matches(data, matched, &sink);
            matched += sink.len();
            sink.clear();
            checking += c0.elapsed();
        }
    }
    let elapsed = t0.elapsed() - checking;
    ok &= matches(data, matched, &sink);
    matched += sink.len();
    assert!(ok, "the server opened what the client sealed");
    assert_eq!(matched, mib * data.len(), "every byte came out");
    elapsed
}

fn main() {
    let mut mib = 256usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib" => mib = args.next().and_then(|v| v.parse().ok()).unwrap_or(mib),
            "--bench" => {}
            other => eprintln!("ignoring argument {other}"),
        }
    }
    let data = pattern(MIB);
    let limit = gcm_limit();
    let limit_us_per_mib = 1e6 * MIB as f64 / limit;
    println!(
        "openssl speed -evp aes-128-gcm -bytes 16384: {:.2} GB/s, {:.0} µs per MiB\n",
        limit / 1e9,
        limit_us_per_mib
    );
    println!("| connection | direction | MiB | µs per MiB | GB/s | ÷ AES-GCM limit | wire bytes per plaintext byte |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (name, version) in [
        ("TLS 1.3 AES-128-GCM", SslVersion::TLS1_3),
        ("TLS 1.2 AES-128-GCM", SslVersion::TLS1_2),
    ] {
        let mut p = pair(version);
        // Correctness first (untimed figures), then the measured runs.
        seal(&mut p, &data, 4, true);
        let (d, wire) = seal(&mut p, &data, mib, false);
        let us = d.as_secs_f64() * 1e6 / mib as f64;
        println!(
            "| {name} | seal (download) | {mib} | {us:.0} | {:.2} | {:.2} | {:.4} |",
            MIB as f64 / us / 1e3,
            limit_us_per_mib / us,
            wire as f64 / (mib * MIB) as f64
        );
        let mut p = pair(version);
        open(&mut p, &data, 4);
        let mut total = Duration::ZERO;
        // Sealed by the client in rounds, so its buffer stays bounded.
        let rounds = mib.div_ceil(64);
        for r in 0..rounds {
            total += open(&mut p, &data, (mib - r * 64).min(64));
        }
        let us = total.as_secs_f64() * 1e6 / mib as f64;
        println!(
            "| {name} | open (upload) | {mib} | {us:.0} | {:.2} | {:.2} | |",
            MIB as f64 / us / 1e3,
            limit_us_per_mib / us
        );
    }
}
