//! `mode = "tls"`: TLS terminated by the `tls` engine, plaintext to a backend.
//!
//! A client gets its backend connection when its vserver's `backend_connect` says:
//! once its first plaintext byte has arrived (the default, as NGINX and HAProxy do: a
//! client that only handshakes costs no backend connection), once its handshake is
//! complete, or at accept (the backend's TCP handshake then overlaps the TLS one). On a
//! port shared by several `tls` vservers the ClientHello's SNI chooses the vserver
//! first. Until then the engine holds the client alone. Client bytes go into the
//! engine, plaintext to the backend; backend bytes are staged in the engine and sealed
//! by the transmittal conditions ([`crate::transmit`]), records go to the client.
//! Every buffer on the way is bounded, so a slow side slows the other through TCP
//! windows. An HTTP-aware vserver with no backend up completes the handshake and
//! answers the first request with a 503.
//!
//! The handler's deadline is the engine's (handshake timeout, session lookup) or the
//! transmittal timer, whichever is first: the driver steps it then, with no other
//! traffic needed.

use std::sync::Arc;

use driver::offload::{JobDone, Leg};
use driver::pump::{fill, flush};
use driver::{Cx, Next};
use netstack::{ConnId, TcpSocket, TcpState};
use tls::{ErrorClass, ServerConn};

use super::backend_tls::{self, BackendTlsConn, TlsUpstream, Upstream};
use super::idle::IdleTrim;
use super::{
    abort, account, backend_connect_step, connect_backend, refuse_client, release_backend,
    release_client, remote, BackendLeg, ClientLog, Outcome, Refusal, CLIENT,
};
use crate::access::TlsFields;
use crate::backends::VserverRt;
use crate::config::BackendConnect;
use crate::core::{CoreApp, ListenerRt};
use crate::live::SessionRow;
use crate::stats::{add, ProxyStats};
use crate::transmit::{Reason, TransmitConfig, TxState};

/// What an HTTP-aware `tls` vserver answers when its backend's TLS failed.
const RESPONSE_502: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 42\r\nConnection: close\r\n\r\nthe backend's TLS handshake failed, sorry\n";

/// How long a connection whose client sent close_notify, before any request needed a
/// backend, waits for that client's FIN before answering with its own close_notify and
/// FIN. Clients that close (curl, libssl's `SSL_shutdown` then `close`) send the FIN a
/// few µs after the close_notify: answered together, our close_notify, FIN and the ACK
/// of theirs go in one segment instead of two (one frame, about 5 µs of the core, less
/// per connection). A client that waits for our close_notify first waits this long more.
const CLOSE_COALESCE_US: u64 = 200;

/// What an HTTP-aware `tls` vserver with no backend up answers.
const RESPONSE_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 38\r\nConnection: close\r\nRetry-After: 5\r\n\r\nno backend server is available, sorry\n";

/// One TLS client, and its backend connection once it has one.
pub struct TlsConn {
    client: ConnId,
    t: Box<ServerConn>,
    /// The vserver; `None` until SNI has chosen one on a shared port.
    vs: Option<Arc<VserverRt>>,
    /// On a shared port until SNI has chosen: the listener (of the generation the
    /// client came in on).
    listener: Option<Arc<ListenerRt>>,
    backend: Option<BackendLeg>,
    /// `[vserver.backend_tls]`: the backend leg's TLS client, once its TCP is up.
    btls: Option<Box<BackendTlsConn>>,
    /// An HTTP-aware vserver had no eligible backend: handshake, 503, close.
    no_backend: bool,
    /// When backend plaintext is sealed.
    tx: TxState,
    /// The handshake has been counted in the stats.
    counted: bool,
    client_fin_forwarded: bool,
    /// When the connection, if it stays idle, gives back its empty buffers
    /// ([`TlsConn::idle_trim`]).
    idle: IdleTrim,
    /// When the client's first bytes (its ClientHello) were seen, and whether the
    /// engine's first answer to them has been timed.
    hello_us: Option<u64>,
    /// The client's close_notify came without its FIN: until when we wait for the FIN
    /// ([`CLOSE_COALESCE_US`]).
    close_hold_us: Option<u64>,
    answered: bool,
    log: ClientLog,
}

