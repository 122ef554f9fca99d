//! Pinned poll-mode cores: start-up checks, pinning, the poll loop, busy/idle cycle
//! accounting and the idle policy.
//!
//! ## Cycle accounting
//! Like DPDK's telemetry "lcore poll busyness", every loop iteration is timed with the
//! TSC and its cycles go to `busy` when the iteration did work (a frame, a completion,
//! a timer) and to `idle` otherwise, including any time the idle policy slept. A busy
//! poll loop always shows 100 % CPU in `top`; `busy / (busy + idle)` is the real load,
//! and work per busy second is the capacity figure.
//!
//! ## Idle policy
//! * [`IdlePolicy::Busy`]: never sleep. Lowest latency, one core burnt at 100 % forever.
//!   Choose it on a dedicated box (`idle = "busy"`), and for benchmarks.
//! * [`IdlePolicy::Adaptive`] (the default): after a run of empty iterations the loop
//!   sleeps, starting at 10 µs and doubling to at most 200 µs, as DPDK's l3fwd-power backs
//!   off; any work resets it. Under load it never sleeps, so peak capacity is the same as
//!   busy polling; idle, it gives the core back. It is the default because an appliance
//!   that pegs every core it is given, even at zero traffic, is wrong on any shared or
//!   virtual host (including CI and the demo box), and the price, at most 200 µs on the
//!   first packet after an idle spell, does not show under load.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a poll-mode core does when an iteration finds no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdlePolicy {
    /// Spin forever (dedicated box, benchmarks).
    Busy,
    /// Back off with short sleeps after a run of empty iterations (default).
    #[default]
    Adaptive,
}

/// Empty iterations before the adaptive policy starts sleeping.
const ADAPTIVE_SPIN: u32 = 512;
const ADAPTIVE_MIN_SLEEP_US: u64 = 10;
const ADAPTIVE_MAX_SLEEP_US: u64 = 200;

/// One core's loop counters, written by that core only (relaxed stores) and readable
/// from any thread.
#[derive(Debug, Default)]
pub struct CoreStats {
    pub busy_cycles: AtomicU64,
    pub idle_cycles: AtomicU64,
    pub busy_loops: AtomicU64,
    pub idle_loops: AtomicU64,
    pub sleeps: AtomicU64,
}

/// A copy of [`CoreStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CoreSnapshot {
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub busy_loops: u64,
    pub idle_loops: u64,
    pub sleeps: u64,
}

impl CoreStats {
    pub fn snapshot(&self) -> CoreSnapshot {
        CoreSnapshot {
            busy_cycles: self.busy_cycles.load(Ordering::Relaxed),
            idle_cycles: self.idle_cycles.load(Ordering::Relaxed),
            busy_loops: self.busy_loops.load(Ordering::Relaxed),
            idle_loops: self.idle_loops.load(Ordering::Relaxed),
            sleeps: self.sleeps.load(Ordering::Relaxed),
        }
    }
}

impl CoreSnapshot {
    /// Busy fraction of the cycles between `earlier` and `self` (0 when no time passed).
    pub fn busy_fraction_since(&self, earlier: &CoreSnapshot) -> f64 {
        let busy = self.busy_cycles.saturating_sub(earlier.busy_cycles) as f64;
        let idle = self.idle_cycles.saturating_sub(earlier.idle_cycles) as f64;
        if busy + idle == 0.0 {
            0.0
        } else {
            busy / (busy + idle)
        }
    }
}

/// The cycle counter: the TSC on x86-64, nanoseconds elsewhere.
#[inline]
pub fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions on x86-64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
}

/// Cycles per second of [`cycles`], measured once (about 20 ms) and cached.
pub fn cycles_per_second() -> u64 {
    use std::sync::OnceLock;
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        let t0 = std::time::Instant::now();
        let c0 = cycles();
        std::thread::sleep(Duration::from_millis(20));
        let c1 = cycles();
        let secs = t0.elapsed().as_secs_f64();
        ((c1 - c0) as f64 / secs) as u64
    })
}

