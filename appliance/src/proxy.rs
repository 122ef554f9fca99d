//! The L4 (plain TCP) proxy: one [`Worker`] per poll-mode core.
//!
//! A worker owns its port queue, its steering endpoint and its network stack, and
//! runs one iteration of the poll loop per [`Worker::poll_once`]:
//! 1. an RX burst; each frame is processed here or handed to its owner core;
//! 2. frames other cores handed us;
//! 3. accepted connections get a backend (round robin per vserver, across cores) at
//!    once, or, on a port shared by several `tls` vservers, once the ClientHello's
//!    SNI has chosen the vserver (until then the engine holds the client alone);
//! 4. connections that changed have their bytes moved to their peer;
//! 5. with record offload on, the record work those connections lent (records to
//!    open, records to seal, with their keys) goes to the crypto pool as record jobs
//!    of up to `crypto.record_batch` connections each; completions come back in step
//!    3's crypto poll of a later iteration and their connections are served again;
//! 6. egress (timers, then every touched connection) and one TX flush.
//!
//! ## Closing
//! An orderly close is passed on: a FIN from one side becomes a FIN to the other once
//! all its data has been forwarded (half-close works). An abnormal end becomes an
//! abnormal end: if the backend refuses the connection, does not answer within
//! `tcp.handshake_timeout`, or resets it mid-transfer, the client gets a **RST**, and a
//! client reset or timeout resets the backend connection. Each is counted and logged;
//! other connections are untouched.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dataplane::steer::{Dest, SteerEndpoint, Steering};
use dataplane::{Frame, PortQueue, BURST};
use netstack::{ConnId, NetInstant, Stack, TcpSocket, TcpState};
use serde::Serialize;

use crate::access::{AccessRecord, AccessSender, TlsFields};
use crate::backends::CheckResult;
pub use crate::backends::VserverRt;
use crate::health::{Probe, Step};
use crate::live::{Generation, Live, Phase, SessionRow};
use crate::transmit::{Reason, TransmitConfig, TxState};
use crypto_offload::{Completion, CoreLink, CryptoError, Done, Job, RecordJob, RecordWork};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use tls::{ErrorClass, ServerConn, SniRouter};

/// One listening port of one generation: the vservers on it (several only for `tls`
/// vservers told apart by SNI), and for those the engine's router over their
/// configurations.
pub struct ListenerRt {
    vservers: Vec<Arc<VserverRt>>,
    router: Option<Arc<SniRouter>>,
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

/// Which side of a proxied pair a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Role {
    #[default]
    Client,
    Backend,
    /// A health check's connection (no peer).
    Probe,
}

/// Per-connection proxy state.
#[derive(Default)]
pub struct Side {
    role: Role,
    /// The other side; `None` for a client whose vserver SNI has yet to choose.
    peer: Option<ConnId>,
    /// The vserver (of the generation the connection started in: a reload does not
    /// change it); `None` for a client whose vserver SNI has yet to choose, and for
    /// a probe (its [`Probe`] names the vserver).
    vs: Option<Arc<VserverRt>>,
    /// The backend side: which of the vserver's backends (its open count drops when
    /// this side is released). A probe: the index of its [`Probe`].
    backend: u32,
    /// A client on a port shared by several `tls` vservers, until SNI has chosen:
    /// the listener (of its generation) it came in on.
    listener: Option<Arc<ListenerRt>>,
    /// The backend side: handshake completed.
    established: bool,
    /// The client side: its TLS handshake has been counted in the stats.
    counted: bool,
    /// The client side of an HTTP-aware `tls` vserver that had no eligible backend:
    /// it gets its handshake, then a 503 for its first request, then a close.
    no_backend: bool,
    /// This side's FIN has been passed to the peer (peer.close() called).
    fin_forwarded: bool,
    released: bool,
    /// The client side of a `tls` vserver: the TLS engine for this connection.
    tls: Option<Box<ServerConn>>,
    /// The client side of a `tls` vserver: when backend plaintext is sealed.
    tx: TxState,
    /// The client side, for the access log and `show sessions`: its address, when
    /// it was accepted (µs on the core's clock), how long its handshake took (µs;
    /// 0 until done), plaintext bytes each way, the backend it was given, and why
    /// it ended.
    client: Option<SocketAddrV4>,
    accepted_us: u64,
    handshake_us: u64,
    bytes_in: u64,
    bytes_out: u64,
    backend_addr: Option<SocketAddrV4>,
    close: &'static str,
    error: Option<String>,
}

impl Side {
    /// The vserver a client is logged and listed under: its own, or before SNI has
    /// chosen, its listener's first (the one a ClientHello without SNI gets).
    fn vserver(&self) -> Option<&Arc<VserverRt>> {
        self.vs
            .as_ref()
            .or_else(|| self.listener.as_ref().map(|l| &l.vservers[0]))
    }
}

/// Counters of one core's proxy.
#[derive(Debug, Default, Serialize)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub backend_connected: AtomicU64,
    /// Backend refused (RST) or did not answer the SYN in time.
    pub backend_failed: AtomicU64,
    /// Backend reset an established connection.
    pub backend_reset: AtomicU64,
    /// Client reset (or timed out) mid-connection.
    pub client_reset: AtomicU64,
    /// No connection slot or local port for the backend side.
    pub backend_no_slot: AtomicU64,
    /// Pairs that ended with both FINs passed on.
    pub completed: AtomicU64,
    pub bytes_to_backend: AtomicU64,
    pub bytes_to_client: AtomicU64,
    /// Client connections open now (a gauge).
    pub clients_open: AtomicU64,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: AtomicU64,
    /// TLS handshakes completed, by version.
    pub tls12_handshakes: AtomicU64,
    pub tls13_handshakes: AtomicU64,
    /// Of those, how many resumed a session (session ID or ticket; TLS 1.3 PSK).
    pub tls12_resumed: AtomicU64,
    pub tls13_resumed: AtomicU64,
    /// Handshakes completed per cipher suite.
    pub tls_suites: SuiteCounts,
    /// Handshakes whose client presented a certificate that verified.
    pub tls_client_certificates: AtomicU64,
    /// TLS connections that failed, by whose fault (see `tls::ErrorClass`).
    pub tls_peer_misbehaved: AtomicU64,
    pub tls_peer_incompatible: AtomicU64,
    pub tls_peer_alert: AtomicU64,
    pub tls_local_error: AtomicU64,
    /// Crypto jobs sent to the worker pool; of those, how many waited in the core's
    /// backlog for room, were refused (backlog full too), or came back failed (a
    /// worker died).
    pub crypto_submitted: AtomicU64,
    pub crypto_deferred: AtomicU64,
    pub crypto_refused: AtomicU64,
    pub crypto_failed: AtomicU64,
    /// Crypto jobs of completed handshakes and transcript bytes they hashed.
    pub tls_jobs: AtomicU64,
    pub tls_digest_bytes: AtomicU64,
    /// Application-data records sealed for clients, and the plaintext bytes in them.
    pub tls_records_out: AtomicU64,
    pub tls_record_bytes_out: AtomicU64,
    /// Data-bearing TCP segments sent to TLS clients (handshake flights included,
    /// retransmissions too); with `tls_records_out`, records per segment.
    pub tls_segments_out: AtomicU64,
    /// Why staged plaintext was sealed (see `transmit`): full-size records sealed at
    /// the quantum, and times the end of an HTTP response, the backend's FIN, its
    /// PSH, or the timer sealed everything staged.
    pub tx_seal_quantum: AtomicU64,
    pub tx_seal_http_end: AtomicU64,
    pub tx_seal_fin: AtomicU64,
    pub tx_seal_psh: AtomicU64,
    pub tx_seal_timer: AtomicU64,
    /// Backend streams an HTTP-aware vserver could not frame as HTTP/1.1 responses
    /// (the other conditions carry on for them).
    pub http_framing_errors: AtomicU64,
    /// Record offload: record jobs sent to the pool, the connections' work in them
    /// (one per connection per job), the records they opened and sealed, and jobs
    /// lost with a worker and their connections (closed with an internal_error
    /// alert); record jobs that waited in the backlog for room.
    pub record_jobs: AtomicU64,
    pub record_jobs_deferred: AtomicU64,
    pub record_job_conns: AtomicU64,
    pub record_job_opens: AtomicU64,
    pub record_job_seals: AtomicU64,
    pub record_jobs_failed: AtomicU64,
    pub record_job_conns_failed: AtomicU64,
}

