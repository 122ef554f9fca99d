//! Active health checks, run by the poll-mode cores through their own network stacks
//! (the backends are reachable only through the data plane).
//!
//! Each (vserver, backend) pair with a `[vserver.health]` check is probed by exactly
//! one core (pairs are dealt round robin over the cores). A [`Probe`] opens a TCP
//! connection every `interval`; a `tcp` check passes when the handshake completes, an
//! `http` check sends `GET path HTTP/1.0` and passes when the status line carries one
//! of the expected codes. Anything else, or no verdict within `timeout`, fails.
//! `fall` consecutive failures take the backend out of rotation, `rise` consecutive
//! passes bring it back; each change is logged. Nothing here blocks or reads a clock:
//! the core passes the time in.
//!
//! A vserver with `[vserver.backend_tls]` checks over TLS: a full handshake with the
//! backend's client configuration (chain and name verified, no session resumed, so an
//! expired or replaced certificate fails the check), then for `http` the request inside
//! it. A failed handshake is `TLS failed (ALERT)`. The check's crypto runs on the core
//! (one handshake per backend per interval).

use crate::backends::{BackendRt, CheckResult};
use crate::config::{CheckKind, HealthCheck};
use std::net::SocketAddrV4;

use std::sync::Arc;

use netstack::{ConnId, TcpSocket, TcpState};
use tls::{ClientConfig, ClientConn};

/// Longest status line (and headers before it) a check reads before it gives up.
const MAX_ANSWER: usize = 512;

/// An `http` check's verdict on the answer so far (`closed`: no more will come), or
/// `None` while it is still coming.
fn http_verdict(answer: &[u8], expect: &[u16], closed: bool) -> Option<CheckResult> {
    match backend_wire::http1::status_code(answer) {
        Some(Ok(code)) if expect.contains(&code) => Some(CheckResult::Passed),
        Some(Ok(code)) => Some(CheckResult::Status(code)),
        Some(Err(_)) => Some(CheckResult::NotHttp),
        None if answer.len() >= MAX_ANSWER => Some(CheckResult::NotHttp),
        None if closed => Some(CheckResult::Closed),
        None => None,
    }
}

/// One core's check of one backend.
pub struct Probe {
    pub vserver: u32,
    pub backend: u32,
    /// When the next check starts (ms on the core's clock).
    pub next_at_ms: u64,
    /// The check in flight and when it times out.
    pub conn: Option<ConnId>,
    pub deadline_ms: u64,
    passes: u32,
    fails: u32,
    /// The backend's passive take-downs when this probe last counted a verdict.
    passive_epoch: u64,
    connected: bool,
    sent: bool,
    answer: Vec<u8>,
    /// The check's TLS client (`[vserver.backend_tls]`), once connected.
    tls: Option<Box<ClientConn>>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("vserver", &self.vserver)
            .field("backend", &self.backend)
            .field("conn", &self.conn)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// What a step of a check's connection decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// No verdict yet.
    Wait,
    /// A verdict; the connection has been closed and the caller releases it.
    Done(CheckResult),
}

impl Probe {
    /// A probe whose first check starts at `first_ms`.
    pub fn new(vserver: u32, backend: u32, first_ms: u64) -> Self {
        Probe {
            vserver,
            backend,
            next_at_ms: first_ms,
            conn: None,
            deadline_ms: 0,
            passes: 0,
            fails: 0,
            passive_epoch: 0,
            connected: false,
            sent: false,
            answer: Vec::new(),
            tls: None,
        }
    }

    /// A check is starting on `conn` at `now_ms`.
    pub fn started(&mut self, conn: ConnId, check: &HealthCheck, now_ms: u64) {
        self.conn = Some(conn);
        self.deadline_ms = now_ms + check.timeout.as_millis() as u64;
        self.next_at_ms = now_ms + check.interval.as_millis() as u64;
        self.connected = false;
        self.sent = false;
        self.answer.clear();
        self.tls = None;
    }

