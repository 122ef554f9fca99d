//! Bulk record protection per core: record jobs of several batch sizes, inline and on
//! one pool worker, beside `openssl speed -evp` for the same AEAD and size measured in
//! the same run (the physical limit of one core).
//!
//!     cargo bench -p crypto-offload --bench records -- [--seconds S] [--sizes 16384,1024]
//!         [--batches 1,4,16,64]
//!
//! Each job carries `batch` records of `size` plaintext bytes, four records per
//! connection (fewer when the batch is smaller), with TLS 1.3-style nonces and AAD.
//! Sealing and opening alternate on the same buffers, in place, so nothing is copied.
//! Inline: this thread runs the jobs; GB/s per CPU-second of this thread. Pool: one
//! worker (pinned to CPU 0 when the box has two CPUs; this thread on the other) with
//! four jobs in flight; GB/s per CPU-second of the worker thread, and per wall second.
//! Prints one markdown table.

use std::process::Command;
use std::time::{Duration, Instant};

use crypto_offload::pool::thread_cpu_ns;
use crypto_offload::{
    AeadAlg, AeadBatch, AeadKey, AeadOp, Done, Job, Pool, PoolConfig, RecordJob, RecordWork,
    TAG_LEN,
};

/// One connection's records: a buffer laid out as records, both keys, and which way
/// the next job goes.
struct Conn {
    seal: Option<AeadKey>,
    open: Option<AeadKey>,
    buf: Vec<u8>,
    ops: Vec<AeadOp>,
    sealed: bool,
}

impl Conn {
    fn new(alg: AeadAlg, id: u8, records: usize, size: usize) -> Conn {
        let key = vec![id; alg.key_len()];
        let mut buf = Vec::with_capacity(records * (size + TAG_LEN));
        let mut ops = Vec::new();
        for r in 0..records {
            let start = buf.len();
            buf.extend((0..size).map(|i| (i + r) as u8));
            buf.extend_from_slice(&[0u8; TAG_LEN]);
            let mut nonce = [id; 12];
            nonce[11] = r as u8;
            let len = (size + TAG_LEN) as u16;
            let header = [23, 3, 3, (len >> 8) as u8, len as u8];
            ops.push(AeadOp::new(nonce, &header, start, size));
        }
        Conn {
            seal: Some(AeadKey::new(alg, &key, true).unwrap()),
            open: Some(AeadKey::new(alg, &key, false).unwrap()),
            buf,
            ops,
            sealed: false,
        }
    }

    /// The next job's work: seal the plaintext, or open what was sealed.
    fn work(&mut self, owner: u64) -> RecordWork {
        let buf = std::mem::take(&mut self.buf);
        let ops = std::mem::take(&mut self.ops);
        if self.sealed {
            let b = AeadBatch::new(self.open.take().unwrap(), buf, ops, false);
            RecordWork {
                owner,
                open: Some(b),
                seal: None,
            }
        } else {
            let b = AeadBatch::new(self.seal.take().unwrap(), buf, ops, false);
            RecordWork {
                owner,
                open: None,
                seal: Some(b),
            }
        }
    }

    fn back(&mut self, w: RecordWork) {
        let (b, sealing) = match (w.open, w.seal) {
            (Some(b), None) => (b, false),
            (None, Some(b)) => (b, true),
            _ => unreachable!("one direction per work"),
        };
        assert!(
            b.error.is_none() && b.done == b.ops.len(),
            "every record protected"
        );
        if sealing {
            self.seal = Some(b.key);
        } else {
            self.open = Some(b.key);
        }
        self.buf = b.buf;
        self.ops = b.ops;
        self.sealed = sealing;
    }
}

/// The connections of one job.
fn job_conns(alg: AeadAlg, batch: usize, size: usize, first_id: u8) -> Vec<Conn> {
    let per = batch.min(4);
    (0..batch.div_ceil(per))
        .map(|i| Conn::new(alg, first_id + i as u8, per.min(batch - i * per), size))
        .collect()
}

fn make_job(conns: &mut [Conn]) -> Job {
    Job::Records(RecordJob {
        items: conns
            .iter_mut()
            .enumerate()
            .map(|(i, c)| c.work(i as u64))
            .collect(),
    })
}

fn take_back(conns: &mut [Conn], done: Done) {
    let Done::Records(j) = done else {
        panic!("records")
    };
    for w in j.items {
        let i = w.owner as usize;
        conns[i].back(w);
    }
}

/// Inline: (seal GB/s, open GB/s) per CPU-second of this thread.
fn inline(alg: AeadAlg, batch: usize, size: usize, secs: f64) -> (f64, f64) {
    let mut conns = job_conns(alg, batch, size, 1);
    let bytes = (batch * size) as f64;
    let (mut seal_ns, mut open_ns, mut jobs) = (0u64, 0u64, 0u64);
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        for slot in [&mut seal_ns, &mut open_ns] {
            let t = thread_cpu_ns();
            let d = crypto_offload::run(make_job(&mut conns)).unwrap();
            take_back(&mut conns, d);
            *slot += thread_cpu_ns() - t;
        }
        jobs += 1;
    }
    let gbs = |ns: u64| jobs as f64 * bytes / ns as f64;
    (gbs(seal_ns), gbs(open_ns))
}

