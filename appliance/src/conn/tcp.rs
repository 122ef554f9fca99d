//! `mode = "tcp"`: the L4 proxy. A client connection is paired at once with a new
//! connection to a backend chosen by the vserver's balancing method; bytes are moved
//! both ways as they come (each side's TCP window slows the other), FINs and
//! failures are passed on (see [`super`]). With `[vserver.backend_tls]` the backend
//! leg speaks TLS (TLS origination for plaintext clients, [`super::backend_tls`]):
//! what the client sends is encrypted towards the backend, what the backend sends is
//! decrypted for the client; a failure of that leg resets the client once bytes went
//! to it, or closes it (FIN) before. A pair that moves no byte for a second gives its
//! empty buffers back ([`super::idle`]).

use std::sync::Arc;

use driver::offload::JobDone;
use driver::pump::relay;
use driver::{Cx, Next};
use netstack::ConnId;

use super::backend_tls::{self, BackendTlsConn, TlsUpstream};
use super::idle::IdleTrim;

use super::{
    abort, account, backend_connect_step, connect_backend, refuse_client, release_backend,
    release_client, BackendLeg, ClientLog, Outcome, CLIENT,
};
use crate::backends::VserverRt;
use crate::core::CoreApp;
use crate::live::SessionRow;
use crate::stats::add;

/// One client and its backend connection.
pub struct TcpConn {
    client: ConnId,
    vs: Arc<VserverRt>,
    backend: Option<BackendLeg>,
    /// `[vserver.backend_tls]`: the backend leg's TLS client, once its TCP is up.
    btls: Option<Box<BackendTlsConn>>,
    /// The client's FIN has been passed to the backend.
    client_fin_forwarded: bool,
    /// When the pair, if it stays idle, gives back its empty buffers.
    idle: IdleTrim,
    log: ClientLog,
}

impl TcpConn {
    /// A new client of `vs`: adopted as this handler's client leg, paired with a
    /// backend connection. `None` when it got no backend (it is then closed, logged
    /// and released).
    pub fn accept(
        cx: &mut Cx<'_>,
        app: &CoreApp,
        client: ConnId,
        vs: Arc<VserverRt>,
        log: ClientLog,
    ) -> Option<Self> {
        cx.adopt(client, CLIENT);
        let mut c = TcpConn {
            client,
            vs,
            backend: None,
            btls: None,
            client_fin_forwarded: false,
            idle: IdleTrim::default(),
            log,
        };
        match connect_backend(cx, app, &c.vs) {
            Ok((leg, addr)) => {
                c.log.backend_addr = Some(addr);
                c.log.backend_tls_on = c.vs.cfg.backend_tls.is_some();
                c.backend = Some(leg);
                Some(c)
            }
            Err(why) => {
                if why == super::Refusal::NoBackend {
                    log::debug!("vserver {}: no backend is up; client closed", c.vs.cfg.name);
                }
                refuse_client(cx, client, &mut c.log, why);
                release_client(cx, app, client, &c.log, Some(&c.vs), None);
                None
            }
        }
    }

    /// A completion of the backend leg's work (a handshake step, its records).
    pub fn on_job_done(&mut self, done: JobDone) {
        if let Some(bt) = self.btls.as_deref_mut() {
            if backend_tls::is_backend(&done) {
                bt.on_job_done(done);
            }
        }
    }