    /// Moves the check's connection on: sends the HTTP request once connected, reads
    /// the answer, and decides. The caller releases the connection on `Done`.
    pub fn step(
        &mut self,
        s: &mut TcpSocket,
        check: &HealthCheck,
        addr: SocketAddrV4,
        tls: Option<&Arc<ClientConfig>>,
        now_ms: u64,
    ) -> Step {
        match s.state() {
            TcpState::SynSent | TcpState::SynReceived => return Step::Wait,
            // Never seen connected: the SYN was refused (or the connection was reset
            // before this core looked).
            TcpState::Closed | TcpState::TimeWait if !self.connected => {
                return Step::Done(CheckResult::Refused);
            }
            _ => self.connected = true,
        }
        if let Some(cfg) = tls {
            return self.step_tls(s, check, addr, cfg, now_ms);
        }
        let (path, want_host, expect) = match &check.kind {
            CheckKind::Tcp => {
                s.close();
                return Step::Done(CheckResult::Passed);
            }
            CheckKind::Http { path, host, expect } => (path, host, expect),
        };
        if !self.sent && s.can_send() {
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: appliance-health-check\r\nConnection: close\r\n\r\n",
                want_host.clone().unwrap_or_else(|| addr.to_string())
            );
            // A fresh socket's send buffer (>= 1 KiB) holds the whole request.
            if s.send_slice(req.as_bytes()).ok() != Some(req.len()) {
                s.abort();
                return Step::Done(CheckResult::NoSlot);
            }
            self.sent = true;
        }
        while s.can_recv() && self.answer.len() < MAX_ANSWER {
            let room = MAX_ANSWER - self.answer.len();
            let got = s
                .recv(|b| {
                    let n = b.len().min(room);
                    (n, b[..n].to_vec())
                })
                .unwrap_or_default();
            if got.is_empty() {
                break;
            }
            self.answer.extend_from_slice(&got);
        }
        let closed = !s.may_recv() || s.state() == TcpState::Closed;
        let verdict = http_verdict(&self.answer, expect, closed);
        match verdict {
            Some(r) => {
                s.close();
                Step::Done(r)
            }
            None => Step::Wait,
        }
    }

    /// [`Probe::step`] over TLS: the handshake, then the check inside it.
    fn step_tls(
        &mut self,
        s: &mut TcpSocket,
        check: &HealthCheck,
        addr: SocketAddrV4,
        cfg: &Arc<ClientConfig>,
        now_ms: u64,
    ) -> Step {
        if self.tls.is_none() {
            let c = match cfg.share_group() {
                Some(g) => tls::KeyShare::generate(g)
                    .map_err(tls::Error::from)
                    .and_then(|share| ClientConn::new(cfg.clone(), share, None, now_ms)),
                None => ClientConn::without_share(cfg.clone(), None, now_ms),
            };
            match c {
                Ok(c) => self.tls = Some(Box::new(c)),
                Err(_) => {
                    s.abort();
                    return Step::Done(CheckResult::Tls(tls::error::alert::INTERNAL_ERROR));
                }
            }
        }
        let Some(c) = self.tls.as_mut() else {
            return Step::Wait;
        };
        let _ = driver::pump::fill(s, &mut **c);
        let failed = c.process(now_ms).err();
        let mut verdict = None;
        if let Some(e) = failed {
            verdict = Some(CheckResult::Tls(match e {
                tls::Error::PeerAlert(a) => a,
                e => e.alert().unwrap_or(0),
            }));
        } else if c.is_established() {
            match &check.kind {
                CheckKind::Tcp => {
                    c.close();
                    verdict = Some(CheckResult::Passed);
                }
                CheckKind::Http { path, host, expect } => {
                    if !self.sent {
                        let req = format!(
                            "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: appliance-health-check\r\nConnection: close\r\n\r\n",
                            host.clone().unwrap_or_else(|| addr.to_string())
                        );
                        self.sent = c.send(req.as_bytes()).ok() == Some(req.len());
                    }
                    let room = MAX_ANSWER.saturating_sub(self.answer.len());
                    let n = c.plaintext().len().min(room);
                    self.answer.extend_from_slice(&c.plaintext()[..n]);
                    c.consume_plaintext(n);
                    verdict = http_verdict(&self.answer, expect, c.peer_closed());
                    if verdict.is_some() {
                        c.close();
                    }
                }
            }
        }
        // What the client role wrote (its flight, the request, an alert, close_notify).
        let _ = driver::pump::flush(&mut **c, s);
        if verdict.is_none() && (!s.may_recv() || s.state() == TcpState::Closed) {
            verdict = Some(CheckResult::Closed);
        }
        match verdict {
            Some(r) => {
                s.close();
                Step::Done(r)
            }
            None => Step::Wait,
        }
    }

    /// Counts a verdict and moves the backend up or down after `rise` passes or
    /// `fall` failures in a row. Returns `Some(up)` when its health changed.
    pub fn finish(
        &mut self,
        r: CheckResult,
        b: &BackendRt,
        check: &HealthCheck,
        now_ms: u64,
    ) -> Option<bool> {
        self.conn = None;
        b.record_check(r);
        // Passive health took it down since: passes before that do not count.
        let epoch = b.passive_epoch.load(std::sync::atomic::Ordering::Relaxed);
        if epoch != self.passive_epoch {
            self.passive_epoch = epoch;
            self.passes = 0;
        }
        if r == CheckResult::Passed {
            self.passes += 1;
            self.fails = 0;
            if !b.healthy() && self.passes >= check.rise {
                b.set_healthy(true, now_ms);
                return Some(true);
            }
        } else {
            self.fails += 1;
            self.passes = 0;
            if b.healthy() && self.fails >= check.fall {
                b.set_healthy(false, now_ms);
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rise_and_fall() {
        let check = HealthCheck {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            error_limit: None,
        };
        let b = BackendRt::for_tests();
        let mut p = Probe::new(0, 0, 0);
        // Up at start; two failures are not enough, a pass resets the count.
        assert_eq!(p.finish(CheckResult::Refused, &b, &check, 1), None);
        assert_eq!(p.finish(CheckResult::Timeout, &b, &check, 2), None);
        assert_eq!(p.finish(CheckResult::Passed, &b, &check, 3), None);
        assert_eq!(p.finish(CheckResult::Refused, &b, &check, 4), None);
        assert_eq!(p.finish(CheckResult::Refused, &b, &check, 5), None);
        assert!(b.healthy());
        assert_eq!(
            p.finish(CheckResult::Status(500), &b, &check, 6),
            Some(false)
        );
        assert!(!b.healthy());
        assert_eq!(p.finish(CheckResult::Refused, &b, &check, 7), None);
        assert_eq!(p.finish(CheckResult::Passed, &b, &check, 8), None);
        assert!(!b.healthy());
        assert_eq!(p.finish(CheckResult::Passed, &b, &check, 9), Some(true));
        assert!(b.healthy());
        assert_eq!(b.transitions.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(b.last_check(), CheckResult::Passed);
    }

    #[test]
    fn passive_errors_take_a_backend_down_until_rise_fresh_passes() {
        let check = HealthCheck {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            error_limit: Some(3),
        };
        let b = BackendRt::for_tests();
        let mut p = Probe::new(0, 0, 0);
        for t in 0..5 {
            assert_eq!(p.finish(CheckResult::Passed, &b, &check, t), None);
        }
        // Two errors, a good connection: the run starts again.
        assert!(!b.observed_error(3, 10) && !b.observed_error(3, 11));
        b.observed_ok();
        assert!(!b.observed_error(3, 12) && !b.observed_error(3, 13));
        assert!(b.observed_error(3, 14), "the third in a row");
        assert!(!b.healthy());
        for t in 15..60 {
            assert!(!b.observed_error(3, t), "already down: counts nothing");
        }
        // The passes before the take-down do not count: two fresh ones are needed.
        assert_eq!(p.finish(CheckResult::Passed, &b, &check, 16), None);
        assert!(!b.healthy());
        assert_eq!(p.finish(CheckResult::Passed, &b, &check, 17), Some(true));
        let r = std::sync::atomic::Ordering::Relaxed;
        assert_eq!((b.passive_downs.load(r), b.transitions.load(r)), (1, 2));
        // Back: one error does not take it out again, three in a row do.
        assert!(!b.observed_error(3, 70) && !b.observed_error(3, 71));
        assert!(b.observed_error(3, 72));
    }
}
