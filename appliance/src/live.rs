//! The running configuration as the cores and the control thread share it, and
//! reload: a new configuration applied at once, with no connection lost.
//!
//! A [`Generation`] is one applied configuration's vservers. [`Live`] holds the
//! current one and its number. Each poll-mode core compares that number with its own
//! once per loop iteration (one relaxed atomic load) and, when it changed, takes the
//! new generation (one mutex lock, held to clone an `Arc`): new connections from then
//! on use the new vservers, certificates and backends, while every open connection
//! keeps the `VserverRt` and TLS configuration it started with until it ends.
//!
//! [`Live::reload`] validates the whole file first (the same loader as start-up); a
//! file with any error is refused with that error and the running generation stays.
//! What a reload cannot change without a restart (`[dataplane]`, `[tcp]`, `[crypto]`,
//! `[control]`, `[metrics]`, `[log]`, `[cluster]`, `[session_store]`) is refused too,
//! naming the section. What carries over,
//! matched by vserver name and backend address: the operator's switches, health,
//! counters (see [`VserverRt::carry`]), a `tls` vserver's TLS 1.2 sessions (they live
//! in the node's session store, in a table named by the vserver), and its ticket keys
//! (its own ring when rotation and lifetime are unchanged; in a cluster they are derived
//! from the cluster key anyway), so sessions issued before the reload still resume.
//!
//! `Live` also carries what the control thread asks of every core without a lock
//! on the cores' side: the shutdown [`Phase`], and `show sessions` requests (each
//! core answers into its own slot, see [`Live::sessions`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backends::VserverRt;
use crate::config::{Config, Vserver};
use session_store::Store;

/// One applied configuration.
pub struct Generation {
    /// 1 for the configuration the daemon started with, then one more per reload.
    pub id: u64,
    pub config: Config,
    pub vservers: Vec<Arc<VserverRt>>,
    /// When it was applied.
    pub applied: Instant,
}

/// The current generation, and which one each core has taken.
pub struct Live {
    id: AtomicU64,
    current: Mutex<Arc<Generation>>,
    adopted: Vec<AtomicU64>,
    /// One reload at a time.
    reloading: Mutex<()>,
    path: PathBuf,
    phase: AtomicU8,
    /// `show sessions`: the request number, and each core's answer to the latest
    /// request it saw.
    sessions_req: AtomicU64,
    sessions: Vec<Mutex<(u64, Vec<SessionRow>)>>,
    /// The node's session store (every generation's vservers keep their sessions in
    /// it; see `crate::sessions`).
    pub store: Arc<Store>,
}

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running = 0,
    /// SIGINT/SIGTERM: no new connections (the ports are closed), open ones finish.
    Draining = 1,
    /// The drain deadline passed: the cores reset what is still open.
    Cutting = 2,
}

pub use control_proto::reply::{ReloadSummary, SessionRow};

impl Live {
    /// Generation 1 from the start-up configuration (loaded from `path`), shared
    /// with `cores` poll-mode cores.
    pub fn new(config: Config, path: &Path, cores: usize, store: Arc<Store>) -> Self {
        let vservers = build(&config, None, &store).0;
        Live {
            id: AtomicU64::new(1),
            current: Mutex::new(Arc::new(Generation {
                id: 1,
                config,
                vservers,
                applied: Instant::now(),
            })),
            adopted: (0..cores).map(|_| AtomicU64::new(0)).collect(),
            reloading: Mutex::new(()),
            path: path.to_path_buf(),
            phase: AtomicU8::new(Phase::Running as u8),
            sessions_req: AtomicU64::new(0),
            sessions: (0..cores).map(|_| Mutex::new((0, Vec::new()))).collect(),
            store,
        }
    }

