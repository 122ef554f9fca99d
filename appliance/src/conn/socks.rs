//! `mode = "socks5"`: TLS terminated by the `tls` engine, then a SOCKS v5 server (RFC
//! 1928) inside it: the client's greeting, authentication (RFC 1929 username/password
//! checked on a crypto worker against the users file's Argon2 hashes, or the TLS client
//! certificate as the identity, or none when configured), its request, and for CONNECT
//! a connection to the target it named, within the vserver's allow/deny policy; then
//! bytes both ways as a `tls` vserver moves them (the same record sealing and
//! transmittal conditions).
//!
//! UDP ASSOCIATE binds a relay port on this core and answers it; the association
//! (`conn::udp_relay`: secure datagrams, plain ones when the vserver allows them)
//! lives as long as this control connection.
//!
//! Replies follow RFC 1928 §6: 0x02 for a target the policy refuses, 0x03 for one the
//! data plane has no route to, 0x04 for a target that did not answer, 0x05 for one that
//! refused, 0x07 for BIND, 0x08 for domain names (the data plane has no resolver) and
//! IPv6. After a failure reply (or a failed
//! authentication, RFC 1929) the connection is closed: close_notify, then FIN. A client
//! that has not finished negotiating within [`NEGOTIATE_WITHIN_US`] of its handshake is
//! closed too.
//!
//! A relaying connection (CONNECT's pair, or an association's control connection) that
//! moves no byte for a second gives its empty buffers back ([`super::idle`]).

use std::net::SocketAddrV4;
use std::sync::Arc;

use crypto_offload::password::PasswordCheck;
use crypto_offload::{CryptoError, Done, Job};
use driver::offload::{JobDone, JobEngine, Leg};
use driver::pump::flush;
use driver::{Cx, Next};
use netstack::{ConnId, TcpState};
use socks_wire::{cmd, method, rep, Addr, Credentials, Greeting, Reply, Request};
use tls::ServerConn;
use zeroize::Zeroizing;

use super::idle::IdleTrim;
use super::tls::{
    complete_job, count_handshake, lend_records, seal_down, tls_failed, tls_fields, tls_in,
    tls_row, tls_step, Down,
};
use super::udp_relay::Association;
use super::{abort, release_client, remote, BackendLeg, ClientLog, BACKEND, CLIENT};
use crate::backends::VserverRt;
use crate::config::SocksConfig;
use crate::core::CoreApp;
use crate::live::SessionRow;
use crate::stats::add;
use crate::transmit::TxState;

/// The leg number of an association's relay port.
const RELAY: u8 = 2;

/// What a request asks for, once it is allowed.
#[derive(Debug, Clone, Copy)]
enum Action {
    Connect(SocketAddrV4),
    /// UDP ASSOCIATE, with the address the client said it sends from.
    Associate(SocketAddrV4),
}

/// How long a client has, from its completed TLS handshake, to authenticate and make
/// its request (and how long a failure reply waits for its close).
pub const NEGOTIATE_WITHIN_US: u64 = 10_000_000;

/// A hash no password matches in less than a check's full cost: an unknown user is
/// checked against it, so a wrong name takes as long as a wrong password.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lzYWx0ZGVjb3k$7uJ4O0H4mJ3oqm8y8n7mYbqk6Qd1yB6TzZ5Yj0l2Xw8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The TLS handshake, then the greeting (methods offered).
    Greeting,
    /// RFC 1929's request.
    Auth,
    /// A password check is on a crypto worker.
    Checking,
    /// The SOCKS request.
    Request,
    /// The target is being connected to.
    Connecting,
    /// Bytes both ways.
    Relay,
    /// A UDP association is relaying; the control connection only waits for its end.
    Associated,
    /// A failure was answered: close_notify and FIN once it is out.
    Closing,
}

/// The password check as the offload link sees it: one job, one result.
#[derive(Default)]
struct AuthJob {
    job: Option<Job>,
    /// The job is out (its completion is this handler's next `Step`).
    out: bool,
    result: Option<Result<bool, CryptoError>>,
}

