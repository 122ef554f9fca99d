//! The crypto worker pool: handshake jobs leave the poll-mode cores and come back as
//! completions, so a core never waits for crypto.
//!
//! ## Shape
//! - Each worker thread has its own **bounded** submission queue (crossbeam-channel).
//!   A poll-mode core holds a [`CoreLink`]: it submits with [`CoreLink::try_submit`],
//!   which never blocks, and drains its own completion queue with
//!   [`CoreLink::drain`], which never blocks either.
//! - **Scheduling**: a job goes to the live worker with the lowest expected wait,
//!   `(queued + 1) × measured latency` (an exponentially weighted mean per worker), so
//!   availability, queue depth and speed all count; a full queue is skipped. When every
//!   queue is full, or the core already has `max_in_flight` jobs out, the job comes back
//!   to the caller ([`Busy`]): back-pressure, never an unbounded queue.
//! - A worker wakes on a job, takes up to `max_batch` more that are already queued, runs
//!   them, and sends each completion to the submitting core. The job's buffers move
//!   with it (the `Job` owns them); nothing is copied on the way in or out.
//! - **Faults**: a job that panics completes with [`CryptoError::Unavailable`], and so
//!   does every job of the same batch not yet run; the worker thread then exits, and the
//!   supervisor thread starts a replacement on the same queue (jobs still queued are not
//!   lost), counted in [`WorkerStats::restarts`]. The submitting core sees an error
//!   completion and fails only those connections.
//! - **Inline mode** is zero workers: the caller runs [`crate::run`] itself; this module
//!   is not involved.
//! - **Devices**: an accelerator ([`crate::device::Device`]) gets workers of its own
//!   ([`DeviceWorkers`]), each with its own queue, beside the CPU workers. Each makes
//!   the device's library context its thread's default, so the jobs it runs resolve
//!   there. They are scheduled with the CPU workers by the same expected wait, so a
//!   device that is slow or backed up gets fewer jobs; each worker's counters name
//!   its device (`cpu` for the CPU workers).
//!
//! Workers are pinned with `core_affinity` when CPUs are given. The completion queue of
//! a core is bounded by its `max_in_flight`, so a worker's send to it cannot block.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use hdrhistogram::Histogram;

use crate::device::Device;
use crate::job::{Done, Job};
use crate::prim::CryptoError;

/// What a worker runs a job with: [`crate::run`], or a test's stand-in.
pub type Runner = Arc<dyn Fn(Job) -> Result<Done, CryptoError> + Send + Sync>;

/// Workers for one device beside the CPU workers.
#[derive(Clone, Debug)]
pub struct DeviceWorkers {
    pub device: Arc<Device>,
    /// Threads that run this device's jobs (at least 1).
    pub workers: usize,
    /// Pin its worker `i` to `cpus[i % cpus.len()]`; empty: not pinned.
    pub cpus: Vec<usize>,
}

/// How the pool is built.
#[derive(Clone)]
pub struct PoolConfig {
    /// CPU worker threads (the process's default library context). With the devices'
    /// workers at least 1 in all; zero workers is inline mode, without a pool.
    pub workers: usize,
    /// Jobs each worker's submission queue holds.
    pub queue_depth: usize,
    /// Jobs a worker takes per wake-up.
    pub max_batch: usize,
    /// Pin CPU worker `i` to `cpus[i % cpus.len()]`; empty: not pinned.
    pub cpus: Vec<usize>,
    /// Devices with workers of their own, after the CPU workers.
    pub devices: Vec<DeviceWorkers>,
    pub runner: Runner,
}

impl PoolConfig {
    /// `workers` threads running [`crate::run`], 256-deep queues, batches of 16.
    pub fn new(workers: usize) -> Self {
        PoolConfig {
            workers,
            queue_depth: 256,
            max_batch: 16,
            cpus: Vec::new(),
            devices: Vec::new(),
            runner: Arc::new(crate::run),
        }
    }
}

impl std::fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConfig")
            .field("workers", &self.workers)
            .field("queue_depth", &self.queue_depth)
            .field("max_batch", &self.max_batch)
            .field("cpus", &self.cpus)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