/// Handshakes completed per cipher suite, in [`tls::msgs::suite::ALL`] order; served
/// as a map from the suite's IANA name to its count.
#[derive(Debug, Default)]
pub struct SuiteCounts(pub [AtomicU64; tls::msgs::suite::ALL.len()]);

impl SuiteCounts {
    fn count(&self, suite: u16) {
        if let Some(i) = tls::msgs::suite::ALL.iter().position(|&s| s == suite) {
            add(&self.0[i], 1);
        }
    }
}

impl Serialize for SuiteCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (c, &suite) in self.0.iter().zip(tls::msgs::suite::ALL.iter()) {
            m.serialize_entry(tls::msgs::suite::name(suite), &c.load(Ordering::Relaxed))?;
        }
        m.end()
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// Published copy of the queue counters (the queue itself is owned by the core).
#[derive(Debug, Default, Serialize)]
pub struct QueueStats {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub rx_dropped: AtomicU64,
}

/// One poll-mode core's proxy.
pub struct Worker {
    queue: Box<dyn PortQueue>,
    steering: Steering,
    mesh: SteerEndpoint,
    stack: Stack<Side>,
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
    crypto: Crypto,
    rx: Vec<Frame>,
    inbox: Vec<Frame>,
    accepted: Vec<(ConnId, u32)>,
    ready: Vec<ConnId>,
    start: std::time::Instant,
    iterations: u64,
    /// The health checks this core runs.
    probes: Vec<Probe>,
    /// Where finished connections are logged, if anywhere.
    access: Option<AccessSender>,
    /// The shutdown phase this core has acted on, and the last `show sessions`
    /// request it answered.
    phase: Phase,
    sessions_seen: u64,
    /// Transmittal timers: (deadline µs, client connection tag), earliest first.
    /// Stale entries (the connection sealed meanwhile, or is gone) are harmless.
    tx_timers: BinaryHeap<Reverse<(u64, u64)>>,
    pub stats: Arc<ProxyStats>,
    pub queue_stats: Arc<QueueStats>,
}

impl Worker {
    pub fn new(
        queue: Box<dyn PortQueue>,
        steering: Steering,
        mesh: SteerEndpoint,
        stack: Stack<Side>,
        live: Arc<Live>,
        crypto: Crypto,
        access: Option<AccessSender>,
    ) -> Self {
        let gen = live.current();
        let mut w = Worker {
            queue,
            steering,
            mesh,
            stack,
            live,
            gen: gen.clone(),
            listeners: Vec::new(),
            listener_ports: Vec::new(),
            crypto,
            rx: Vec::with_capacity(BURST),
            inbox: Vec::with_capacity(BURST),
            accepted: Vec::new(),
            ready: Vec::new(),
            start: crate::epoch(),
            iterations: 0,
            probes: Vec::new(),
            access,
            phase: Phase::Running,
            sessions_seen: 0,
            tx_timers: BinaryHeap::new(),
            stats: Arc::new(ProxyStats::default()),
            queue_stats: Arc::new(QueueStats::default()),
        };
        w.adopt(gen, 0);
        w
    }