/// Runs a poll loop until `stop` is set: `step` does one iteration and says whether it
/// did any work. Cycles are accounted to `stats`; `idle` decides what empty
/// iterations do.
pub fn run_poll_loop(
    stats: &CoreStats,
    idle: IdlePolicy,
    stop: &AtomicBool,
    mut step: impl FnMut() -> bool,
) {
    let mut empty_run: u32 = 0;
    let mut sleep_us = ADAPTIVE_MIN_SLEEP_US;
    let mut t0 = cycles();
    while !stop.load(Ordering::Relaxed) {
        let worked = step();
        if worked {
            empty_run = 0;
            sleep_us = ADAPTIVE_MIN_SLEEP_US;
        } else {
            empty_run = empty_run.saturating_add(1);
            match idle {
                IdlePolicy::Busy => core::hint::spin_loop(),
                IdlePolicy::Adaptive if empty_run > ADAPTIVE_SPIN => {
                    std::thread::sleep(Duration::from_micros(sleep_us));
                    sleep_us = (sleep_us * 2).min(ADAPTIVE_MAX_SLEEP_US);
                    stats.sleeps.fetch_add(1, Ordering::Relaxed);
                }
                IdlePolicy::Adaptive => core::hint::spin_loop(),
            }
        }
        let t1 = cycles();
        let spent = t1.wrapping_sub(t0);
        t0 = t1;
        // Single writer: a load and a store, no locked instruction on the fast path.
        let (cyc, loops) = if worked {
            (&stats.busy_cycles, &stats.busy_loops)
        } else {
            (&stats.idle_cycles, &stats.idle_loops)
        };
        cyc.store(cyc.load(Ordering::Relaxed) + spent, Ordering::Relaxed);
        loops.store(loops.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Why a set of cores cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("dataplane.cores is empty: give at least one CPU for a poll-mode core")]
    Empty,
    #[error("dataplane.cores lists CPU {0} twice")]
    Duplicate(usize),
    #[error(
        "CPU {cpu} in dataplane.cores is not available to this process (allowed CPUs: {allowed:?})"
    )]
    NotAllowed { cpu: usize, allowed: Vec<usize> },
    #[error("CPU {cpu} is busy: another appliance process{holder} already runs a poll-mode core on it (lock {path})")]
    Busy {
        cpu: usize,
        holder: String,
        path: String,
    },
    #[error("cannot create the core lock {path}: {err}")]
    Lock { path: String, err: std::io::Error },
}

/// CPUs this thread may run on, or `None` if the OS would not say.
pub fn current_affinity() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect(),
        )
    }
}

/// Sets this thread's CPU affinity to `cpus`.
pub fn set_affinity(cpus: &[usize]) -> bool {
    // SAFETY: as above.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Exclusive claims on CPUs for poll-mode cores, released on drop (or process exit).
#[derive(Debug)]
pub struct CoreLocks {
    _files: Vec<File>,
}

/// Where core lock files live (`APPLIANCE_LOCK_DIR` overrides it for tests).
pub fn lock_dir() -> std::path::PathBuf {
    std::env::var_os("APPLIANCE_LOCK_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("appliance-cores"))
}

/// Checks that each CPU exists, is allowed for this process and is not used by another
/// appliance process, and claims them (an `flock` per CPU). A claim dies with its
/// process, so a crashed instance never leaves a core "busy".
pub fn claim_cores(cpus: &[usize]) -> Result<CoreLocks, CoreError> {
    if cpus.is_empty() {
        return Err(CoreError::Empty);
    }
    let allowed = current_affinity().unwrap_or_default();
    let mut seen = Vec::new();
    for &cpu in cpus {
        if seen.contains(&cpu) {
            return Err(CoreError::Duplicate(cpu));
        }
        seen.push(cpu);
        if !allowed.is_empty() && !allowed.contains(&cpu) {
            return Err(CoreError::NotAllowed { cpu, allowed });
        }
    }
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).map_err(|err| CoreError::Lock {
        path: dir.display().to_string(),
        err,
    })?;
    let mut files = Vec::new();
    for &cpu in cpus {
        let path = dir.join(format!("core-{cpu}.lock"));
        let lock_err = |err| CoreError::Lock {
            path: path.display().to_string(),
            err,
        };
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_err)?;
        // SAFETY: flock on an open file descriptor.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(CoreError::Busy {
                cpu,
                holder: if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                },
                path: path.display().to_string(),
            });
        }
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "{}", std::process::id());
        files.push(f);
    }
    Ok(CoreLocks { _files: files })
}

