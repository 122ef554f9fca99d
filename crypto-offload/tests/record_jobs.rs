//! Record jobs on the pool: the same bytes as inline, keys and buffers back intact,
//! and a worker that dies mid-batch reported for the whole job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crypto_offload::{
    AeadAlg, AeadBatch, AeadKey, AeadOp, Completion, CryptoError, Done, Job, Pool, PoolConfig,
    RecordJob, RecordWork, TAG_LEN,
};

/// A job of `conns` connections, each sealing `records` records of `size` bytes and
/// opening nothing; every key and byte a function of the connection number.
fn job(conns: usize, records: usize, size: usize) -> RecordJob {
    let algs = [
        AeadAlg::Aes128Gcm,
        AeadAlg::Aes256Gcm,
        AeadAlg::Chacha20Poly1305,
    ];
    let items = (0..conns)
        .map(|c| {
            let alg = algs[c % 3];
            let key = AeadKey::new(alg, &vec![c as u8 + 1; alg.key_len()], true).unwrap();
            let mut buf = Vec::new();
            let mut ops = Vec::new();
            for r in 0..records {
                let start = buf.len();
                buf.extend((0..size).map(|i| (i + r * 13 + c * 101) as u8));
                buf.extend_from_slice(&[0u8; TAG_LEN]);
                let mut nonce = [c as u8; 12];
                nonce[11] = r as u8;
                ops.push(AeadOp::new(nonce, &[23, 3, 3, 0, r as u8], start, size));
            }
            RecordWork {
                owner: c as u64,
                open: None,
                seal: Some(AeadBatch::new(key, buf, ops, false)),
            }
        })
        .collect();
    RecordJob { items }
}

fn sealed_bytes(j: &RecordJob) -> Vec<Vec<u8>> {
    j.items
        .iter()
        .map(|w| {
            let b = w.seal.as_ref().unwrap();
            assert_eq!((b.done, b.error.is_none()), (b.ops.len(), true));
            b.buf.clone()
        })
        .collect()
}

fn wait(link: &mut crypto_offload::CoreLink, n: usize) -> Vec<Completion> {
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(Instant::now() < until, "completions within 30 s");
        if link.drain(&mut out, 64) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    out
}

#[test]
fn pool_and_inline_give_identical_records_and_the_keys_come_back() {
    let Done::Records(inline) = crypto_offload::run(Job::Records(job(12, 5, 1000))).unwrap() else {
        panic!("records")
    };
    let want = sealed_bytes(&inline);
    let pool = Pool::start(PoolConfig::new(2)).unwrap();
    let mut link = pool.link(16);
    // Split across four jobs, so both workers take part.
    let mut all = job(12, 5, 1000).items;
    for tag in 0..4u64 {
        let items: Vec<_> = all.drain(..3).collect();
        link.try_submit(tag, Job::Records(RecordJob { items }))
            .unwrap();
    }
    let mut got = vec![Vec::new(); 12];
    let mut keys = Vec::new();
    for c in wait(&mut link, 4) {
        let Ok(Done::Records(j)) = c.result else {
            panic!("job {} failed", c.tag)
        };
        assert_eq!(j.items.len(), 3);
        for (w, bytes) in j.items.iter().zip(sealed_bytes(&j)) {
            got[w.owner as usize] = bytes;
        }
        keys.extend(j.items.into_iter().map(|w| (w.owner, w.seal.unwrap())));
    }
    assert_eq!(got, want, "byte for byte");
    // The lent keys still work: open what they sealed with a fresh opener.
    for (owner, b) in keys {
        let alg = b.key.alg();
        let mut opener = AeadKey::new(alg, &vec![owner as u8 + 1; alg.key_len()], false).unwrap();
        let mut buf = b.buf.clone();
        for op in &b.ops {
            let (payload, tag) = buf[op.start..op.start + op.len + TAG_LEN].split_at_mut(op.len);
            opener
                .open(&op.nonce, &op.aad[..op.aad_len as usize], payload, tag)
                .unwrap();
        }
        let Done::Records(again) = crypto_offload::run(Job::Records(RecordJob {
            items: vec![RecordWork {
                owner,
                open: None,
                seal: Some(AeadBatch::new(b.key, buf, b.ops, false)),
            }],
        }))
        .unwrap() else {
            panic!("records")
        };
        assert_eq!(
            sealed_bytes(&again)[0],
            want[owner as usize],
            "key {owner} reused"
        );
    }
}

#[test]
fn a_worker_dying_mid_batch_fails_the_whole_record_job_and_is_replaced() {
    let mut pc = PoolConfig::new(1);
    pc.runner = Arc::new(|j: Job| match j {
        Job::Records(r) if r.items.len() == 2 => panic!("injected fault in a record batch"),
        other => crypto_offload::run(other),
    });
    let pool = Pool::start(pc).unwrap();
    let mut link = pool.link(8);
    link.try_submit(1, Job::Records(job(2, 3, 100))).unwrap();
    let c = wait(&mut link, 1).pop().unwrap();
    assert_eq!(c.tag, 1);
    assert!(
        matches!(c.result, Err(CryptoError::Unavailable(_))),
        "{:?}",
        c.result.err()
    );
    // The replacement runs the next job.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let w = &pool.workers()[0];
        if w.alive.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        assert!(Instant::now() < until, "replaced within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    link.try_submit(2, Job::Records(job(3, 3, 100))).unwrap();
    let c = wait(&mut link, 1).pop().unwrap();
    assert!(matches!(c.result, Ok(Done::Records(ref j)) if j.items.len() == 3));
    assert_eq!(
        pool.workers()[0]
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