    /// Serves new connections with generation `gen` from now on: listens on its
    /// ports (and stops listening on ports it no longer has), and runs its health
    /// checks. Open connections keep the vservers they started with. Checks in
    /// flight are abandoned; health itself carries over (see `VserverRt::carry`).
    fn adopt(&mut self, gen: Arc<Generation>, now_ms: u64) {
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
            self.stack.listen(port, tag as u32);
            // Steering keeps every port it ever saw: connections on a port dropped
            // by a reload still reach the core that owns them.
            self.steering.add_listening(port);
            by_tag[tag] = Some(Arc::new(l));
        }
        for (tag, l) in by_tag.iter().enumerate() {
            if l.is_none() {
                self.stack.unlisten(self.listener_ports[tag]);
            }
        }
        self.listeners = by_tag;
        self.abandon_probes();
        // Checked pairs are dealt round robin over the cores; first checks are spread
        // over the first interval so they do not all start at once.
        let (core, cores) = (self.stack.config().core, self.stack.config().cores.max(1));
        let mut k = 0usize;
        for (v, vs) in gen.vservers.iter().enumerate() {
            let Some(h) = &vs.cfg.health else { continue };
            for b in 0..vs.backends.len() {
                if k % cores == core {
                    let first = (k as u64 * 97) % (h.interval.as_millis() as u64).max(1);
                    self.probes
                        .push(Probe::new(v as u32, b as u32, now_ms + first));
                }
                k += 1;
            }
        }
        self.live.adopted(core, gen.id);
        if gen.id > 1 {
            log::info!(
                "core {core}: serving new connections with configuration generation {}",
                gen.id
            );
        }
        self.gen = gen;
    }

    /// Drops every health check, resetting the connections of those in flight.
    fn abandon_probes(&mut self) {
        for k in 0..self.probes.len() {
            if let Some(conn) = self.probes[k].conn.take() {
                if let Some(s) = self.stack.socket(conn) {
                    s.abort();
                }
                self.release_one(conn);
            }
        }
        self.probes.clear();
    }

    /// Shutdown: draining closes the ports (new SYNs get a RST) and stops the health
    /// checks; open connections go on. Cutting resets every connection still open.
    fn enter_phase(&mut self, phase: Phase) {
        let core = self.stack.config().core;
        if phase >= Phase::Draining && self.phase < Phase::Draining {
            for &port in &self.listener_ports {
                self.stack.unlisten(port);
            }
            self.listeners.iter_mut().for_each(|l| *l = None);
            self.abandon_probes();
            log::info!(
                "core {core}: draining: ports closed, {} client connection(s) open",
                self.stats.clients_open.load(Ordering::Relaxed)
            );
        }
        if phase == Phase::Cutting {
            let mut ids = Vec::new();
            self.stack.ids(&mut ids);
            let mut cut = 0;
            for id in ids {
                let Some(u) = self.stack.user(id) else {
                    continue;
                };
                if u.released {
                    continue;
                }
                if u.role == Role::Client {
                    u.close = "shutdown";
                    cut += 1;
                }
                if let Some(s) = self.stack.socket(id) {
                    s.abort();
                }
                self.release_one(id);
            }
            if cut > 0 {
                log::warn!("core {core}: drain deadline passed: reset {cut} client connection(s)");
            }
        }
        self.phase = phase;
    }

    /// Answers the latest `show sessions` request with this core's open clients.
    fn answer_sessions(&mut self) {
        let req = self.live.sessions_request();
        let core = self.stack.config().core;
        let now_us = self.start.elapsed().as_micros() as u64;
        let mut ids = Vec::new();
        self.stack.ids(&mut ids);
        let mut rows = Vec::new();
        for id in ids {
            let Some(u) = self.stack.user(id) else {
                continue;
            };
            if u.released || u.role != Role::Client {
                continue;
            }
            let tls = u.tls.as_deref().filter(|t| t.is_established());
            let vserver = u.vserver().map(|v| v.cfg.name.clone()).unwrap_or_default();
            rows.push(SessionRow {
                core,
                client: u.client.map(|a| a.to_string()).unwrap_or_default(),
                vserver,
                backend: u.backend_addr.map(|a| a.to_string()),
                state: if u.no_backend {
                    "no_backend"
                } else if u.fin_forwarded {
                    "closing"
                } else if u.tls.is_some() && tls.is_none() {
                    "handshake"
                } else {
                    "open"
                },
                tls_version: tls.map(|t| version_name(t.info().version)),
                suite: tls.map(|t| tls::msgs::suite::name(t.info().suite)),
                sni: tls.and_then(|t| t.info().sni.clone()),
                resumed: tls.map(|t| t.info().resumed.is_some()),
                age_secs: now_us.saturating_sub(u.accepted_us) as f64 / 1e6,
                bytes_in: u.bytes_in,
                bytes_out: u.bytes_out,
            });
        }
        self.live.answer_sessions(core, req, rows);
        self.sessions_seen = req;
    }

    /// This core's steering counters.
    pub fn steer_stats(&self) -> Arc<dataplane::steer::SteerStats> {
        self.mesh.stats.clone()
    }

    /// The stack's counters.
    pub fn stack_stats(&self) -> Arc<netstack::StackStats> {
        self.stack.stats()
    }

    /// Called once on the owning thread before the loop.
    pub fn on_core_start(&mut self) {
        self.queue.on_core_start();
    }

    fn now(&self) -> NetInstant {
        NetInstant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// One poll-loop iteration; `true` if it did any work.
    pub fn poll_once(&mut self) -> bool {
        let now = self.now();
        if self.live.phase() != self.phase {
            self.enter_phase(self.live.phase());
        }
        if self.live.id() != self.gen.id && self.phase == Phase::Running {
            let gen = self.live.current();
            self.adopt(gen, now.total_millis() as u64);
        }
        if self.live.sessions_request() != self.sessions_seen {
            self.answer_sessions();
        }
        let mut rx = std::mem::take(&mut self.rx);
        let got = self.queue.rx_burst(&mut rx, BURST);
        for frame in rx.drain(..) {
            match self.steering.classify(&frame) {
                Dest::Here => self.stack.ingress(&frame, &mut *self.queue, now),
                Dest::Core(c) => self.mesh.send(c, frame),
                Dest::All => {
                    self.mesh.broadcast(&frame);
                    self.stack.ingress(&frame, &mut *self.queue, now);
                }
            }
        }
        self.rx = rx;
        let mut inbox = std::mem::take(&mut self.inbox);
        let stolen = self.mesh.recv_burst(&mut inbox, BURST);
        for frame in inbox.drain(..) {
            self.stack.ingress(&frame, &mut *self.queue, now);
        }
        self.inbox = inbox;

        let mut accepted = std::mem::take(&mut self.accepted);
        self.stack.take_accepted(&mut accepted);
        let now_ms = now.total_millis() as u64;
        for (client, tag) in accepted.drain(..) {
            self.on_accept(client, tag, now_ms);
        }
        self.accepted = accepted;

        let crypto_done = self.crypto_poll();
        let tx_fired = self.tx_timers_fire(now.total_micros() as u64);
        let probed = !self.probes.is_empty() && self.run_probes(now_ms);

        // Timers first, so the connections they close are served in this iteration.
        let timers_fired = self.stack.poll_timers(now);
        let mut ready = std::mem::take(&mut self.ready);
        self.stack.take_ready(&mut ready);
        let served = ready.len();
        for id in ready.drain(..) {
            self.service(id);
        }
        self.ready = ready;
        let records = self.submit_records();
        let pending = self.stack.has_pending();
        self.stack.egress(&mut *self.queue, now);
        self.queue.flush();

        self.iterations += 1;
        if self.iterations % 256 == 0 {
            self.publish();
        }
        got > 0
            || stolen > 0
            || served > 0
            || pending
            || timers_fired
            || crypto_done
            || tx_fired
            || records
            || probed
    }

    /// Starts the health checks that are due and fails those past their timeout.
    fn run_probes(&mut self, now_ms: u64) -> bool {
        let mut worked = false;
        for k in 0..self.probes.len() {
            let p = &self.probes[k];
            let vs = &self.gen.vservers[p.vserver as usize];
            let Some(check) = vs.cfg.health.as_ref() else {
                continue;
            };
            if let Some(conn) = p.conn {
                if now_ms >= p.deadline_ms {
                    if let Some(s) = self.stack.socket(conn) {
                        s.abort();
                    }
                    self.release_one(conn);
                    self.probe_done(k, CheckResult::Timeout, now_ms);
                    worked = true;
                }
                continue;
            }
            if now_ms < p.next_at_ms {
                continue;
            }
            worked = true;
            let addr = vs.backends[p.backend as usize].addr;
            let side = Side {
                role: Role::Probe,
                backend: k as u32,
                ..Side::default()
            };
            match self.stack.connect(addr, side) {
                Ok(conn) => self.probes[k].started(conn, check, now_ms),
                Err(_) => {
                    let interval = check.interval.as_millis() as u64;
                    self.probes[k].next_at_ms = now_ms + interval;
                    self.probe_done(k, CheckResult::NoSlot, now_ms);
                }
            }
        }
        worked
    }

    /// A health check's connection changed.
    fn service_probe(&mut self, id: ConnId, k: usize) {
        let Some(p) = self.probes.get_mut(k).filter(|p| p.conn == Some(id)) else {
            self.release_one(id);
            return;
        };
        let vs = &self.gen.vservers[p.vserver as usize];
        let (Some(check), Some(s)) = (vs.cfg.health.as_ref(), self.stack.socket(id)) else {
            return;
        };
        if let Step::Done(r) = p.step(s, check, vs.backends[p.backend as usize].addr) {
            self.release_one(id);
            let now_ms = self.start.elapsed().as_millis() as u64;
            self.probe_done(k, r, now_ms);
        }
    }

    /// Records a verdict and logs a change of health.
    fn probe_done(&mut self, k: usize, r: crate::backends::CheckResult, now_ms: u64) {
        let p = &mut self.probes[k];
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

    /// Serves the connections whose transmittal timer is due; they seal what they
    /// have staged.
    fn tx_timers_fire(&mut self, now_us: u64) -> bool {
        let mut fired = false;
        while let Some(&Reverse((at, tag))) = self.tx_timers.peek() {
            if at > now_us {
                break;
            }
            self.tx_timers.pop();
            fired = true;
            self.service(ConnId::from_bits(tag));
        }
        fired
    }

    /// The pool's side of this core: jobs held back get another try, in order; then
    /// each completion goes to its engine and its connection is served. Completions
    /// for connections gone meanwhile are dropped. Returns whether anything happened.
    fn crypto_poll(&mut self) -> bool {
        let Some(link) = self.crypto.link.as_mut() else {
            return false;
        };
        let mut moved = false;
        while let Some((tag, job)) = self.crypto.backlog.pop_front() {
            // A record job always goes: its connections' keys are in it.
            let live = tag & RECORD_JOB != 0
                || self
                    .stack
                    .user(ConnId::from_bits(tag))
                    .is_some_and(|u| !u.released && u.tls.is_some());
            if !live {
                continue;
            }
            if let Err(busy) = link.try_submit(tag, job) {
                self.crypto.backlog.push_front((tag, busy.job));
                break;
            }
            moved = true;
        }
        let mut done = std::mem::take(&mut self.crypto.completions);
        let n = link.drain(&mut done, 4 * BURST);
        for c in done.drain(..) {
            if c.tag & RECORD_JOB != 0 {
                self.records_done(c);
                continue;
            }
            let id = ConnId::from_bits(c.tag);
            let Some(t) = self
                .stack
                .user(id)
                .filter(|u| !u.released)
                .and_then(|u| u.tls.as_deref_mut())
            else {
                continue;
            };
            if c.result.is_err() {
                add(&self.stats.crypto_failed, 1);
            }
            // An error stays in the engine (its alert queued); serving the connection
            // sends it and closes, like any other TLS failure.
            let _ = t.complete(c.result);
            self.service(id);
        }
        self.crypto.completions = done;
        moved || n > 0
    }

    /// Record offload: the work the served connections lent goes to the pool, up to
    /// `record_batch` connections per job; a job that finds no room waits in the
    /// backlog (never refused: each connection has at most one out, so the backlog is
    /// bounded by the connections). Returns whether anything was sent.
    fn submit_records(&mut self) -> bool {
        let c = &mut self.crypto;
        if c.pending.is_empty() {
            return false;
        }
        let Some(link) = c.link.as_mut() else {
            return false;
        };
        let mut items = std::mem::take(&mut c.pending);
        while !items.is_empty() {
            let rest = items.split_off(items.len().min(c.record_batch));
            let job = RecordJob { items };
            items = rest;
            let tag = RECORD_JOB | c.next_record_job;
            c.next_record_job = (c.next_record_job + 1) & !RECORD_JOB;
            add(&self.stats.record_jobs, 1);
            add(&self.stats.record_job_conns, job.items.len() as u64);
            for w in &job.items {
                add(
                    &self.stats.record_job_opens,
                    w.open.as_ref().map_or(0, |b| b.ops.len()) as u64,
                );
                add(
                    &self.stats.record_job_seals,
                    w.seal.as_ref().map_or(0, |b| b.ops.len()) as u64,
                );
            }
            c.lent
                .insert(tag, job.items.iter().map(|w| w.owner).collect());
            let mut job = Job::Records(job);
            if c.backlog.is_empty() {
                match link.try_submit(tag, job) {
                    Ok(()) => continue,
                    Err(busy) => job = busy.job,
                }
            }
            add(&self.stats.record_jobs_deferred, 1);
            c.backlog.push_back((tag, job));
        }
        true
    }

    /// A record job is back: each connection takes its work (keys, records) back and
    /// is served. A job lost with its worker ends its connections with an alert.
    fn records_done(&mut self, c: Completion) {
        let owners = self.crypto.lent.remove(&c.tag).unwrap_or_default();
        let items = match c.result {
            Ok(Done::Records(job)) => job.items,
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(_) => {
                        CryptoError::Unavailable("a record job completed as another job".into())
                    }
                };
                add(&self.stats.record_jobs_failed, 1);
                add(&self.stats.crypto_failed, 1);
                log::warn!("record job for {} connections lost: {e}", owners.len());
                for owner in owners {
                    let id = ConnId::from_bits(owner);
                    let stats = self.stats.clone();
                    if let Some(t) = self.live_tls(id) {
                        add(&stats.record_job_conns_failed, 1);
                        let _ = t.fail_records(e.clone());
                        self.service(id);
                    }
                }
                return;
            }
        };
        for w in items {
            let id = ConnId::from_bits(w.owner);
            if let Some(t) = self.live_tls(id) {
                // An error stays in the engine (its alert queued); serving sends it.
                let _ = t.complete_records(w);
                self.service(id);
            }
        }
    }

    /// The TLS engine of a connection still open (completions may outlive theirs).
    fn live_tls(&mut self, id: ConnId) -> Option<&mut ServerConn> {
        self.stack
            .user(id)
            .filter(|u| !u.released)
            .and_then(|u| u.tls.as_deref_mut())
    }

    /// Copies the queue's counters where other threads can read them.
    pub fn publish(&self) {
        let c = self.queue.counters();
        let q = &self.queue_stats;
        q.rx_frames.store(c.rx_frames, Ordering::Relaxed);
        q.rx_bytes.store(c.rx_bytes, Ordering::Relaxed);
        q.tx_frames.store(c.tx_frames, Ordering::Relaxed);
        q.tx_bytes.store(c.tx_bytes, Ordering::Relaxed);
        q.tx_dropped.store(c.tx_dropped, Ordering::Relaxed);
        q.rx_dropped.store(c.rx_dropped, Ordering::Relaxed);
        let tls_segments: u64 = (0..self.listeners.len())
            .filter(|&i| {
                self.listeners[i]
                    .as_ref()
                    .is_some_and(|l| l.vservers[0].cfg.tls.is_some())
            })
            .map(|i| self.stack.listener_tx_segments(i as u32))
            .sum();
        self.stats
            .tls_segments_out
            .store(tls_segments, Ordering::Relaxed);
    }

    /// A new client. With one vserver on its listener, the backend connection starts
    /// at once (it overlaps the TLS handshake); with several, it waits for the
    /// ClientHello's SNI to choose the vserver.
    fn on_accept(&mut self, client: ConnId, listener: u32, now_ms: u64) {
        add(&self.stats.accepted, 1);
        add(&self.stats.clients_open, 1);
        let now_us = self.start.elapsed().as_micros() as u64;
        let addr = self.stack.remote_v4(client);
        if let Some(c) = self.stack.user(client) {
            c.client = addr;
            c.accepted_us = now_us;
            c.close = "closed";
        }
        let Some(l) = self
            .listeners
            .get(listener as usize)
            .and_then(|l| l.clone())
        else {
            // A SYN that raced a reload which removed the port.
            if let Some(s) = self.stack.socket(client) {
                s.abort();
            }
            self.release_one(client);
            return;
        };
        if let Some(router) = &l.router {
            let mut conn = Box::new(ServerConn::with_router(router.clone(), now_ms));
            conn.set_record_offload(self.crypto.records);
            if let Some(c) = self.stack.user(client) {
                c.tls = Some(conn);
                c.listener = Some(l);
            }
            return;
        }
        let vs = l.vservers[0].clone();
        let tls = vs.cfg.tls.as_ref().map(|cfg| {
            let mut conn = Box::new(ServerConn::new(cfg.clone(), now_ms));
            conn.set_record_offload(self.crypto.records);
            conn
        });
        if let Some(c) = self.stack.user(client) {
            c.tls = tls;
        }
        self.connect_backend(client, vs);
    }

    /// Pairs `client` with a new connection to a backend of `vserver` chosen by its
    /// balancing method. A disabled vserver resets the client; with no eligible
    /// backend the client is closed (FIN); if no connection is possible, it is reset.
    fn connect_backend(&mut self, client: ConnId, vs: Arc<VserverRt>) {
        if !vs.enabled() {
            vs.refused_disabled.fetch_add(1, Ordering::Relaxed);
            log::debug!("vserver {}: disabled; new client reset", vs.cfg.name);
            self.refuse_client(client, &vs, "disabled", true);
            return;
        }
        let Some(i) = vs.pick() else {
            vs.no_backend.fetch_add(1, Ordering::Relaxed);
            let http_aware = vs.cfg.tls.is_some() && vs.cfg.transmit.http;
            if http_aware {
                // The handshake goes on without a backend; the first request gets a 503.
                log::debug!("vserver {}: no backend is up; answering 503", vs.cfg.name);
                if let Some(c) = self.stack.user(client) {
                    c.no_backend = true;
                    c.vs = Some(vs.clone());
                }
                self.service(client);
                return;
            }
            log::debug!("vserver {}: no backend is up; client closed", vs.cfg.name);
            self.refuse_client(client, &vs, "no_backend", false);
            return;
        };
        let backend: SocketAddrV4 = vs.backends[i].addr;
        let side = Side {
            role: Role::Backend,
            peer: Some(client),
            vs: Some(vs.clone()),
            backend: i as u32,
            ..Side::default()
        };
        match self.stack.connect(backend, side) {
            Ok(b) => {
                if let Some(c) = self.stack.user(client) {
                    c.peer = Some(b);
                    c.vs = Some(vs.clone());
                    c.listener = None;
                    c.backend_addr = Some(backend);
                    if c.tls.is_some() {
                        c.tx = TxState::new(&vs.cfg.transmit);
                    }
                }
            }
            Err(e) => {
                vs.backends[i].closed_one();
                add(&self.stats.backend_no_slot, 1);
                log::warn!(
                    "vserver {}: no backend connection possible ({e:?}); client reset",
                    vs.cfg.name
                );
                self.refuse_client(client, &vs, "no_slot", true);
            }
        }
    }

    /// Ends a client of `vs` that gets no backend: a RST (`abort`) or a FIN, with
    /// `reason` for its access-log line.
    fn refuse_client(
        &mut self,
        client: ConnId,
        vs: &Arc<VserverRt>,
        reason: &'static str,
        abort: bool,
    ) {
        if let Some(c) = self.stack.user(client) {
            c.close = reason;
            c.vs = Some(vs.clone());
        }
        if let Some(s) = self.stack.socket(client) {
            if abort {
                s.abort();
            } else {
                s.close();
            }
        }
        self.release_one(client);
    }

    fn service(&mut self, id: ConnId) {
        let Some(side) = self.stack.user(id) else {
            return;
        };
        if side.released {
            return;
        }
        if side.role == Role::Probe {
            let k = side.backend as usize;
            self.service_probe(id, k);
            return;
        }
        let Some(peer) = side.peer else {
            if side.role == Role::Client && side.tls.is_some() {
                self.service_unrouted(id);
                return;
            }
            // Announced but never paired (cannot happen after on_accept); be safe.
            if let Some(s) = self.stack.socket(id) {
                s.abort();
            }
            self.release_one(id);
            return;
        };
        let (client, backend) = if side.role == Role::Client {
            (id, peer)
        } else {
            (peer, id)
        };
        // Copied out (both are small and Copy): no shared refcount touched per event.
        let Some((transmit, proxy_v2)) = side
            .vs
            .as_deref()
            .map(|v| (v.cfg.transmit, v.cfg.proxy_protocol))
        else {
            return;
        };
        let psh = self.stack.take_psh(backend);
        let mss = self.stack.config().mtu.saturating_sub(40);
        let Some(((cs, cu), (bs, bu))) = self.stack.pair(client, backend) else {
            return;
        };
        let now_us = self.start.elapsed().as_micros() as u64;
        let mut ctx = Ctx {
            stats: &self.stats,
            now_ms: now_us / 1000,
            crypto: &mut self.crypto,
            tag: client.to_bits(),
            proxy_v2,
            up_bytes: 0,
            down_bytes: 0,
            down: Down {
                cfg: &transmit,
                now_us,
                mss,
                psh,
                timer_at: None,
            },
        };
        let outcome = step_pair(cs, cu, bs, bu, &mut ctx);
        // The step's plaintext, counted once for the connection and the core.
        if ctx.up_bytes > 0 {
            cu.bytes_in += ctx.up_bytes;
            add(&self.stats.bytes_to_backend, ctx.up_bytes);
        }
        if ctx.down_bytes > 0 {
            cu.bytes_out += ctx.down_bytes;
            add(&self.stats.bytes_to_client, ctx.down_bytes);
        }
        if cu.counted && cu.handshake_us == 0 {
            cu.handshake_us = now_us.saturating_sub(cu.accepted_us).max(1);
        }
        cu.close = match &outcome {
            Outcome::Continue { .. } => cu.close,
            Outcome::BackendFailed => "backend_failed",
            Outcome::BackendReset => "backend_reset",
            Outcome::ClientReset => "client_reset",
            Outcome::Done => "done",
            Outcome::TlsFailed(e) => {
                cu.error = Some(e.to_string());
                "tls_error"
            }
        };
        let backend_index = bu.backend as usize;
        // The vserver, for the ends below only (off the per-event path).
        let vs = match outcome {
            Outcome::Continue { .. } => None,
            _ => cu.vs.clone().or_else(|| bu.vs.clone()),
        };
        let name = vs.as_deref().map_or("", |v| v.cfg.name.as_str());
        if let Some(at) = ctx.down.timer_at {
            self.tx_timers.push(Reverse((at, client.to_bits())));
        }
        // A PSH not acted on yet: more of what the backend sent is still unread.
        let keep_psh = ctx.down.psh;
        let set_established = match outcome {
            Outcome::Continue { newly_established } => newly_established,
            Outcome::BackendFailed => {
                add(&self.stats.backend_failed, 1);
                if let Some(b) = vs.as_deref().and_then(|v| v.backends.get(backend_index)) {
                    b.failed.fetch_add(1, Ordering::Relaxed);
                }
                log::warn!(
                    "vserver {name}: backend {} refused or did not answer; client reset",
                    bs_remote(bs)
                );
                false
            }
            Outcome::BackendReset => {
                add(&self.stats.backend_reset, 1);
                log::warn!(
                    "vserver {name}: backend reset the connection mid-transfer; client reset"
                );
                false
            }
            Outcome::ClientReset => {
                add(&self.stats.client_reset, 1);
                log::info!("vserver {name}: client reset or timed out; backend connection reset");
                false
            }
            Outcome::Done => {
                add(&self.stats.completed, 1);
                false
            }
            Outcome::TlsFailed(ref e) => {
                let remote = cs_remote(&mut self.stack, client);
                self.tls_failed(e, name, &remote);
                false
            }
        };
        if set_established {
            self.stack.set_established(backend);
            add(&self.stats.backend_connected, 1);
        }
        if !matches!(outcome, Outcome::Continue { .. }) {
            self.release_one(client);
            self.release_one(backend);
        } else if keep_psh {
            self.stack.restore_psh(backend);
        }
    }
}

