//! Broken and hostile input: every case gets the RFC's alert and a closed connection,
//! never a panic; stalled handshakes time out; buffers are bounded. Ends with a
//! deterministic mutation run over a real ClientHello (what CI runs in place of the
//! fuzzers, which need nightly).

mod common;

use std::sync::Arc;

use common::*;
use openssl::ssl::{ErrorCode, Ssl, SslStream, SslVersion};
use tls::error::alert;
use tls::{Error, ServerConn};

fn conn() -> ServerConn {
    ServerConn::new(Arc::new(config_with(&[Kind::P256])), 0)
}

/// Feed `bytes` and return the error and the plaintext alert description sent.
fn feed(bytes: &[u8]) -> (Error, u8) {
    let mut c = conn();
    c.read_tls(bytes);
    let mut r = c.process();
    while let Some(j) = c.take_job() {
        r = c.complete(crypto_offload::run(j));
    }
    let e = r.expect_err("input must be refused");
    let out = c.pending_tls().to_vec();
    assert_eq!(&out[..5], &[21, 3, 3, 0, 2], "a plaintext alert record");
    assert_eq!(out[5], 2, "fatal");
    assert!(c.is_closed());
    assert_eq!(c.read_tls(b"more"), 0, "a closed connection takes nothing");
    (e, out[6])
}

fn record(typ: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![typ, 3, 1];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A real ClientHello from libssl (the first flight of a TLS 1.3 client).
fn real_client_hello() -> Vec<u8> {
    let ctx = client_ctx(SslVersion::TLS1_2, SslVersion::TLS1_3, |_| {});
    let wire = Wire::default();
    let mut ssl = Ssl::new(&ctx).unwrap();
    ssl.set_hostname("test.example").unwrap();
    let mut s = SslStream::new(ssl, ClientEnd(wire.clone())).unwrap();
    assert_eq!(s.connect().unwrap_err().code(), ErrorCode::WANT_READ);
    let ch = wire.to_server.borrow().clone();
    ch
}

#[test]
fn record_layer_errors() {
    assert_eq!(feed(&record(99, &[1, 2])).1, alert::UNEXPECTED_MESSAGE);
    assert_eq!(feed(&[22, 3, 1, 0x48, 0x01]).1, alert::RECORD_OVERFLOW);
    assert_eq!(feed(&record(22, &[])).1, alert::DECODE_ERROR);
    assert_eq!(feed(&[22, 9, 9, 0, 1, 1]).1, alert::DECODE_ERROR);
    assert_eq!(
        feed(&record(23, b"early data")).1,
        alert::UNEXPECTED_MESSAGE
    );
    assert_eq!(feed(&record(21, &[2])).1, alert::DECODE_ERROR);
    assert_eq!(feed(&record(20, &[1])).1, alert::UNEXPECTED_MESSAGE);
}

#[test]
fn handshake_errors() {
    // Finished (or anything) before ClientHello.
    assert_eq!(
        feed(&record(22, &[20, 0, 0, 1, 0])).1,
        alert::UNEXPECTED_MESSAGE
    );
    // A message longer than the engine accepts.
    assert_eq!(
        feed(&record(22, &[1, 0xff, 0xff, 0xff])).1,
        alert::DECODE_ERROR
    );
    // A ClientHello whose insides do not add up.
    assert_eq!(
        feed(&record(22, &[1, 0, 0, 3, 3, 3, 0])).1,
        alert::DECODE_ERROR
    );
    // A real ClientHello with its first cipher-suite length byte broken.
    let ch = real_client_hello();
    let mut bad = ch.clone();
    bad[5 + 4 + 2 + 32 + 1 + 32] ^= 0x40; // high byte of the suites length
    assert_eq!(feed(&bad).1, alert::DECODE_ERROR);
    // Data after the ClientHello in its record, across a TLS 1.3 key change.
    let mut extra = ch[5..].to_vec();
    extra.extend_from_slice(&[20, 0, 0, 0]);
    assert_eq!(feed(&record(22, &extra)).1, alert::UNEXPECTED_MESSAGE);
}

#[test]
fn corrupted_finished_gets_bad_record_mac() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    for v in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
        let ctx = client_ctx(v, v, |_| {});
        let wire = Wire::default();
        let mut ssl = Ssl::new(&ctx).unwrap();
        ssl.set_hostname("test.example").unwrap();
        let mut client = SslStream::new(ssl, ClientEnd(wire.clone())).unwrap();
        let mut server = Server::new(cfg.clone(), wire.clone());
        let _ = client.connect();
        server.pump().unwrap();
        // The client's next flight ends with its protected Finished: flip its last byte.
        let _ = client.connect();
        {
            let mut q = wire.to_server.borrow_mut();
            let n = q.len();
            q[n - 1] ^= 1;
        }
        assert_eq!(server.pump().unwrap_err(), Error::BadRecordMac, "{v:?}");
        assert!(server.conn.is_closed());
    }
}

#[test]
fn stalled_handshake_times_out_and_buffers_are_bounded() {
    let mut c = ServerConn::new(Arc::new(config_with(&[Kind::P256])), 1_000);
    let ch = real_client_hello();
    c.read_tls(&ch[..20]);
    c.process().unwrap();
    assert_eq!(c.deadline(), Some(11_000));
    c.handle_timeout(10_999).unwrap();
    assert_eq!(
        c.handle_timeout(11_000).unwrap_err(),
        Error::HandshakeTimeout
    );
    assert!(c.is_closed());
    assert!(c.pending_tls().is_empty(), "a timeout sends no alert");

    let mut c = conn();
    let flood = vec![23u8; 1 << 20];
    let taken = c.read_tls(&flood);
    assert!(taken <= tls::record::MAX_BUFFERED, "took {taken}");
    assert_eq!(c.read_tls(&flood), 0, "full until processed");
}

/// Deterministic mutations of a real ClientHello: flips, truncations, length fields
/// and splices. The engine must answer each with progress or an alert, never a panic.
#[test]
fn twenty_thousand_mutated_client_hellos() {
    let ch = real_client_hello();
    let cfg = Arc::new(config_with(&[Kind::P256, Kind::Rsa2048]));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut refused, mut progressed) = (0, 0);
    for _ in 0..20_000 {
        let mut m = ch.clone();
        match next() % 4 {
            0 => {
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % m.len();
                    m[i] ^= 1 << (next() % 8);
                }
            }
            1 => m.truncate((next() as usize) % m.len()),
            2 => {
                let i = (next() as usize) % (m.len() - 1);
                m[i] = 0xff;
                m[i + 1] = next() as u8;
            }
            _ => {
                let i = (next() as usize) % m.len();
                let j = (next() as usize) % m.len();
                let piece = m[j..].to_vec();
                m.truncate(i);
                m.extend_from_slice(&piece);
            }
        }
        let mut c = ServerConn::new(cfg.clone(), 0);
        c.read_tls(&m);
        let mut r = c.process();
        while let Some(j) = c.take_job() {
            r = c.complete(crypto_offload::run(j));
        }
        if r.is_err() {
            refused += 1;
            assert!(c.is_closed());
        } else {
            progressed += 1;
        }
    }
    assert!(
        refused > 1000 && progressed > 1000,
        "refused {refused}, progressed {progressed}"
    );
}
