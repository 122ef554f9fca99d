//! One poll-mode core's application state ([`CoreApp`], the per-core driver's
//! `driver::App`): which vservers it serves new connections with and on which ports,
//! the health checks it runs, the shutdown phase it has acted on, and its counters.
//! The connections themselves are handlers ([`crate::conn`]); the loop is the
//! driver's.
//!
//! Work outside connections happens in [`CoreApp::housekeeping`], first in each loop
//! iteration: a new configuration generation is taken ([`crate::live`]), the shutdown
//! phases are acted on (draining closes the ports; cutting resets what is left), `show
//! sessions` requests are answered, and due health checks start.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use driver::{App, Cx, Net, Parts};
use netstack::{ConnId, TcpSocket};
use tls::SniRouter;

use crate::access::AccessSender;
use crate::backends::{CheckResult, VserverRt};
use crate::conn::probe::ProbeConn;
use crate::conn::socks::SocksConn;
use crate::conn::tcp::TcpConn;
use crate::conn::tls::TlsConn;
use crate::conn::{ClientLog, Conn, BACKEND};
use crate::health::{Probe, Step};
use crate::live::{Generation, Live, Phase};
use crate::stats::{add, ProxyStats, QueueStats};

/// One listening port of one generation: the vservers on it (several only for `tls`
/// vservers told apart by SNI), and for those the engine's router over their
/// configurations.
pub struct ListenerRt {
    pub vservers: Vec<Arc<VserverRt>>,
    pub router: Option<Arc<SniRouter>>,
}

/// Groups a generation's vservers by listening port, in the order they first appear.
fn listeners(vservers: &[Arc<VserverRt>]) -> Vec<(u16, ListenerRt)> {
    let mut out: Vec<(u16, ListenerRt)> = Vec::new();
    for v in vservers {
        let port = v.cfg.listen.port();
        match out.iter_mut().find(|(p, _)| *p == port) {
            Some((_, l)) => l.vservers.push(v.clone()),
            None => out.push((
                port,
                ListenerRt {
                    vservers: vec![v.clone()],
                    router: None,
                },
            )),
        }
    }
    for (_, l) in &mut out {
        if l.vservers.len() > 1 {
            let configs = l
                .vservers
                .iter()
                .filter_map(|v| v.cfg.tls.clone())
                .collect();
            // The configuration admits shared listeners of `tls` vservers only.
            l.router = SniRouter::new(configs).ok().map(Arc::new);
        }
    }
    out
}

/// One poll-mode core's application state.
pub struct CoreApp {
    core: usize,
    cores: usize,
    /// The configuration this core serves new connections with, and where reloads
    /// come from.
    live: Arc<Live>,
    gen: Arc<Generation>,
    /// Listeners of `gen`, by the stack's listener tag; a port no vserver of `gen`
    /// listens on any more is `None`.
    listeners: Vec<Option<Arc<ListenerRt>>>,
    /// The port of each listener tag (tags stay the same across reloads, so the
    /// stack's per-listener counters keep counting).
    listener_ports: Vec<u16>,
    /// The health checks this core runs, and the list's epoch (checks in flight for
    /// an older list are abandoned).
    probes: Vec<Probe>,
    probe_epoch: u64,
    /// Where finished connections are logged, if anywhere.
    pub access: Option<AccessSender>,
    /// The shutdown phase this core has acted on, and the last `show sessions`
    /// request it answered.
    phase: Phase,
    sessions_seen: u64,
    pub stats: Arc<ProxyStats>,
    pub queue_stats: Arc<QueueStats>,
    /// Scratch for one datagram (SOCKS UDP relays open them in place).
    pub udp_scratch: Vec<u8>,
    /// `[vserver.backend_tls]`: the newest ticket of each backend, offered next.
    pub backend_tickets: crate::conn::backend_tls::BackendTickets,
}

impl CoreApp {
    /// Core `core` of `cores`, serving `live`'s current generation on `net` from
    /// `now_ms` (the core's clock).
    pub fn new(
        net: &mut Net,
        core: usize,
        cores: usize,
        live: Arc<Live>,
        access: Option<AccessSender>,
        now_ms: u64,
    ) -> Self {
        let gen = live.current();
        let mut app = CoreApp {
            core,
            cores,
            live,
            gen: gen.clone(),
            listeners: Vec::new(),
            listener_ports: Vec::new(),
            probes: Vec::new(),
            probe_epoch: 0,
            access,
            phase: Phase::Running,
            sessions_seen: 0,
            stats: Arc::new(ProxyStats::default()),
            queue_stats: Arc::new(QueueStats::default()),
            udp_scratch: vec![0; 65_536],
            backend_tickets: Default::default(),
        };
        app.adopt(net, gen, now_ms);
        app
    }