impl Worker {
    /// Counts a failed TLS connection by whose fault it was, and logs it.
    fn tls_failed(&self, e: &tls::Error, vserver: &str, remote: &str) {
        let c = match e.class() {
            ErrorClass::PeerMisbehaved => &self.stats.tls_peer_misbehaved,
            ErrorClass::PeerIncompatible => &self.stats.tls_peer_incompatible,
            ErrorClass::PeerClosed => &self.stats.tls_peer_alert,
            ErrorClass::Local => &self.stats.tls_local_error,
        };
        add(c, 1);
        log::info!("vserver {vserver}: TLS connection from {remote} failed: {e}");
    }

    /// A client on a shared listener before SNI has chosen its vserver: its bytes go
    /// to the engine; once the ClientHello has chosen, the backend connection starts
    /// (it overlaps the rest of the handshake).
    fn service_unrouted(&mut self, client: ConnId) {
        let now_ms = self.start.elapsed().as_millis() as u64;
        let Some((cs, cu)) = self.stack.conn(client) else {
            return;
        };
        // A client without a backend has its vserver; any other has its listener.
        let no_backend = cu.vs.clone().filter(|_| cu.no_backend);
        let Some(first) = cu.vserver().cloned() else {
            return;
        };
        let listener = cu.listener.clone();
        let Some(t) = cu.tls.as_deref_mut() else {
            return;
        };
        enum Next {
            Wait,
            Route(Arc<VserverRt>),
            Release,
            Failed(tls::Error, Arc<VserverRt>, String),
        }
        let next = if cs.state() == TcpState::Closed {
            add(&self.stats.client_reset, 1);
            cu.close = "client_reset";
            Next::Release
        } else {
            let mut ctx = Ctx {
                stats: &self.stats,
                now_ms,
                crypto: &mut self.crypto,
                tag: client.to_bits(),
                proxy_v2: false,
                up_bytes: 0,
                down_bytes: 0,
                // Nothing goes down before SNI has chosen the vserver (and its backend).
                down: Down {
                    cfg: &first.cfg.transmit,
                    now_us: now_ms * 1000,
                    mss: 0,
                    psh: false,
                    timer_at: None,
                },
            };
            let mut r = tls_in(cs, t, &mut ctx);
            if no_backend.is_some() {
                count_handshake(t, &mut cu.counted, &self.stats);
                if cu.counted && cu.handshake_us == 0 {
                    let now_us = self.start.elapsed().as_micros() as u64;
                    cu.handshake_us = now_us.saturating_sub(cu.accepted_us).max(1);
                }
            }
            let mut answered = false;
            if let (Some(_), Ok(())) = (&no_backend, &r) {
                match answer_503(t) {
                    Ok(done) => answered = done,
                    Err(e) => r = Err(e),
                }
            }
            flush_tls(t, cs);
            // The vserver whose name the failure is logged under: the chosen one, or
            // the listener's default.
            let chosen = t.chosen_config();
            let vserver = match (&no_backend, &listener) {
                (None, Some(l)) => l.vservers[chosen.unwrap_or(0)].clone(),
                _ => first.clone(),
            };
            match r {
                Err(e) => {
                    cs.close();
                    cu.close = "tls_error";
                    cu.error = Some(e.to_string());
                    cu.vs.get_or_insert_with(|| vserver.clone());
                    Next::Failed(e, vserver, bs_remote(cs))
                }
                Ok(()) if answered => {
                    cs.close();
                    cu.close = "no_backend_503";
                    cu.bytes_out += RESPONSE_503.len() as u64;
                    Next::Release
                }
                Ok(()) if no_backend.is_some() => {
                    if !cs.may_recv() && cs.recv_queue() == 0 {
                        cs.close();
                        cu.close = "no_backend";
                        Next::Release
                    } else {
                        Next::Wait
                    }
                }
                Ok(()) if chosen.is_some() => Next::Route(vserver),
                // The client's FIN before a whole ClientHello.
                Ok(()) if !cs.may_recv() && cs.recv_queue() == 0 => {
                    cs.close();
                    cu.close = "client_closed";
                    Next::Release
                }
                Ok(()) => Next::Wait,
            }
        };
        match next {
            Next::Wait => {}
            Next::Route(vserver) => self.connect_backend(client, vserver),
            Next::Release => self.release_one(client),
            Next::Failed(e, vserver, remote) => {
                self.tls_failed(&e, &vserver.cfg.name, &remote);
                self.release_one(client);
            }
        }
    }