impl TlsConn {
    /// A new client on a port of one `tls` vserver: paired with a backend at once.
    pub fn accept(
        cx: &mut Cx<'_>,
        app: &CoreApp,
        client: ConnId,
        vs: Arc<VserverRt>,
        log: ClientLog,
    ) -> Option<Box<Self>> {
        let cfg = vs.cfg.tls.clone()?;
        let mut t = Box::new(ServerConn::new(cfg, cx.now_ms()));
        t.set_record_offload(cx.offload.records());
        let mut c = Self::new(cx, client, t, None, log);
        if vs.cfg.backend_connect == BackendConnect::Accept {
            return c.route(cx, app, vs).then_some(c);
        }
        // The backend connection waits for the handshake or the first request byte.
        c.vs = Some(vs);
        Some(c)
    }

    /// A new client on a port shared by several `tls` vservers: the engine chooses
    /// the vserver from the ClientHello's SNI first.
    pub fn accept_shared(
        cx: &mut Cx<'_>,
        client: ConnId,
        l: Arc<ListenerRt>,
        log: ClientLog,
    ) -> Option<Box<Self>> {
        let router = l.router.clone()?;
        let mut t = Box::new(ServerConn::with_router(router, cx.now_ms()));
        t.set_record_offload(cx.offload.records());
        Some(Self::new(cx, client, t, Some(l), log))
    }

    fn new(
        cx: &mut Cx<'_>,
        client: ConnId,
        t: Box<ServerConn>,
        listener: Option<Arc<ListenerRt>>,
        log: ClientLog,
    ) -> Box<Self> {
        cx.adopt(client, CLIENT);
        Box::new(TlsConn {
            client,
            t,
            vs: None,
            listener,
            backend: None,
            btls: None,
            no_backend: false,
            tx: TxState::default(),
            counted: false,
            client_fin_forwarded: false,
            idle: IdleTrim::default(),
            hello_us: None,
            close_hold_us: None,
            answered: false,
            log,
        })
    }

    /// The vserver this client is logged and listed under: its own, or before SNI has
    /// chosen, its listener's first (the one a ClientHello without SNI gets).
    fn vserver(&self) -> Option<&Arc<VserverRt>> {
        self.vs
            .as_ref()
            .or_else(|| self.listener.as_ref().map(|l| &l.vservers[0]))
    }

    /// Gives the client a backend of `vs`. `false` when the client was refused (and
    /// released); an HTTP-aware vserver without an eligible backend keeps it for a
    /// 503.
    fn route(&mut self, cx: &mut Cx<'_>, app: &CoreApp, vs: Arc<VserverRt>) -> bool {
        self.listener = None;
        match connect_backend(cx, app, &vs) {
            Ok((leg, addr)) => {
                self.log.backend_addr = Some(addr);
                self.log.backend_tls_on = vs.cfg.backend_tls.is_some();
                self.backend = Some(leg);
                self.tx = TxState::new(&vs.cfg.transmit);
                self.vs = Some(vs);
                true
            }
            Err(Refusal::NoBackend) if vs.cfg.transmit.http => {
                log::debug!("vserver {}: no backend is up; answering 503", vs.cfg.name);
                self.no_backend = true;
                self.vs = Some(vs);
                true
            }
            Err(why) => {
                if why == Refusal::NoBackend {
                    log::debug!("vserver {}: no backend is up; client closed", vs.cfg.name);
                }
                refuse_client(cx, self.client, &mut self.log, why);
                self.vs = Some(vs);
                self.release(cx, app);
                false
            }
        }
    }

    pub fn on_job_done(&mut self, done: JobDone) {
        match self.btls.as_deref_mut() {
            Some(bt) if backend_tls::is_backend(&done) => bt.on_job_done(done),
            // The backend leg ended with its work out: nobody waits for the result.
            None if backend_tls::is_backend(&done) => {}
            _ => complete_job(&mut self.t, done),
        }
    }

