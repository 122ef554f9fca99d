//! TLS towards a backend (`[vserver.backend_tls]`): the engine's client role
//! ([`tls::ClientConn`]) on a pair's backend leg, so the plaintext a `tls` pair's client
//! connection decrypts is encrypted again before it leaves the appliance (and a `tcp`
//! pair's plaintext client reaches a TLS backend: TLS origination).
//!
//! The pumps of [`super::tls`] move plaintext through an [`Upstream`]: the backend's
//! TCP socket itself, or a [`TlsUpstream`] that seals what is sent into records and
//! opens what the backend sends. The two legs' records are independent: the client
//! leg's record boundaries are the transmittal conditions', the backend leg's are
//! whatever the client role makes of each write (up to 16 KiB per record). With record
//! offload on (a crypto pool), both legs' records go to the same record jobs: the
//! backend leg lends its work tagged with its leg ([`driver::offload::Leg`]), batched
//! with every other connection's.
//!
//! Each core keeps the newest session of each backend ([`BackendTickets`]) and offers
//! it on the next connection, so a backend pays a full handshake rarely. The client
//! role's handshake crypto (its key share, then its steps) comes as jobs, run on the
//! crypto pool when the core has one, like the server's.
//!
//! A failure on the backend leg (certificate, alert, timeout, a bad record) ends the
//! pair: the backend gets the alert, the failure is logged and counted, and the client
//! gets a 502 on an HTTP-aware vserver that has not answered yet, a close_notify on
//! another that has sent nothing, or a RST once part of a response went out. Never a
//! plaintext fallback.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::Arc;

use crypto_offload::{CryptoError, Done, Job};
use driver::offload::{JobDone, JobEngine, Leg};
use driver::pump::{fill, flush, Transport};
use driver::{HandlerId, Offload};
use netstack::TcpSocket;
use tls::KeyShare;
use tls::{ClientConn, Ticket};

use super::ClientLog;
use crate::access::BackendTlsFields;
use crate::backends::VserverRt;
use crate::config::BackendTls;
use crate::stats::{add, ProxyStats};

/// Plaintext a [`TlsUpstream`] holds decrypted before it stops reading the socket.
const MAX_PLAINTEXT: usize = 64 * 1024;
/// Tickets a core keeps at most (one per vserver and backend; a reload may leave old
/// ones behind, dropped when this is reached).
const MAX_TICKETS: usize = 4096;

/// A completion for the backend leg's engine (its handshake step or record work).
pub fn is_backend(done: &JobDone) -> bool {
    matches!(
        done,
        JobDone::Step(Leg::Backend, _)
            | JobDone::Records(Leg::Backend, _)
            | JobDone::RecordsLost(Leg::Backend, _)
    )
}

/// The backend side of a pair as the pumps see it: plaintext in and out.
pub trait Upstream {
    fn can_send(&self) -> bool;
    /// Queues plaintext for the backend; returns how much was taken.
    fn send(&mut self, data: &[u8]) -> usize;
    /// Plaintext from the backend is waiting.
    fn can_recv(&self) -> bool;
    /// Hands waiting plaintext to `f`, which returns how much it took.
    fn recv(&mut self, f: &mut dyn FnMut(&[u8]) -> usize) -> usize;
    /// Bytes from the backend not yet taken by `recv` (0 with nothing left to read).
    fn recv_queue(&self) -> usize;
    /// The backend may send more (no FIN, no close_notify yet).
    fn may_recv(&self) -> bool;
    /// Where the backend is, for log lines.
    fn remote(&self) -> String;
}