    fn release_one(&mut self, id: ConnId) {
        if let Some(u) = self.stack.user(id) {
            if !u.released && u.role == Role::Backend {
                if let Some(b) =
                    u.vs.as_ref()
                        .and_then(|v| v.backends.get(u.backend as usize))
                {
                    b.closed_one();
                }
            }
            if !u.released && u.role == Role::Client {
                let open = &self.stats.clients_open;
                open.store(
                    open.load(Ordering::Relaxed).saturating_sub(1),
                    Ordering::Relaxed,
                );
                if let Some(access) = &self.access {
                    let now_us = self.start.elapsed().as_micros() as u64;
                    if !access.send(access_record(u, now_us)) {
                        add(&self.stats.access_log_dropped, 1);
                    }
                }
            }
            u.released = true;
        }
        self.stack.release(id);
    }
}

fn version_name(v: u16) -> &'static str {
    if v == tls::msgs::version::TLS13 {
        "TLSv1.3"
    } else {
        "TLSv1.2"
    }
}

/// The access-log line of a client connection that has ended.
fn access_record(u: &Side, now_us: u64) -> AccessRecord {
    let tls = u.tls.as_deref().filter(|t| t.is_established()).map(|t| {
        let i = t.info();
        TlsFields {
            version: version_name(i.version),
            suite: tls::msgs::suite::name(i.suite),
            sni: i.sni.clone(),
            alpn: i
                .alpn
                .as_ref()
                .map(|a| String::from_utf8_lossy(a).into_owned()),
            resumed: match i.resumed {
                None => "no",
                Some(tls::Resumed::SessionId) => "session_id",
                Some(tls::Resumed::Ticket) => "ticket",
                Some(_) => "psk",
            },
        }
    });
    let vs = u.vserver();
    AccessRecord {
        end_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        client: u.client,
        vserver: vs.map(|v| v.name_arc()),
        listen: vs.map(|v| v.cfg.listen),
        tls,
        handshake_us: (u.handshake_us > 0).then_some(u.handshake_us),
        backend: u.backend_addr,
        bytes_in: u.bytes_in,
        bytes_out: u.bytes_out,
        duration_us: now_us.saturating_sub(u.accepted_us),
        close: u.close,
        error: u.error.clone(),
    }
}

