//! `mode = "tcp"`: the L4 proxy. A client connection is paired at once with a new
//! connection to a backend chosen by the vserver's balancing method; bytes are moved
//! both ways as they come (each side's TCP window slows the other), FINs and
//! failures are passed on (see [`super`]).

use std::sync::Arc;

use driver::pump::relay;
use driver::{Cx, Next};
use netstack::ConnId;

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
    /// The client's FIN has been passed to the backend.
    client_fin_forwarded: bool,
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
            client_fin_forwarded: false,
            log,
        };
        match connect_backend(cx, app, &c.vs) {
            Ok((leg, addr)) => {
                c.log.backend_addr = Some(addr);
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

    pub fn step(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        let Some(b) = self.backend.as_mut() else {
            return Next::Done;
        };
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
            let up = relay(cs, bs);
            let down = relay(bs, cs);
            self.log.bytes_in += up as u64;
            self.log.bytes_out += down as u64;
            add(&app.stats.bytes_to_backend, up as u64);
            add(&app.stats.bytes_to_client, down as u64);
            // Orderly close: a side whose FIN arrived and whose data is all forwarded.
            if !self.client_fin_forwarded && !cs.may_recv() && cs.recv_queue() == 0 {
                bs.close();
                self.client_fin_forwarded = true;
            }
            if !b.fin_forwarded && !bs.may_recv() && bs.recv_queue() == 0 {
                cs.close();
                b.fin_forwarded = true;
            }
            if self.client_fin_forwarded && b.fin_forwarded {
                break 'step Outcome::Done;
            }
            Outcome::Continue { newly_established }
        };
        if !account(cx, app, &self.vs, b, &mut self.log, &outcome) {
            return Next::Wait;
        }
        self.release(cx, app);
        Next::Done
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