    /// The engine's deadline (handshake timeout, session lookup) or the transmittal
    /// timer, whichever is first.
    pub fn deadline_us(&self) -> Option<u64> {
        let engine = self.t.deadline().map(|ms| ms.saturating_mul(1000));
        let backend = self
            .btls
            .as_ref()
            .and_then(|b| b.deadline_ms())
            .map(|ms| ms.saturating_mul(1000));
        [
            engine,
            self.tx.armed_us,
            backend,
            self.idle.deadline_us(),
            self.close_hold_us,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn step(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        if self.hello_us.is_none()
            && cx
                .stack
                .socket(self.client)
                .is_some_and(|s| s.recv_queue() > 0)
        {
            // The iteration the ClientHello's first bytes arrived in.
            self.hello_us = Some(cx.now_us);
        }
        let next = if self.backend.is_some() {
            self.step_pair(cx, app)
        } else {
            self.step_alone(cx, app)
        };
        if let (false, true, Some(hello)) = (self.answered, self.t.answered(), self.hello_us) {
            // The clock is read here, not taken from the iteration's start: the
            // answer may have been made in this very step (inline crypto).
            self.answered = true;
            app.stats
                .tls_first_answer_us
                .record(crate::now_us().saturating_sub(hello));
        }
        if next == Next::Done {
            return next;
        }
        let other = self.backend.as_ref().map(|b| b.id);
        if let Err(e) = lend_records(cx, &mut self.t, self.client, other) {
            self.fail(cx, app, e);
            return Next::Done;
        }
        let me = cx.me();
        if let Some(bt) = self.btls.as_deref_mut() {
            if bt.lend_records(cx.offload, me) {
                return Next::Again; // the next step ends the pair on it
            }
        }
        self.idle_trim(cx);
        // A session lookup in flight is asked again next iteration.
        if self.t.awaiting_lookup() {
            Next::Again
        } else {
            next
        }
    }

    /// An established connection that has moved no byte for
    /// [`super::idle::IDLE_TRIM_US`] gives back
    /// its empty buffers: the engine's, the backend leg's TLS engine's, and the whole
    /// pages inside its sockets' buffers (the client's, and the backend's when one is
    /// open; receive buffers when the stack knows no out-of-order segment waits there;
    /// [`netstack::Stack::trim_idle`]). Once per quiet spell: bytes moving again
    /// start a new one. A connection with no request yet frees its engine's empty
    /// buffers at every step (it may sit idle for long).
    fn idle_trim(&mut self, cx: &mut Cx<'_>) {
        if !self.t.is_established() {
            return;
        }
        if self.backend.is_none() {
            self.t.release_idle_buffers();
        }
        let (now, moved) = (cx.now_us, self.log.bytes_in + self.log.bytes_out);
        if !self.idle.due(now, moved) {
            return;
        }
        self.t.release_idle_buffers();
        if let Some(bt) = self.btls.as_deref_mut() {
            bt.release_idle_buffers();
        }
        // SAFETY: the appliance never replaces a socket it gets from the stack (it only
        // calls its methods).
        let mut done = unsafe { cx.stack.trim_idle(self.client) }.is_some();
        if let Some(b) = &self.backend {
            // SAFETY: as above. (Trimming a socket twice is harmless.)
            done &= unsafe { cx.stack.trim_idle(b.id) }.is_some();
        }
        self.idle.trimmed(now, done);
    }

    /// A step with a backend connection.
    fn step_pair(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        let Some(vs) = self.vs.clone() else {
            return Next::Done;
        };
        let Some(b) = self.backend.as_mut() else {
            return Next::Done;
        };
        let transmit = vs.cfg.transmit;
        let psh = cx.stack.take_psh(b.id);
        let mss = cx.mss();
        let (now_us, tag) = (cx.now_us, cx.me());
        let Some(((cs, _), (bs, _))) = cx.stack.pair(self.client, b.id) else {
            return Next::Done;
        };
        let mut down = Down {
            stats: &app.stats,
            cfg: &transmit,
            now_us,
            mss,
            psh,
            up_bytes: 0,
            down_bytes: 0,
        };
        let t = &mut *self.t;
        let mut again = false;
        let outcome = 'step: {
            let mut newly_established = false;
            if !b.established {
                // A PROXY v2 header carries what the handshake settled: with one, the
                // backend connection counts as up only once the handshake is done.
                let proxy = vs.cfg.proxy_protocol;
                let info = (proxy && t.is_established()).then(|| proxy_tls_info(t));
                let step = if proxy && info.is_none() && bs.state() == TcpState::Established {
                    if cs.state() == TcpState::Closed {
                        // The client left before its handshake finished.
                        bs.abort();
                        Err(Outcome::ClientReset)
                    } else {
                        Ok(false)
                    }
                } else {
                    backend_connect_step(cs, bs, self.log.addr, proxy, info.as_ref())
                };
                match step {
                    Ok(false) => {
                        // The client's TLS handshake goes on while the backend connects.
                        if let Err(e) = tls_step(cs, t, bs, false, cx.offload, tag, &mut down) {
                            cs.close();
                            bs.abort();
                            break 'step Outcome::TlsFailed(e);
                        }
                        // The handshake just finished with the backend already up: the
                        // PROXY header goes out in the next iteration, with no event.
                        again = proxy && t.is_established() && bs.state() == TcpState::Established;
                        break 'step Outcome::Continue {
                            newly_established: false,
                        };
                    }
                    Ok(true) => {
                        b.established = true;
                        newly_established = true;
                        let timeout_ms = vs
                            .cfg
                            .tls
                            .as_ref()
                            .map_or(10_000, |c| c.handshake_timeout_ms);
                        match backend_tls::start(
                            &vs,
                            b.index,
                            &app.backend_tickets,
                            now_us / 1000,
                            timeout_ms,
                        ) {
                            Ok(c) => self.btls = c,
                            Err(e) => {
                                bs.abort();
                                end_client(cs, t, &vs, false);
                                break 'step Outcome::BackendTls(e);
                            }
                        }
                    }
                    Err(o) => break 'step o,
                }
            }
            let both_fins = b.fin_forwarded && self.client_fin_forwarded;
            if bs.state() == TcpState::Closed && !both_fins {
                cs.abort();
                break 'step Outcome::BackendReset;
            }
            if cs.state() == TcpState::Closed && !both_fins {
                bs.abort();
                break 'step Outcome::ClientReset;
            }
            let now_ms = now_us / 1000;
            let r = match self.btls.as_deref_mut() {
                Some(bt) => {
                    if let Some(ev) = bt.pump(bs, &mut app.backend_tickets, cx.offload, tag, now_ms)
                    {
                        backend_tls::count(ev, bt, &app.stats, &vs, b.index, &mut self.log);
                    }
                    let mut up = TlsUpstream {
                        s: &mut *bs,
                        b: bt,
                        now_ms,
                    };
                    let r = if up.b.error().is_none() {
                        tls_step(cs, t, &mut up, true, cx.offload, tag, &mut down)
                            .and_then(|_| seal_down(cs, t, &mut up, &mut self.tx, &mut down))
                    } else {
                        Ok(())
                    };
                    if let (Ok(()), Some(e)) = (&r, bt.error()) {
                        let sent = self.log.bytes_out + down.down_bytes > 0 || t.staged() > 0;
                        end_client(cs, t, &vs, sent);
                        break 'step Outcome::BackendTls(e.clone());
                    }
                    r
                }
                None => tls_step(cs, t, bs, true, cx.offload, tag, &mut down)
                    .and_then(|_| seal_down(cs, t, bs, &mut self.tx, &mut down)),
            };
            if let Err(e) = r {
                // The alert is queued on the client socket; a FIN follows it.
                cs.close();
                bs.abort();
                break 'step Outcome::TlsFailed(e);
            }
            // The client's close_notify or FIN, once everything it sent is forwarded.
            let client_done = t.peer_closed() || (!cs.may_recv() && cs.recv_queue() == 0);
            if !self.client_fin_forwarded
                && client_done
                && t.plaintext().is_empty()
                && !t.input_pending()
            {
                match self.btls.as_deref_mut() {
                    Some(bt) => bt.close(bs),
                    None => bs.close(),
                }
                self.client_fin_forwarded = true;
            }
            // The backend's FIN: close_notify, then FIN once all records are out (and
            // with `fin = false`, once the timer has sealed what is staged).
            let (may_recv, queued) = match self.btls.as_deref() {
                Some(bt) => (bt.may_recv(bs), bt.recv_queue(bs)),
                None => (bs.may_recv(), bs.recv_queue()),
            };
            if !b.fin_forwarded && !may_recv && queued == 0 && t.staged() == 0 {
                // An HTTP-aware vserver knows when the backend closed inside a response
                // (its Content-Length or chunks unfinished): a close_notify would make
                // the cut response look complete to the client, so it gets a RST.
                if self
                    .tx
                    .framer
                    .as_ref()
                    .is_some_and(|f| !f.at_boundary() && !f.until_close())
                {
                    cs.abort();
                    bs.abort();
                    break 'step Outcome::BackendTruncated;
                }
                t.close();
                let _ = flush(t, cs);
                if t.pending_tls().is_empty() && !t.sealing() {
                    cs.close();
                    b.fin_forwarded = true;
                }
            }
            // A backend leg with records still out is waited for.
            let settled = self.btls.as_deref().is_none_or(|bt| bt.settled(bs));
            if self.client_fin_forwarded && b.fin_forwarded && settled {
                break 'step Outcome::Done;
            }
            Outcome::Continue { newly_established }
        };
        let client_remote = match outcome {
            Outcome::TlsFailed(_) => remote(cs),
            _ => String::new(),
        };
        // A PSH not acted on yet: more of what the backend sent is still unread.
        if down.psh {
            cx.stack.restore_psh(b.id);
        }
        let (up, dn) = (down.up_bytes, down.down_bytes);
        if up > 0 {
            self.log.bytes_in += up;
            add(&app.stats.bytes_to_backend, up);
        }
        if dn > 0 {
            self.log.bytes_out += dn;
            add(&app.stats.bytes_to_client, dn);
        }
        count_handshake(
            &self.t,
            &mut self.counted,
            &mut self.log,
            &app.stats,
            now_us,
        );
        if let Outcome::TlsFailed(e) = &outcome {
            tls_failed(&app.stats, e, &vs.cfg.name, &client_remote);
        }
        if !account(cx, app, &vs, b, &mut self.log, &outcome) {
            return if again { Next::Again } else { Next::Wait };
        }
        self.release(cx, app);
        Next::Done
    }