    /// The backend leg's handshake timeout, while it runs, or the idle trim's.
    pub fn deadline_us(&self) -> Option<u64> {
        let handshake = self
            .btls
            .as_ref()
            .and_then(|b| b.deadline_ms())
            .map(|ms| ms.saturating_mul(1000));
        [handshake, self.idle.deadline_us()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn step(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        let Some(b) = self.backend.as_mut() else {
            return Next::Done;
        };
        let (now_ms, tag) = (cx.now_ms(), cx.me());
        let proxy_v2 = self.vs.cfg.proxy_protocol;
        let Some(((cs, _), (bs, _))) = cx.stack.pair(self.client, b.id) else {
            return Next::Done;
        };
        let outcome = 'step: {
            let mut newly_established = false;
            if !b.established {
                match backend_connect_step(cs, bs, self.log.addr, proxy_v2, None) {
                    Ok(false) => {
                        break 'step Outcome::Continue {
                            newly_established: false,
                        }
                    }
                    Ok(true) => {
                        b.established = true;
                        newly_established = true;
                        // The handshake timeout of a tls vserver's default.
                        match backend_tls::start(
                            &self.vs,
                            b.index,
                            &app.backend_tickets,
                            now_ms,
                            10_000,
                        ) {
                            Ok(c) => self.btls = c,
                            Err(e) => {
                                bs.abort();
                                cs.close();
                                break 'step Outcome::BackendTls(e);
                            }
                        }
                    }
                    Err(o) => break 'step o,
                }
            }
            let both_fins = b.fin_forwarded && self.client_fin_forwarded;
            // Abnormal ends: a socket that went to Closed without both FINs exchanged.
            if bs.state() == netstack::TcpState::Closed && !both_fins {
                cs.abort();
                break 'step Outcome::BackendReset;
            }
            if cs.state() == netstack::TcpState::Closed && !both_fins {
                bs.abort();
                break 'step Outcome::ClientReset;
            }
            let (up, down) = match self.btls.as_deref_mut() {
                Some(bt) => {
                    if let Some(ev) = bt.pump(bs, &mut app.backend_tickets, cx.offload, tag, now_ms)
                    {
                        backend_tls::count(ev, bt, &app.stats, &self.vs, b.index, &mut self.log);
                    }
                    let mut tu = TlsUpstream {
                        s: &mut *bs,
                        b: bt,
                        now_ms,
                    };
                    // The L4 pump, with the TLS client as the backend's transport.
                    let moved = (relay(cs, &mut tu), relay(&mut tu, cs));
                    if let Some(e) = bt.error() {
                        // Bytes already went to the client: a RST, so a cut stream
                        // does not look complete; else a FIN.
                        if self.log.bytes_out + moved.1 as u64 > 0 {
                            cs.abort();
                        } else {
                            cs.close();
                        }
                        break 'step Outcome::BackendTls(e.clone());
                    }
                    moved
                }
                None => (relay(cs, bs), relay(bs, cs)),
            };
            self.log.bytes_in += up as u64;
            self.log.bytes_out += down as u64;
            add(&app.stats.bytes_to_backend, up as u64);
            add(&app.stats.bytes_to_client, down as u64);
            // Orderly close: a side whose FIN arrived and whose data is all forwarded.
            if !self.client_fin_forwarded && !cs.may_recv() && cs.recv_queue() == 0 {
                match self.btls.as_deref_mut() {
                    Some(bt) => bt.close(bs),
                    None => bs.close(),
                }
                self.client_fin_forwarded = true;
            }
            let (may_recv, queued) = match self.btls.as_deref() {
                Some(bt) => (bt.may_recv(bs), bt.recv_queue(bs)),
                None => (bs.may_recv(), bs.recv_queue()),
            };
            if !b.fin_forwarded && !may_recv && queued == 0 {
                cs.close();
                b.fin_forwarded = true;
            }
            // A backend leg with records still out is waited for.
            let settled = self.btls.as_deref().is_none_or(|bt| bt.settled(bs));
            if self.client_fin_forwarded && b.fin_forwarded && settled {
                break 'step Outcome::Done;
            }
            Outcome::Continue { newly_established }
        };
        if !account(cx, app, &self.vs, b, &mut self.log, &outcome) {
            // Record offload: this step's backend records go to the next record job.
            if let Some(bt) = self.btls.as_deref_mut() {
                if bt.lend_records(cx.offload, tag) {
                    return Next::Again; // the next step ends the pair on it
                }
            }
            self.idle_trim(cx);
            return Next::Wait;
        }
        self.release(cx, app);
        Next::Done
    }

    /// An established pair that has moved no byte for a second frees its backend TLS
    /// engine's empty buffers and gives back the pages of both sockets' empty buffers
    /// ([`netstack::Stack::trim_idle`]); once per quiet spell ([`IdleTrim`]).
    fn idle_trim(&mut self, cx: &mut Cx<'_>) {
        let Some(b) = self.backend.as_ref().filter(|b| b.established) else {
            return;
        };
        let (now, moved) = (cx.now_us, self.log.bytes_in + self.log.bytes_out);
        if !self.idle.due(now, moved) {
            return;
        }
        if let Some(bt) = self.btls.as_deref_mut() {
            bt.release_idle_buffers();
        }
        // SAFETY: the appliance never replaces a socket it gets from the stack (it only
        // calls its methods).
        let done = unsafe { cx.stack.trim_idle(self.client) }.is_some()
            // SAFETY: as above.
            & unsafe { cx.stack.trim_idle(b.id) }.is_some();
        self.idle.trimmed(now, done);
    }

    /// Releases both sides (the sockets are closed or aborted already).
    fn release(&mut self, cx: &mut Cx<'_>, app: &CoreApp) {
        release_client(cx, app, self.client, &self.log, Some(&self.vs), None);
        if let Some(b) = self.backend.take() {
            release_backend(cx, &b, &self.vs);
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
        let state = if self.client_fin_forwarded {
            "closing"
        } else {
            "open"
        };
        self.log.row(core, Some(&self.vs), state, now_us)
    }
}