/// A finished job, for the core that submitted it.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag from [`CoreLink::try_submit`].
    pub tag: u64,
    pub result: Result<Done, CryptoError>,
}

/// Why a job was not queued; the job is handed back.
#[derive(Debug)]
pub struct Busy {
    pub job: Job,
    /// `true`: this core has `max_in_flight` jobs out; `false`: every queue is full.
    pub core_limit: bool,
}

struct Envelope {
    job: Job,
    tag: u64,
    reply: Sender<Completion>,
    queued_at: Instant,
}

/// What one worker counts (its slot keeps them across restarts).
#[derive(Debug)]
pub struct WorkerStats {
    pub index: usize,
    /// `cpu` (the process's default context) or the device's name.
    pub device: String,
    pub cpu: Option<usize>,
    pub jobs: AtomicU64,
    pub errors: AtomicU64,
    pub batches: AtomicU64,
    /// Jobs queued and not yet taken (submitters add, the worker subtracts).
    pub queued: AtomicU64,
    /// Wall-clock time spent running jobs (includes time the thread was preempted).
    pub busy_ns: AtomicU64,
    /// CPU time the worker thread used (its own clock: preemption not counted).
    pub cpu_ns: AtomicU64,
    /// Exponentially weighted mean of queue-to-completion latency, for scheduling.
    pub ewma_latency_ns: AtomicU64,
    /// Times this worker died and was replaced.
    pub restarts: AtomicU64,
    pub alive: AtomicBool,
    /// Queue-to-completion latency in microseconds (the worker records, readers copy).
    pub latency_us: Mutex<Histogram<u64>>,
}

impl WorkerStats {
    fn new(index: usize, device: &str, cpu: Option<usize>) -> Self {
        WorkerStats {
            index,
            device: device.to_string(),
            cpu,
            jobs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            // An unmeasured worker looks like a 100 µs job: queue depth decides.
            ewma_latency_ns: AtomicU64::new(100_000),
            restarts: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")),
        }
    }

    /// Expected wait for one more job.
    fn score(&self) -> u64 {
        (self.queued.load(Ordering::Relaxed) + 1)
            .saturating_mul(self.ewma_latency_ns.load(Ordering::Relaxed).max(1))
    }