    /// A step without a backend: before SNI has chosen the vserver on a shared port,
    /// or on an HTTP-aware vserver that had no backend (a 503 follows the handshake).
    fn step_alone(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        enum Then {
            Wait,
            Route(Arc<VserverRt>),
            Release,
            Failed(tls::Error, Arc<VserverRt>, String),
        }
        let Some(first) = self.vserver().cloned() else {
            return Next::Done;
        };
        let (now_us, tag) = (cx.now_us, cx.me());
        let Some(cs) = cx.stack.socket(self.client) else {
            return Next::Done;
        };
        let then = if cs.state() == TcpState::Closed {
            add(&app.stats.client_reset, 1);
            self.log.close = "client_reset";
            Then::Release
        } else {
            let t = &mut *self.t;
            let mut r = tls_in(cs, t, cx.offload, tag, now_us / 1000);
            let mut answered = false;
            count_handshake(t, &mut self.counted, &mut self.log, &app.stats, now_us);
            if self.no_backend && r.is_ok() {
                match answer_503(t) {
                    Ok(done) => answered = done,
                    Err(e) => r = Err(e),
                }
            }
            let _ = flush(t, cs);
            // The vserver a failure is logged under: the chosen one, or the listener's
            // default.
            let chosen = t.chosen_config();
            let vserver = match (self.no_backend, &self.listener) {
                (false, Some(l)) => l.vservers[chosen.unwrap_or(0)].clone(),
                _ => first,
            };
            let no_more = !cs.may_recv() && cs.recv_queue() == 0;
            match r {
                Err(e) => {
                    cs.close();
                    self.log.close = "tls_error";
                    self.log.error = Some(e.to_string());
                    self.vs.get_or_insert_with(|| vserver.clone());
                    Then::Failed(e, vserver, remote(cs))
                }
                Ok(()) if answered => {
                    cs.close();
                    self.log.close = "no_backend_503";
                    self.log.bytes_out += RESPONSE_503.len() as u64;
                    Then::Release
                }
                Ok(()) if self.no_backend => {
                    if no_more {
                        cs.close();
                        self.log.close = "no_backend";
                        Then::Release
                    } else {
                        Then::Wait
                    }
                }
                // SNI has chosen (or there was one vserver), and it is time to connect.
                Ok(())
                    if (self.listener.is_none() || chosen.is_some())
                        && connect_due(vserver.cfg.backend_connect, t) =>
                {
                    Then::Route(vserver)
                }
                // The client's close_notify without its FIN yet, nothing of ours on its
                // way: a moment for the FIN, to answer both in one segment.
                Ok(())
                    if !no_more
                        && t.peer_closed()
                        && t.pending_tls().is_empty()
                        && *self.close_hold_us.get_or_insert(now_us + CLOSE_COALESCE_US)
                            > now_us =>
                {
                    Then::Wait
                }
                // The client's FIN or close_notify before it needed a backend (before a
                // whole ClientHello, or after a handshake with no request).
                Ok(()) if no_more || t.peer_closed() => {
                    if t.is_established() {
                        add(&app.stats.backend_connects_saved, 1);
                        t.close();
                        let _ = flush(t, cs);
                    }
                    cs.close();
                    self.log.close = "client_closed";
                    self.vs.get_or_insert(vserver);
                    Then::Release
                }
                Ok(()) => Then::Wait,
            }
        };
        match then {
            Then::Wait => Next::Wait,
            Then::Route(vserver) => {
                if !self.route(cx, app, vserver) {
                    return Next::Done;
                }
                if self.no_backend {
                    // No backend is eligible: the request may all be here already, so
                    // look again next iteration, to answer it with the 503.
                    return Next::Again;
                }
                // The backend connection has started; the pair goes on from here.
                Next::Wait
            }
            Then::Release => {
                self.release(cx, app);
                Next::Done
            }
            Then::Failed(e, vserver, remote) => {
                tls_failed(&app.stats, &e, &vserver.cfg.name, &remote);
                self.release(cx, app);
                Next::Done
            }
        }
    }

