//! The per-core driver: the poll loop every poll-mode core runs, the trait its
//! connection handlers implement, and what all kinds of connection share (timers, the
//! offload link, the engine-to-socket pump).
//!
//! What it owns: the order of work in one loop iteration, which connections are
//! stepped and when, the network half of a core ([`Net`]: port queue, steering,
//! `netstack`), the offload link ([`offload`]) and the pump ([`pump`]).
//! What it must not do: know vservers, backends, configuration files or a protocol
//! above TCP (handlers do), block, or read a clock (the caller passes the time in).
//!
//! ## One iteration ([`Driver::poll_once`])
//! In the order DPDK's l3fwd runs its main loop, with the crypto pool in front:
//! 1. housekeeping: [`App::housekeeping`] (reloads, health checks, operator requests);
//! 2. crypto completions: each goes to its handler ([`Handler::on_job_done`]), which
//!    hands it to its engine; the connection becomes ready;
//! 3. RX burst: frames into this core's stack, or to the core that owns them;
//! 4. new connections: [`App::accept`] makes a handler for each; it is ready;
//! 5. timers: TCP's (in `netstack`) and each handler's own deadline
//!    ([`Handler::deadline_us`]: a TLS handshake's, a transmittal timer); their
//!    connections become ready, as do handlers whose UDP ports ([`Cx::bind_udp`])
//!    received datagrams;
//! 6. ready connections: each is stepped **once** ([`Handler::step`]), told what woke
//!    it ([`Wake`]);
//! 7. record work lent during the steps goes to the crypto pool in batches;
//! 8. TX: the stack's egress pass and one TX flush.
//!
//! With [`Driver::account_phases`] on, every iteration that did work adds its cycles
//! per step to [`phases::PhaseStats`] (where the busy time goes, idle polls apart).
//!
//! Completions and timers only mark connections ready; no handler is called from
//! inside another's call, so a connection is stepped at most once per iteration. A
//! handler that must look again without an event (a session lookup in flight)
//! answers [`Next::Again`] and is stepped in the next iteration.
//!
//! ## Handlers
//! A connection kind is a type implementing [`Handler`]; the application's per-core
//! state implements [`App`] and chooses the handler for each accepted connection. A
//! handler owns its connection's state and the `netstack` connections it uses (its
//! legs: a client side, a backend side); the stack's per-connection data is only an
//! [`Owner`] pointing back at it, so events find their handler in O(1). Adding a
//! connection kind touches the application, not the driver.

pub mod offload;
pub mod phases;
pub mod pump;
pub mod timers;

use dataplane::steer::{Dest, SteerEndpoint, Steering};
use dataplane::{Frame, PortQueue, BURST};
use netstack::{BindError, ConnId, ConnectError, NetInstant, Stack, UdpId};
use slab::Slab;

pub use offload::{JobDone, Offload, OffloadStats, Routed};
use timers::Timers;

/// A connection handler's id on its core: stays unique while the handler lives and
/// is not reused at once after it ends (a generation), so late completions and timers
/// for an ended handler are recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId {
    idx: u32,
    gen: u32,
}

/// Generations are 30 bits, so [`HandlerId::to_bits`] never sets bit 63 (record jobs'
/// tags use it) or bit 62 (a handshake job's [`offload::Leg`]).
const GEN_MASK: u32 = 0x3fff_ffff;

impl HandlerId {
    /// As a crypto job's tag.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.idx)
    }

    pub fn from_bits(b: u64) -> Self {
        HandlerId {
            idx: b as u32,
            gen: (b >> 32) as u32 & GEN_MASK,
        }
    }
}

/// What the stack keeps per TCP connection: the handler it belongs to, and which of
/// the handler's legs it is (the handler's own numbering, e.g. 0 = client side).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub handler: Option<HandlerId>,
    pub leg: u8,
}