impl JobEngine for AuthJob {
    fn take_job(&mut self) -> Option<Job> {
        self.job.take()
    }
    fn complete(&mut self, done: Result<Done, CryptoError>) -> Result<(), tls::Error> {
        self.out = false;
        self.result = Some(match done {
            Ok(Done::PasswordCheck(ok)) => Ok(ok),
            Ok(other) => Err(CryptoError::Unavailable(format!(
                "unexpected completion {other:?}"
            ))),
            Err(e) => Err(e),
        });
        Ok(())
    }
}

/// One SOCKS-over-TLS client, and its target connection once it has one.
pub struct SocksConn {
    client: ConnId,
    t: Box<ServerConn>,
    vs: Arc<VserverRt>,
    socks: Arc<SocksConfig>,
    phase: Phase,
    auth: AuthJob,
    /// Who the client is: its user name or certificate subject.
    identity: Option<String>,
    target: Option<BackendLeg>,
    target_addr: Option<SocketAddrV4>,
    assoc: Option<Association>,
    connect_started_us: u64,
    /// Negotiation (or a failure's close) must be over by then.
    negotiate_by_us: Option<u64>,
    tx: TxState,
    counted: bool,
    client_fin_forwarded: bool,
    /// When the relaying connection, if it stays idle, gives back its empty buffers.
    idle: IdleTrim,
    log: ClientLog,
}

impl SocksConn {
    pub fn accept(
        cx: &mut Cx<'_>,
        client: ConnId,
        vs: Arc<VserverRt>,
        log: ClientLog,
    ) -> Option<Box<Self>> {
        let cfg = vs.cfg.tls.clone()?;
        let socks = vs.cfg.socks.clone()?;
        let mut t = Box::new(ServerConn::new(cfg, cx.now_ms()));
        t.set_record_offload(cx.offload.records());
        cx.adopt(client, CLIENT);
        let tx = TxState::new(&vs.cfg.transmit);
        Some(Box::new(SocksConn {
            client,
            t,
            vs,
            socks,
            phase: Phase::Greeting,
            auth: AuthJob::default(),
            identity: None,
            target: None,
            target_addr: None,
            assoc: None,
            connect_started_us: 0,
            negotiate_by_us: None,
            tx,
            counted: false,
            client_fin_forwarded: false,
            idle: IdleTrim::default(),
            log,
        }))
    }

    pub fn on_job_done(&mut self, done: JobDone) {
        match done {
            JobDone::Step(_, r) if self.auth.out => {
                let _ = self.auth.complete(r);
            }
            done => complete_job(&mut self.t, done),
        }
    }