    /// A failure found outside a pair step (a record cut): counted and logged, both
    /// sides released.
    fn fail(&mut self, cx: &mut Cx<'_>, app: &CoreApp, e: tls::Error) {
        self.log.close = "tls_error";
        self.log.error = Some(e.to_string());
        let name = self
            .vserver()
            .map(|v| v.cfg.name.clone())
            .unwrap_or_default();
        let remote = cx
            .stack
            .socket(self.client)
            .map(|s| remote(s))
            .unwrap_or_else(|| "(gone)".into());
        tls_failed(&app.stats, &e, &name, &remote);
        self.release(cx, app);
    }

    /// Releases both sides (the sockets are closed or aborted already).
    fn release(&mut self, cx: &mut Cx<'_>, app: &CoreApp) {
        let fields = tls_fields(&self.t);
        let vs = self.vserver().cloned();
        release_client(cx, app, self.client, &self.log, vs.as_ref(), fields);
        if let (Some(b), Some(vs)) = (self.backend.take(), &self.vs) {
            release_backend(cx, &b, vs);
        }
    }

    /// A shutdown cut: both sides reset.
    pub fn cut(&mut self, cx: &mut Cx<'_>, app: &CoreApp, why: &'static str) {
        self.log.close = why;
        abort(cx, self.client);
        if let Some(b) = &self.backend {
            abort(cx, b.id);
        }
        self.release(cx, app);
    }