/// Why a handler is stepped: the events since its last step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// Legs whose socket may have changed (bit `1 << leg`): data, window, state.
    pub legs: u8,
    /// Its deadline passed.
    pub timer: bool,
    /// A crypto job of its came back.
    pub job: bool,
    /// It is new (just accepted or created).
    pub new: bool,
    /// It asked to be stepped again.
    pub again: bool,
}

/// What a handler wants after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Step me on my next event.
    Wait,
    /// Step me in the next iteration too, event or not.
    Again,
    /// I am finished (my connections are closed and released): drop me.
    Done,
}

/// What a handler's calls get besides the application's state: this core's stack
/// (for its own connections), the offload link, the time and its own id.
pub struct Cx<'a> {
    pub stack: &'a mut Stack<Owner>,
    pub offload: &'a mut Offload,
    /// Microseconds on the core's clock.
    pub now_us: u64,
    me: HandlerId,
}

impl Cx<'_> {
    /// The handler being called.
    pub fn me(&self) -> HandlerId {
        self.me
    }

    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    /// Opens a connection to `remote` as this handler's leg `leg`.
    pub fn connect(
        &mut self,
        remote: std::net::SocketAddrV4,
        leg: u8,
    ) -> Result<ConnId, ConnectError> {
        let owner = Owner {
            handler: Some(self.me),
            leg,
        };
        self.stack.connect(remote, owner)
    }

    /// Binds a UDP port of this core as this handler's leg `leg` (a SOCKS relay):
    /// datagrams arriving on it wake the handler with that leg's bit. The handler
    /// closes it ([`Stack::close_udp`]) when it ends.
    pub fn bind_udp(&mut self, leg: u8) -> Result<(UdpId, u16), BindError> {
        let owner = Owner {
            handler: Some(self.me),
            leg,
        };
        self.stack.bind_udp(owner)
    }

    /// Makes `id` (an accepted connection) this handler's leg `leg`.
    pub fn adopt(&mut self, id: ConnId, leg: u8) {
        if let Some(o) = self.stack.user(id) {
            *o = Owner {
                handler: Some(self.me),
                leg,
            };
        }
    }

    /// The port's MSS (IPv4, no TCP options).
    pub fn mss(&self) -> usize {
        self.stack.config().mtu.saturating_sub(40)
    }
}

/// One kind of connection.
pub trait Handler {
    /// The application's per-core state, handed to every call.
    type App;

    /// Does everything the connection can do now: move bytes, drive engines, pass on
    /// closes. Called at most once per iteration (see the crate docs).
    fn step(&mut self, cx: &mut Cx<'_>, app: &mut Self::App, wake: Wake) -> Next;

    /// A crypto job of this handler's came back: hand it to the engine. The driver
    /// steps the handler later in the same iteration; do no I/O here.
    fn on_job_done(&mut self, done: JobDone, app: &mut Self::App);

    /// When the handler next wants a step without an event (µs on the core's clock).
    /// Asked after every call; a deadline that moved is armed again.
    fn deadline_us(&self) -> Option<u64>;

    /// The driver ends the connection (a shutdown cut): abort and release its
    /// connections and account for it; no step follows.
    fn on_close(&mut self, cx: &mut Cx<'_>, app: &mut Self::App, why: &'static str);
}

/// The application's per-core state.
pub trait App: Sized {
    type Conn: Handler<App = Self>;