impl Upstream for TcpSocket<'_> {
    fn can_send(&self) -> bool {
        TcpSocket::can_send(self)
    }
    fn send(&mut self, data: &[u8]) -> usize {
        self.send_slice(data).unwrap_or(0)
    }
    fn can_recv(&self) -> bool {
        TcpSocket::can_recv(self)
    }
    fn recv(&mut self, f: &mut dyn FnMut(&[u8]) -> usize) -> usize {
        TcpSocket::recv(self, |buf| {
            let n = f(buf);
            (n, n)
        })
        .unwrap_or(0)
    }
    fn recv_queue(&self) -> usize {
        TcpSocket::recv_queue(self)
    }
    fn may_recv(&self) -> bool {
        TcpSocket::may_recv(self)
    }
    fn remote(&self) -> String {
        super::remote(self)
    }
}

/// The newest ticket each backend gave this core, by vserver and backend address.
#[derive(Default)]
pub struct BackendTickets(HashMap<(Arc<str>, SocketAddrV4), Ticket>);

impl BackendTickets {
    fn get(&self, key: &(Arc<str>, SocketAddrV4)) -> Option<&Ticket> {
        self.0.get(key)
    }
    fn put(&mut self, key: (Arc<str>, SocketAddrV4), t: Ticket) {
        if self.0.len() >= MAX_TICKETS && !self.0.contains_key(&key) {
            self.0.clear();
        }
        self.0.insert(key, t);
    }
}

/// How the backend leg's handshake went, for the counters (reported once).
pub enum Event {
    Established { resumed: bool },
}

/// The backend leg of a pair whose backend connection just came up, if its vserver
/// speaks TLS to backends: `Ok(None)` when it does not.
pub fn start(
    vs: &VserverRt,
    index: u32,
    tickets: &BackendTickets,
    now_ms: u64,
    timeout_ms: u64,
) -> Result<Option<Box<BackendTlsConn>>, tls::Error> {
    let Some(cfg) = &vs.cfg.backend_tls else {
        return Ok(None);
    };
    let addr = vs
        .backends
        .get(index as usize)
        .map(|b| b.addr)
        .ok_or(tls::Error::Misuse("no such backend"))?;
    BackendTlsConn::new(
        cfg,
        index as usize,
        vs.name_arc(),
        addr,
        tickets,
        now_ms,
        timeout_ms,
    )
    .map(|c| Some(Box::new(c)))
}

/// Counts a finished backend handshake: per core, per backend, and in the access log.
pub fn count(
    ev: Event,
    bt: &BackendTlsConn,
    stats: &ProxyStats,
    vs: &VserverRt,
    index: u32,
    log: &mut ClientLog,
) {
    let Event::Established { resumed } = ev;
    let c = if resumed {
        &stats.backend_tls_resumed
    } else {
        &stats.backend_tls_full
    };
    add(c, 1);
    if let Some(be) = vs.backends.get(index as usize) {
        be.tls_handshake(bt.suite(), resumed);
    }
    log.backend_tls = bt.fields();
}

/// The client role waits for its key share (a job), with what it is made from.
struct Pending {
    cfg: Arc<tls::ClientConfig>,
    ticket: Option<Ticket>,
    now_ms: u64,
}

/// One backend connection's TLS client. Its handshake crypto (the key share, then the
/// client role's steps) comes as jobs ([`JobEngine`]): inline or on the crypto pool,
/// as the core's offload link says, like the server's.
pub struct BackendTlsConn {
    /// `None` while the key share is being made.
    c: Option<Box<ClientConn>>,
    pending: Option<Pending>,
    share_job: Option<Job>,
    key: (Arc<str>, SocketAddrV4),
    session_reuse: bool,
    /// Until the handshake completes (ms on the core's clock).
    deadline_ms: u64,
    /// close_notify is due: the TCP FIN follows once it is written.
    closing: bool,
    fin_sent: bool,
    reported: bool,
    error: Option<tls::Error>,
}

