//! Record offload: application records protected by record jobs instead of on the
//! engine's core. A libssl client on the other end checks every byte and alert.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::*;
use crypto_offload::{CryptoError, Done, Job, RecordJob};
use openssl::ssl::{SslContext, SslVersion};

const V12: SslVersion = SslVersion::TLS1_2;
const V13: SslVersion = SslVersion::TLS1_3;

fn kinds() -> Vec<(SslVersion, Option<&'static str>, &'static str)> {
    vec![
        (V13, None, "TLS_AES_128_GCM_SHA256"),
        (V13, None, "TLS_CHACHA20_POLY1305_SHA256"),
        (V12, Some("ECDHE-ECDSA-AES256-GCM-SHA384"), ""),
        (V12, Some("ECDHE-ECDSA-CHACHA20-POLY1305"), ""),
    ]
}

fn ctx_for(v: SslVersion, suite12: Option<&str>, suite13: &str) -> SslContext {
    client_ctx(v, v, |b| {
        if let Some(s) = suite12 {
            b.set_cipher_list(s).unwrap();
        }
        if !suite13.is_empty() {
            b.set_ciphersuites(suite13).unwrap();
        }
    })
}

fn offloaded(ctx: &SslContext) -> (openssl::ssl::SslStream<ClientEnd>, Server) {
    let cfg = Arc::new(config_with(&[Kind::P256]));
    let (c, mut s) = connect(ctx, cfg, Some("test.example")).unwrap();
    s.conn.set_record_offload(true);
    (c, s)
}

#[test]
fn bulk_both_ways_through_record_jobs() {
    for (v, s12, s13) in kinds() {
        let (mut c, mut s) = offloaded(&ctx_for(v, s12, s13));
        for size in [1usize, 100, 16_384, 70_000, 200_001] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            echo(&mut c, &mut s, &data);
        }
        assert!(!s.conn.sealing() && !s.conn.input_pending(), "{v:?} {s13}");
    }
}

#[test]
fn cut_records_wait_for_their_job_and_close_follows_them() {
    let (mut c, mut s) = offloaded(&ctx_for(V13, None, ""));
    s.pump().unwrap();
    let data: Vec<u8> = (0..1050u32).map(|i| i as u8).collect();
    for piece in data[..1000].chunks(100) {
        assert_eq!(s.conn.stage(piece), 100);
    }
    let sealed = s.conn.seal_staged(300, false).unwrap();
    assert_eq!((sealed.records, sealed.bytes), (3, 900));
    assert_eq!(s.conn.staged(), 100, "cut bytes are no longer staged");
    assert!(s.conn.sealing() && s.conn.pending_tls().is_empty());
    // The job: exactly the three records.
    let work = s.conn.take_records(1).unwrap().expect("records to seal");
    assert!(work.open.is_none());
    assert_eq!(work.seal.as_ref().unwrap().ops.len(), 3);
    assert!(
        s.conn.take_records(1).unwrap().is_none(),
        "one job at a time"
    );
    // Meanwhile: staging goes on, closing waits for the records.
    assert_eq!(s.conn.stage(&data[1000..]), 50);
    s.conn.close();
    assert!(s.conn.pending_tls().is_empty());
    let Done::Records(mut done) =
        crypto_offload::run(Job::Records(RecordJob { items: vec![work] })).unwrap()
    else {
        panic!("records")
    };
    s.conn.complete_records(done.items.pop().unwrap()).unwrap();
    assert_eq!(
        record_lengths(s.conn.pending_tls(), 22),
        vec![300, 300, 300]
    );
    // The close: 150 bytes then close_notify in the next job.
    assert!(s.conn.sealing());
    s.pump().unwrap();
    assert!(!s.conn.sealing());
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, data, "every byte, in order, then close_notify");
}

#[test]
fn key_update_from_the_client_between_offloaded_records() {
    use foreign_types::ForeignTypeRef;
    extern "C" {
        fn SSL_key_update(s: *mut openssl_sys::SSL, updatetype: std::ffi::c_int)
            -> std::ffi::c_int;
    }
    let (mut c, mut s) = offloaded(&ctx_for(V13, None, ""));
    for requested in [0, 1, 1, 0] {
        // Records before and after the KeyUpdate reach the engine together, so one
        // job holds both: it stops at the KeyUpdate, the rest goes with the new key.
        c.write_all(b"before ").unwrap();
        assert_eq!(unsafe { SSL_key_update(c.ssl().as_ptr(), requested) }, 1);
        let after = format!("after key update {requested}");
        c.write_all(after.as_bytes()).unwrap();
        s.pump().unwrap();
        let want = format!("before {after}");
        assert_eq!(s.conn.plaintext(), want.as_bytes());
        s.conn.consume_plaintext(want.len());
        // And back, under the server's (possibly updated) key.
        echo(&mut c, &mut s, want.as_bytes());
    }
}

