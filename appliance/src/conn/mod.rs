//! Connection handlers, one per vserver mode, stepped by the per-core driver
//! (`driver::Handler`): [`tcp`] (the L4 proxy), [`tls`] (terminate TLS, plaintext to
//! the backend), [`socks`] (terminate TLS, then SOCKS v5 to targets the client names)
//! and [`probe`] (an active health check's connection). TLS towards backends
//! ([`backend_tls`]) is a backend leg that `tcp` and `tls` pairs may have, not a mode of
//! its own; a new mode is a new module and a new [`Conn`] variant, and the driver does
//! not change.
//!
//! ## Closing
//! An orderly close is passed on: a FIN from one side becomes a FIN to the other once
//! all its data has been forwarded (half-close works). An abnormal end becomes an
//! abnormal end: if the backend refuses the connection, does not answer within
//! `tcp.handshake_timeout`, or resets it mid-transfer, the client gets a **RST**, and a
//! client reset or timeout resets the backend connection. Each is counted and logged;
//! other connections are untouched.

pub mod backend_tls;
pub mod idle;
pub mod probe;
pub mod socks;
pub mod tcp;
pub mod tls;
pub mod udp_relay;

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use driver::{Cx, Handler, JobDone, Next, Wake};
use netstack::{ConnId, TcpSocket, TcpState};

use crate::access::{AccessRecord, TlsFields};
use crate::backends::VserverRt;
use crate::core::CoreApp;
use crate::live::SessionRow;
use crate::stats::add;

/// The client side of a pair (a handler's leg 0).
pub const CLIENT: u8 = 0;
/// The backend side of a pair, or a probe's connection (leg 1).
pub const BACKEND: u8 = 1;

/// Every connection a core serves.
pub enum Conn {
    Tcp(Box<tcp::TcpConn>),
    Tls(Box<tls::TlsConn>),
    Socks(Box<socks::SocksConn>),
    Probe(probe::ProbeConn),
}

impl Handler for Conn {
    type App = CoreApp;

    fn step(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp, wake: Wake) -> Next {
        match self {
            Conn::Tcp(c) => c.step(cx, app),
            Conn::Tls(c) => c.step(cx, app),
            Conn::Socks(c) => c.step(cx, app),
            Conn::Probe(p) => p.step(cx, app, wake),
        }
    }

    fn on_job_done(&mut self, done: JobDone, _app: &mut CoreApp) {
        match self {
            Conn::Tcp(c) => c.on_job_done(done),
            Conn::Tls(c) => c.on_job_done(done),
            Conn::Socks(c) => c.on_job_done(done),
            Conn::Probe(_) => {}
        }
    }

    fn deadline_us(&self) -> Option<u64> {
        match self {
            Conn::Tcp(c) => c.deadline_us(),
            Conn::Tls(c) => c.deadline_us(),
            Conn::Socks(c) => c.deadline_us(),
            Conn::Probe(p) => Some(p.deadline_us()),
        }
    }

    fn on_close(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp, why: &'static str) {
        match self {
            Conn::Tcp(c) => c.cut(cx, app, why),
            Conn::Tls(c) => c.cut(cx, app, why),
            Conn::Socks(c) => c.cut(cx, app, why),
            Conn::Probe(p) => p.cut(cx),
        }
    }
}

impl Conn {
    /// This connection as `show sessions` lists it (clients only).
    pub fn session_row(&self, core: usize, now_us: u64) -> Option<SessionRow> {
        match self {
            Conn::Tcp(c) => Some(c.session_row(core, now_us)),
            Conn::Tls(c) => Some(c.session_row(core, now_us)),
            Conn::Socks(c) => Some(c.session_row(core, now_us)),
            Conn::Probe(_) => None,
        }
    }
}