impl BackendTlsConn {
    /// A client for backend `index` of a vserver (named `vserver`) at `addr`, offering
    /// this core's ticket for that backend if it has one. Its first job makes the key
    /// share; the ClientHello follows.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &BackendTls,
        index: usize,
        vserver: Arc<str>,
        addr: SocketAddrV4,
        tickets: &BackendTickets,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<Self, tls::Error> {
        let ccfg = cfg
            .per_backend
            .get(index)
            .cloned()
            .ok_or(tls::Error::Misuse(
                "no client configuration for the backend",
            ))?;
        let key = (vserver, addr);
        let ticket = if cfg.session_reuse {
            tickets.get(&key).cloned()
        } else {
            None
        };
        // TLS 1.2 only: the ClientHello carries no key share, so none is made and the
        // client role starts at once.
        let (c, pending, share_job) = match ccfg.share_group() {
            Some(group) => {
                let share_job = tls::jobs::call(move || KeyShare::generate(group));
                let pending = Pending {
                    cfg: ccfg,
                    ticket,
                    now_ms,
                };
                (None, Some(pending), Some(share_job))
            }
            None => {
                let mut c = ClientConn::without_share(ccfg, ticket.as_ref(), now_ms)?;
                c.set_jobs(true);
                (Some(Box::new(c)), None, None)
            }
        };
        Ok(BackendTlsConn {
            c,
            pending,
            share_job,
            key,
            session_reuse: cfg.session_reuse,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            closing: false,
            fin_sent: false,
            reported: false,
            error: None,
        })
    }

    /// While the handshake runs: when it times out (ms on the core's clock).
    pub fn deadline_ms(&self) -> Option<u64> {
        let handshaking = self.c.as_ref().is_none_or(|c| c.is_handshaking());
        (handshaking && self.error.is_none()).then_some(self.deadline_ms)
    }

    /// The backend leg failed (and why); its alert has been queued.
    pub fn error(&self) -> Option<&tls::Error> {
        self.error.as_ref()
    }

    /// The suite the handshake agreed (0 before).
    pub fn suite(&self) -> u16 {
        self.c.as_ref().map_or(0, |c| c.info().suite)
    }

    /// What the handshake agreed, once it is done.
    pub fn fields(&self) -> Option<BackendTlsFields> {
        let c = self.c.as_ref()?;
        let i = c.info();
        c.is_established().then(|| BackendTlsFields {
            version: if i.version == tls::msgs::version::TLS12 {
                "TLSv1.2"
            } else {
                "TLSv1.3"
            },
            suite: tls::client::suite_name(i.suite),
            resumed: i.resumed,
        })
    }

    /// Moves TLS bytes between the socket and the client role: what the backend sent
    /// is read (while the decrypted plaintext is under its bound) and processed, the
    /// steps' jobs are run (`offload`), what the client role wrote is sent, the FIN
    /// after a close_notify once it is out. The newest ticket goes to `tickets`.
    /// Returns the handshake's completion once.
    pub fn pump(
        &mut self,
        s: &mut TcpSocket,
        tickets: &mut BackendTickets,
        offload: &mut Offload,
        tag: HandlerId,
        now_ms: u64,
    ) -> Option<Event> {
        if self.error.is_none() {
            let r = offload
                .run_jobs(tag, Leg::Backend, self)
                .and_then(|_| self.pump_in(s, now_ms))
                .and_then(|_| offload.run_jobs(tag, Leg::Backend, self));
            if let Err(e) = r {
                self.error = Some(e);
            }
        }
        if let Some(c) = self.c.as_mut() {
            // Set before the handshake can finish: every application record of this
            // leg goes through record jobs.
            if offload.records() && !c.record_offload() {
                c.set_record_offload(true);
            }
        }
        self.flush(s);
        let c = self.c.as_mut()?;
        if self.session_reuse {
            if let Some(t) = c.take_ticket() {
                tickets.put(self.key.clone(), t);
            }
        }
        if self.reported || !c.is_established() {
            return None;
        }
        self.reported = true;
        Some(Event::Established {
            resumed: c.info().resumed,
        })
    }