fn cs_remote(stack: &mut Stack<Side>, id: ConnId) -> String {
    stack
        .socket(id)
        .map(|s| bs_remote(s))
        .unwrap_or_else(|| "(gone)".into())
}

fn bs_remote(s: &TcpSocket) -> String {
    s.remote_endpoint()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "(unknown)".into())
}

enum Outcome {
    Continue {
        newly_established: bool,
    },
    BackendFailed,
    BackendReset,
    ClientReset,
    Done,
    /// The TLS engine failed; its alert went to the client, then a FIN.
    TlsFailed(tls::Error),
}

/// Moves what fits from `from`'s receive buffer to `to`'s send buffer.
fn pump(from: &mut TcpSocket, to: &mut TcpSocket) -> usize {
    let mut moved = 0;
    // Two rounds: a ring buffer hands out at most two contiguous pieces.
    for _ in 0..2 {
        if !from.can_recv() || !to.can_send() {
            break;
        }
        let n = from
            .recv(|buf| {
                let n = to.send_slice(buf).unwrap_or(0);
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        moved += n;
    }
    moved
}

/// One step of a client/backend pair: forward data, FINs and failures.
fn step_pair(
    cs: &mut TcpSocket,
    cu: &mut Side,
    bs: &mut TcpSocket,
    bu: &mut Side,
    ctx: &mut Ctx,
) -> Outcome {
    let mut newly_established = false;
    if !bu.established {
        match bs.state() {
            TcpState::SynSent | TcpState::SynReceived => {
                if cs.state() == TcpState::Closed {
                    bs.abort();
                    return Outcome::ClientReset;
                }
                // The client's TLS handshake goes on while the backend connects.
                if let Some(t) = cu.tls.as_deref_mut() {
                    if let Err(e) = tls_progress(cs, t, bs, false, &mut cu.counted, ctx) {
                        cs.close();
                        bs.abort();
                        return Outcome::TlsFailed(e);
                    }
                }
                return Outcome::Continue {
                    newly_established: false,
                };
            }
            TcpState::Closed | TcpState::TimeWait => {
                cs.abort();
                return Outcome::BackendFailed;
            }
            _ => {
                bu.established = true;
                newly_established = true;
                if ctx.proxy_v2 {
                    // First on the connection, before any client byte (the send
                    // buffer of a new connection has room for it).
                    let (Some(src), Some(dst)) =
                        (cu.client, netstack::endpoint_v4(cs.local_endpoint()))
                    else {
                        cs.abort();
                        bs.abort();
                        return Outcome::ClientReset;
                    };
                    let h = http1::proxy_v2::encode_tcp4(src, dst);
                    if bs.send_slice(&h) != Ok(h.len()) {
                        cs.abort();
                        bs.abort();
                        return Outcome::BackendFailed;
                    }
                }
            }
        }
    }
    // Abnormal ends: a socket that went to Closed without both FINs exchanged.
    if bs.state() == TcpState::Closed && !(bu.fin_forwarded && cu.fin_forwarded) {
        cs.abort();
        return Outcome::BackendReset;
    }
    if cs.state() == TcpState::Closed && !(bu.fin_forwarded && cu.fin_forwarded) {
        bs.abort();
        return Outcome::ClientReset;
    }
    if let Some(t) = cu.tls.as_deref_mut() {
        let r = tls_progress(cs, t, bs, bu.established, &mut cu.counted, ctx)
            .and_then(|_| tls_down(cs, t, bs, &mut cu.tx, ctx));
        if let Err(e) = r {
            // The alert is queued on the client socket; a FIN follows it.
            cs.close();
            bs.abort();
            return Outcome::TlsFailed(e);
        }
        // The client's close_notify or FIN, once everything it sent is forwarded.
        let client_done = t.peer_closed() || (!cs.may_recv() && cs.recv_queue() == 0);
        if !cu.fin_forwarded
            && client_done
            && t.plaintext().is_empty()
            && !t.input_pending()
            && bu.established
        {
            bs.close();
            cu.fin_forwarded = true;
        }
        // The backend's FIN: close_notify, then FIN once all records are out (and
        // with `fin = false`, once the timer has sealed what is staged).
        if !bu.fin_forwarded && !bs.may_recv() && bs.recv_queue() == 0 && t.staged() == 0 {
            t.close();
            flush_tls(t, cs);
            if t.pending_tls().is_empty() && !t.sealing() {
                cs.close();
                bu.fin_forwarded = true;
            }
        }
        // Record offload: what this step cut and received goes to the next record job.
        match t.take_records(ctx.tag) {
            Ok(Some(w)) => ctx.crypto.pending.push(w),
            Ok(None) => {}
            Err(e) => {
                flush_tls(t, cs);
                cs.close();
                bs.abort();
                return Outcome::TlsFailed(e);
            }
        }
    } else {
        let up = pump(cs, bs);
        let down = pump(bs, cs);
        ctx.up_bytes += up as u64;
        ctx.down_bytes += down as u64;
        // Orderly close: a side whose FIN arrived and whose data is all forwarded.
        if !cu.fin_forwarded && !cs.may_recv() && cs.recv_queue() == 0 {
            bs.close();
            cu.fin_forwarded = true;
        }
        if !bu.fin_forwarded && !bs.may_recv() && bs.recv_queue() == 0 {
            cs.close();
            bu.fin_forwarded = true;
        }
    }
    if cu.fin_forwarded && bu.fin_forwarded {
        return Outcome::Done;
    }
    Outcome::Continue { newly_established }
}

/// [`tls_step`], counting the handshake once it has completed (`counted` remembers; a
/// handshake may complete when a crypto completion arrives, outside any step).
fn tls_progress(
    cs: &mut TcpSocket,
    t: &mut ServerConn,
    bs: &mut TcpSocket,
    backend_up: bool,
    counted: &mut bool,
    ctx: &mut Ctx,
) -> Result<(), tls::Error> {
    let r = tls_step(cs, t, bs, backend_up, ctx);
    count_handshake(t, counted, ctx.stats);
    r
}

/// Counts a completed handshake in the stats, once (`counted` remembers).
fn count_handshake(t: &ServerConn, counted: &mut bool, stats: &ProxyStats) {
    if !*counted && t.is_established() {
        *counted = true;
        let info = t.info();
        let (done, resumed) = if info.version == tls::msgs::version::TLS13 {
            (&stats.tls13_handshakes, &stats.tls13_resumed)
        } else {
            (&stats.tls12_handshakes, &stats.tls12_resumed)
        };
        add(done, 1);
        stats.tls_suites.count(info.suite);
        if info.resumed.is_some() {
            add(resumed, 1);
        }
        if let Some(subject) = &info.peer_subject {
            add(&stats.tls_client_certificates, 1);
            log::debug!("client certificate: {subject}");
        }
        add(&stats.tls_jobs, info.jobs as u64);
        add(&stats.tls_digest_bytes, info.digest.bytes);
    }
}

/// What an HTTP-aware `tls` vserver with no backend up answers.
const RESPONSE_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 38\r\nConnection: close\r\nRetry-After: 5\r\n\r\nno backend server is available, sorry\n";

/// A client with no backend: once its handshake is done and its request head is in
/// (or it stopped sending), it gets a 503 and close_notify. `Ok(true)` once answered.
fn answer_503(t: &mut ServerConn) -> Result<bool, tls::Error> {
    if !t.is_established() {
        return Ok(false);
    }
    let head_done = t.plaintext().windows(4).any(|w| w == b"\r\n\r\n")
        || t.plaintext().len() >= 8192
        || t.peer_closed();
    // The request is not forwarded anywhere: drop it so the engine keeps reading.
    let n = t.plaintext().len();
    if !head_done {
        return Ok(false);
    }
    t.consume_plaintext(n);
    t.send(RESPONSE_503)?;
    t.close();
    Ok(true)
}

fn flush_tls(t: &mut ServerConn, cs: &mut TcpSocket) {
    while !t.pending_tls().is_empty() && cs.can_send() {
        let n = cs.send_slice(t.pending_tls()).unwrap_or(0);
        if n == 0 {
            break;
        }
        t.consume_tls(n);
    }
}

/// What the per-connection steps need besides the sockets: the counters, the time,
/// where crypto jobs go, and the client connection's tag for their completions.
struct Ctx<'a> {
    stats: &'a ProxyStats,
    now_ms: u64,
    crypto: &'a mut Crypto,
    tag: u64,
    /// The vserver sends a PROXY v2 header first on each backend connection.
    proxy_v2: bool,
    /// Plaintext bytes this step moved to the backend and to the client.
    up_bytes: u64,
    down_bytes: u64,
    down: Down<'a>,
}

/// What the backend-to-client direction of a TLS connection needs: its vserver's
/// transmittal conditions, the time, the port's MSS, whether the backend's PSH was
/// seen (cleared once acted on), and the timer deadline to queue (set on the way out).
struct Down<'a> {
    cfg: &'a TransmitConfig,
    now_us: u64,
    mss: usize,
    psh: bool,
    timer_at: Option<u64>,
}

