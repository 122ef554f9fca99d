//! Vservers and backends as every core shares them: weights, health, the operator's
//! switches (a vserver enabled or disabled, a backend draining), open connections,
//! and the two balancing methods that choose among the eligible backends.
//!
//! Everything here is atomics: a poll-mode core choosing a backend or ending a
//! connection never takes a lock, and the control thread reads and flips the same
//! atomics. A backend is *eligible* for new connections when it is healthy (or has
//! no health check) and not draining; connections already open are never touched by
//! a change of either.

use std::net::SocketAddrV4;

use control_proto::reply::{BackendSnap, VserverSnap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{Balance, Vserver};

/// The last health-check result of a backend, as the control socket reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// No check has finished yet.
    None,
    Passed,
    /// The backend answered the SYN with a RST.
    Refused,
    /// Not passed within the check's timeout.
    Timeout,
    /// The connection was reset or closed before an HTTP status line came.
    Closed,
    /// An HTTP status that is not in `expect`.
    Status(u16),
    /// The answer does not start with an HTTP/1.x status line.
    NotHttp,
    /// No local port or connection slot for the check's connection.
    NoSlot,
    /// `[vserver.backend_tls]`: the TLS handshake failed with this alert (ours, or the
    /// backend's; 0 when no alert applies, such as a timeout).
    Tls(u8),
}

impl CheckResult {
    fn encode(self) -> u64 {
        match self {
            CheckResult::None => 0,
            CheckResult::Passed => 1,
            CheckResult::Refused => 2,
            CheckResult::Timeout => 3,
            CheckResult::Closed => 4,
            CheckResult::Status(s) => 5 | (u64::from(s) << 8),
            CheckResult::NotHttp => 6,
            CheckResult::NoSlot => 7,
            CheckResult::Tls(a) => 8 | (u64::from(a) << 8),
        }
    }

    fn decode(v: u64) -> CheckResult {
        match v & 0xff {
            1 => CheckResult::Passed,
            2 => CheckResult::Refused,
            3 => CheckResult::Timeout,
            4 => CheckResult::Closed,
            5 => CheckResult::Status((v >> 8) as u16),
            6 => CheckResult::NotHttp,
            7 => CheckResult::NoSlot,
            8 => CheckResult::Tls((v >> 8) as u8),
            _ => CheckResult::None,
        }
    }
}

impl std::fmt::Display for CheckResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckResult::None => write!(f, "none yet"),
            CheckResult::Passed => write!(f, "passed"),
            CheckResult::Refused => write!(f, "connection refused"),
            CheckResult::Timeout => write!(f, "timed out"),
            CheckResult::Closed => write!(f, "closed before a status line"),
            CheckResult::Status(s) => write!(f, "HTTP status {s}"),
            CheckResult::NotHttp => write!(f, "answer is not HTTP/1.x"),
            CheckResult::NoSlot => write!(f, "no local port for the check"),
            CheckResult::Tls(a) => write!(f, "TLS failed ({})", tls::error::alert::name(*a)),
        }
    }
}

/// One backend of one vserver.
#[derive(Debug)]
pub struct BackendRt {
    pub addr: SocketAddrV4,
    /// Set from the configuration (a reload may change it).
    weight: AtomicU32,
    healthy: AtomicBool,
    draining: AtomicBool,
    /// Open connections to it, over all cores.
    active: AtomicU64,
    /// Connections it was chosen for.
    pub chosen: AtomicU64,
    /// Of those, how many it refused or did not answer.
    pub failed: AtomicU64,
    pub checks_passed: AtomicU64,
    pub checks_failed: AtomicU64,
    last_check: AtomicU64,
    /// Times it went down or came back up.
    pub transitions: AtomicU64,
    /// When it last went down or up (milliseconds since [`crate::epoch`]).
    pub changed_ms: AtomicU64,
    /// Passive health: client connections in a row it refused, reset or left
    /// unanswered (any core), and the times that took it out of rotation.
    errors_in_row: AtomicU32,
    pub passive_downs: AtomicU64,
    /// Bumped by each passive take-down: the active check's count of passes starts
    /// again, so the backend comes back only after `rise` fresh ones.
    pub passive_epoch: AtomicU64,
    /// `[vserver.backend_tls]`: TLS handshakes with it, full and resumed, and TLS
    /// failures (certificate, alert, timeout, bad records).
    pub tls_full: AtomicU64,
    pub tls_resumed: AtomicU64,
    pub tls_failed: AtomicU64,
    /// The suite of the newest TLS handshake with it (0 before the first).
    tls_suite: AtomicU32,
}

