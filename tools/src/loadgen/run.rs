//! The event loops: each thread drives its share of the connections over non-blocking
//! streams ([`super::net`]: kernel sockets with `mio`, or `--dpdk`), starts operations
//! (closed loop: as each ends; open loop: on a fixed schedule), enforces the
//! per-operation timeout, and counts. The main thread prints a progress line once a
//! second and merges the counts at the end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backend_wire::http1::ResponseFramer;

use super::args::EngineKind;
use super::args::{Args, Mode};
use super::engine::{io_failure, Conn, Engine, Io, Libssl};
use super::net::{close_dpdk, DpdkSetup, Net, Stream};
use super::own::Own;
use super::report::{Failure, Kind, Report, Stats};

/// Counters the progress line reads while the threads run.
#[derive(Default)]
struct Shared {
    ok: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    /// Operations still allowed to start (`--count`); `u64::MAX` without a count.
    budget: AtomicU64,
    /// Set when the `--count` budget is spent: every loop stops starting operations.
    stop: AtomicBool,
}

impl Shared {
    fn take_budget(&self) -> bool {
        // Without --count, no shared read-modify-write per start.
        if self.budget.load(Ordering::Relaxed) == u64::MAX {
            return true;
        }
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection, no operation.
    Free,
    Connecting,
    Handshaking,
    /// Resume mode, TLS 1.3: reading until the server's ticket arrives.
    Priming,
    Writing,
    Reading,
    /// Bulk: a keep-alive connection between operations.
    Idle,
}

struct Slot<C> {
    phase: Phase,
    tcp: Option<Stream>,
    conn: Option<C>,
    /// When the operation was due: latency counts from here.
    due: Instant,
    deadline: Instant,
    /// A session was offered for resumption.
    offered: bool,
    written: usize,
    framer: ResponseFramer,
    /// Bytes of the current response so far.
    got: u64,
    /// Requests finished on this connection.
    on_conn: u64,
    /// Bulk: the request was already sent again once on a new connection.
    retried: bool,
}

impl<C> Slot<C> {
    fn new(now: Instant) -> Self {
        Slot {
            phase: Phase::Free,
            tcp: None,
            conn: None,
            due: now,
            deadline: now,
            offered: false,
            written: 0,
            framer: ResponseFramer::new(),
            got: 0,
            on_conn: 0,
            retried: false,
        }
    }

    fn busy(&self) -> bool {
        !matches!(self.phase, Phase::Free | Phase::Idle)
    }
}

/// One thread's part of the run.
struct Worker<'a, E: Engine> {
    a: &'a Args,
    engine: E,
    shared: &'a Shared,
    net: Net,
    /// Tokens of connections the network reported ready.
    ready: Vec<usize>,
    slots: Vec<Slot<E::Conn>>,
    /// Slots that can take an operation: `idle` ones hold a keep-alive connection.
    free: Vec<usize>,
    idle: Vec<usize>,
    request: Vec<u8>,
    buf: Vec<u8>,
    stats: Stats,
    /// When the latest operation ended.
    last_end: Instant,
}

/// How the last drive of a slot ended.
enum Step {
    /// Waiting for the socket.
    Wait,
    Ok,
    Fail(Failure),
}