    /// A serializable copy, with latency percentiles.
    pub fn snapshot(&self) -> WorkerSnapshot {
        let h = self.latency_us.lock().unwrap_or_else(|p| p.into_inner());
        let pct = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let jobs = self.jobs.load(Ordering::Relaxed);
        let batches = self.batches.load(Ordering::Relaxed);
        WorkerSnapshot {
            index: self.index,
            device: self.device.clone(),
            cpu: self.cpu,
            alive: self.alive.load(Ordering::Relaxed),
            jobs,
            errors: self.errors.load(Ordering::Relaxed),
            batches,
            mean_batch: if batches == 0 {
                0.0
            } else {
                jobs as f64 / batches as f64
            },
            queued: self.queued.load(Ordering::Relaxed),
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            cpu_ns: self.cpu_ns.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            latency_us_p50: pct(0.5),
            latency_us_p99: pct(0.99),
            latency_us_max: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

/// A point-in-time copy of one worker's counters (serializable for the control socket).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerSnapshot {
    pub index: usize,
    pub device: String,
    pub cpu: Option<usize>,
    pub alive: bool,
    pub jobs: u64,
    pub errors: u64,
    pub batches: u64,
    pub mean_batch: f64,
    pub queued: u64,
    pub busy_ns: u64,
    pub cpu_ns: u64,
    pub restarts: u64,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_max: u64,
}

struct Slot {
    tx: Sender<Envelope>,
    /// Kept so that a replacement worker takes over the same queue.
    rx: Receiver<Envelope>,
    stats: Arc<WorkerStats>,
    /// The device whose context the worker runs in; `None`: the default context.
    device: Option<Arc<Device>>,
    thread: Mutex<Option<JoinHandle<Exit>>>,
}

/// How a worker thread ended.
enum Exit {
    /// The pool is stopping.
    Stopped,
    /// A job panicked; the worker must be replaced.
    Died,
}

struct Shared {
    slots: Vec<Slot>,
    cfg: PoolConfig,
    stop: AtomicBool,
}

/// The worker threads and their supervisor. Dropping the pool stops them; jobs still
/// queued then are dropped with their envelopes (their cores are stopping too).
pub struct Pool {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
}

impl Pool {
    /// Starts the CPU workers, each device's workers and the supervisor. An unusable
    /// configuration or a CPU that cannot be pinned is an error naming it.
    pub fn start(cfg: PoolConfig) -> Result<Pool, String> {
        if cfg.workers + cfg.devices.iter().map(|d| d.workers).sum::<usize>() == 0 {
            return Err("a pool needs at least one worker (zero workers is inline mode)".into());
        }
        if cfg.queue_depth == 0 || cfg.max_batch == 0 {
            return Err("queue_depth and max_batch must be at least 1".into());
        }
        let ids = core_affinity::get_core_ids().unwrap_or_default();
        let all_cpus = cfg
            .cpus
            .iter()
            .chain(cfg.devices.iter().flat_map(|d| &d.cpus));
        for c in all_cpus {
            if !ids.iter().any(|i| i.id == *c) {
                return Err(format!(
                    "crypto worker CPU {c} is not available to this process"
                ));
            }
        }
        // The CPU workers, then each device's.
        let mut slots = Vec::new();
        let mut add = |device: Option<&Arc<Device>>, n: usize, cpus: &[usize]| {
            for j in 0..n {
                let (tx, rx) = bounded(cfg.queue_depth);
                let cpu = (!cpus.is_empty()).then(|| cpus[j % cpus.len()]);
                let name = device.map_or("cpu", |d| d.name());
                slots.push(Slot {
                    tx,
                    rx,
                    stats: Arc::new(WorkerStats::new(slots.len(), name, cpu)),
                    device: device.cloned(),
                    thread: Mutex::new(None),
                });
            }
        };
        add(None, cfg.workers, &cfg.cpus);
        for d in &cfg.devices {
            if d.workers == 0 {
                return Err(format!(
                    "crypto device {:?} has no workers",
                    d.device.name()
                ));
            }
            add(Some(&d.device), d.workers, &d.cpus);
        }
        let shared = Arc::new(Shared {
            slots,
            cfg,
            stop: AtomicBool::new(false),
        });
        for i in 0..shared.slots.len() {
            spawn_worker(&shared, i).map_err(|e| format!("crypto worker {i}: {e}"))?;
        }
        let sup = shared.clone();
        let supervisor = std::thread::Builder::new()
            .name("crypto-supervisor".into())
            .spawn(move || supervise(&sup))
            .map_err(|e| format!("crypto supervisor: {e}"))?;
        Ok(Pool {
            shared,
            supervisor: Some(supervisor),
        })
    }

    /// A link for one poll-mode core, allowed `max_in_flight` jobs out at once.
    pub fn link(&self, max_in_flight: usize) -> CoreLink {
        let max_in_flight = max_in_flight.max(1);
        let (reply_tx, reply_rx) = bounded(max_in_flight);
        CoreLink {
            senders: self.shared.slots.iter().map(|s| s.tx.clone()).collect(),
            stats: self.workers(),
            reply_tx,
            reply_rx,
            in_flight: 0,
            max_in_flight,
        }
    }

    /// Every worker's counters.
    pub fn workers(&self) -> Vec<Arc<WorkerStats>> {
        self.shared.slots.iter().map(|s| s.stats.clone()).collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.supervisor.take() {
            let _ = s.join();
        }
        for slot in &self.shared.slots {
            let t = slot.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(t) = t {
                let _ = t.join();
            }
        }
    }
}

fn spawn_worker(shared: &Arc<Shared>, i: usize) -> std::io::Result<()> {
    let slot = &shared.slots[i];
    let rx = slot.rx.clone();
    let stats = slot.stats.clone();
    let device = slot.device.clone();
    let s = shared.clone();
    let handle = std::thread::Builder::new()
        .name(format!("crypto-{i}"))
        .spawn(move || {
            if let Some(cpu) = stats.cpu {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            }
            if let Some(d) = &device {
                d.enter();
            }
            stats.alive.store(true, Ordering::Relaxed);
            let exit = work(&rx, &stats, &s.cfg, &s.stop);
            if matches!(exit, Exit::Died) {
                stats.alive.store(false, Ordering::Relaxed);
            }
            exit
        })?;
    *slot.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    Ok(())
}

/// Replaces dead workers until the pool stops.
fn supervise(shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
        for (i, slot) in shared.slots.iter().enumerate() {
            let finished = {
                let mut t = slot.thread.lock().unwrap_or_else(|p| p.into_inner());
                match t.as_ref() {
                    Some(h) if h.is_finished() => t.take(),
                    _ => None,
                }
            };
            let Some(h) = finished else { continue };
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            // A panic escaping `work` (it catches each job's) also counts as a death.
            let _ = h.join();
            slot.stats.restarts.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = spawn_worker(shared, i) {
                // Try again on the next round; its queue waits meanwhile.
                eprintln!("crypto worker {i} could not be restarted: {e}");
            }
        }
    }
}

/// One worker's loop: a blocking wait for the first job, then whatever else is
/// already queued, up to `max_batch`.
fn work(rx: &Receiver<Envelope>, stats: &WorkerStats, cfg: &PoolConfig, stop: &AtomicBool) -> Exit {
    let mut batch: Vec<Envelope> = Vec::with_capacity(cfg.max_batch);
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(env) => batch.push(env),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Exit::Stopped,
        }
        while batch.len() < cfg.max_batch {
            match rx.try_recv() {
                Ok(env) => batch.push(env),
                Err(_) => break,
            }
        }
        stats
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        let cpu0 = thread_cpu_ns();
        let mut jobs = batch.drain(..);
        while let Some(env) = jobs.next() {
            let t0 = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| (cfg.runner)(env.job)));
            let done = Instant::now();
            stats
                .busy_ns
                .fetch_add(done.duration_since(t0).as_nanos() as u64, Ordering::Relaxed);
            stats.jobs.fetch_add(1, Ordering::Relaxed);
            let Ok(result) = outcome else {
                // This job and the rest of the batch fail; a new worker takes over.
                stats.errors.fetch_add(1, Ordering::Relaxed);
                let _ = env.reply.send(Completion {
                    tag: env.tag,
                    result: Err(CryptoError::Unavailable("crypto worker panicked".into())),
                });
                for rest in jobs {
                    stats.jobs.fetch_add(1, Ordering::Relaxed);
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    let _ = rest.reply.send(Completion {
                        tag: rest.tag,
                        result: Err(CryptoError::Unavailable(
                            "crypto worker died mid-batch".into(),
                        )),
                    });
                }
                return Exit::Died;
            };
            if result.is_err() {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            let latency = done.duration_since(env.queued_at);
            let ns = latency.as_nanos() as u64;
            let old = stats.ewma_latency_ns.load(Ordering::Relaxed);
            stats
                .ewma_latency_ns
                .store(old - old / 8 + ns / 8, Ordering::Relaxed);
            if let Ok(mut h) = stats.latency_us.lock() {
                let _ = h.record((ns / 1000).max(1));
            }
            // The core's completion queue holds its whole in-flight allowance.
            let _ = env.reply.send(Completion {
                tag: env.tag,
                result,
            });
        }
        stats
            .cpu_ns
            .fetch_add(thread_cpu_ns().saturating_sub(cpu0), Ordering::Relaxed);
    }
    Exit::Stopped
}