    pub fn session_row(&self, core: usize, now_us: u64) -> SessionRow {
        let t = self.t.as_ref();
        let state = if self.no_backend {
            "no_backend"
        } else if self.client_fin_forwarded {
            "closing"
        } else if !t.is_established() {
            "handshake"
        } else {
            "open"
        };
        let mut row = self
            .log
            .row(core, self.vserver().map(|v| &**v), state, now_us);
        tls_row(&mut row, t);
        row
    }
}

/// An engine's crypto completion. An error stays in the engine (its alert queued); the
/// step that follows sends it and closes, like any other TLS failure.
pub(super) fn complete_job(t: &mut ServerConn, done: JobDone) {
    let _ = match done {
        JobDone::Step(_, r) => t.complete(r),
        JobDone::Records(_, w) => t.complete_records(w),
        JobDone::RecordsLost(_, e) => t.fail_records(e),
    };
}

/// Record offload: what a step cut and received goes to the next record job. On a
/// failure the client gets what the engine wrote (its alert) and a FIN, `other` (the
/// backend or target leg) a RST, and the caller fails the connection with the error.
pub(super) fn lend_records(
    cx: &mut Cx<'_>,
    t: &mut ServerConn,
    client: ConnId,
    other: Option<ConnId>,
) -> Result<(), tls::Error> {
    match t.take_records(driver::offload::tag(cx.me(), Leg::Client)) {
        Ok(Some(w)) => {
            cx.offload.lend(w);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            if let Some(s) = cx.stack.socket(client) {
                let _ = flush(t, s);
                s.close();
            }
            if let Some(o) = other {
                abort(cx, o);
            }
            Err(e)
        }
    }
}

/// What the access log says of the handshake, once it completed.
pub(super) fn tls_fields(t: &ServerConn) -> Option<TlsFields> {
    if !t.is_established() {
        return None;
    }
    let i = t.info();
    Some(TlsFields {
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
    })
}

/// `show sessions`' TLS columns, once the handshake completed.
pub(super) fn tls_row(row: &mut SessionRow, t: &ServerConn) {
    if t.is_established() {
        let i = t.info();
        row.tls_version = Some(version_name(i.version).into());
        row.suite = Some(tls::msgs::suite::name(i.suite).into());
        row.sni = i.sni.clone();
        row.resumed = Some(i.resumed.is_some());
    }
}