impl<E: Engine> Worker<'_, E> {
    fn start(&mut self, i: usize, due: Instant, now: Instant) {
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let timeout = self.a.timeout;
        let s = &mut self.slots[i];
        s.due = due;
        s.deadline = now + timeout;
        s.retried = false;
        if s.phase == Phase::Idle {
            s.phase = Phase::Writing;
            s.written = 0;
            s.got = 0;
        } else if let Err(f) = self.connect(i) {
            self.end(i, Step::Fail(f));
            return;
        }
        self.drive(i);
    }

    fn connect(&mut self, i: usize) -> Result<(), Failure> {
        let tcp = self
            .net
            .connect(self.a.target, i)
            .map_err(|e| io_failure(&e))?;
        let s = &mut self.slots[i];
        s.tcp = Some(tcp);
        s.conn = None;
        s.phase = Phase::Connecting;
        s.written = 0;
        s.got = 0;
        s.on_conn = 0;
        s.framer = ResponseFramer::new();
        Ok(())
    }

    /// Moves slot `i` on as far as its socket allows, then books the outcome.
    fn drive(&mut self, i: usize) {
        let step = match self.advance(i) {
            Ok(step) => step,
            Err(f) => Step::Fail(f),
        };
        if !matches!(step, Step::Wait) {
            self.end(i, step);
        }
    }

    fn advance(&mut self, i: usize) -> Result<Step, Failure> {
        loop {
            let phase = self.slots[i].phase;
            match phase {
                Phase::Free | Phase::Idle => return Ok(Step::Wait),
                Phase::Connecting => {
                    let tcp = self.slots[i].tcp.as_mut().expect("connecting has a socket");
                    if !tcp.connected().map_err(|e| io_failure(&e))? {
                        return Ok(Step::Wait);
                    }
                    let tcp = self.slots[i].tcp.take().expect("checked above");
                    let offered = self.a.resume.is_some() && self.engine.has_session();
                    let conn = self.engine.open(tcp)?;
                    let s = &mut self.slots[i];
                    s.conn = Some(conn);
                    s.offered = offered;
                    s.phase = Phase::Handshaking;
                }
                Phase::Handshaking => {
                    let s = &mut self.slots[i];
                    let conn = s.conn.as_mut().expect("handshaking has a connection");
                    if !conn.handshake()? {
                        return Ok(Step::Wait);
                    }
                    let n = conn.negotiated();
                    let st = &mut self.stats;
                    st.handshakes += 1;
                    if n.resumed {
                        st.resumed += 1;
                    } else if s.offered {
                        st.not_resumed += 1;
                    }
                    bump(&mut st.versions, n.version);
                    bump(&mut st.ciphers, &n.cipher);
                    s.phase = match self.a.mode {
                        Mode::Full => return Ok(Step::Ok),
                        Mode::Resume if self.engine.has_session() && !conn.ticket_pending() => {
                            return Ok(Step::Ok)
                        }
                        Mode::Resume => Phase::Priming,
                        Mode::Request | Mode::Bulk => Phase::Writing,
                    };
                }
                Phase::Priming => {
                    let s = &mut self.slots[i];
                    let conn = s.conn.as_mut().expect("priming has a connection");
                    match conn.read(&mut self.buf)? {
                        Io::Done(_) => {}
                        Io::Eof => return Ok(Step::Ok),
                        Io::Blocked if self.engine.has_session() && !conn.ticket_pending() => {
                            return Ok(Step::Ok)
                        }
                        Io::Blocked => return Ok(Step::Wait),
                    }
                }
                Phase::Writing => {
                    let s = &mut self.slots[i];
                    let conn = s.conn.as_mut().expect("writing has a connection");
                    match conn.write(&self.request[s.written..])? {
                        Io::Done(n) => {
                            s.written += n;
                            self.stats.bytes_out += n as u64;
                            if s.written == self.request.len() {
                                s.phase = Phase::Reading;
                            }
                        }
                        Io::Blocked => return Ok(Step::Wait),
                        Io::Eof => {
                            return Err(Failure::new(
                                Kind::Closed,
                                "the server closed before the request was sent",
                            ))
                        }
                    }
                }
                Phase::Reading => {
                    let s = &mut self.slots[i];
                    let conn = s.conn.as_mut().expect("reading has a connection");
                    match conn.read(&mut self.buf)? {
                        Io::Done(n) => {
                            s.got += n as u64;
                            self.stats.bytes_in += n as u64;
                            let fed = s
                                .framer
                                .feed(&self.buf[..n])
                                .map_err(|e| Failure::new(Kind::BadResponse, e.to_string()))?;
                            if fed.ended > 0 && s.framer.status() >= 200 {
                                return response_end(s.framer.status());
                            }
                        }
                        Io::Blocked => return Ok(Step::Wait),
                        Io::Eof if s.framer.until_close() => {
                            return response_end(s.framer.status())
                        }
                        Io::Eof
                            if self.a.mode == Mode::Bulk
                                && s.got == 0
                                && s.on_conn > 0
                                && !s.retried =>
                        {
                            // The server closed its keep-alive connection between
                            // requests: send this one again on a new connection.
                            self.stats.reconnects += 1;
                            s.conn = None;
                            self.connect(i)?;
                            self.slots[i].retried = true;
                        }
                        Io::Eof => {
                            return Err(Failure::new(
                                Kind::Closed,
                                "the server closed before the response ended",
                            ))
                        }
                    }
                }
            }
        }
    }

    /// Books an operation's end and makes its slot available again.
    fn end(&mut self, i: usize, step: Step) {
        let now = Instant::now();
        self.last_end = now;
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        let keep = match step {
            Step::Wait => unreachable!("end is called for finished operations only"),
            Step::Ok => {
                self.stats.ok += 1;
                self.stats.latency(now - self.slots[i].due);
                self.shared.ok.fetch_add(1, Ordering::Relaxed);
                if self.a.mode.http() {
                    self.stats.responses += 1;
                }
                let s = &mut self.slots[i];
                s.on_conn += 1;
                self.a.mode == Mode::Bulk
                    && !s.framer.closes()
                    && self.a.requests_per_conn.is_none_or(|m| s.on_conn < m)
            }
            Step::Fail(f) => {
                self.stats.error(&f);
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        let s = &mut self.slots[i];
        if keep {
            s.phase = Phase::Idle;
            s.framer = ResponseFramer::new();
            self.idle.push(i);
        } else {
            if let Some(c) = s.conn.as_mut() {
                c.close();
            }
            s.conn = None;
            s.tcp = None;
            s.phase = Phase::Free;
            self.free.push(i);
        }
    }

    /// Fails every operation past its deadline.
    fn expire(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.busy() && now >= s.deadline {
                let what = format!("{:?}", s.phase).to_lowercase();
                let t = self.a.timeout.as_secs_f64();
                self.end(
                    i,
                    Step::Fail(Failure::new(
                        Kind::Timeout,
                        format!("not done after {t} s (while {what})"),
                    )),
                );
            }
        }
    }

    /// A slot for the next operation: one with a keep-alive connection first.
    fn available(&mut self) -> Option<usize> {
        self.idle.pop().or_else(|| self.free.pop())
    }

    fn run(&mut self, conns: usize, rate: Option<f64>, start: Instant) -> Instant {
        let end = start + self.a.duration;
        let now = Instant::now();
        self.slots = (0..conns).map(|_| Slot::new(now)).collect();
        self.free = (0..conns).rev().collect();
        let mut backlog: VecDeque<Instant> = VecDeque::new();
        let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
        let mut next_arrival = start;
        let mut last_expire = start;
        loop {
            let now = Instant::now();
            let starting = now < end
                && !self.shared.stop.load(Ordering::Relaxed)
                && !INTERRUPTED.load(Ordering::Relaxed);
            if starting {
                match interval {
                    None => {
                        // Each available slot starts once per pass: a start that fails
                        // at once (no port, no file descriptor) frees its slot again,
                        // and must not spin here past the duration.
                        for _ in 0..self.free.len() + self.idle.len() {
                            if !self.shared.take_budget() {
                                self.shared.stop.store(true, Ordering::Relaxed);
                                break;
                            }
                            let Some(i) = self.available() else { break };
                            self.start(i, now, now);
                        }
                    }
                    Some(iv) => {
                        while next_arrival <= now {
                            if !self.shared.take_budget() {
                                self.shared.stop.store(true, Ordering::Relaxed);
                                break;
                            }
                            backlog.push_back(next_arrival);
                            next_arrival += iv;
                        }
                        while !backlog.is_empty() {
                            let Some(i) = self.available() else { break };
                            let due = backlog.pop_front().expect("checked non-empty");
                            self.start(i, due, now);
                        }
                    }
                }
            }
            // Only once nothing starts any more (a walk over every slot: not per event).
            if !starting && !self.slots.iter().any(|s| s.busy()) {
                break;
            }
            let mut wait = Duration::from_millis(5);
            if starting && interval.is_some() {
                wait = wait.min(next_arrival.saturating_duration_since(now));
            }
            let mut ready = std::mem::take(&mut self.ready);
            if let Err(e) = self.net.wait(wait, &mut ready) {
                eprintln!("loadgen: poll failed: {e}");
                break;
            }
            for &i in &ready {
                if i < self.slots.len() && self.slots[i].busy() {
                    self.drive(i);
                }
            }
            ready.clear();
            self.ready = ready;
            let now = Instant::now();
            if now.duration_since(last_expire) >= Duration::from_millis(5) {
                last_expire = now;
                self.expire(now);
            }
        }
        self.stats.unstarted += backlog.len() as u64;
        self.stats.unfinished += self.slots.iter().filter(|s| s.busy()).count() as u64;
        self.last_end
    }
}