/// CPU time of the calling thread, in nanoseconds (0 if the clock is unavailable).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill in.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One poll-mode core's end of the pool. Not shared: each core has its own.
pub struct CoreLink {
    senders: Vec<Sender<Envelope>>,
    stats: Vec<Arc<WorkerStats>>,
    reply_tx: Sender<Completion>,
    reply_rx: Receiver<Completion>,
    in_flight: usize,
    max_in_flight: usize,
}

impl CoreLink {
    /// Queues `job` on the worker with the lowest expected wait; never blocks. `tag`
    /// comes back with the completion.
    pub fn try_submit(&mut self, tag: u64, job: Job) -> Result<(), Busy> {
        if self.in_flight >= self.max_in_flight {
            return Err(Busy {
                job,
                core_limit: true,
            });
        }
        // The live worker with the best score first; if its queue is full, any other
        // in turn (a dead one, being replaced, still queues for its successor).
        let best = (0..self.senders.len())
            .min_by_key(|&i| {
                let s = &self.stats[i];
                (!s.alive.load(Ordering::Relaxed), s.score())
            })
            .unwrap_or(0);
        let mut env = Envelope {
            job,
            tag,
            reply: self.reply_tx.clone(),
            queued_at: Instant::now(),
        };
        let others = (0..self.senders.len()).filter(|&i| i != best);
        for i in std::iter::once(best).chain(others) {
            self.stats[i].queued.fetch_add(1, Ordering::Relaxed);
            match self.senders[i].try_send(env) {
                Ok(()) => {
                    self.in_flight += 1;
                    return Ok(());
                }
                Err(TrySendError::Full(e)) | Err(TrySendError::Disconnected(e)) => {
                    self.stats[i].queued.fetch_sub(1, Ordering::Relaxed);
                    env = e;
                }
            }
        }
        Err(Busy {
            job: env.job,
            core_limit: false,
        })
    }