    /// Serves new connections with generation `gen` from now on: listens on its
    /// ports (and stops listening on ports it no longer has), and runs its health
    /// checks. Open connections keep the vservers they started with. Checks in
    /// flight are abandoned; health itself carries over (see `VserverRt::carry`).
    fn adopt(&mut self, net: &mut Net, gen: Arc<Generation>, now_ms: u64) {
        let mut by_tag: Vec<Option<Arc<ListenerRt>>> = vec![None; self.listener_ports.len()];
        for (port, l) in listeners(&gen.vservers) {
            let tag = match self.listener_ports.iter().position(|&p| p == port) {
                Some(t) => t,
                None => {
                    self.listener_ports.push(port);
                    by_tag.push(None);
                    self.listener_ports.len() - 1
                }
            };
            net.stack.listen(port, tag as u32);
            // Steering keeps every port it ever saw: connections on a port dropped
            // by a reload still reach the core that owns them.
            if let Some(s) = net.steering() {
                s.add_listening(port);
            }
            by_tag[tag] = Some(Arc::new(l));
        }
        for (tag, l) in by_tag.iter().enumerate() {
            if l.is_none() {
                net.stack.unlisten(self.listener_ports[tag]);
            }
        }
        self.listeners = by_tag;
        self.abandon_probes();
        // Checked pairs are dealt round robin over the cores; first checks are spread
        // over the first interval so they do not all start at once.
        let mut k = 0usize;
        for (v, vs) in gen.vservers.iter().enumerate() {
            let Some(h) = &vs.cfg.health else { continue };
            for b in 0..vs.backends.len() {
                if k % self.cores.max(1) == self.core {
                    let first = (k as u64 * 97) % (h.interval.as_millis() as u64).max(1);
                    self.probes
                        .push(Probe::new(v as u32, b as u32, now_ms + first));
                }
                k += 1;
            }
        }
        self.live.adopted(self.core, gen.id);
        if gen.id > 1 {
            log::info!(
                "core {}: serving new connections with configuration generation {}",
                self.core,
                gen.id
            );
        }
        self.gen = gen;
    }

    /// Drops every health check; those in flight are reset at their next event.
    fn abandon_probes(&mut self) {
        self.probes.clear();
        self.probe_epoch += 1;
    }

    /// Shutdown: draining closes the ports (new SYNs get a RST) and stops the health
    /// checks; open connections go on. Cutting resets every connection still open.
    fn enter_phase(&mut self, parts: &mut Parts<'_, Self>, phase: Phase) {
        if phase >= Phase::Draining && self.phase < Phase::Draining {
            for &port in &self.listener_ports {
                parts.net.stack.unlisten(port);
            }
            self.listeners.iter_mut().for_each(|l| *l = None);
            self.abandon_probes();
            log::info!(
                "core {}: draining: ports closed, {} client connection(s) open",
                self.core,
                self.stats.clients_open.load(Ordering::Relaxed)
            );
        }
        self.phase = phase;
        if phase == Phase::Cutting {
            let clients = parts
                .conns
                .iter()
                .filter(|(_, c)| !matches!(c, Conn::Probe(_)))
                .count();
            parts.close_all(self, "shutdown");
            if clients > 0 {
                log::warn!(
                    "core {}: drain deadline passed: reset {clients} client connection(s)",
                    self.core
                );
            }
        }
    }

    /// Answers the latest `show sessions` request with this core's open clients.
    fn answer_sessions(&mut self, parts: &Parts<'_, Self>) {
        let req = self.live.sessions_request();
        let rows = parts
            .conns
            .iter()
            .filter_map(|(_, c)| c.session_row(self.core, parts.now_us))
            .collect();
        self.live.answer_sessions(self.core, req, rows);
        self.sessions_seen = req;
    }

    /// Starts the health checks that are due.
    fn run_probes(&mut self, parts: &mut Parts<'_, Self>) -> bool {
        let now_ms = parts.now_us / 1000;
        let mut worked = false;
        for k in 0..self.probes.len() {
            let p = &self.probes[k];
            if p.conn.is_some() || now_ms < p.next_at_ms {
                continue;
            }
            let vs = &self.gen.vservers[p.vserver as usize];
            let Some(check) = vs.cfg.health.clone() else {
                continue;
            };
            worked = true;
            let addr = vs.backends[p.backend as usize].addr;
            let epoch = self.probe_epoch;
            let deadline_us = parts.now_us + check.timeout.as_micros() as u64;
            let mut started = None;
            parts.insert(|cx| {
                let conn = cx.connect(addr, BACKEND).ok()?;
                started = Some(conn);
                Some(Conn::Probe(ProbeConn {
                    k,
                    epoch,
                    conn,
                    deadline_us,
                }))
            });
            match started {
                Some(conn) => self.probes[k].started(conn, &check, now_ms),
                None => {
                    self.probes[k].next_at_ms = now_ms + check.interval.as_millis() as u64;
                    self.probe_done(k, CheckResult::NoSlot, now_ms);
                }
            }
        }
        worked
    }

    /// Whether the check `k` of list `epoch` on `conn` is still the one in flight.
    pub fn probe_current(&self, k: usize, epoch: u64, conn: ConnId) -> bool {
        epoch == self.probe_epoch && self.probes.get(k).is_some_and(|p| p.conn == Some(conn))
    }