/// A running poll-mode core.
pub struct CoreHandle {
    pub index: usize,
    pub cpu: Option<usize>,
    pub stats: Arc<CoreStats>,
    join: std::thread::JoinHandle<()>,
}

impl CoreHandle {
    /// Waits for the core's loop to end; `Err` carries a panic message.
    pub fn join(self) -> Result<(), String> {
        self.join.join().map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into())
        })
    }
}

/// Starts core `index` on a thread pinned to `cpu` (unpinned when `None`, for tests)
/// and runs `body` there with the core's stats.
pub fn spawn_core<F>(index: usize, cpu: Option<usize>, body: F) -> std::io::Result<CoreHandle>
where
    F: FnOnce(&CoreStats) + Send + 'static,
{
    let stats = Arc::new(CoreStats::default());
    let s2 = stats.clone();
    let join = std::thread::Builder::new()
        .name(format!("poll-core-{index}"))
        .spawn(move || {
            if let Some(cpu) = cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    log::error!("poll-mode core {index}: could not pin to CPU {cpu}");
                }
            }
            body(&s2)
        })?;
    Ok(CoreHandle {
        index,
        cpu,
        stats,
        join,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_accounts_busy_and_idle_and_stops() {
        let stats = CoreStats::default();
        let stop = AtomicBool::new(false);
        let mut n = 0u32;
        run_poll_loop(&stats, IdlePolicy::Busy, &stop, || {
            n += 1;
            if n == 1000 {
                stop.store(true, Ordering::Relaxed);
            }
            n % 2 == 0
        });
        let s = stats.snapshot();
        assert_eq!(s.busy_loops, 500);
        assert_eq!(s.idle_loops, 500);
        assert!(s.busy_cycles > 0 && s.idle_cycles > 0);
    }

    #[test]
    fn adaptive_policy_sleeps_only_after_a_run_of_empty_loops() {
        let stats = CoreStats::default();
        let stop = AtomicBool::new(false);
        let mut n = 0u32;
        run_poll_loop(&stats, IdlePolicy::Adaptive, &stop, || {
            n += 1;
            if n as usize == ADAPTIVE_SPIN as usize + 3 {
                stop.store(true, Ordering::Relaxed);
            }
            false
        });
        // Iterations SPIN+1 ..= SPIN+3 are past the spin budget, so three sleeps.
        assert_eq!(stats.snapshot().sleeps, 3);
        let stats = CoreStats::default();
        let stop = AtomicBool::new(false);
        let mut n = 0u32;
        run_poll_loop(&stats, IdlePolicy::Adaptive, &stop, || {
            n += 1;
            if n == 5000 {
                stop.store(true, Ordering::Relaxed);
            }
            n % 100 == 0 // work every 100 iterations: never a long enough empty run
        });
        assert_eq!(stats.snapshot().sleeps, 0);
    }

    #[test]
    fn claims_refuse_duplicates_unknown_and_busy_cores() {
        let dir = std::env::temp_dir().join(format!("tlsa-locktest-{}", std::process::id()));
        std::env::set_var("APPLIANCE_LOCK_DIR", &dir);
        let cpu = current_affinity().unwrap()[0];
        assert!(matches!(claim_cores(&[]), Err(CoreError::Empty)));
        assert!(matches!(
            claim_cores(&[cpu, cpu]),
            Err(CoreError::Duplicate(_))
        ));
        assert!(matches!(
            claim_cores(&[4000]),
            Err(CoreError::NotAllowed { .. })
        ));
        let held = claim_cores(&[cpu]).unwrap();
        // flock is per open file description, so a second claim in this process
        // conflicts just as another process's would.
        let err = claim_cores(&[cpu]).unwrap_err();
        assert!(err.to_string().contains("is busy"), "{err}");
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(held);
        claim_cores(&[cpu]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