    /// A connection was accepted on the listener tagged `listener`: the handler that
    /// serves it ([`Cx::adopt`] it as a leg), or `None` when the application has
    /// already closed and released it.
    fn accept(&mut self, cx: &mut Cx<'_>, conn: ConnId, listener: u32) -> Option<Self::Conn>;

    /// Work outside connections, first in each iteration (reloads, health checks,
    /// operator requests). Returns whether it did anything.
    fn housekeeping(&mut self, core: &mut Parts<'_, Self>) -> bool;

    /// Copies counters where other threads read them (every 256 iterations, and when
    /// the core stops).
    fn publish(&mut self, net: &Net) {
        let _ = net;
    }
}

struct Entry<H> {
    gen: u32,
    h: H,
    /// In the ready set, with what woke it.
    queued: bool,
    wake: Wake,
    /// The deadline armed in the timers.
    timer_at: Option<u64>,
}

/// The handlers of one core, with the ready set and their timers.
pub struct Conns<H> {
    slab: Slab<Entry<H>>,
    next_gen: u32,
    /// Handlers to step in this iteration, in the order they became ready.
    ready: Vec<HandlerId>,
    /// The batch being stepped (kept for its capacity).
    batch: Vec<HandlerId>,
    timers: Timers,
}

impl<H> Default for Conns<H> {
    fn default() -> Self {
        Conns {
            slab: Slab::new(),
            next_gen: 1,
            ready: Vec::new(),
            batch: Vec::new(),
            timers: Timers::default(),
        }
    }
}

impl<H: Handler> Conns<H> {
    fn get(&mut self, id: HandlerId) -> Option<&mut Entry<H>> {
        self.slab
            .get_mut(id.idx as usize)
            .filter(|e| e.gen == id.gen)
    }

    /// Whether `id` is a handler that is still alive.
    pub fn alive(&self, id: HandlerId) -> bool {
        self.slab
            .get(id.idx as usize)
            .is_some_and(|e| e.gen == id.gen)
    }

    /// Handlers alive now.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every handler, with its id.
    pub fn iter(&self) -> impl Iterator<Item = (HandlerId, &H)> {
        self.slab.iter().map(|(i, e)| {
            (
                HandlerId {
                    idx: i as u32,
                    gen: e.gen,
                },
                &e.h,
            )
        })
    }

    /// Marks `id` ready with `why` (merged with what already woke it).
    fn wake(&mut self, id: HandlerId, why: impl FnOnce(&mut Wake)) {
        let Some(e) = self.get(id) else { return };
        why(&mut e.wake);
        if !e.queued {
            e.queued = true;
            self.ready.push(id);
        }
    }

    /// Adds the handler `make` builds (it gets the new id in `cx`); it is ready with
    /// [`Wake::new`]. Returns its id, or `None` when `make` made nothing.
    pub fn insert(
        &mut self,
        stack: &mut Stack<Owner>,
        offload: &mut Offload,
        now_us: u64,
        make: impl FnOnce(&mut Cx<'_>) -> Option<H>,
    ) -> Option<HandlerId> {
        let gen = self.next_gen;
        let entry = self.slab.vacant_entry();
        let id = HandlerId {
            idx: entry.key() as u32,
            gen,
        };
        let mut cx = Cx {
            stack,
            offload,
            now_us,
            me: id,
        };
        let h = make(&mut cx)?;
        self.next_gen = (gen.wrapping_add(1) & GEN_MASK).max(1);
        let timer_at = h.deadline_us();
        entry.insert(Entry {
            gen,
            h,
            queued: true,
            wake: Wake {
                new: true,
                ..Wake::default()
            },
            timer_at,
        });
        if let Some(at) = timer_at {
            self.timers.arm(id, at);
        }
        self.ready.push(id);
        Some(id)
    }

    /// Ends every handler with `on_close(why)` (a shutdown cut). Returns how many.
    pub fn close_all(
        &mut self,
        stack: &mut Stack<Owner>,
        offload: &mut Offload,
        app: &mut H::App,
        now_us: u64,
        why: &'static str,
    ) -> usize {
        let n = self.slab.len();
        for (i, mut e) in std::mem::take(&mut self.slab) {
            let mut cx = Cx {
                stack: &mut *stack,
                offload: &mut *offload,
                now_us,
                me: HandlerId {
                    idx: i as u32,
                    gen: e.gen,
                },
            };
            e.h.on_close(&mut cx, app, why);
        }
        self.ready.clear();
        n
    }

    /// Re-arms `id`'s timer if its deadline moved.
    fn rearm(&mut self, id: HandlerId) {
        let Some(e) = self.get(id) else { return };
        let at = e.h.deadline_us();
        if at != e.timer_at {
            e.timer_at = at;
            if let Some(at) = at {
                self.timers.arm(id, at);
            }
        }
    }

    /// Wakes the handlers whose deadline has come. Returns whether any did.
    fn fire_timers(&mut self, now_us: u64) -> bool {
        let mut fired = false;
        while let Some((id, at)) = self.timers.pop_due(now_us) {
            // Stale entries (the deadline moved, or the handler ended) are skipped.
            let Some(e) = self.get(id).filter(|e| e.timer_at == Some(at)) else {
                continue;
            };
            e.timer_at = None;
            fired = true;
            self.wake(id, |w| w.timer = true);
        }
        fired
    }

    /// Steps every ready handler once; those that ask again are ready in the next
    /// iteration. Returns how many were stepped.
    fn step_ready(
        &mut self,
        stack: &mut Stack<Owner>,
        offload: &mut Offload,
        app: &mut H::App,
        now_us: u64,
    ) -> usize {
        let mut batch = std::mem::take(&mut self.batch);
        std::mem::swap(&mut batch, &mut self.ready);
        let n = batch.len();
        for id in batch.drain(..) {
            let Some(e) = self.get(id) else { continue };
            e.queued = false;
            let wake = std::mem::take(&mut e.wake);
            let mut cx = Cx {
                stack: &mut *stack,
                offload: &mut *offload,
                now_us,
                me: id,
            };
            match e.h.step(&mut cx, app, wake) {
                Next::Done => {
                    self.slab.remove(id.idx as usize);
                }
                Next::Again => {
                    self.wake(id, |w| w.again = true);
                    self.rearm(id);
                }
                Next::Wait => self.rearm(id),
            }
        }
        self.batch = batch;
        n
    }

    /// Hands a completion to its handler (dropped when the handler is gone).
    fn job_done(&mut self, r: Routed, app: &mut H::App, stats: &OffloadStats) {
        let Some(e) = self.get(r.to) else { return };
        if matches!(r.done, JobDone::RecordsLost(..)) {
            offload::add(&stats.record_job_conns_failed, 1);
        }
        e.h.on_job_done(r.done, app);
        self.wake(r.to, |w| w.job = true);
        self.rearm(r.to);
    }
}

/// The network half of a core: its port queue, the steering of frames between cores,
/// and its TCP/IP stack. loadgen's `--dpdk` mode runs it alone (one core, no
/// steering) with its own stack data.
pub struct Net<T = Owner> {
    pub queue: Box<dyn PortQueue>,
    steer: Option<(Steering, SteerEndpoint)>,
    pub stack: Stack<T>,
    rx: Vec<Frame>,
    inbox: Vec<Frame>,
}

impl<T: Default> Net<T> {
    /// A core's network: `steer` when frames may belong to other cores.
    pub fn new(
        queue: Box<dyn PortQueue>,
        steer: Option<(Steering, SteerEndpoint)>,
        stack: Stack<T>,
    ) -> Self {
        Net {
            queue,
            steer,
            stack,
            rx: Vec::with_capacity(BURST),
            inbox: Vec::with_capacity(BURST),
        }
    }

    /// The steering of this core, if frames are steered.
    pub fn steering(&mut self) -> Option<&mut Steering> {
        self.steer.as_mut().map(|(s, _)| s)
    }

    /// The steering endpoint's counters.
    pub fn steer_stats(&self) -> Option<std::sync::Arc<dataplane::steer::SteerStats>> {
        self.steer.as_ref().map(|(_, m)| m.stats.clone())
    }

    /// One RX burst into the stack (frames of other cores go to them), then the frames
    /// other cores handed this one. Returns the frames taken in.
    pub fn rx(&mut self, now: NetInstant) -> usize {
        let mut rx = std::mem::take(&mut self.rx);
        let got = self.queue.rx_burst(&mut rx, BURST);
        for frame in rx.drain(..) {
            let dest = match &self.steer {
                Some((s, _)) => s.classify(&frame),
                None => Dest::Here,
            };
            match (dest, &self.steer) {
                (Dest::Core(c), Some((_, mesh))) => mesh.send(c, frame),
                (Dest::All, Some((_, mesh))) => {
                    mesh.broadcast(&frame);
                    self.stack.ingress(&frame, &mut *self.queue, now);
                }
                _ => self.stack.ingress(&frame, &mut *self.queue, now),
            }
        }
        self.rx = rx;
        let mut stolen = 0;
        if let Some((_, mesh)) = &self.steer {
            let mut inbox = std::mem::take(&mut self.inbox);
            stolen = mesh.recv_burst(&mut inbox, BURST);
            for frame in inbox.drain(..) {
                self.stack.ingress(&frame, &mut *self.queue, now);
            }
            self.inbox = inbox;
        }
        got + stolen
    }

    /// The stack's egress pass and one TX flush. Returns whether egress had work.
    pub fn tx(&mut self, now: NetInstant) -> bool {
        let pending = self.egress(now);
        self.queue.flush();
        pending
    }

    /// The stack's egress pass: segments into the TX queue (a full burst is sent on
    /// the way). Returns whether it had work.
    fn egress(&mut self, now: NetInstant) -> bool {
        let pending = self.stack.has_pending();
        self.stack.egress(&mut *self.queue, now);
        pending
    }
}

/// Pieces of the driver that [`App::housekeeping`] may use.
pub struct Parts<'a, A: App> {
    pub net: &'a mut Net,
    pub conns: &'a mut Conns<A::Conn>,
    pub offload: &'a mut Offload,
    pub now_us: u64,
}

impl<A: App> Parts<'_, A> {
    /// Adds a handler (see [`Conns::insert`]).
    pub fn insert(
        &mut self,
        make: impl FnOnce(&mut Cx<'_>) -> Option<A::Conn>,
    ) -> Option<HandlerId> {
        self.conns
            .insert(&mut self.net.stack, self.offload, self.now_us, make)
    }

    /// Ends every handler (see [`Conns::close_all`]).
    pub fn close_all(&mut self, app: &mut A, why: &'static str) -> usize {
        self.conns
            .close_all(&mut self.net.stack, self.offload, app, self.now_us, why)
    }
}

/// One poll-mode core: its network, handlers, offload link and application state.
pub struct Driver<A: App> {
    pub net: Net,
    pub app: A,
    conns: Conns<A::Conn>,
    offload: Offload,
    routed: Vec<Routed>,
    accepted: Vec<(ConnId, u32)>,
    ids: Vec<ConnId>,
    udp_ids: Vec<UdpId>,
    iterations: u64,
    /// Busy cycles by step of the loop ([`phases`]), when switched on.
    phases: std::sync::Arc<phases::PhaseStats>,
    phases_on: bool,
}

impl<A: App> Driver<A> {
    pub fn new(net: Net, offload: Offload, app: A) -> Self {
        Driver {
            net,
            app,
            conns: Conns::default(),
            offload,
            routed: Vec::new(),
            accepted: Vec::new(),
            ids: Vec::new(),
            udp_ids: Vec::new(),
            iterations: 0,
            phases: Default::default(),
            phases_on: false,
        }
    }

    /// Called once on the owning thread before the loop.
    pub fn on_core_start(&mut self) {
        self.net.queue.on_core_start();
    }

    /// Counts busy cycles by step of the loop from now on ([`phases`]).
    pub fn account_phases(&mut self, on: bool) {
        self.phases_on = on;
    }

    /// The loop's busy cycles by step (all zero unless [`Driver::account_phases`]).
    pub fn phase_stats(&self) -> std::sync::Arc<phases::PhaseStats> {
        self.phases.clone()
    }

    /// The offload link's counters.
    pub fn offload_stats(&self) -> std::sync::Arc<OffloadStats> {
        self.offload.stats.clone()
    }

    /// Whether the offload link sends records to the pool.
    pub fn record_offload(&self) -> bool {
        self.offload.records()
    }

    /// The handlers alive now.
    pub fn conns(&self) -> &Conns<A::Conn> {
        &self.conns
    }

    /// Copies counters where other threads read them.
    pub fn publish(&mut self) {
        self.app.publish(&self.net);
    }

    /// One iteration (see the crate docs) at `now_us` on the core's clock; `true` if
    /// it did any work.
    pub fn poll_once(&mut self, now_us: u64) -> bool {
        let now = NetInstant::from_micros(now_us as i64);
        let mut marks = phases::Marks::start(self.phases_on);
        // 1. Housekeeping.
        let mut parts = Parts {
            net: &mut self.net,
            conns: &mut self.conns,
            offload: &mut self.offload,
            now_us,
        };
        let house = self.app.housekeeping(&mut parts);
        marks.mark();
        // 2. Crypto completions.
        let conns = &self.conns;
        let crypto = self.offload.poll(|id| conns.alive(id), &mut self.routed);
        for r in self.routed.drain(..) {
            self.conns.job_done(r, &mut self.app, &self.offload.stats);
        }
        marks.mark();
        // 3. RX.
        let frames = self.net.rx(now);
        marks.mark();
        // 4. New connections.
        self.net.stack.take_accepted(&mut self.accepted);
        for (conn, tag) in self.accepted.drain(..) {
            let app = &mut self.app;
            let made = self
                .conns
                .insert(&mut self.net.stack, &mut self.offload, now_us, |cx| {
                    app.accept(cx, conn, tag)
                });
            if made.is_none() {
                // The application closed it; make sure it is released.
                self.net.stack.release(conn);
            }
        }
        marks.mark();
        // 5. Timers: TCP's, then the handlers' own.
        let tcp_timers = self.net.stack.poll_timers(now);
        marks.mark();
        let timers = self.conns.fire_timers(now_us);
        self.net.stack.take_ready(&mut self.ids);
        for id in self.ids.drain(..) {
            match self.net.stack.user(id).copied() {
                Some(Owner {
                    handler: Some(h),
                    leg,
                }) => self.conns.wake(h, |w| w.legs |= 1 << (leg & 7)),
                // A connection no handler owns (cannot happen after accept): reset it.
                _ => {
                    if let Some(s) = self.net.stack.socket(id) {
                        s.abort();
                    }
                    self.net.stack.release(id);
                }
            }
        }
        // UDP bindings that received datagrams wake their handler the same way.
        self.net.stack.take_udp_ready(&mut self.udp_ids);
        for id in self.udp_ids.drain(..) {
            match self.net.stack.udp_user(id).copied() {
                Some(Owner {
                    handler: Some(h),
                    leg,
                }) if self.conns.alive(h) => self.conns.wake(h, |w| w.legs |= 1 << (leg & 7)),
                // Its handler is gone without closing it: close it.
                _ => self.net.stack.close_udp(id),
            }
        }
        marks.mark();
        // 6. Ready connections, once each.
        let stepped = self.conns.step_ready(
            &mut self.net.stack,
            &mut self.offload,
            &mut self.app,
            now_us,
        );
        marks.mark();
        // 7. Record work to the pool.
        let records = self.offload.submit_records();
        marks.mark();
        // 8. TX: the stack's egress pass, then one flush.
        let egress = self.net.egress(now);
        marks.mark();
        self.net.queue.flush();
        self.iterations += 1;
        if self.iterations % 256 == 0 {
            self.app.publish(&self.net);
        }
        marks.mark();
        let busy = house
            || crypto
            || frames > 0
            || tcp_timers
            || timers
            || stepped > 0
            || records
            || egress;
        marks.finish(busy, &self.phases);
        busy
    }
}