/// What a PROXY v2 header tells the backend of this TLS connection.
fn proxy_tls_info(t: &ServerConn) -> backend_wire::proxy_v2::TlsInfo {
    let i = t.info();
    // The subject's values are RFC 4514-escaped: one cannot pose as a CN.
    let cn = i
        .peer_subject
        .as_deref()
        .and_then(|s| crypto_offload::prim::subject_attribute(s, "CN"))
        .map(String::into_bytes);
    backend_wire::proxy_v2::TlsInfo {
        alpn: i.alpn.clone(),
        authority: i.sni.as_ref().map(|s| s.as_bytes().to_vec()),
        version: version_name(i.version).into(),
        cipher: tls::msgs::suite::name(i.suite).into(),
        // A certificate was presented and verified (the engine refuses one that does
        // not verify), on this connection or its session.
        cert_conn: i.peer_subject.is_some() && i.resumed.is_none(),
        cert_sess: i.peer_subject.is_some(),
        cn,
    }
}

pub fn version_name(v: u16) -> &'static str {
    if v == tls::msgs::version::TLS13 {
        "TLSv1.3"
    } else {
        "TLSv1.2"
    }
}

/// Whether a client that has no backend yet should get one now (see
/// `config::BackendConnect`).
fn connect_due(when: BackendConnect, t: &ServerConn) -> bool {
    match when {
        BackendConnect::Accept => true,
        BackendConnect::Handshake => t.is_established(),
        BackendConnect::Request => t.is_established() && !t.plaintext().is_empty(),
    }
}

/// Counts the handshake in the stats once it has completed (`counted` remembers) and
/// notes how long it took.
pub(super) fn count_handshake(
    t: &ServerConn,
    counted: &mut bool,
    log: &mut ClientLog,
    stats: &ProxyStats,
    now_us: u64,
) {
    if *counted || !t.is_established() {
        return;
    }
    *counted = true;
    log.handshake_us = now_us.saturating_sub(log.accepted_us).max(1);
    let info = t.info();
    let (done, resumed) = if info.version == tls::msgs::version::TLS13 {
        (&stats.tls13_handshakes, &stats.tls13_resumed)
    } else {
        (&stats.tls12_handshakes, &stats.tls12_resumed)
    };
    add(done, 1);
    stats.tls_suites.count(info.suite);
    stats.tls_groups.count(info.group);
    if info.early_data_skipped > 0 {
        add(&stats.tls_early_data_skipped, 1);
    }
    if info.ocsp_stapled {
        add(&stats.tls_ocsp_stapled, 1);
    }
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

/// Counts a failed TLS connection by whose fault it was, and logs it.
pub(super) fn tls_failed(stats: &ProxyStats, e: &tls::Error, vserver: &str, remote: &str) {
    let c = match e.class() {
        ErrorClass::PeerMisbehaved => &stats.tls_peer_misbehaved,
        ErrorClass::PeerIncompatible => &stats.tls_peer_incompatible,
        ErrorClass::PeerClosed => &stats.tls_peer_alert,
        ErrorClass::Local => &stats.tls_local_error,
    };
    add(c, 1);
    log::info!("vserver {vserver}: TLS connection from {remote} failed: {e}");
}

/// The client of a pair whose backend TLS failed: a 502 on an HTTP-aware vserver that
/// has not answered anything yet, a close_notify on another, a RST once part of a
/// response went out (a clean end would make it look complete), and a RST before the
/// client's own handshake is done.
fn end_client(cs: &mut TcpSocket, t: &mut ServerConn, vs: &VserverRt, sent: bool) {
    // The pair ends in this step: with record offload the answer is sealed here (no
    // record job follows), which needs no records out; else a RST.
    if sent || !t.is_established() || !t.seal_inline_from_now() {
        cs.abort();
        return;
    }
    if vs.cfg.transmit.http {
        // The request goes nowhere: dropped so the engine keeps reading.
        let n = t.plaintext().len();
        t.consume_plaintext(n);
        let _ = t.send(RESPONSE_502);
    }
    t.close();
    let _ = flush(t, cs);
    cs.close();
}

/// A client with no backend: once its handshake is done and its request head is in
/// (or it stopped sending), it gets a 503 and close_notify. `Ok(true)` once answered.
fn answer_503(t: &mut ServerConn) -> Result<bool, tls::Error> {
    if !t.is_established() {
        return Ok(false);
    }
    let head_done = backend_wire::http1::head_len(t.plaintext()).is_some()
        || t.plaintext().len() >= 8192
        || t.peer_closed();
    if !head_done {
        return Ok(false);
    }
    // The connection is released once this is written: with record offload the answer
    // is sealed here (no record job follows); records still out are waited for.
    if !t.seal_inline_from_now() {
        return Ok(false);
    }
    // The request is not forwarded anywhere: drop it so the engine keeps reading.
    let n = t.plaintext().len();
    t.consume_plaintext(n);
    t.send(RESPONSE_503)?;
    t.close();
    Ok(true)
}

/// The backend-to-client direction's settings and what a step moved.
pub(super) struct Down<'a> {
    pub(super) stats: &'a ProxyStats,
    pub(super) cfg: &'a TransmitConfig,
    pub(super) now_us: u64,
    pub(super) mss: usize,
    /// The backend's PSH was seen (cleared once acted on).
    pub(super) psh: bool,
    /// Plaintext bytes this step moved to the backend and to the client.
    pub(super) up_bytes: u64,
    pub(super) down_bytes: u64,
}