/// What the access log and `show sessions` know of a client connection: its address,
/// when it was accepted (µs on the core's clock), how long its handshake took (µs; 0
/// until done), plaintext bytes each way, the backend it was given, and why it ended.
#[derive(Debug)]
pub struct ClientLog {
    pub addr: Option<SocketAddrV4>,
    pub accepted_us: u64,
    pub handshake_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub backend_addr: Option<SocketAddrV4>,
    pub close: &'static str,
    pub error: Option<String>,
    /// `socks5` vservers: the request served and who made it.
    pub socks: Option<&'static str>,
    pub user: Option<String>,
    /// `[vserver.backend_tls]`: what the backend leg's handshake agreed, once done.
    pub backend_tls: Option<crate::access::BackendTlsFields>,
    pub backend_tls_on: bool,
}

impl ClientLog {
    pub fn new(addr: Option<SocketAddrV4>, now_us: u64) -> Self {
        ClientLog {
            addr,
            accepted_us: now_us,
            handshake_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            backend_addr: None,
            close: "closed",
            error: None,
            socks: None,
            user: None,
            backend_tls: None,
            backend_tls_on: false,
        }
    }

    /// A row for `show sessions` with the TLS columns empty.
    pub fn row(
        &self,
        core: usize,
        vs: Option<&VserverRt>,
        state: &'static str,
        now_us: u64,
    ) -> SessionRow {
        SessionRow {
            core,
            client: self.addr.map(|a| a.to_string()).unwrap_or_default(),
            vserver: vs.map(|v| v.cfg.name.clone()).unwrap_or_default(),
            backend: self.backend_addr.map(|a| a.to_string()),
            state: state.into(),
            tls_version: None,
            suite: None,
            sni: None,
            resumed: None,
            age_secs: now_us.saturating_sub(self.accepted_us) as f64 / 1e6,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        }
    }

    /// The access-log line of the connection that ended at `now_us`.
    pub fn record(
        &self,
        vs: Option<&Arc<VserverRt>>,
        tls: Option<TlsFields>,
        now_us: u64,
    ) -> AccessRecord {
        AccessRecord {
            end_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            client: self.addr,
            vserver: vs.map(|v| v.name_arc()),
            listen: vs.map(|v| v.cfg.listen),
            tls,
            handshake_us: (self.handshake_us > 0).then_some(self.handshake_us),
            backend: self.backend_addr,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_us: now_us.saturating_sub(self.accepted_us),
            close: self.close,
            error: self.error.clone(),
            socks: self.socks,
            user: self.user.clone(),
            backend_tls: self.backend_tls,
            backend_tls_on: self.backend_tls_on,
        }
    }
}

/// The backend side of a pair: its connection, which of the vserver's backends it is
/// (its open count drops when the leg is released), and where it is in its life.
#[derive(Debug)]
pub struct BackendLeg {
    pub id: ConnId,
    pub index: u32,
    pub established: bool,
    /// The backend's FIN has been passed to the client.
    pub fin_forwarded: bool,
}

/// How a step of a pair ended, or that it goes on.
pub enum Outcome {
    Continue {
        newly_established: bool,
    },
    BackendFailed,
    BackendReset,
    /// The backend closed (FIN) inside an HTTP response: the client is reset.
    BackendTruncated,
    ClientReset,
    Done,
    /// The TLS engine failed; its alert went to the client, then a FIN.
    TlsFailed(::tls::Error),
    /// The backend leg's TLS failed (`[vserver.backend_tls]`): its alert went to the
    /// backend; the client got a 502, a close or a RST (see [`backend_tls`]).
    BackendTls(::tls::Error),
}

/// Why a client got no backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The vserver is disabled: the client is reset.
    Disabled,
    /// No backend is eligible: the client is closed (FIN), or an HTTP-aware `tls`
    /// vserver answers its first request with a 503.
    NoBackend,
    /// No connection slot or local port: the client is reset.
    NoSlot,
}

impl Refusal {
    /// The access log's close reason and whether the client is reset (else FIN).
    fn close(self) -> (&'static str, bool) {
        match self {
            Refusal::Disabled => ("disabled", true),
            Refusal::NoBackend => ("no_backend", false),
            Refusal::NoSlot => ("no_slot", true),
        }
    }
}

