//! Staged plaintext (the transmittal conditions' half in the engine): small writes
//! held, sealed into records of a chosen size, the rest kept, and nothing lost at
//! close. A libssl client reads the result.

mod common;

use std::io::Read;
use std::sync::Arc;

use common::*;
use openssl::ssl::SslVersion;

#[test]
fn staged_writes_seal_by_size_and_close_loses_nothing() {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    for (v, suite, overhead) in [
        (SslVersion::TLS1_3, None, 22),
        (
            SslVersion::TLS1_2,
            Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
            29,
        ),
        (
            SslVersion::TLS1_2,
            Some("ECDHE-ECDSA-CHACHA20-POLY1305"),
            21,
        ),
    ] {
        let ctx = client_ctx(v, v, |b| {
            if let Some(s) = suite {
                b.set_cipher_list(s).unwrap();
            }
        });
        let (mut c, mut s) = connect(&ctx, cfg.clone(), Some("test.example")).unwrap();
        // Whatever the handshake left (TLS 1.3 tickets) goes to the wire; the records
        // counted below are the engine's pending output only.
        s.pump().unwrap();
        assert_eq!(s.conn.record_overhead(), overhead, "{v:?} {suite:?}");

        let data: Vec<u8> = (0..1050u32).map(|i| i as u8).collect();
        for piece in data[..1000].chunks(100) {
            assert_eq!(s.conn.stage(piece), 100);
        }
        assert_eq!(s.conn.staged(), 1000);
        assert!(s.conn.pending_tls().is_empty(), "staged, not sealed");
        // Only whole 300-byte records; 100 bytes stay.
        let sealed = s.conn.seal_staged(300, false).unwrap();
        assert_eq!((sealed.records, sealed.bytes), (3, 900));
        assert_eq!(s.conn.staged(), 100);
        assert_eq!(
            record_lengths(s.conn.pending_tls(), overhead),
            vec![300, 300, 300]
        );
        // More staged, then close: the 150 staged bytes leave before close_notify.
        assert_eq!(s.conn.stage(&data[1000..]), 50);
        let room = s.conn.stage_room();
        assert!(room > 0 && room < tls::server::MAX_TLS_BUFFERED);
        s.conn.close();
        assert_eq!(s.conn.stage(b"too late"), 0);
        s.pump().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, data, "{v:?} {suite:?}: every staged byte, in order");
    }
}