    /// The shutdown phase (a core reads it once per iteration).
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::Draining,
            _ => Phase::Cutting,
        }
    }

    /// Moves to `p` (never back).
    pub fn set_phase(&self, p: Phase) {
        self.phase.fetch_max(p as u8, Ordering::AcqRel);
    }

    /// The `show sessions` request a core should answer, if it has not yet.
    pub fn sessions_request(&self) -> u64 {
        self.sessions_req.load(Ordering::Acquire)
    }

    /// Core `core` answers request `req` with `rows`.
    pub fn answer_sessions(&self, core: usize, req: u64, rows: Vec<SessionRow>) {
        if let Some(slot) = self.sessions.get(core) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = (req, rows);
        }
    }

    /// Asks every core for its open client connections and collects the answers
    /// (waiting at most `limit`); also the cores that did not answer in time.
    pub fn sessions(&self, limit: Duration) -> (Vec<SessionRow>, Vec<usize>) {
        let req = self.sessions_req.fetch_add(1, Ordering::AcqRel) + 1;
        let start = Instant::now();
        loop {
            let behind: Vec<usize> = (0..self.sessions.len())
                .filter(|&c| self.sessions[c].lock().unwrap_or_else(|p| p.into_inner()).0 < req)
                .collect();
            if behind.is_empty() || start.elapsed() >= limit {
                let rows = self
                    .sessions
                    .iter()
                    .flat_map(|s| {
                        let s = s.lock().unwrap_or_else(|p| p.into_inner());
                        if s.0 == req {
                            s.1.clone()
                        } else {
                            Vec::new()
                        }
                    })
                    .collect();
                return (rows, behind);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The current generation's number (what a core compares once per iteration).
    pub fn id(&self) -> u64 {
        self.id.load(Ordering::Acquire)
    }

    /// The current generation.
    /// Re-checks every stapled OCSP response of the current configuration against the
    /// clock: one past its nextUpdate stops being stapled (a warning says which), one
    /// that became valid starts.
    pub fn refresh_staples(&self, now_unix: i64) {
        let gen = self.current();
        for v in &gen.vservers {
            let Some(t) = &v.cfg.tls else { continue };
            for site in &t.sites {
                for c in &site.certs {
                    let Some(st) = &c.staple else { continue };
                    if st.refresh(now_unix) {
                        let name = c.names.first().map(String::as_str).unwrap_or("?");
                        if st.valid() {
                            log::info!(
                                "vserver {}: the OCSP response for {name} is valid now; stapled",
                                v.cfg.name
                            );
                        } else {
                            log::warn!("vserver {}: the OCSP response for {name} is past its nextUpdate; no longer stapled (replace the file and reload)", v.cfg.name);
                        }
                    }
                }
            }
        }
    }

    pub fn current(&self) -> Arc<Generation> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration file reload reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Core `core` now serves new connections with generation `id`.
    pub fn adopted(&self, core: usize, id: u64) {
        if let Some(a) = self.adopted.get(core) {
            a.store(id, Ordering::Release);
        }
    }

    /// Reads the configuration file again and applies it; on any error nothing
    /// changes and the error says what to fix.
    pub fn reload(&self) -> Result<ReloadSummary, String> {
        let new = Config::load(&self.path).map_err(|e| e.to_string())?;
        self.apply(new)
    }

    /// Applies `new` (already validated by the loader).
    pub fn apply(&self, new: Config) -> Result<ReloadSummary, String> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        if self.phase() != Phase::Running {
            return Err("the appliance is shutting down".into());
        }
        let old = self.current();
        fixed_sections_unchanged(&old.config, &new)?;
        let (vservers, sessions_kept) = build(&new, Some(&old), &self.store);
        let names = |vs: &[Vserver]| vs.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        let (before, after) = (names(&old.config.vservers), names(&new.vservers));
        let certificates_changed = new
            .vservers
            .iter()
            .filter(|v| {
                old.config
                    .vservers
                    .iter()
                    .find(|o| o.name == v.name)
                    .is_some_and(|o| leaf_certificates(o) != leaf_certificates(v))
            })
            .map(|v| v.name.clone())
            .collect();
        let id = old.id + 1;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(Generation {
            id,
            config: new,
            vservers,
            applied: Instant::now(),
        });
        self.id.store(id, Ordering::Release);
        let cores_adopted = self.wait_adopted(id, Duration::from_secs(2));
        Ok(ReloadSummary {
            ok: true,
            generation: id,
            added: after
                .iter()
                .filter(|n| !before.contains(n))
                .cloned()
                .collect(),
            removed: before
                .iter()
                .filter(|n| !after.contains(n))
                .cloned()
                .collect(),
            kept: after
                .iter()
                .filter(|n| before.contains(n))
                .cloned()
                .collect(),
            sessions_kept,
            certificates_changed,
            cores_adopted,
        })
    }

    /// Waits (up to `limit`) until every core has taken generation `id`.
    fn wait_adopted(&self, id: u64, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let behind: Vec<usize> = (0..self.adopted.len())
                .filter(|&c| self.adopted[c].load(Ordering::Acquire) < id)
                .collect();
            if behind.is_empty() {
                return true;
            }
            if start.elapsed() >= limit {
                log::error!(
                    "reload: core(s) {behind:?} have not taken generation {id} after {limit:?}"
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The sections a reload cannot change: the port, cores, stack and crypto pool are
/// set up once, and the control socket and metrics listener are what reload is
/// asked through and watched by.
fn fixed_sections_unchanged(old: &Config, new: &Config) -> Result<(), String> {
    let mut changed = Vec::new();
    if old.dataplane != new.dataplane {
        changed.push("[dataplane]");
    }
    if old.tcp != new.tcp {
        changed.push("[tcp]");
    }
    if old.crypto != new.crypto {
        changed.push("[crypto]");
    }
    if old.control != new.control {
        changed.push("[control]");
    }
    if old.metrics != new.metrics {
        changed.push("[metrics]");
    }
    if old.log != new.log {
        changed.push("[log]");
    }
    if old.cluster != new.cluster {
        changed.push("[cluster]");
    }
    if old.session_store != new.session_store {
        changed.push("[session_store]");
    }
    if changed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} changed: a reload applies vservers only (their certificates, backends, \
             health checks and TLS settings); restart the appliance to change {}",
            changed.join(", "),
            if changed.len() == 1 { "it" } else { "them" }
        ))
    }
}

/// The DER of each leaf certificate a vserver serves.
fn leaf_certificates(v: &Vserver) -> Vec<Vec<u8>> {
    v.tls
        .iter()
        .flat_map(|t| t.sites.iter())
        .flat_map(|s| s.certs.iter())
        .filter_map(|c| c.chain.first().map(|d| d.to_vec()))
        .collect()
}

/// The runtime vservers of `cfg`, each taking over the state of `prev`'s vserver of
/// the same name; also the names of the `tls` vservers whose sessions carried over.
fn build(
    cfg: &Config,
    prev: Option<&Generation>,
    store: &Arc<Store>,
) -> (Vec<Arc<VserverRt>>, Vec<String>) {
    let mut kept = Vec::new();
    let vservers = cfg
        .vservers
        .iter()
        .map(|v| {
            let old = prev.and_then(|g| g.vservers.iter().find(|o| o.cfg.name == v.name));
            let mut v = v.clone();
            if let Some(old) = old {
                if carry_sessions(&mut v, &old.cfg, cfg.cluster.is_some()) {
                    kept.push(v.name.clone());
                }
            }
            crate::sessions::attach(&mut v, store, cfg);
            Arc::new(VserverRt::carry(v, old.map(|o| &**o)))
        })
        .collect();
    (vservers, kept)
}

/// Whether `new` keeps the sessions `old` issued: its session IDs stay in the node's
/// store (its table is named by the vserver's name), and its tickets open when its ring
/// is carried over (this node's own keys, where rotation and lifetime are unchanged: the
/// ring of `old` is given to `new`) or derived from the cluster key.
fn carry_sessions(new: &mut Vserver, old: &Vserver, cluster: bool) -> bool {
    let (Some(n), Some(o)) = (&new.tls, &old.tls) else {
        return false;
    };
    let ids = new.session_cache > 0 && old.session_cache > 0;
    let (nr, or) = (&n.resumption.tickets, &o.resumption.tickets);
    let tickets = match (nr, or) {
        (Some(_), Some(_)) if cluster => true,
        (Some(a), Some(b))
            if a.rotation_ms() == b.rotation_ms() && a.lifetime_ms() == b.lifetime_ms() =>
        {
            let mut t = (**n).clone();
            t.resumption.tickets = Some(b.clone());
            new.tls = Some(Arc::new(t));
            true
        }
        _ => false,
    };
    ids || tickets
}