/// Opens a connection to a backend of `vs` chosen by its balancing method, as the
/// calling handler's [`BACKEND`] leg.
pub fn connect_backend(
    cx: &mut Cx<'_>,
    app: &CoreApp,
    vs: &VserverRt,
) -> Result<(BackendLeg, SocketAddrV4), Refusal> {
    if !vs.enabled() {
        vs.refused_disabled.fetch_add(1, Ordering::Relaxed);
        log::debug!("vserver {}: disabled; new client reset", vs.cfg.name);
        return Err(Refusal::Disabled);
    }
    let Some(i) = vs.pick() else {
        vs.no_backend.fetch_add(1, Ordering::Relaxed);
        return Err(Refusal::NoBackend);
    };
    let addr = vs.backends[i].addr;
    match cx.connect(addr, BACKEND) {
        Ok(id) => Ok((
            BackendLeg {
                id,
                index: i as u32,
                established: false,
                fin_forwarded: false,
            },
            addr,
        )),
        Err(e) => {
            vs.backends[i].closed_one();
            add(&app.stats.backend_no_slot, 1);
            log::warn!(
                "vserver {}: no backend connection possible ({e:?}); client reset",
                vs.cfg.name
            );
            Err(Refusal::NoSlot)
        }
    }
}

/// Ends a client that got no backend: a RST or a FIN as `why` says, logged with it.
pub fn refuse_client(cx: &mut Cx<'_>, client: ConnId, log: &mut ClientLog, why: Refusal) {
    let (reason, reset) = why.close();
    log.close = reason;
    if let Some(s) = cx.stack.socket(client) {
        if reset {
            s.abort();
        } else {
            s.close();
        }
    }
}

/// The client side is done with: counted closed, logged, and given back to the stack.
pub fn release_client(
    cx: &mut Cx<'_>,
    app: &CoreApp,
    client: ConnId,
    log: &ClientLog,
    vs: Option<&Arc<VserverRt>>,
    tls: Option<TlsFields>,
) {
    let open = &app.stats.clients_open;
    open.store(
        open.load(Ordering::Relaxed).saturating_sub(1),
        Ordering::Relaxed,
    );
    if let Some(access) = &app.access {
        if !access.send(log.record(vs, tls, cx.now_us)) {
            add(&app.stats.access_log_dropped, 1);
        }
    }
    cx.stack.release(client);
}

/// The backend side is done with: its backend's open count drops, and the stack
/// frees it once TCP is finished with it.
pub fn release_backend(cx: &mut Cx<'_>, leg: &BackendLeg, vs: &VserverRt) {
    if let Some(b) = vs.backends.get(leg.index as usize) {
        b.closed_one();
    }
    cx.stack.release(leg.id);
}

/// Aborts a connection (a RST) if it is still there.
pub fn abort(cx: &mut Cx<'_>, id: ConnId) {
    if let Some(s) = cx.stack.socket(id) {
        s.abort();
    }
}

/// The first step of a backend connection that is not established yet: `Ok(true)`
/// once it is (and the PROXY v2 header, if the vserver sends one, is queued first on
/// it, with `tls`'s TLVs for a TLS client), `Ok(false)` while it connects, or how the
/// pair ends.
pub fn backend_connect_step(
    cs: &mut TcpSocket,
    bs: &mut TcpSocket,
    client_addr: Option<SocketAddrV4>,
    proxy_v2: bool,
    tls: Option<&backend_wire::proxy_v2::TlsInfo>,
) -> Result<bool, Outcome> {
    match bs.state() {
        TcpState::SynSent | TcpState::SynReceived => {
            if cs.state() == TcpState::Closed {
                bs.abort();
                return Err(Outcome::ClientReset);
            }
            Ok(false)
        }
        TcpState::Closed | TcpState::TimeWait => {
            cs.abort();
            Err(Outcome::BackendFailed)
        }
        _ => {
            if proxy_v2 {
                // First on the connection, before any client byte (the send buffer
                // of a new connection has room for it).
                let (Some(src), Some(dst)) =
                    (client_addr, netstack::endpoint_v4(cs.local_endpoint()))
                else {
                    cs.abort();
                    bs.abort();
                    return Err(Outcome::ClientReset);
                };
                let h = match tls {
                    Some(info) => backend_wire::proxy_v2::encode_tcp4_tls(src, dst, info),
                    None => backend_wire::proxy_v2::encode_tcp4(src, dst).to_vec(),
                };
                if bs.send_slice(&h) != Ok(h.len()) {
                    cs.abort();
                    bs.abort();
                    return Err(Outcome::BackendFailed);
                }
            }
            Ok(true)
        }
    }
}