    pub fn deadline_us(&self) -> Option<u64> {
        let engine = self.t.deadline().map(|ms| ms.saturating_mul(1000));
        // While a password check is out its completion wakes the handler; a passed
        // negotiation deadline must not wake it in every iteration meanwhile.
        let negotiate = self
            .negotiate_by_us
            .filter(|_| self.phase != Phase::Checking);
        [engine, self.tx.armed_us, negotiate, self.idle.deadline_us()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn step(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        let next = match self.phase {
            Phase::Relay => self.step_relay(cx, app),
            Phase::Connecting => self.step_connecting(cx, app),
            Phase::Associated => self.step_associated(cx, app),
            _ => self.step_negotiate(cx, app),
        };
        if next == Next::Done {
            return next;
        }
        let other = self.target.as_ref().map(|b| b.id);
        if let Err(e) = lend_records(cx, &mut self.t, self.client, other) {
            self.fail_tls(cx, app, e);
            return Next::Done;
        }
        if matches!(self.phase, Phase::Relay | Phase::Associated) {
            self.idle_trim(cx);
        }
        if self.t.awaiting_lookup() {
            Next::Again
        } else {
            next
        }
    }

    /// A relaying connection that has moved no byte for a second frees its engine's
    /// empty buffers and gives back the pages of its sockets' empty buffers (the
    /// client's, and the target's for CONNECT; [`netstack::Stack::trim_idle`]); once
    /// per quiet spell ([`IdleTrim`]).
    fn idle_trim(&mut self, cx: &mut Cx<'_>) {
        let (now, moved) = (cx.now_us, self.log.bytes_in + self.log.bytes_out);
        if !self.idle.due(now, moved) {
            return;
        }
        self.t.release_idle_buffers();
        // SAFETY: the appliance never replaces a socket it gets from the stack (it only
        // calls its methods).
        let mut done = unsafe { cx.stack.trim_idle(self.client) }.is_some();
        if let Some(b) = &self.target {
            // SAFETY: as above.
            done &= unsafe { cx.stack.trim_idle(b.id) }.is_some();
        }
        self.idle.trimmed(now, done);
    }

    /// Reads what the control connection brought into the engine. `false` when it
    /// ended (a reset, a TLS failure: its alert sent, logged, everything released).
    fn read_control(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> bool {
        let (now_us, tag) = (cx.now_us, cx.me());
        let Some(cs) = cx.stack.socket(self.client) else {
            return false;
        };
        if cs.state() == TcpState::Closed {
            add(&app.stats.client_reset, 1);
            self.log.close = "client_reset";
            self.release(cx, app);
            return false;
        }
        let t = &mut *self.t;
        if let Err(e) = tls_in(cs, t, cx.offload, tag, now_us / 1000) {
            let _ = flush(t, cs);
            cs.close();
            let r = remote(cs);
            self.log.close = "tls_error";
            self.log.error = Some(e.to_string());
            tls_failed(&app.stats, &e, &self.vs.cfg.name, &r);
            self.release(cx, app);
            return false;
        }
        true
    }

    /// The handshake and the SOCKS messages before a target connection exists.
    fn step_negotiate(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        let (now_us, tag) = (cx.now_us, cx.me());
        if !self.read_control(cx, app) {
            return Next::Done;
        }
        let Some(cs) = cx.stack.socket(self.client) else {
            return Next::Done;
        };
        let t = &mut *self.t;
        count_handshake(t, &mut self.counted, &mut self.log, &app.stats, now_us);
        if t.is_established() && self.negotiate_by_us.is_none() {
            self.negotiate_by_us = Some(now_us + NEGOTIATE_WITHIN_US);
        }
        let mut connect_to = None;
        if t.is_established() {
            // A password check that came back (inline mode: at once).
            if let Some(r) = self.auth.result.take() {
                let ok = match r {
                    Ok(ok) => ok,
                    Err(e) => {
                        log::warn!("vserver {}: password check failed: {e}", self.vs.cfg.name);
                        false
                    }
                };
                let _ = t.send(&socks_wire::auth_reply(ok));
                if ok {
                    self.phase = Phase::Request;
                } else {
                    add(&app.stats.socks_auth_failed, 1);
                    log::info!(
                        "vserver {}: SOCKS client {}: authentication failed for user {:?}",
                        self.vs.cfg.name,
                        remote(cs),
                        self.identity.as_deref().unwrap_or("")
                    );
                    self.identity = None;
                    self.log.close = "socks_auth_failed";
                    self.phase = Phase::Closing;
                }
            }
            connect_to = self.negotiate(cx.offload, tag, app, &remote(cs));
        }
        let Some(cs) = cx.stack.socket(self.client) else {
            return Next::Done;
        };
        let t = &mut *self.t;
        let _ = flush(t, cs);
        let no_more = !cs.may_recv() && cs.recv_queue() == 0;
        let late = self.negotiate_by_us.is_some_and(|by| now_us >= by);
        if self.phase == Phase::Closing {
            t.close();
            let _ = flush(t, cs);
            if (t.pending_tls().is_empty() && !t.sealing()) || late || no_more {
                cs.close();
                self.release(cx, app);
                return Next::Done;
            }
            return Next::Wait;
        }
        if no_more || t.peer_closed() || (late && self.phase != Phase::Checking) {
            if t.is_established() {
                t.close();
                let _ = flush(t, cs);
            }
            cs.close();
            self.log.close = if late {
                "socks_timeout"
            } else {
                "client_closed"
            };
            self.release(cx, app);
            return Next::Done;
        }
        match connect_to {
            Some(Action::Connect(addr)) => return self.connect(cx, app, addr),
            Some(Action::Associate(hint)) => return self.associate(cx, app, hint),
            None => {}
        }
        if self.auth.result.is_some() {
            // A password check that ran inline (no crypto workers): answer it now.
            return Next::Again;
        }
        Next::Wait
    }

    /// Reads the SOCKS messages in the engine's plaintext, as far as they go; answers
    /// them. Returns what to do once a request is allowed.
    fn negotiate(
        &mut self,
        offload: &mut driver::Offload,
        tag: driver::HandlerId,
        app: &CoreApp,
        peer: &str,
    ) -> Option<Action> {
        let stats = &app.stats;
        let name = &self.vs.cfg.name;
        loop {
            let t = &mut *self.t;
            let input = t.plaintext();
            match self.phase {
                Phase::Greeting => match Greeting::parse(input) {
                    Ok(None) => return None,
                    Ok(Some((g, n))) => {
                        t.consume_plaintext(n);
                        let s = &self.socks;
                        let offers = |m| g.methods.contains(&m);
                        let subject = t.info().peer_subject.clone();
                        let chosen =
                            if s.auth_certificate && subject.is_some() && offers(method::NONE) {
                                self.identity = subject;
                                Some((method::NONE, Phase::Request))
                            } else if s.auth_password && offers(method::PASSWORD) {
                                Some((method::PASSWORD, Phase::Auth))
                            } else if s.auth_none && offers(method::NONE) {
                                Some((method::NONE, Phase::Request))
                            } else {
                                None
                            };
                        match chosen {
                            Some((m, next)) => {
                                let _ = t.send(&socks_wire::method_reply(m));
                                self.phase = next;
                            }
                            None => {
                                let _ = t.send(&socks_wire::method_reply(method::NO_ACCEPTABLE));
                                add(&stats.socks_auth_failed, 1);
                                log::info!("vserver {name}: SOCKS client {peer}: no acceptable method among {:?}", g.methods);
                                self.log.close = "socks_no_method";
                                self.phase = Phase::Closing;
                                return None;
                            }
                        }
                    }
                    Err(e) => return self.malformed(app, peer, e),
                },
                Phase::Auth => match Credentials::parse(input) {
                    Ok(None) => return None,
                    Ok(Some((c, n))) => {
                        t.consume_plaintext_wiping(n);
                        let Credentials { user, password } = c;
                        let password = Zeroizing::new(password);
                        let phc = self
                            .socks
                            .users
                            .hash(&user)
                            .cloned()
                            .unwrap_or_else(|| Arc::from(DECOY_HASH));
                        self.identity = Some(String::from_utf8_lossy(&user).into_owned());
                        self.auth.job = Some(Job::PasswordCheck(Box::new(PasswordCheck {
                            phc,
                            password,
                        })));
                        self.auth.out = true;
                        self.phase = Phase::Checking;
                        // Inline mode completes it here; the next step reads the result.
                        let _ = offload.run_jobs(tag, Leg::Client, &mut self.auth);
                        return None;
                    }
                    Err(e) => return self.malformed(app, peer, e),
                },
                Phase::Checking => return None,
                Phase::Request => match Request::parse(input) {
                    Ok(None) => return None,
                    Ok(Some((r, n))) => {
                        t.consume_plaintext(n);
                        return self.request(app, peer, r);
                    }
                    Err(socks_wire::Error::AddressType(a)) => {
                        add(&stats.socks_unsupported, 1);
                        log::info!(
                            "vserver {name}: SOCKS client {peer}: address type {a:#04x} refused"
                        );
                        return self.refuse(rep::ADDRESS_TYPE_NOT_SUPPORTED, "socks_unsupported");
                    }
                    Err(e) => return self.malformed(app, peer, e),
                },
                Phase::Connecting | Phase::Relay | Phase::Associated | Phase::Closing => {
                    return None
                }
            }
        }
    }

    /// A request: CONNECT to an allowed, routable IPv4 target is connected, UDP
    /// ASSOCIATE is associated; everything else gets its reply code.
    fn request(&mut self, app: &CoreApp, peer: &str, r: Request) -> Option<Action> {
        let stats = &app.stats;
        let name = &self.vs.cfg.name;
        if r.cmd == cmd::UDP_ASSOCIATE {
            // DST is where the client will send from (RFC 1928 §7), often all zeros.
            let hint = match r.dst {
                Addr::V4(a) => a,
                _ => SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
            };
            return Some(Action::Associate(hint));
        }
        if r.cmd != cmd::CONNECT {
            add(&stats.socks_unsupported, 1);
            let what = match r.cmd {
                cmd::BIND => "BIND",
                _ => "an unknown command",
            };
            log::info!("vserver {name}: SOCKS client {peer}: {what} refused");
            return self.refuse(rep::COMMAND_NOT_SUPPORTED, "socks_unsupported");
        }
        let dst = match r.dst {
            Addr::V4(a) => a,
            other => {
                add(&stats.socks_unsupported, 1);
                log::info!("vserver {name}: SOCKS client {peer}: CONNECT {other} refused (IPv4 addresses only)");
                return self.refuse(rep::ADDRESS_TYPE_NOT_SUPPORTED, "socks_unsupported");
            }
        };
        self.target_addr = Some(dst);
        self.log.backend_addr = Some(dst);
        if !self.socks.allowed(dst) || dst.port() == 0 {
            add(&stats.socks_refused_policy, 1);
            log::info!(
                "vserver {name}: SOCKS client {peer} ({}): CONNECT {dst} not allowed",
                self.identity.as_deref().unwrap_or("-")
            );
            return self.refuse(rep::NOT_ALLOWED, "socks_not_allowed");
        }
        if !self.socks.routable(*dst.ip()) {
            add(&stats.socks_target_failed, 1);
            log::info!("vserver {name}: SOCKS client {peer}: CONNECT {dst}: no route");
            return self.refuse(rep::NETWORK_UNREACHABLE, "socks_unreachable");
        }
        Some(Action::Connect(dst))
    }

    /// Answers `code` and closes.
    fn refuse(&mut self, code: u8, close: &'static str) -> Option<Action> {
        let _ = self.t.send(&Reply::failure(code).encode());
        self.log.close = close;
        self.phase = Phase::Closing;
        None
    }

    fn malformed(&mut self, app: &CoreApp, peer: &str, e: socks_wire::Error) -> Option<Action> {
        add(&app.stats.socks_malformed, 1);
        log::info!(
            "vserver {}: SOCKS client {peer}: {e}; closed",
            self.vs.cfg.name
        );
        self.log.close = "socks_malformed";
        self.log.error = Some(e.to_string());
        // RFC 1928 has no reply before a request is read; a bad request gets 0x01.
        if self.phase == Phase::Request {
            let _ = self.t.send(&Reply::failure(rep::GENERAL_FAILURE).encode());
        }
        self.phase = Phase::Closing;
        None
    }

    /// Opens the target connection.
    fn connect(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp, addr: SocketAddrV4) -> Next {
        match cx.connect(addr, BACKEND) {
            Ok(id) => {
                self.target = Some(BackendLeg {
                    id,
                    index: u32::MAX,
                    established: false,
                    fin_forwarded: false,
                });
                self.connect_started_us = cx.now_us;
                self.phase = Phase::Connecting;
                // The target's connect has its own timeout ([tcp] handshake_timeout).
                self.negotiate_by_us = None;
                Next::Wait
            }
            Err(e) => {
                add(&app.stats.backend_no_slot, 1);
                log::warn!(
                    "vserver {}: SOCKS CONNECT {addr}: no connection possible ({e:?})",
                    self.vs.cfg.name
                );
                self.refuse(rep::GENERAL_FAILURE, "no_slot");
                Next::Again
            }
        }
    }

    /// UDP ASSOCIATE: binds the relay port, derives the datagram keys, answers with
    /// the port. The client sends from the control connection's address; from the
    /// port its request named when it named that address, else from the first port a
    /// valid datagram comes from.
    fn associate(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp, hint: SocketAddrV4) -> Next {
        let name = self.vs.cfg.name.clone();
        let Some(cs) = cx.stack.socket(self.client) else {
            return Next::Done;
        };
        let (Some(peer), Some(local)) = (
            netstack::endpoint_v4(cs.remote_endpoint()),
            netstack::endpoint_v4(cs.local_endpoint()),
        ) else {
            return Next::Done;
        };
        let client = if hint.ip() == peer.ip() {
            hint
        } else {
            SocketAddrV4::new(*peer.ip(), 0)
        };
        let (udp, port) = match cx.bind_udp(RELAY) {
            Ok(x) => x,
            Err(e) => {
                add(&app.stats.backend_no_slot, 1);
                log::warn!("vserver {name}: SOCKS UDP ASSOCIATE for {peer}: no relay port ({e:?})");
                self.refuse(rep::GENERAL_FAILURE, "no_slot");
                self.negotiate_by_us = Some(cx.now_us + NEGOTIATE_WITHIN_US);
                return Next::Again;
            }
        };
        let keys = match Association::keys_from(&self.t, port) {
            Ok(k) => Some(k),
            Err(e) if self.socks.plain_udp => {
                log::info!(
                    "vserver {name}: SOCKS UDP ASSOCIATE for {peer}: plain datagrams only ({e})"
                );
                None
            }
            Err(e) => {
                cx.stack.close_udp(udp);
                add(&app.stats.socks_unsupported, 1);
                log::info!("vserver {name}: SOCKS UDP ASSOCIATE for {peer} refused: no keys for secure datagrams ({e})");
                self.refuse(rep::GENERAL_FAILURE, "socks_no_datagram_keys");
                self.negotiate_by_us = Some(cx.now_us + NEGOTIATE_WITHIN_US);
                return Next::Again;
            }
        };
        let r = Reply {
            rep: rep::SUCCEEDED,
            bound: Addr::V4(SocketAddrV4::new(*local.ip(), port)),
        };
        let _ = self.t.send(&r.encode());
        let Some(cs) = cx.stack.socket(self.client) else {
            return Next::Done;
        };
        let _ = flush(&mut *self.t, cs);
        add(&app.stats.socks_associations, 1);
        log::debug!(
            "vserver {name}: SOCKS UDP ASSOCIATE for {} ({peer}): relay port {port}",
            self.identity.as_deref().unwrap_or("-")
        );
        self.assoc = Some(Association::new(
            udp,
            port,
            client,
            keys,
            self.socks.clone(),
        ));
        self.log.backend_addr = Some(SocketAddrV4::new(*local.ip(), port));
        self.log.socks = Some("udp_associate");
        self.log.user = self.identity.clone();
        self.phase = Phase::Associated;
        self.negotiate_by_us = None;
        Next::Again
    }

    /// An association relays datagrams until its control connection ends (the
    /// client's close or reset, or the integrity limit); what the client sends on the
    /// control connection meanwhile is read and ignored (RFC 1928 gives it no meaning).
    fn step_associated(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        let mut end = None;
        if let Some(a) = self.assoc.as_mut() {
            let r = a.step(cx, &app.stats, &self.vs.cfg.name, &mut app.udp_scratch);
            let (up, down) = (a.up, a.down);
            self.log.bytes_in = up.1;
            self.log.bytes_out = down.1;
            end = match r {
                Ok(()) => None,
                Err(super::udp_relay::End::IntegrityLimit) => Some("dgram_integrity_limit"),
                Err(super::udp_relay::End::Exhausted) => Some("dgram_keys_used_up"),
            };
        }
        if !self.read_control(cx, app) {
            return Next::Done;
        }
        let Some(cs) = cx.stack.socket(self.client) else {
            return Next::Done;
        };
        let t = &mut *self.t;
        let n = t.plaintext().len();
        t.consume_plaintext(n);
        let no_more = !cs.may_recv() && cs.recv_queue() == 0;
        if end.is_some() || no_more || t.peer_closed() {
            t.close();
            let _ = flush(t, cs);
            cs.close();
            self.log.close = end.unwrap_or("client_closed");
            add(&app.stats.completed, 1);
            self.release(cx, app);
            return Next::Done;
        }
        let _ = flush(t, cs);
        Next::Wait
    }

    /// The target connection's handshake: success is answered with the address the
    /// appliance connected from; a refusal or silence with 0x05 or 0x04.
    fn step_connecting(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        let Some(b) = self.target.as_ref() else {
            return Next::Done;
        };
        let bid = b.id;
        let now_us = cx.now_us;
        let Some(((cs, _), (bs, _))) = cx.stack.pair(self.client, bid) else {
            return Next::Done;
        };
        if cs.state() == TcpState::Closed {
            bs.abort();
            add(&app.stats.client_reset, 1);
            self.log.close = "client_reset";
            self.release(cx, app);
            return Next::Done;
        }
        let dst = self.target_addr.map(|a| a.to_string()).unwrap_or_default();
        match bs.state() {
            TcpState::SynSent | TcpState::SynReceived => Next::Wait,
            TcpState::Closed | TcpState::TimeWait => {
                // smoltcp does not say why; a RST comes within a round trip, silence
                // lasts the connect timeout.
                let waited = now_us.saturating_sub(self.connect_started_us);
                let code = if waited >= 1_000_000 {
                    rep::HOST_UNREACHABLE
                } else {
                    rep::CONNECTION_REFUSED
                };
                add(&app.stats.socks_target_failed, 1);
                log::info!(
                    "vserver {}: SOCKS CONNECT {dst} failed (reply {code:#04x})",
                    self.vs.cfg.name
                );
                if let Some(b) = self.target.take() {
                    cx.stack.release(b.id);
                }
                self.refuse(code, "socks_target_failed");
                // The failure reply's close is bounded like negotiation.
                self.negotiate_by_us = Some(now_us + NEGOTIATE_WITHIN_US);
                Next::Again
            }
            _ => {
                let bound = netstack::endpoint_v4(bs.local_endpoint())
                    .map(Addr::V4)
                    .unwrap_or_else(|| Reply::failure(0).bound);
                let r = Reply {
                    rep: rep::SUCCEEDED,
                    bound,
                };
                let _ = self.t.send(&r.encode());
                let _ = flush(&mut *self.t, cs);
                if let Some(b) = self.target.as_mut() {
                    b.established = true;
                }
                cx.stack.set_established(bid);
                add(&app.stats.backend_connected, 1);
                add(&app.stats.socks_connects, 1);
                self.log.socks = Some("connect");
                self.log.user = self.identity.clone();
                log::debug!(
                    "vserver {}: SOCKS CONNECT {dst} for {}",
                    self.vs.cfg.name,
                    self.identity.as_deref().unwrap_or("-")
                );
                self.phase = Phase::Relay;
                self.negotiate_by_us = None;
                // Data the client sent behind its request is waiting: move it now.
                Next::Again
            }
        }
    }

    /// Bytes both ways, closes passed on (as a `tls` vserver's pair).
    fn step_relay(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp) -> Next {
        let Some(b) = self.target.as_mut() else {
            return Next::Done;
        };
        let transmit = self.vs.cfg.transmit;
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
        let mut failed = None;
        let end: Option<&'static str> = 'step: {
            let both_fins = b.fin_forwarded && self.client_fin_forwarded;
            if bs.state() == TcpState::Closed && !both_fins {
                cs.abort();
                add(&app.stats.backend_reset, 1);
                break 'step Some("backend_reset");
            }
            if cs.state() == TcpState::Closed && !both_fins {
                bs.abort();
                add(&app.stats.client_reset, 1);
                break 'step Some("client_reset");
            }
            let r = tls_step(cs, t, bs, true, cx.offload, tag, &mut down)
                .and_then(|_| seal_down(cs, t, bs, &mut self.tx, &mut down));
            if let Err(e) = r {
                cs.close();
                bs.abort();
                failed = Some((e, remote(cs)));
                break 'step Some("tls_error");
            }
            let client_done = t.peer_closed() || (!cs.may_recv() && cs.recv_queue() == 0);
            if !self.client_fin_forwarded
                && client_done
                && t.plaintext().is_empty()
                && !t.input_pending()
            {
                bs.close();
                self.client_fin_forwarded = true;
            }
            if !b.fin_forwarded && !bs.may_recv() && bs.recv_queue() == 0 && t.staged() == 0 {
                t.close();
                let _ = flush(t, cs);
                if t.pending_tls().is_empty() && !t.sealing() {
                    cs.close();
                    b.fin_forwarded = true;
                }
            }
            if self.client_fin_forwarded && b.fin_forwarded {
                add(&app.stats.completed, 1);
                break 'step Some("done");
            }
            None
        };
        if down.psh {
            cx.stack.restore_psh(b.id);
        }
        let (up, dn) = (down.up_bytes, down.down_bytes);
        self.log.bytes_in += up;
        self.log.bytes_out += dn;
        add(&app.stats.bytes_to_backend, up);
        add(&app.stats.bytes_to_client, dn);
        let Some(why) = end else {
            return Next::Wait;
        };
        self.log.close = why;
        if let Some((e, r)) = failed {
            self.log.error = Some(e.to_string());
            tls_failed(&app.stats, &e, &self.vs.cfg.name, &r);
        }
        self.release(cx, app);
        Next::Done
    }

    fn fail_tls(&mut self, cx: &mut Cx<'_>, app: &CoreApp, e: tls::Error) {
        self.log.close = "tls_error";
        self.log.error = Some(e.to_string());
        let r = cx
            .stack
            .socket(self.client)
            .map(|s| remote(s))
            .unwrap_or_else(|| "(gone)".into());
        tls_failed(&app.stats, &e, &self.vs.cfg.name, &r);
        self.release(cx, app);
    }

    /// Releases both sides (the sockets are closed or aborted already) and the
    /// association's relay port.
    fn release(&mut self, cx: &mut Cx<'_>, app: &CoreApp) {
        if let Some(a) = self.assoc.take() {
            cx.stack.close_udp(a.udp);
        }
        let fields = tls_fields(&self.t);
        release_client(cx, app, self.client, &self.log, Some(&self.vs), fields);
        if let Some(b) = self.target.take() {
            cx.stack.release(b.id);
        }
    }

    pub fn cut(&mut self, cx: &mut Cx<'_>, app: &CoreApp, why: &'static str) {
        self.log.close = why;
        abort(cx, self.client);
        if let Some(b) = &self.target {
            abort(cx, b.id);
        }
        self.release(cx, app);
    }

    pub fn session_row(&self, core: usize, now_us: u64) -> SessionRow {
        let state = match self.phase {
            Phase::Greeting if !self.t.is_established() => "handshake",
            Phase::Greeting | Phase::Auth | Phase::Checking | Phase::Request => "socks_negotiating",
            Phase::Connecting => "socks_connecting",
            Phase::Relay if self.client_fin_forwarded => "closing",
            Phase::Relay => "open",
            Phase::Associated => "socks_associated",
            Phase::Closing => "closing",
        };
        let mut row = self.log.row(core, Some(&self.vs), state, now_us);
        tls_row(&mut row, &self.t);
        row
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_decoy_hash_is_one_argon2_reads_and_no_password_matches() {
        crypto_offload::password::valid_hash(super::DECOY_HASH).unwrap();
        let job = crypto_offload::password::PasswordCheck {
            phc: super::DECOY_HASH.into(),
            password: zeroize::Zeroizing::new(b"password".to_vec()),
        };
        assert!(!crypto_offload::password::check(&job).unwrap());
    }
}