fn response_end(status: u16) -> Result<Step, Failure> {
    if (200..400).contains(&status) {
        Ok(Step::Ok)
    } else {
        Err(Failure::new(Kind::HttpStatus, format!("status {status}")))
    }
}

fn bump(m: &mut std::collections::BTreeMap<String, u64>, k: &str) {
    match m.get_mut(k) {
        Some(n) => *n += 1,
        None => {
            m.insert(k.to_string(), 1);
        }
    }
}

/// The HTTP request every operation sends (request and bulk modes).
pub fn request_bytes(a: &Args) -> Vec<u8> {
    let connection = if a.mode == Mode::Bulk {
        "keep-alive"
    } else {
        "close"
    };
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadgen\r\nConnection: {connection}\r\n\r\n",
        a.path, a.host
    )
    .into_bytes()
}

/// Runs the whole load and returns its report.
pub fn run(a: &Args) -> Result<Report<'_>, String> {
    match a.engine {
        EngineKind::Libssl => run_with(a, Libssl::new(a)?),
        EngineKind::Own => run_with(a, Own::new(a)?),
    }
}

fn run_with<E: Engine + Clone + Send>(a: &Args, engine: E) -> Result<Report<'_>, String> {
    let shared = Shared::default();
    shared
        .budget
        .store(a.count.unwrap_or(u64::MAX), Ordering::Relaxed);
    let mut dpdk = match &a.dpdk {
        Some(d) => Some(DpdkSetup::open(d)?),
        None => None,
    };
    catch_interrupt();
    let start = Instant::now();
    let cpu_start = process_cpu();
    let result = std::thread::scope(|scope| -> Result<(Stats, Instant, Duration), String> {
        let mut handles = Vec::new();
        for t in 0..a.threads {
            let conns = a.concurrency / a.threads + usize::from(t < a.concurrency % a.threads);
            let rate = a.rate.map(|r| r * conns as f64 / a.concurrency as f64);
            let cpu = (!a.cpus.is_empty()).then(|| a.cpus[t % a.cpus.len()]);
            let (engine, shared) = (engine.clone(), &shared);
            // --dpdk runs one thread (the parser checks): it takes the port's queue.
            let port = dpdk
                .as_mut()
                .and_then(|d| Some((d.info().clone(), d.take_queue()?)));
            let h = std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn_scoped(
                    scope,
                    move || -> Result<(Stats, Instant, Duration), String> {
                        if let Some(c) = cpu {
                            if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                                return Err(format!("--cpus: cannot pin a thread to CPU {c}"));
                            }
                        }
                        let net = match (&a.dpdk, port) {
                            (Some(d), Some((info, queue))) => {
                                Net::dpdk(d, &info, queue, conns, a.timeout)
                            }
                            (Some(_), None) => return Err("--dpdk: the port has no queue".into()),
                            (None, _) => {
                                Net::kernel().map_err(|e| format!("cannot create a poller: {e}"))?
                            }
                        };
                        let mut w = Worker {
                            a,
                            engine,
                            shared,
                            net,
                            ready: Vec::new(),
                            slots: Vec::new(),
                            free: Vec::new(),
                            idle: Vec::new(),
                            request: request_bytes(a),
                            buf: vec![0; 64 * 1024],
                            stats: Stats::default(),
                            last_end: start,
                        };
                        let began = Instant::now();
                        let last = w.run(conns, rate, start);
                        // A busy-polling thread is always on the CPU: its cost is the time
                        // it was not polling in vain.
                        let busy = w
                            .net
                            .idle()
                            .map_or(Duration::ZERO, |idle| began.elapsed().saturating_sub(idle));
                        // Connections still open (bulk keep-alive) close; on --dpdk the
                        // loop goes on until the closes are done (at most 2 s).
                        w.slots.clear();
                        w.net.linger(Duration::from_secs(2));
                        Ok((w.stats, last, busy))
                    },
                )
                .map_err(|e| format!("cannot start a thread: {e}"))?;
            handles.push(h);
        }
        progress(a, &shared, start, || {
            handles.iter().all(|h| h.is_finished())
        });
        let mut total = Stats::default();
        let mut last = start;
        let mut busy = Duration::ZERO;
        for h in handles {
            let (s, l, b) = h
                .join()
                .map_err(|_| "a load thread panicked".to_string())??;
            total.merge(&s);
            last = last.max(l);
            busy += b;
        }
        Ok((total, last, busy))
    });
    close_dpdk(dpdk);
    let (stats, last, busy) = result?;
    let cpu = if a.dpdk.is_some() {
        busy
    } else {
        process_cpu().saturating_sub(cpu_start)
    };
    Ok(Report {
        args: a,
        stats,
        elapsed: last.duration_since(start),
        cpu,
    })
}

/// User plus system CPU time of this process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given; RUSAGE_SELF is valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return Duration::ZERO;
        }
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Prints a progress line each second on stderr until `done()`.
fn progress(a: &Args, s: &Shared, start: Instant, done: impl Fn() -> bool) {
    let mut last_ok = 0;
    let mut tick = start;
    while !done() {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if a.quiet || now.duration_since(tick) < Duration::from_secs(1) {
            continue;
        }
        let ok = s.ok.load(Ordering::Relaxed);
        eprintln!(
            "loadgen: {:5.1} s  {:8.0} ops/s  ok {ok}  errors {}  in flight {}",
            now.duration_since(start).as_secs_f64(),
            (ok - last_ok) as f64 / now.duration_since(tick).as_secs_f64(),
            s.errors.load(Ordering::Relaxed),
            s.in_flight.load(Ordering::Relaxed),
        );
        last_ok = ok;
        tick = now;
    }
}

/// Set by SIGINT: every loop stops starting operations, finishes what is in flight,
/// and the report is printed as at the end of `--duration`.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn catch_interrupt() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}