/// Client bytes into the engine (the engine's deadline checked first), and the crypto
/// jobs they call for.
pub(super) fn tls_in(
    cs: &mut TcpSocket,
    t: &mut ServerConn,
    offload: &mut driver::Offload,
    tag: driver::HandlerId,
    now_ms: u64,
) -> Result<(), tls::Error> {
    t.handle_timeout(now_ms)?;
    let _ = fill(cs, t);
    t.process()?;
    offload.run_jobs(tag, Leg::Client, t)
}

/// One step of a TLS client connection: client bytes into the engine, plaintext to the
/// backend once it is up; whatever the outcome, what the engine wrote (records, or the
/// alert) goes out.
pub(super) fn tls_step(
    cs: &mut TcpSocket,
    t: &mut ServerConn,
    bs: &mut impl Upstream,
    backend_up: bool,
    offload: &mut driver::Offload,
    tag: driver::HandlerId,
    d: &mut Down,
) -> Result<(), tls::Error> {
    let r = (|| {
        tls_in(cs, t, offload, tag, d.now_us / 1000)?;
        if !backend_up {
            return Ok(());
        }
        // Engine → backend; taking plaintext may let the engine decrypt more records.
        while !t.plaintext().is_empty() && bs.can_send() {
            let n = bs.send(t.plaintext());
            if n == 0 {
                break;
            }
            t.consume_plaintext(n);
            d.up_bytes += n as u64;
            t.process()?;
            offload.run_jobs(tag, Leg::Client, t)?;
        }
        Ok(())
    })();
    let _ = flush(t, cs);
    r
}

/// Backend plaintext into the engine's stage, sealed into records by the transmittal
/// conditions (see `transmit`), records to the client.
pub(super) fn seal_down(
    cs: &mut TcpSocket,
    t: &mut ServerConn,
    bs: &mut impl Upstream,
    st: &mut TxState,
    d: &mut Down,
) -> Result<(), tls::Error> {
    if !t.is_established() {
        return Ok(());
    }
    let stats = d.stats;
    let q = d.cfg.record_size(d.mss, t.record_overhead());
    for _ in 0..4 {
        let _ = flush(t, cs);
        if !bs.can_recv() || t.stage_room() == 0 {
            break;
        }
        let framer = &mut st.framer;
        let mut ended = false;
        let mut framing_error = None;
        let n = bs.recv(&mut |buf| {
            let n = t.stage(buf);
            if let Some(f) = framer.as_mut() {
                match f.feed(&buf[..n]) {
                    Ok(fed) => ended |= fed.ended > 0,
                    Err(e) => framing_error = Some(e),
                }
            }
            n
        });
        if let Some(e) = framing_error {
            add(&stats.http_framing_errors, 1);
            log::info!(
                "backend {}: not HTTP/1.1 responses ({e}); sealing without response ends",
                bs.remote()
            );
            st.framer = None;
        }
        if n == 0 {
            break;
        }
        d.down_bytes += n as u64;
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
        // The handler's deadline includes the timer (the driver arms it).
        None => st.armed_us = st.deadline(d.cfg),
    }
    if drained {
        // A PSH counts for what it ended, all of which has now been read.
        d.psh = false;
    }
    let _ = flush(t, cs);
    Ok(())
}

fn count_records(stats: &ProxyStats, s: tls::Sealed) {
    if s.records > 0 {
        add(&stats.tls_records_out, s.records as u64);
        add(&stats.tls_record_bytes_out, s.bytes as u64);
    }
}