/// Tags of record jobs have this bit; handshake jobs carry their connection's id,
/// which never has it (`ConnId::to_bits`).
const RECORD_JOB: u64 = 1 << 63;

/// This core's way to the crypto workers.
#[derive(Default)]
pub struct Crypto {
    /// `None`: inline mode, jobs run on this core.
    link: Option<CoreLink>,
    /// Jobs that found every queue full, oldest first, with their tag.
    backlog: VecDeque<(u64, Job)>,
    backlog_limit: usize,
    completions: Vec<Completion>,
    /// Record offload: application records are protected in record jobs.
    records: bool,
    /// Connections per record job.
    record_batch: usize,
    /// Record work lent in this iteration, for the next jobs.
    pending: Vec<RecordWork>,
    /// Record jobs out: their tag and the connections in them.
    lent: HashMap<u64, Vec<u64>>,
    next_record_job: u64,
}

impl Crypto {
    /// Jobs go to the pool through `link`; at most `backlog_limit` wait for room.
    pub fn pool(link: CoreLink, backlog_limit: usize) -> Self {
        Crypto {
            link: Some(link),
            backlog_limit,
            ..Crypto::default()
        }
    }

    /// Application records go to the pool too, in jobs of up to `batch` connections'
    /// work (see `tls::offload`).
    pub fn with_records(mut self, batch: usize) -> Self {
        self.records = self.link.is_some();
        self.record_batch = batch.max(1);
        self
    }
}