#[test]
fn a_tampered_record_is_bad_record_mac_through_a_job() {
    for (v, s12, s13) in kinds() {
        let (mut c, mut s) = offloaded(&ctx_for(v, s12, s13));
        echo(&mut c, &mut s, b"fine");
        c.write_all(b"will be tampered with").unwrap();
        let n = s.wire.to_server.borrow().len();
        s.wire.to_server.borrow_mut()[n - 1] ^= 0x40;
        assert_eq!(s.pump().unwrap_err(), tls::Error::BadRecordMac, "{v:?}");
        let mut b = [0u8; 8];
        let e = c.read(&mut b).unwrap_err().to_string();
        assert!(e.contains("bad record mac"), "{v:?}: {e}");
    }
}

#[test]
fn a_lost_job_ends_the_connection_with_an_internal_error_alert() {
    for (v, s12, s13) in kinds() {
        let (mut c, mut s) = offloaded(&ctx_for(v, s12, s13));
        echo(&mut c, &mut s, b"fine so far");
        // Output and input out together; the job is lost with its keys.
        s.conn.stage(b"never sent");
        s.conn.seal_staged(16_384, true).unwrap();
        c.write_all(b"never read").unwrap();
        let input = std::mem::take(&mut *s.wire.to_server.borrow_mut());
        assert_eq!(s.conn.read_tls(&input), input.len());
        s.conn.process().unwrap();
        let work = s.conn.take_records(3).unwrap().unwrap();
        assert!(work.open.is_some() && work.seal.is_some());
        drop(work);
        let e = s
            .conn
            .fail_records(CryptoError::Unavailable("worker died".into()))
            .unwrap_err();
        assert!(matches!(e, tls::Error::Crypto(_)), "{e:?}");
        assert!(s.conn.is_closed());
        s.pump().unwrap_err();
        let mut b = [0u8; 8];
        let e = c.read(&mut b).unwrap_err().to_string();
        assert!(
            e.contains("internal error"),
            "{v:?}: the alert is readable: {e}"
        );
    }
}

#[test]
fn several_connections_share_one_job() {
    let ctxs: Vec<_> = kinds()
        .into_iter()
        .map(|(v, s12, s13)| ctx_for(v, s12, s13))
        .collect();
    let mut pairs: Vec<_> = ctxs.iter().map(offloaded).collect();
    for (i, (c, s)) in pairs.iter_mut().enumerate() {
        s.pump().unwrap();
        c.write_all(format!("from client {i}").as_bytes()).unwrap();
        let input = std::mem::take(&mut *s.wire.to_server.borrow_mut());
        s.conn.read_tls(&input);
        s.conn.process().unwrap();
        s.conn.stage(format!("to client {i}").as_bytes());
        s.conn.seal_staged(16_384, true).unwrap();
    }
    let items: Vec<_> = pairs
        .iter_mut()
        .enumerate()
        .map(|(i, (_, s))| s.conn.take_records(i as u64).unwrap().unwrap())
        .collect();
    let job = RecordJob { items };
    assert_eq!(job.ops(), 8, "one record each way per connection");
    let Done::Records(done) = crypto_offload::run(Job::Records(job)).unwrap() else {
        panic!("records")
    };
    for w in done.items {
        let (c, s) = &mut pairs[w.owner as usize];
        let i = w.owner;
        s.conn.complete_records(w).unwrap();
        assert_eq!(s.conn.plaintext(), format!("from client {i}").as_bytes());
        s.pump().unwrap();
        let want = format!("to client {i}");
        let mut b = vec![0u8; want.len()];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b, want.as_bytes());
    }
}

// ----- the client role (TLS towards backends): the same record jobs

/// After the server's close_notify nothing more is opened: records a hostile server
/// sends behind it are never read, and the client role with record offload does not
/// report them as input on its way (a proxy waiting for that input would wait forever).
#[test]
fn nothing_is_read_after_close_notify_with_record_jobs() {
    use crypto_offload::Group;
    let server = Arc::new(config_with(&[Kind::P256]));
    for version13 in [true, false] {
        let mut cfg = tls::ClientConfig::default();
        if !version13 {
            cfg.suites = vec![tls::msgs::suite::ECDHE_ECDSA_AES128_GCM_SHA256];
        }
        let share = tls::KeyShare::generate(Group::X25519).unwrap();
        let mut c = tls::ClientConn::new(Arc::new(cfg), share, None, 0).unwrap();
        c.set_record_offload(true);
        let mut srv = Server::new(server.clone(), Wire::default());
        client_pump(&mut c, &mut srv).unwrap();
        assert!(c.is_established(), "TLS 1.3: {version13}");
        srv.conn.send(b"bye").unwrap();
        srv.conn.close();
        srv.pump().unwrap();
        srv.conn
            .hostile_seal(&[(23, b"after close_notify"), (23, b"and more")])
            .unwrap();
        srv.pump().unwrap();
        let input = std::mem::take(&mut *srv.wire.to_client.borrow_mut());
        assert_eq!(c.read_tls(&input), input.len());
        c.process(0).unwrap();
        assert!(c.input_pending(), "the data record waits for a job");
        run_client_records(&mut c).unwrap();
        c.process(0).unwrap();
        assert_eq!(c.plaintext(), b"bye", "TLS 1.3: {version13}");
        assert!(c.peer_closed());
        assert!(
            !c.input_pending(),
            "records behind close_notify are not input on its way"
        );
        run_client_records(&mut c).unwrap();
        assert_eq!(c.plaintext(), b"bye", "nothing read after close_notify");
    }
}