/// Pool: (GB/s per worker CPU-second, GB/s per wall second), seal and open mixed.
fn pooled(
    alg: AeadAlg,
    batch: usize,
    size: usize,
    secs: f64,
    worker_cpu: Option<usize>,
) -> (f64, f64) {
    let mut pc = PoolConfig::new(1);
    pc.cpus = worker_cpu.into_iter().collect();
    let pool = Pool::start(pc).unwrap();
    let link = pool.link(64);
    let w = pool.workers()[0].clone();
    // This side runs on the other CPU (a thread of its own: pinning narrows the
    // affinity the next pool's start checks against).
    let r = std::thread::scope(|s| {
        s.spawn(|| on_submitter(|| drive(link, &w, alg, batch, size, secs)))
            .join()
            .unwrap()
    });
    drop(pool);
    r
}

/// Runs `f` pinned to the submitting side's CPU (the second one), if there is one.
fn on_submitter<T>(f: impl FnOnce() -> T) -> T {
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(c) = cpus.get(1) {
        core_affinity::set_for_current(*c);
    }
    f()
}

fn drive(
    mut link: crypto_offload::CoreLink,
    w: &crypto_offload::WorkerStats,
    alg: AeadAlg,
    batch: usize,
    size: usize,
    secs: f64,
) -> (f64, f64) {
    const IN_FLIGHT: usize = 4;
    let mut sets: Vec<Vec<Conn>> = (0..IN_FLIGHT)
        .map(|i| job_conns(alg, batch, size, 1 + (i * 32) as u8))
        .collect();
    for (i, set) in sets.iter_mut().enumerate() {
        link.try_submit(i as u64, make_job(set)).unwrap();
    }
    let cpu0 = w.cpu_ns.load(std::sync::atomic::Ordering::Relaxed);
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(secs);
    let mut done = Vec::new();
    let mut jobs = 0u64;
    let mut out = IN_FLIGHT;
    while out > 0 {
        done.clear();
        if link.drain(&mut done, 16) == 0 {
            std::hint::spin_loop();
            continue;
        }
        for c in done.drain(..) {
            let set = &mut sets[c.tag as usize];
            take_back(set, c.result.unwrap());
            jobs += 1;
            if Instant::now() < until {
                link.try_submit(c.tag, make_job(set)).unwrap();
            } else {
                out -= 1;
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    // The worker publishes its CPU time after each batch; all batches are done.
    std::thread::sleep(Duration::from_millis(20));
    let cpu = (w.cpu_ns.load(std::sync::atomic::Ordering::Relaxed) - cpu0) as f64;
    let bytes = jobs as f64 * (batch * size) as f64;
    (bytes / cpu, bytes / wall / 1e9)
}

/// `openssl speed -evp NAME -bytes SIZE`: GB/s of one core.
fn openssl_speed(name: &str, size: usize, secs: u32) -> f64 {
    let o = Command::new("openssl")
        .args(["speed", "-evp", name, "-bytes", &size.to_string()])
        .args(["-seconds", &secs.to_string()])
        .output()
        .expect("openssl CLI");
    let text = String::from_utf8_lossy(&o.stdout);
    // The last line: "<name>  <N>k" in 1000s of bytes per second.
    let last = text.lines().rev().find(|l| l.trim_end().ends_with('k'));
    let k: f64 = last
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.trim_end_matches('k').parse().ok())
        .unwrap_or_else(|| panic!("openssl speed output: {text}"));
    k * 1000.0 / 1e9
}

fn list(args: &[String], flag: &str, default: &[usize]) -> Vec<usize> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1]
            .split(',')
            .map(|v| v.parse().expect("a number"))
            .collect(),
        None => default.to_vec(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .map(|i| args[i + 1].parse().expect("seconds"))
        .unwrap_or(1.0);
    let sizes = list(&args, "--sizes", &[16384, 1024]);
    let batches = list(&args, "--batches", &[1, 4, 16, 64]);
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let worker_cpu = (cpus.len() >= 2).then(|| cpus[0].id);
    println!(
        "| AEAD | record bytes | records per job | inline seal GB/s | inline open GB/s | \
         pool GB/s per worker core | pool GB/s wall | openssl speed GB/s | inline seal ÷ speed | pool ÷ speed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (alg, name) in [
        (AeadAlg::Aes128Gcm, "aes-128-gcm"),
        (AeadAlg::Chacha20Poly1305, "chacha20-poly1305"),
    ] {
        for &size in &sizes {
            let speed = openssl_speed(name, size, secs.ceil().max(1.0) as u32);
            for &batch in &batches {
                let (s, o) = std::thread::scope(|sc| {
                    sc.spawn(|| on_submitter(|| inline(alg, batch, size, secs)))
                        .join()
                        .unwrap()
                });
                let (p, wall) = pooled(alg, batch, size, secs, worker_cpu);
                println!(
                    "| {name} | {size} | {batch} | {s:.2} | {o:.2} | {p:.2} | {wall:.2} | {speed:.2} | {:.2} | {:.2} |",
                    s / speed,
                    p / speed
                );
            }
        }
    }
}