impl BackendRt {
    fn new(addr: SocketAddrV4, weight: u32) -> Self {
        BackendRt {
            addr,
            weight: AtomicU32::new(weight),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            active: AtomicU64::new(0),
            chosen: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            last_check: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            changed_ms: AtomicU64::new(0),
            errors_in_row: AtomicU32::new(0),
            passive_downs: AtomicU64::new(0),
            passive_epoch: AtomicU64::new(0),
            tls_full: AtomicU64::new(0),
            tls_resumed: AtomicU64::new(0),
            tls_failed: AtomicU64::new(0),
            tls_suite: AtomicU32::new(0),
        }
    }

    /// One TLS handshake with it completed (`[vserver.backend_tls]`).
    pub fn tls_handshake(&self, suite: u16, resumed: bool) {
        self.tls_suite.store(u32::from(suite), Ordering::Relaxed);
        let c = if resumed {
            &self.tls_resumed
        } else {
            &self.tls_full
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn for_tests() -> Self {
        BackendRt::new(SocketAddrV4::new([10, 0, 0, 2].into(), 80), 1)
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Takes new connections.
    pub fn eligible(&self) -> bool {
        self.healthy() && !self.draining()
    }

    /// `true` stops new connections to it; `false` lets them come again.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    pub fn last_check(&self) -> CheckResult {
        CheckResult::decode(self.last_check.load(Ordering::Relaxed))
    }

    /// Records a health-check result; the checking core decides on health.
    pub fn record_check(&self, r: CheckResult) {
        let c = if r == CheckResult::Passed {
            &self.checks_passed
        } else {
            &self.checks_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.last_check.store(r.encode(), Ordering::Relaxed);
    }

    /// Marks it up or down (the checking core, after `rise` or `fall` results).
    pub fn set_healthy(&self, up: bool, now_ms: u64) {
        if up {
            self.errors_in_row.store(0, Ordering::Relaxed);
        }
        if self.healthy.swap(up, Ordering::Relaxed) != up {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            self.changed_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Passive health: a client connection through it ended well.
    pub fn observed_ok(&self) {
        if self.errors_in_row.load(Ordering::Relaxed) != 0 {
            self.errors_in_row.store(0, Ordering::Relaxed);
        }
    }

    /// Passive health: it refused, reset or did not answer a client connection.
    /// With `limit` errors in a row it goes down (returns `true` when this call took
    /// it down).
    pub fn observed_error(&self, limit: u32, now_ms: u64) -> bool {
        // A backend that is out already counts nothing: its run starts afresh when
        // it comes back.
        if !self.healthy() {
            return false;
        }
        let n = self.errors_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        if n < limit {
            return false;
        }
        self.errors_in_row.store(0, Ordering::Relaxed);
        if self.healthy.swap(false, Ordering::Relaxed) {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            self.changed_ms.store(now_ms, Ordering::Relaxed);
            self.passive_downs.fetch_add(1, Ordering::Relaxed);
            self.passive_epoch.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// A connection to it has ended.
    pub fn closed_one(&self) {
        // Never below zero, whatever the order of events.
        let _ = self
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// A vserver as the cores share it.
///
/// A reload builds a new `VserverRt` from the new configuration; what operators
/// switched and what is counted lives behind `Arc`s that the new one shares with the
/// old one of the same name ([`VserverRt::carry`]), so a reload keeps a disabled
/// vserver disabled, a draining backend draining, health as last checked, and every
/// counter running. Connections opened before the reload keep their old `VserverRt`
/// (and its configuration) until they end.
pub struct VserverRt {
    pub cfg: Vserver,
    name: Arc<str>,
    enabled: Arc<AtomicBool>,
    pub backends: Vec<Arc<BackendRt>>,
    /// Round-robin cursor (also rotates least-connections ties).
    next: Arc<AtomicUsize>,
    /// New connections reset because the vserver was disabled.
    pub refused_disabled: Arc<AtomicU64>,
    /// New connections closed because no backend was eligible.
    pub no_backend: Arc<AtomicU64>,
}

impl VserverRt {
    pub fn new(cfg: Vserver) -> Self {
        VserverRt::carry(cfg, None)
    }

    /// The vserver `cfg` describes, taking over `prev`'s switches and counters (the
    /// caller passes the running vserver of the same name), and those of each backend
    /// whose address `prev` has too; that backend's weight becomes the new one. A
    /// backend that is down stays down until its checks pass, unless `cfg` has no
    /// health check any more (then nothing would bring it back: it counts as up).
    pub fn carry(cfg: Vserver, prev: Option<&VserverRt>) -> Self {
        let backends = cfg
            .backends
            .iter()
            .map(
                |b| match prev.and_then(|p| p.backends.iter().find(|o| o.addr == b.addr)) {
                    Some(old) => {
                        old.weight.store(b.weight, Ordering::Relaxed);
                        if cfg.health.is_none() {
                            old.set_healthy(true, crate::now_ms());
                        }
                        old.clone()
                    }
                    None => Arc::new(BackendRt::new(b.addr, b.weight)),
                },
            )
            .collect();
        match prev {
            Some(p) => VserverRt {
                name: cfg.name.as_str().into(),
                cfg,
                enabled: p.enabled.clone(),
                backends,
                next: p.next.clone(),
                refused_disabled: p.refused_disabled.clone(),
                no_backend: p.no_backend.clone(),
            },
            None => VserverRt {
                name: cfg.name.as_str().into(),
                cfg,
                enabled: Arc::new(AtomicBool::new(true)),
                backends,
                next: Arc::new(AtomicUsize::new(0)),
                refused_disabled: Arc::new(AtomicU64::new(0)),
                no_backend: Arc::new(AtomicU64::new(0)),
            },
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The vserver's name, shareable (the access log holds it past the vserver).
    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    /// A disabled vserver resets new connections; open ones carry on.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// The backend index for `addr` ("ip:port").
    pub fn backend_index(&self, addr: &str) -> Option<usize> {
        self.backends
            .iter()
            .position(|b| b.addr.to_string() == addr)
    }

    /// Chooses a backend for a new connection by the vserver's method and counts it
    /// open; `None` when no backend is eligible.
    pub fn pick(&self) -> Option<usize> {
        let cursor = self.next.fetch_add(1, Ordering::Relaxed);
        let i = match self.cfg.balance {
            Balance::RoundRobin => self.pick_round_robin(cursor),
            Balance::LeastConnections => self.pick_least_connections(cursor),
        }?;
        let b = &self.backends[i];
        b.active.fetch_add(1, Ordering::Relaxed);
        b.chosen.fetch_add(1, Ordering::Relaxed);
        Some(i)
    }

    /// Weighted round robin: slot `cursor mod (sum of eligible weights)`, each
    /// eligible backend holding `weight` consecutive slots.
    fn pick_round_robin(&self, cursor: usize) -> Option<usize> {
        let total: usize = self
            .backends
            .iter()
            .filter(|b| b.eligible())
            .map(|b| b.weight() as usize)
            .sum();
        if total == 0 {
            return None;
        }
        let mut slot = cursor % total;
        for (i, b) in self.backends.iter().enumerate() {
            if !b.eligible() {
                continue;
            }
            let w = b.weight() as usize;
            if slot < w {
                return Some(i);
            }
            slot -= w;
        }
        // Health changed between the two passes: take any eligible one.
        self.backends.iter().position(|b| b.eligible())
    }

    /// The eligible backend with the fewest open connections per unit of weight;
    /// ties go round robin (the scan starts at the cursor).
    fn pick_least_connections(&self, cursor: usize) -> Option<usize> {
        let n = self.backends.len();
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = (cursor + k) % n;
            let b = &self.backends[i];
            if !b.eligible() {
                continue;
            }
            let (a, w) = (b.active(), u64::from(b.weight()));
            match best {
                // a / w < ba / bw, without division.
                Some((_, ba, bw)) if a * bw >= ba * w => {}
                _ => best = Some((i, a, w)),
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// The state the control socket reports.
    pub fn snapshot(&self, now_ms: u64) -> VserverSnap {
        VserverSnap {
            name: self.cfg.name.clone(),
            listen: self.cfg.listen.to_string(),
            mode: match self.cfg.mode {
                crate::config::Mode::Tcp => "tcp",
                crate::config::Mode::Tls => "tls",
                crate::config::Mode::Socks5 => "socks5",
            }
            .into(),
            enabled: self.enabled(),
            balance: match self.cfg.balance {
                crate::config::Balance::RoundRobin => "round_robin",
                crate::config::Balance::LeastConnections => "least_connections",
            }
            .into(),
            health_check: self.cfg.health.as_ref().map(|h| match &h.kind {
                crate::config::CheckKind::Tcp => "tcp".to_string(),
                crate::config::CheckKind::Http { path, .. } => format!("http GET {path}"),
            }),
            refused_disabled: self.refused_disabled.load(Ordering::Relaxed),
            no_backend: self.no_backend.load(Ordering::Relaxed),
            backends: self
                .backends
                .iter()
                .map(|b| BackendSnap {
                    address: b.addr.to_string(),
                    weight: b.weight(),
                    state: match (b.healthy(), b.draining()) {
                        (false, _) => "down",
                        (true, true) => "draining",
                        (true, false) => "up",
                    }
                    .into(),
                    healthy: b.healthy(),
                    draining: b.draining(),
                    active: b.active(),
                    chosen: b.chosen.load(Ordering::Relaxed),
                    failed: b.failed.load(Ordering::Relaxed),
                    checks_passed: b.checks_passed.load(Ordering::Relaxed),
                    checks_failed: b.checks_failed.load(Ordering::Relaxed),
                    last_check: b.last_check().to_string(),
                    transitions: b.transitions.load(Ordering::Relaxed),
                    passive_downs: b.passive_downs.load(Ordering::Relaxed),
                    since_change_secs: (b.transitions.load(Ordering::Relaxed) > 0).then(|| {
                        now_ms.saturating_sub(b.changed_ms.load(Ordering::Relaxed)) as f64 / 1000.0
                    }),
                    tls: self.cfg.backend_tls.as_ref().map(|_| {
                        let suite = b.tls_suite.load(Ordering::Relaxed) as u16;
                        control_proto::reply::BackendTlsSnap {
                            version: (suite != 0).then(|| {
                                if tls::msgs::suite::is_tls13(suite) {
                                    "TLSv1.3"
                                } else {
                                    "TLSv1.2"
                                }
                                .to_string()
                            }),
                            suite: (suite != 0).then(|| tls::msgs::suite::name(suite).to_string()),
                            full: b.tls_full.load(Ordering::Relaxed),
                            resumed: b.tls_resumed.load(Ordering::Relaxed),
                            failed: b.tls_failed.load(Ordering::Relaxed),
                        }
                    }),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, Mode};
    use crate::transmit::TransmitConfig;

    fn vs(weights: &[u32], balance: Balance) -> VserverRt {
        VserverRt::new(Vserver {
            name: "t".into(),
            listen: "10.0.0.1:80".parse().unwrap(),
            mode: Mode::Tcp,
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| Backend {
                    addr: SocketAddrV4::new([10, 0, 0, 2 + i as u8].into(), 80),
                    weight,
                })
                .collect(),
            balance,
            health: None,
            tls: None,
            socks: None,
            session_cache: 0,
            transmit: TransmitConfig::default(),
            proxy_protocol: false,
            backend_connect: crate::config::BackendConnect::Accept,
            backend_tls: None,
        })
    }

    #[test]
    fn a_reload_carries_switches_health_and_counts_by_name_and_address() {
        let old = vs(&[1, 1], Balance::RoundRobin);
        old.set_enabled(false);
        old.backends[0].set_draining(true);
        old.backends[1].set_healthy(false, 5);
        old.no_backend.fetch_add(3, Ordering::Relaxed);
        // The second backend stays (weight 5 now), the first goes, a third is new.
        let mut cfg = vs(&[5, 1], Balance::RoundRobin).cfg;
        cfg.backends[0].addr = old.backends[1].addr;
        cfg.backends[1].addr = "10.0.0.9:80".parse().unwrap();
        cfg.health = Some(crate::config::HealthCheck {
            kind: crate::config::CheckKind::Tcp,
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            rise: 2,
            fall: 2,
            error_limit: None,
        });
        let new = VserverRt::carry(cfg.clone(), Some(&old));
        assert!(!new.enabled(), "the operator's disable survives");
        assert_eq!(new.no_backend.load(Ordering::Relaxed), 3);
        assert!(Arc::ptr_eq(&new.backends[0], &old.backends[1]));
        assert_eq!(new.backends[0].weight(), 5);
        assert!(!new.backends[0].healthy(), "down until its checks pass");
        assert!(new.backends[1].eligible() && new.backends[1].chosen.load(Ordering::Relaxed) == 0);
        // Counting on either copy is counting on both.
        new.no_backend.fetch_add(1, Ordering::Relaxed);
        assert_eq!(old.no_backend.load(Ordering::Relaxed), 4);
        // Without a health check nothing would bring a down backend back: it is up.
        cfg.health = None;
        let unchecked = VserverRt::carry(cfg, Some(&new));
        assert!(unchecked.backends[0].healthy());
    }

    fn counts(v: &VserverRt, n: usize) -> Vec<u64> {
        let mut c = vec![0; v.backends.len()];
        for _ in 0..n {
            match v.pick() {
                Some(i) => c[i] += 1,
                None => panic!("no backend"),
            }
        }
        c
    }

    #[test]
    fn round_robin_follows_weights_and_skips_ineligible() {
        let v = vs(&[1, 3, 1], Balance::RoundRobin);
        assert_eq!(counts(&v, 500), vec![100, 300, 100]);
        v.backends[1].set_healthy(false, 5);
        assert_eq!(v.backends[1].transitions.load(Ordering::Relaxed), 1);
        assert_eq!(counts(&v, 200), vec![100, 0, 100]);
        v.backends[0].set_draining(true);
        assert_eq!(counts(&v, 50), vec![0, 0, 50]);
        v.backends[2].set_healthy(false, 6);
        assert_eq!(v.pick(), None);
        v.backends[0].set_draining(false);
        assert_eq!(counts(&v, 10), vec![10, 0, 0]);
    }

    #[test]
    fn least_connections_weighs_open_connections() {
        let v = vs(&[1, 2], Balance::LeastConnections);
        // Nobody closes: the open counts grow 1:2.
        assert_eq!(counts(&v, 300), vec![100, 200]);
        // Backend 1 closes all of its: it takes the next ones until level again.
        for _ in 0..200 {
            v.backends[1].closed_one();
        }
        assert_eq!(counts(&v, 200), vec![0, 200]);
        assert_eq!(v.backends[1].active(), 200);
        // Closing more than were open never wraps.
        for _ in 0..500 {
            v.backends[0].closed_one();
        }
        assert_eq!(v.backends[0].active(), 0);
    }

    #[test]
    fn check_results_round_trip_and_count() {
        let v = vs(&[1], Balance::RoundRobin);
        let b = &v.backends[0];
        for r in [
            CheckResult::Passed,
            CheckResult::Refused,
            CheckResult::Timeout,
            CheckResult::Closed,
            CheckResult::Status(503),
            CheckResult::NotHttp,
            CheckResult::NoSlot,
        ] {
            b.record_check(r);
            assert_eq!(b.last_check(), r);
        }
        assert_eq!(b.checks_passed.load(Ordering::Relaxed), 1);
        assert_eq!(b.checks_failed.load(Ordering::Relaxed), 6);
        assert_eq!(b.last_check().to_string(), "no local port for the check");
        let s = v.snapshot(10);
        assert_eq!(s.backends[0].state, "up");
        assert_eq!(s.backends[0].since_change_secs, None);
    }
}