/// Hands the engine's crypto jobs on: run at once (inline), or queued to the pool
/// with the connection's tag, the engine waiting for the completion. Nothing jumps
/// the backlog; a full backlog refuses the handshake (internal_error alert).
fn run_jobs(t: &mut ServerConn, ctx: &mut Ctx) -> Result<(), tls::Error> {
    while let Some(mut job) = t.take_job() {
        let Some(link) = ctx.crypto.link.as_mut() else {
            t.complete(crypto_offload::run(job))?;
            continue;
        };
        add(&ctx.stats.crypto_submitted, 1);
        if ctx.crypto.backlog.is_empty() {
            match link.try_submit(ctx.tag, job) {
                Ok(()) => return Ok(()),
                Err(busy) => job = busy.job,
            }
        }
        if ctx.crypto.backlog.len() < ctx.crypto.backlog_limit {
            add(&ctx.stats.crypto_deferred, 1);
            ctx.crypto.backlog.push_back((ctx.tag, job));
            return Ok(());
        }
        add(&ctx.stats.crypto_refused, 1);
        t.complete(Err(CryptoError::Unavailable(
            "crypto queues and backlog full".into(),
        )))?;
    }
    Ok(())
}

/// One step of a TLS client connection: client bytes into the engine, plaintext to the
/// backend, backend bytes into the engine as records, records to the client. Every
/// buffer on the way is bounded, so a slow side slows the other through TCP windows.
fn tls_step(
    cs: &mut TcpSocket,
    t: &mut ServerConn,
    bs: &mut TcpSocket,
    backend_up: bool,
    ctx: &mut Ctx,
) -> Result<(), tls::Error> {
    let r = tls_move(cs, t, bs, backend_up, ctx);
    // Whatever the outcome, what the engine wrote (records, or the alert) goes out.
    flush_tls(t, cs);
    r
}

/// Client bytes into the engine, and the crypto jobs they call for.
fn tls_in(cs: &mut TcpSocket, t: &mut ServerConn, ctx: &mut Ctx) -> Result<(), tls::Error> {
    t.handle_timeout(ctx.now_ms)?;
    // Two rounds: the ring buffer hands out at most two pieces.
    for _ in 0..2 {
        if !cs.can_recv() || t.tls_room() == 0 {
            break;
        }
        let n = cs.recv(|buf| {
            let n = t.read_tls(buf);
            (n, n)
        });
        if n.unwrap_or(0) == 0 {
            break;
        }
    }
    t.process()?;
    run_jobs(t, ctx)
}

fn tls_move(
    cs: &mut TcpSocket,
    t: &mut ServerConn,
    bs: &mut TcpSocket,
    backend_up: bool,
    ctx: &mut Ctx,
) -> Result<(), tls::Error> {
    tls_in(cs, t, ctx)?;
    // Engine → backend; taking plaintext may let the engine decrypt more records.
    if backend_up {
        let mut up = 0;
        while !t.plaintext().is_empty() && bs.can_send() {
            let n = bs.send_slice(t.plaintext()).unwrap_or(0);
            if n == 0 {
                break;
            }
            t.consume_plaintext(n);
            up += n;
            t.process()?;
            run_jobs(t, ctx)?;
        }
        ctx.up_bytes += up as u64;
    }
    Ok(())
}

/// Backend plaintext into the engine's stage, sealed into records by the transmittal
/// conditions (see `transmit`), records to the client.
fn tls_down(
    cs: &mut TcpSocket,
    t: &mut ServerConn,
    bs: &mut TcpSocket,
    st: &mut TxState,
    ctx: &mut Ctx,
) -> Result<(), tls::Error> {
    if !t.is_established() {
        return Ok(());
    }
    let stats = ctx.stats;
    let d = &mut ctx.down;
    let q = d.cfg.record_size(d.mss, t.record_overhead());
    let mut down = 0;
    for _ in 0..4 {
        flush_tls(t, cs);
        if !bs.can_recv() || t.stage_room() == 0 {
            break;
        }
        let framer = &mut st.framer;
        let mut ended = false;
        let mut framing_error = None;
        let n = bs
            .recv(|buf| {
                let n = t.stage(buf);
                if let Some(f) = framer.as_mut() {
                    match f.feed(&buf[..n]) {
                        Ok(fed) => ended |= fed.ended > 0,
                        Err(e) => framing_error = Some(e),
                    }
                }
                (n, n)
            })
            .unwrap_or(0);
        if let Some(e) = framing_error {
            add(&stats.http_framing_errors, 1);
            log::info!(
                "backend {}: not HTTP/1.1 responses ({e}); sealing without response ends",
                bs_remote(bs)
            );
            st.framer = None;
        }
        if n == 0 {
            break;
        }
        down += n;
        st.response_ended |= ended;
        st.since_us.get_or_insert(d.now_us);
        if t.staged() >= q {
            let s = t.seal_staged(q, false)?;
            add(&stats.tx_seal_quantum, s.records as u64);
            count_records(stats, s);
            // What is left arrived in this read when it is no more than the read: its
            // wait starts now, not with the bytes just sealed.
            if t.staged() <= n {
                st.since_us = Some(d.now_us);
            }
        }
        if t.staged() == 0 {
            st.since_us = None;
            st.response_ended = false;
        }
    }
    ctx.down_bytes += down as u64;
    let drained = bs.recv_queue() == 0;
    let closed = !bs.may_recv();
    match st.full_flush(d.cfg, d.now_us, drained, closed, d.psh) {
        Some(reason) => {
            let s = t.seal_staged(q, true)?;
            count_records(stats, s);
            let c = match reason {
                Reason::HttpEnd => &stats.tx_seal_http_end,
                Reason::Fin => &stats.tx_seal_fin,
                Reason::Psh => &stats.tx_seal_psh,
                Reason::Timer => &stats.tx_seal_timer,
                Reason::Quantum => &stats.tx_seal_quantum,
            };
            add(c, 1);
            st.since_us = None;
            st.response_ended = false;
            st.armed_us = None;
        }
        None => {
            let at = st.deadline(d.cfg);
            if at.is_some() && at != st.armed_us {
                st.armed_us = at;
                d.timer_at = at;
            }
        }
    }
    if drained {
        // A PSH counts for what it ended, all of which has now been read.
        d.psh = false;
    }
    flush_tls(t, cs);
    Ok(())
}

fn count_records(stats: &ProxyStats, s: tls::Sealed) {
    if s.records > 0 {
        add(&stats.tls_records_out, s.records as u64);
        add(&stats.tls_record_bytes_out, s.bytes as u64);
    }
}