    /// Moves up to `max` completions into `out` without blocking; returns how many.
    pub fn drain(&mut self, out: &mut Vec<Completion>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.reply_rx.try_recv() {
                Ok(c) => {
                    out.push(c);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        self.in_flight -= n;
        n
    }

    /// Jobs submitted and not yet drained.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Call, CallResult};
    use crate::prim::{hmac, AeadAlg, AeadKey, HashAlg, TAG_LEN};

    /// Real crypto whose output depends on `n`: an AES-128-GCM key (a cipher fetched
    /// in the running worker's library context) from an HMAC of `n`, sealing `n`.
    fn seal_n(n: u8) -> Result<Vec<u8>, CryptoError> {
        let k = hmac(HashAlg::Sha256, &[n; 32], &[b"pool test"])?;
        let mut key = AeadKey::new(AeadAlg::Aes128Gcm, &k.bytes()[..16], true)?;
        let mut buf = vec![n; 64];
        let mut tag = [0u8; TAG_LEN];
        key.seal(&[n; 12], b"aad", &mut buf, &mut tag)?;
        buf.extend_from_slice(&tag);
        Ok(buf)
    }

    fn call(f: impl FnOnce() -> Result<Vec<u8>, CryptoError> + Send + 'static) -> Job {
        Job::Call(Call(Box::new(move || {
            f().map(|v| Box::new(v) as CallResult)
        })))
    }

    /// A job whose output depends on `n`.
    fn job(n: u8) -> Job {
        call(move || seal_n(n))
    }

    /// A job that waits for the test to open `gate` before it runs.
    fn gated_job(n: u8, gate: &Receiver<()>) -> Job {
        let gate = gate.clone();
        call(move || {
            gate.recv().expect("gate");
            seal_n(n)
        })
    }

    /// A job whose code panics.
    fn faulty_job() -> Job {
        call(|| panic!("injected fault"))
    }

    fn finished(d: &Done) -> Vec<u8> {
        match d {
            Done::Call(v) => v
                .downcast_ref::<Vec<u8>>()
                .expect("the test's result")
                .clone(),
            _ => panic!("wrong completion"),
        }
    }

    /// Drains until `n` completions arrived (bounded: 10 s).
    fn collect(link: &mut CoreLink, n: usize) -> Vec<Completion> {
        let mut out = Vec::new();
        let t0 = Instant::now();
        while out.len() < n {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{} of {n} completions",
                out.len()
            );
            if link.drain(&mut out, n) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        out
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(10), "waiting for {what}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// A gate for [`gated_job`]s: sending opens it for one.
    fn gate() -> (Sender<()>, Receiver<()>) {
        bounded::<()>(16)
    }

    #[test]
    fn zero_workers_and_bad_cpus_are_refused() {
        assert!(Pool::start(PoolConfig::new(0)).is_err());
        let mut c = PoolConfig::new(1);
        c.cpus = vec![100_000];
        let e = Pool::start(c).err().unwrap();
        assert!(e.contains("CPU 100000"), "{e}");
    }

    #[test]
    fn pool_and_inline_give_identical_bytes() {
        let pool = Pool::start(PoolConfig::new(2)).unwrap();
        let mut link = pool.link(64);
        for n in 0..40u8 {
            link.try_submit(u64::from(n), job(n)).unwrap();
        }
        let got = collect(&mut link, 40);
        assert_eq!(link.in_flight(), 0);
        for c in got {
            let inline = crate::run(job(c.tag as u8)).unwrap();
            assert_eq!(
                finished(&c.result.unwrap()),
                finished(&inline),
                "job {}",
                c.tag
            );
        }
        let jobs: u64 = pool
            .workers()
            .iter()
            .map(|w| w.jobs.load(Ordering::Relaxed))
            .sum();
        assert_eq!(jobs, 40);
        let snap = pool.workers()[0].snapshot();
        assert!(snap.batches > 0 && snap.errors == 0, "{snap:?}");
    }

    #[test]
    fn device_workers_run_in_their_own_context_beside_the_cpu_workers() {
        use crate::device::Device;
        // OpenSSL's built-in "null" provider implements nothing. Without the default
        // fallback, every job its device's worker runs fails: its fetches resolved in
        // the device's context, not the process's (where they would succeed).
        let null = Device::load_with("nulldev", &["null".into()], false).unwrap();
        assert!(null.routes().iter().all(|r| r.device == "unavailable"));
        // With the fallback, the device's jobs run on `default` in its own context.
        let dev = Device::load("cpu2", &["null".into()]).unwrap();
        let routes = dev.routes();
        assert!(
            routes.iter().all(|r| r.device == "provider default"),
            "{routes:?}"
        );
        let mut cfg = PoolConfig::new(1);
        for d in [dev, null] {
            cfg.devices.push(DeviceWorkers {
                device: Arc::new(d),
                workers: 1,
                cpus: Vec::new(),
            });
        }
        let pool = Pool::start(cfg).unwrap();
        let stats = pool.workers();
        let names: Vec<&str> = stats.iter().map(|w| w.device.as_str()).collect();
        assert_eq!(names, ["cpu", "cpu2", "nulldev"]);
        let mut link = pool.link(64);
        for n in 0..60u8 {
            link.try_submit(u64::from(n), job(n)).unwrap();
        }
        let mut failed = 0;
        for c in collect(&mut link, 60) {
            match c.result {
                Ok(d) => assert_eq!(
                    finished(&d),
                    finished(&crate::run(job(c.tag as u8)).unwrap())
                ),
                Err(CryptoError::Library(_)) => failed += 1,
                Err(e) => panic!("job {}: {e:?}", c.tag),
            }
        }
        let [cpu, cpu2, nulldev] = [0, 1, 2].map(|i| stats[i].snapshot());
        for w in [&cpu, &cpu2, &nulldev] {
            assert!(w.jobs > 0, "every worker got jobs: {w:?}");
            assert_eq!(
                w.restarts, 0,
                "a failing job is an error, not a death: {w:?}"
            );
        }
        assert_eq!((cpu.errors, cpu2.errors), (0, 0));
        assert_eq!(nulldev.errors, nulldev.jobs);
        assert_eq!(failed, nulldev.jobs);
        assert_eq!(nulldev.device, "nulldev");
    }

    #[test]
    fn a_device_without_workers_is_refused() {
        let mut cfg = PoolConfig::new(1);
        cfg.devices.push(DeviceWorkers {
            device: Arc::new(crate::device::Device::load("d", &[]).unwrap()),
            workers: 0,
            cpus: Vec::new(),
        });
        let e = Pool::start(cfg).err().unwrap();
        assert!(e.contains("\"d\" has no workers"), "{e}");
    }

    #[test]
    fn full_queues_and_the_core_limit_push_back() {
        let (open, gate) = gate();
        let mut cfg = PoolConfig::new(1);
        cfg.queue_depth = 2;
        cfg.max_batch = 1;
        let pool = Pool::start(cfg).unwrap();
        let stats = pool.workers();
        let mut link = pool.link(10);
        link.try_submit(0, gated_job(0, &gate)).unwrap();
        wait_until("the worker to take the gated job", || {
            stats[0].queued.load(Ordering::Relaxed) == 0
        });
        link.try_submit(1, job(1)).unwrap();
        link.try_submit(2, job(2)).unwrap();
        let busy = link.try_submit(3, job(3)).unwrap_err();
        assert!(!busy.core_limit, "the queue is full");
        assert_eq!(
            finished(&crate::run(busy.job).unwrap()),
            finished(&crate::run(job(3)).unwrap()),
            "the job comes back"
        );
        // A second core with a limit of one in flight.
        let mut small = pool.link(1);
        let busy = small.try_submit(9, job(9)).unwrap_err();
        assert!(!busy.core_limit);
        open.send(()).unwrap();
        let done = collect(&mut link, 3);
        assert!(done.iter().all(|c| c.result.is_ok()));
        small.try_submit(9, job(9)).unwrap();
        let busy = small.try_submit(10, job(10)).unwrap_err();
        assert!(busy.core_limit, "one in flight already");
        assert!(collect(&mut small, 1)[0].result.is_ok());
    }

    #[test]
    fn a_worker_dying_mid_batch_fails_its_batch_and_is_replaced() {
        let (open, gate) = gate();
        let cfg = PoolConfig::new(1);
        let pool = Pool::start(cfg).unwrap();
        let stats = pool.workers();
        let mut link = pool.link(16);
        link.try_submit(100, gated_job(100, &gate)).unwrap();
        wait_until("the worker to take the gated job", || {
            stats[0].queued.load(Ordering::Relaxed) == 0
        });
        // One batch: the faulty job, then three good ones behind it.
        link.try_submit(101, faulty_job()).unwrap();
        for t in 102..105 {
            link.try_submit(t, job(t as u8)).unwrap();
        }
        open.send(()).unwrap();
        let mut done = collect(&mut link, 5);
        done.sort_by_key(|c| c.tag);
        assert!(done[0].result.is_ok(), "the gated job was finished before");
        assert_eq!(
            done[1].result.as_ref().unwrap_err(),
            &CryptoError::Unavailable("crypto worker panicked".into())
        );
        for c in &done[2..] {
            assert_eq!(
                c.result.as_ref().unwrap_err(),
                &CryptoError::Unavailable("crypto worker died mid-batch".into())
            );
        }
        wait_until("a replacement worker", || {
            stats[0].restarts.load(Ordering::Relaxed) == 1 && stats[0].alive.load(Ordering::Relaxed)
        });
        // The replacement serves new jobs.
        link.try_submit(200, job(5)).unwrap();
        let c = collect(&mut link, 1).pop().unwrap();
        assert_eq!(
            finished(&c.result.unwrap()),
            finished(&crate::run(job(5)).unwrap())
        );
        assert_eq!(stats[0].errors.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn scheduling_prefers_the_shorter_wait() {
        let a = WorkerStats::new(0, "cpu", None);
        let b = WorkerStats::new(1, "cpu", None);
        a.ewma_latency_ns.store(50_000, Ordering::Relaxed);
        b.ewma_latency_ns.store(200_000, Ordering::Relaxed);
        assert!(a.score() < b.score());
        // Four queued jobs on the fast worker make the slow idle one the better bet.
        a.queued.store(4, Ordering::Relaxed);
        assert!(a.score() > b.score());
    }
}