#[test]
fn the_client_role_protects_its_records_in_record_jobs_too() {
    use crypto_offload::Group;
    use tls::msgs::suite;
    let server = Arc::new(config_with(&[Kind::P256]));
    for s in [
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::ECDHE_ECDSA_AES128_GCM_SHA256,
        suite::ECDHE_ECDSA_CHACHA20_POLY1305,
    ] {
        let cfg = Arc::new(tls::ClientConfig {
            suites: vec![s],
            ..tls::ClientConfig::default()
        });
        let share = tls::KeyShare::generate(Group::X25519).unwrap();
        let mut c = tls::ClientConn::new(cfg, share, None, 0).unwrap();
        c.set_record_offload(true);
        let mut srv = Server::new(server.clone(), Wire::default());
        srv.conn.set_record_offload(true);
        client_pump(&mut c, &mut srv).unwrap();
        assert!(c.is_established() && srv.conn.is_established(), "{s:#06x}");
        assert_eq!(c.info().suite, s);
        // Client → server: each write its own records, cut at once, sealed by a job
        // (nothing is sealed on the calling core).
        let up: Vec<u8> = (0..70_001u32).map(|i| (i * 11 + s as u32) as u8).collect();
        assert_eq!(c.send(&up[..20_000]).unwrap(), 20_000);
        assert!(
            c.sealing() && c.pending_tls().is_empty(),
            "{s:#06x}: cut only"
        );
        let work = c.take_records(9).unwrap().expect("records to seal");
        assert_eq!(
            work.seal.as_ref().map(|b| b.ops.len()),
            Some(2),
            "16 KiB + rest"
        );
        let Done::Records(mut j) =
            crypto_offload::run(Job::Records(RecordJob { items: vec![work] })).unwrap()
        else {
            panic!("records")
        };
        c.complete_records(j.items.pop().unwrap()).unwrap();
        assert!(
            !c.sealing() && !c.pending_tls().is_empty(),
            "sealed by the job"
        );
        let mut sent = 20_000;
        while sent < up.len() {
            sent += c.send(&up[sent..]).unwrap();
            client_pump(&mut c, &mut srv).unwrap();
        }
        let mut got = srv.conn.plaintext().to_vec();
        let n = got.len();
        srv.conn.consume_plaintext(n);
        while got.len() < up.len() {
            client_pump(&mut c, &mut srv).unwrap();
            let p = srv.conn.plaintext().to_vec();
            assert!(!p.is_empty(), "{s:#06x}: stalled at {}", got.len());
            srv.conn.consume_plaintext(p.len());
            got.extend_from_slice(&p);
        }
        assert_eq!(got, up, "{s:#06x}: byte-exact up");
        // Server → client: opened by the client's record jobs, not as they come.
        srv.conn.send(b"first").unwrap();
        srv.pump().unwrap();
        let input = std::mem::take(&mut *srv.wire.to_client.borrow_mut());
        assert_eq!(c.read_tls(&input), input.len());
        c.process(0).unwrap();
        assert!(
            c.plaintext().is_empty() && c.input_pending(),
            "{s:#06x}: left for a job"
        );
        run_client_records(&mut c).unwrap();
        assert_eq!(c.plaintext(), b"first");
        c.consume_plaintext(5);
        let down: Vec<u8> = up.iter().rev().copied().collect();
        let mut sent = 0;
        let mut got = Vec::new();
        while got.len() < down.len() {
            if sent < down.len() {
                sent += srv.conn.send(&down[sent..]).unwrap();
            }
            client_pump(&mut c, &mut srv).unwrap();
            let p = c.plaintext().to_vec();
            c.consume_plaintext(p.len());
            got.extend_from_slice(&p);
            assert!(sent == down.len() || !p.is_empty() || got.len() < down.len());
        }
        assert_eq!(got, down, "{s:#06x}: byte-exact down");
        // close_notify follows the last cut records, sealed in the same job.
        assert_eq!(c.send(b"last words").unwrap(), 10);
        c.close();
        assert!(c.sealing(), "close waits for the cut records");
        client_pump(&mut c, &mut srv).unwrap();
        assert_eq!(srv.conn.plaintext(), b"last words");
        assert!(
            srv.conn.peer_closed(),
            "{s:#06x}: close_notify arrived last"
        );
        assert_eq!(c.send(b"more").unwrap(), 0, "nothing after close");
    }
}