/// Where a socket's peer is, for log lines.
pub fn remote(s: &TcpSocket) -> String {
    s.remote_endpoint()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "(unknown)".into())
}

/// Passive health (`observe = "layer4"`): one more error of `backend` in a row; at the
/// vserver's limit it goes out of rotation until its active check passes again.
fn observe_error(app: &CoreApp, vs: &VserverRt, backend: &BackendLeg) {
    let Some(limit) = vs.cfg.health.as_ref().and_then(|h| h.error_limit) else {
        return;
    };
    let Some(b) = vs.backends.get(backend.index as usize) else {
        return;
    };
    if b.observed_error(limit, crate::now_ms()) {
        add(&app.stats.backend_passive_downs, 1);
        log::warn!(
            "vserver {}: backend {} failed {limit} client connections in a row; out of rotation until its health check passes",
            vs.cfg.name,
            b.addr
        );
    }
}

/// Accounts for how a step of a pair ended: counters and log lines, the backend
/// switched to its idle timeout once established. Returns whether the pair is over
/// (then the caller releases both sides).
pub fn account(
    cx: &mut Cx<'_>,
    app: &CoreApp,
    vs: &VserverRt,
    backend: &BackendLeg,
    log: &mut ClientLog,
    outcome: &Outcome,
) -> bool {
    let stats = &app.stats;
    let name = vs.cfg.name.as_str();
    match outcome {
        Outcome::Continue { newly_established } => {
            if *newly_established {
                cx.stack.set_established(backend.id);
                add(&stats.backend_connected, 1);
            }
            return false;
        }
        Outcome::BackendFailed => {
            log.close = "backend_failed";
            add(&stats.backend_failed, 1);
            if let Some(b) = vs.backends.get(backend.index as usize) {
                b.failed.fetch_add(1, Ordering::Relaxed);
            }
            let addr = log.backend_addr.map(|a| a.to_string()).unwrap_or_default();
            log::warn!("vserver {name}: backend {addr} refused or did not answer; client reset");
            observe_error(app, vs, backend);
        }
        Outcome::BackendReset => {
            log.close = "backend_reset";
            add(&stats.backend_reset, 1);
            log::warn!("vserver {name}: backend reset the connection mid-transfer; client reset");
            observe_error(app, vs, backend);
        }
        Outcome::BackendTruncated => {
            log.close = "backend_truncated";
            add(&stats.backend_truncated, 1);
            log::warn!("vserver {name}: backend closed inside a response; client reset so it cannot take the cut response as complete");
        }
        Outcome::ClientReset => {
            log.close = "client_reset";
            add(&stats.client_reset, 1);
            log::info!("vserver {name}: client reset or timed out; backend connection reset");
        }
        Outcome::Done => {
            log.close = "done";
            add(&stats.completed, 1);
            // Passive health: a connection that ended well ends a run of errors (one
            // the backend accepted and then reset does not).
            if let Some(b) = vs.backends.get(backend.index as usize) {
                b.observed_ok();
            }
        }
        Outcome::TlsFailed(e) => {
            log.close = "tls_error";
            log.error = Some(e.to_string());
        }
        Outcome::BackendTls(e) => {
            log.close = "backend_tls_failed";
            log.error = Some(e.to_string());
            add(&stats.backend_tls_failed, 1);
            if let Some(b) = vs.backends.get(backend.index as usize) {
                b.failed.fetch_add(1, Ordering::Relaxed);
                b.tls_failed.fetch_add(1, Ordering::Relaxed);
            }
            let addr = log.backend_addr.map(|a| a.to_string()).unwrap_or_default();
            log::warn!("vserver {name}: backend {addr}: TLS failed: {e}; nothing more goes to it");
            observe_error(app, vs, backend);
        }
    }
    true
}