    /// Moves check `k` on over its socket.
    pub fn probe_step(&mut self, k: usize, s: &mut TcpSocket, now_ms: u64) -> Step {
        let p = &mut self.probes[k];
        let vs = &self.gen.vservers[p.vserver as usize];
        match vs.cfg.health.as_ref() {
            Some(check) => {
                let tls = vs
                    .cfg
                    .backend_tls
                    .as_ref()
                    .and_then(|b| b.per_backend.get(p.backend as usize));
                p.step(s, check, vs.backends[p.backend as usize].addr, tls, now_ms)
            }
            None => Step::Done(CheckResult::Closed),
        }
    }

    /// Records a verdict and logs a change of health.
    pub fn probe_done(&mut self, k: usize, r: CheckResult, now_ms: u64) {
        let Some(p) = self.probes.get_mut(k) else {
            return;
        };
        let vs = &self.gen.vservers[p.vserver as usize];
        let b = &vs.backends[p.backend as usize];
        let Some(check) = vs.cfg.health.as_ref() else {
            return;
        };
        match p.finish(r, b, check, now_ms) {
            Some(true) => log::warn!(
                "vserver {}: backend {} is UP again ({} checks passed)",
                vs.cfg.name,
                b.addr,
                check.rise
            ),
            Some(false) => log::warn!(
                "vserver {}: backend {} is DOWN and out of rotation ({} checks failed, last: {r})",
                vs.cfg.name,
                b.addr,
                check.fall
            ),
            None => {}
        }
    }
}

impl App for CoreApp {
    type Conn = Conn;

    /// A new client: a handler for its listener's mode. With one vserver on the
    /// port, the backend connection starts at once (it overlaps a TLS handshake);
    /// with several, the ClientHello's SNI chooses the vserver first.
    fn accept(&mut self, cx: &mut Cx<'_>, client: ConnId, listener: u32) -> Option<Conn> {
        add(&self.stats.accepted, 1);
        add(&self.stats.clients_open, 1);
        let log = ClientLog::new(cx.stack.remote_v4(client), cx.now_us);
        let Some(l) = self
            .listeners
            .get(listener as usize)
            .and_then(|l| l.clone())
        else {
            // A SYN that raced a reload which removed the port.
            crate::conn::abort(cx, client);
            crate::conn::release_client(cx, self, client, &log, None, None);
            return None;
        };
        if l.router.is_some() {
            return TlsConn::accept_shared(cx, client, l, log).map(Conn::Tls);
        }
        let vs = l.vservers[0].clone();
        if vs.cfg.socks.is_some() {
            return SocksConn::accept(cx, client, vs, log).map(Conn::Socks);
        }
        if vs.cfg.tls.is_some() {
            TlsConn::accept(cx, self, client, vs, log).map(Conn::Tls)
        } else {
            TcpConn::accept(cx, self, client, vs, log).map(|c| Conn::Tcp(Box::new(c)))
        }
    }

    fn housekeeping(&mut self, parts: &mut Parts<'_, Self>) -> bool {
        let mut worked = false;
        let phase = self.live.phase();
        if phase != self.phase {
            self.enter_phase(parts, phase);
            worked = true;
        }
        if self.live.id() != self.gen.id && self.phase == Phase::Running {
            let gen = self.live.current();
            self.adopt(parts.net, gen, parts.now_us / 1000);
            worked = true;
        }
        if self.live.sessions_request() != self.sessions_seen {
            self.answer_sessions(parts);
            worked = true;
        }
        if !self.probes.is_empty() {
            worked |= self.run_probes(parts);
        }
        worked
    }

    /// Copies the queue's counters where other threads can read them.
    fn publish(&mut self, net: &Net) {
        let c = net.queue.counters();
        let q = &self.queue_stats;
        q.rx_frames.store(c.rx_frames, Ordering::Relaxed);
        q.rx_bytes.store(c.rx_bytes, Ordering::Relaxed);
        q.tx_frames.store(c.tx_frames, Ordering::Relaxed);
        q.tx_bytes.store(c.tx_bytes, Ordering::Relaxed);
        q.tx_bursts.store(c.tx_bursts, Ordering::Relaxed);
        q.tx_dropped.store(c.tx_dropped, Ordering::Relaxed);
        q.rx_dropped.store(c.rx_dropped, Ordering::Relaxed);
        q.mbufs_in_use.store(c.mbufs_in_use, Ordering::Relaxed);
        let tls_segments: u64 = (0..self.listeners.len())
            .filter(|&i| {
                self.listeners[i]
                    .as_ref()
                    .is_some_and(|l| l.vservers[0].cfg.tls.is_some())
            })
            .map(|i| net.stack.listener_tx_segments(i as u32))
            .sum();
        self.stats
            .tls_segments_out
            .store(tls_segments, Ordering::Relaxed);
    }
}