    fn pump_in(&mut self, s: &mut TcpSocket, now_ms: u64) -> Result<(), tls::Error> {
        if self.deadline_ms().is_some_and(|d| now_ms >= d) {
            return Err(tls::Error::HandshakeTimeout);
        }
        let Some(c) = self.c.as_mut() else {
            return Ok(()); // the key share is being made
        };
        if self.closing && !c.is_handshaking() {
            c.close();
        }
        while !c.awaiting_job() && c.plaintext().len() < MAX_PLAINTEXT {
            if fill(s, &mut **c).unwrap_or(0) == 0 {
                break;
            }
            c.process(now_ms)?;
        }
        c.process(now_ms)
    }

    /// Writes what the client role queued (records, an alert), then the FIN once a
    /// close_notify (or an alert) is out.
    fn flush(&mut self, s: &mut TcpSocket) {
        if let Some(c) = self.c.as_mut() {
            let _ = flush(&mut **c, s);
        }
        // Records cut or out with a job (a close_notify among them) go before the FIN;
        // after a failure none will be sealed any more, so they hold nothing back.
        let queued = self
            .c
            .as_ref()
            .is_some_and(|c| !c.pending_tls().is_empty() || (self.error.is_none() && c.sealing()));
        let closed = self.c.as_ref().is_some_and(|c| c.is_closed());
        let ended = (self.closing && closed) || self.error.is_some();
        if ended && !self.fin_sent && !queued {
            s.close();
            self.fin_sent = true;
        }
    }

    /// The backend may send more (no FIN, no close_notify, no failure yet).
    pub fn may_recv(&self, s: &TcpSocket) -> bool {
        s.may_recv()
            && self.error.is_none()
            && self
                .c
                .as_ref()
                .is_none_or(|c| !c.peer_closed() && !c.is_closed())
    }

    /// Bytes from the backend not taken yet: decrypted, waiting for (or out with) a
    /// record job (counted as one), or still in the socket.
    pub fn recv_queue(&self, s: &TcpSocket) -> usize {
        self.c
            .as_ref()
            .map_or(0, |c| c.plaintext().len() + usize::from(c.input_pending()))
            + s.recv_queue()
    }

    /// Frees the client role's empty buffers (an idle pair, see `TlsConn::idle_trim`).
    pub fn release_idle_buffers(&mut self) {
        if let Some(c) = self.c.as_mut() {
            c.release_idle_buffers();
        }
    }

    /// Nothing of this leg is on its way: no record work out or waiting, no TLS bytes
    /// queued for its socket `s`, or that socket is gone (a reset: nothing of the leg
    /// can leave any more). A pair ends only once its backend leg has settled.
    pub fn settled(&self, s: &TcpSocket) -> bool {
        s.state() == netstack::TcpState::Closed
            || self
                .c
                .as_ref()
                .is_none_or(|c| !c.sealing() && !c.input_pending() && c.pending_tls().is_empty())
    }

    /// Record offload: lends what this leg's step cut and received to the next record
    /// job, tagged for the backend leg of handler `owner`. A malformed record fails
    /// the leg (its alert queued), as on the direct path: then `true`, and the caller
    /// steps the pair again to end it.
    pub fn lend_records(&mut self, offload: &mut Offload, owner: HandlerId) -> bool {
        let Some(c) = self.c.as_mut().filter(|_| self.error.is_none()) else {
            return false;
        };
        match c.take_records(driver::offload::tag(owner, Leg::Backend)) {
            Ok(Some(w)) => offload.lend(w),
            Ok(None) => {}
            Err(e) => {
                self.error = Some(e);
                return true;
            }
        }
        false
    }

    /// This leg's completion: a handshake step's result or its record work.
    pub fn on_job_done(&mut self, done: JobDone) {
        let r = match done {
            JobDone::Step(_, r) => self.complete(r),
            JobDone::Records(_, w) => match self.c.as_mut() {
                Some(c) => c.complete_records(w),
                None => Err(tls::Error::Misuse("record work without a connection")),
            },
            JobDone::RecordsLost(_, e) => match self.c.as_mut() {
                Some(c) => c.fail_records(e),
                None => Ok(()),
            },
        };
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }

    /// The client is done sending: close_notify (once the handshake is over), then
    /// the FIN.
    pub fn close(&mut self, s: &mut TcpSocket) {
        self.closing = true;
        if let Some(c) = self.c.as_mut() {
            if !c.is_handshaking() {
                c.close();
            }
        }
        self.flush(s);
    }
}

impl JobEngine for BackendTlsConn {
    fn take_job(&mut self) -> Option<Job> {
        self.share_job
            .take()
            .or_else(|| self.c.as_mut().and_then(|c| c.take_job()))
    }

    fn complete(&mut self, done: Result<Done, CryptoError>) -> Result<(), tls::Error> {
        let r = match self.pending.take() {
            // The key share: the client role starts, its ClientHello queued.
            Some(p) => match done {
                Ok(d) => match tls::jobs::take::<KeyShare>(d) {
                    Ok(share) => {
                        ClientConn::new(p.cfg, share, p.ticket.as_ref(), p.now_ms).map(|mut c| {
                            c.set_jobs(true);
                            self.c = Some(Box::new(c));
                        })
                    }
                    Err(_) => Err(tls::Error::Misuse("a key share job of another type")),
                },
                Err(e) => Err(e.into()),
            },
            None => match self.c.as_mut() {
                Some(c) => c.complete(done),
                None => Err(tls::Error::Misuse("a completion with no job out")),
            },
        };
        if let Err(e) = &r {
            self.error.get_or_insert(e.clone());
        }
        r
    }
}

/// The TLS client as a plaintext transport, for the L4 pump (`driver::pump::relay`:
/// TLS origination for `tcp` pairs).
impl Transport for TlsUpstream<'_, '_> {
    fn recv_with(
        &mut self,
        max: usize,
        take: &mut dyn FnMut(&[u8]) -> usize,
    ) -> std::io::Result<usize> {
        Ok(Upstream::recv(self, &mut |buf| {
            take(&buf[..buf.len().min(max)])
        }))
    }
    fn send(&mut self, data: &[u8]) -> std::io::Result<usize> {
        Ok(Upstream::send(self, data))
    }
}

/// A backend socket behind its TLS client, as the pumps see it.
pub struct TlsUpstream<'a, 'b> {
    pub s: &'a mut TcpSocket<'b>,
    pub b: &'a mut BackendTlsConn,
    pub now_ms: u64,
}

impl Upstream for TlsUpstream<'_, '_> {
    fn can_send(&self) -> bool {
        self.b.error.is_none()
            && self.b.c.as_ref().is_some_and(|c| c.is_established())
            && self.s.can_send()
    }
    fn send(&mut self, data: &[u8]) -> usize {
        let Some(c) = self.b.c.as_mut().filter(|_| self.b.error.is_none()) else {
            return 0;
        };
        let n = match c.send(data) {
            Ok(n) => n,
            Err(e) => {
                self.b.error = Some(e);
                0
            }
        };
        self.b.flush(self.s);
        n
    }
    fn can_recv(&self) -> bool {
        self.b.c.as_ref().is_some_and(|c| !c.plaintext().is_empty())
    }
    fn recv(&mut self, f: &mut dyn FnMut(&[u8]) -> usize) -> usize {
        let Some(c) = self.b.c.as_mut() else {
            return 0;
        };
        let n = f(c.plaintext());
        c.consume_plaintext(n);
        // Room again: what waits in the socket is read now, not on the next event.
        if c.plaintext().is_empty() && self.b.error.is_none() {
            if let Err(e) = self.b.pump_in(self.s, self.now_ms) {
                self.b.error = Some(e);
            }
            self.b.flush(self.s);
        }
        n
    }
    fn recv_queue(&self) -> usize {
        self.b.recv_queue(self.s)
    }
    fn may_recv(&self) -> bool {
        self.b.may_recv(self.s)
    }
    fn remote(&self) -> String {
        super::remote(self.s)
    }
}
