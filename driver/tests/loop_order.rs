//! The driver's loop on the in-memory port: which handlers are stepped, in what order,
//! how often, and why (new, socket, timer, again); and a TCP client (a second
//! `netstack` on the wire's far end) whose segments arrive together wakes its handler
//! once.

use std::net::{Ipv4Addr, SocketAddrV4};

use dataplane::memory::{self, MemoryPeer};
use dataplane::{Frame, PortQueue, QueueCounters};
use driver::{App, Cx, Driver, Handler, JobDone, Net, Next, Offload, Parts, Wake};
use netstack::{ConnId, NetDuration, NetInstant, Stack, StackConfig};

/// A step as the test app saw it: handler label, iteration, and why.
type Seen = (u32, u64, Wake);

/// Handlers of the test: scripted ones with no socket, and an echo server.
enum TestConn {
    Scripted {
        label: u32,
        /// When to be stepped without an event (µs).
        deadline: Option<u64>,
        /// How many more times to answer `Again`.
        again: u32,
        /// Answer `Done` when stepped at or after this iteration.
        done_from: Option<u64>,
    },
    Echo {
        label: u32,
        conn: ConnId,
    },
}

#[derive(Default)]
struct Rec {
    iter: u64,
    seen: Vec<Seen>,
    /// Scripted handlers to add in the next housekeeping.
    add: Vec<TestConn>,
    next_echo_label: u32,
}

impl Handler for TestConn {
    type App = Rec;

    fn step(&mut self, cx: &mut Cx<'_>, app: &mut Rec, wake: Wake) -> Next {
        match self {
            TestConn::Scripted {
                label,
                deadline,
                again,
                done_from,
            } => {
                app.seen.push((*label, app.iter, wake));
                if wake.timer {
                    *deadline = None;
                }
                if done_from.is_some_and(|d| app.iter >= d) {
                    return Next::Done;
                }
                if *again > 0 {
                    *again -= 1;
                    return Next::Again;
                }
                Next::Wait
            }
            TestConn::Echo { label, conn } => {
                app.seen.push((*label, app.iter, wake));
                let Some(s) = cx.stack.socket(*conn) else {
                    return Next::Done;
                };
                let mut buf = [0u8; 4096];
                while s.can_recv() && s.can_send() {
                    let n = s.recv_slice(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    let _ = s.send_slice(&buf[..n]);
                }
                Next::Wait
            }
        }
    }

    fn on_job_done(&mut self, _: JobDone, _: &mut Rec) {}

    fn deadline_us(&self) -> Option<u64> {
        match self {
            TestConn::Scripted { deadline, .. } => *deadline,
            TestConn::Echo { .. } => None,
        }
    }

    fn on_close(&mut self, cx: &mut Cx<'_>, _: &mut Rec, _: &'static str) {
        if let TestConn::Echo { conn, .. } = self {
            cx.stack.release(*conn);
        }
    }
}

impl App for Rec {
    type Conn = TestConn;

    fn accept(&mut self, cx: &mut Cx<'_>, conn: ConnId, _listener: u32) -> Option<TestConn> {
        cx.adopt(conn, 0);
        self.next_echo_label += 1;
        Some(TestConn::Echo {
            label: 100 + self.next_echo_label,
            conn,
        })
    }

    fn housekeeping(&mut self, core: &mut Parts<'_, Self>) -> bool {
        self.iter += 1;
        let add = std::mem::take(&mut self.add);
        let worked = !add.is_empty();
        for h in add {
            core.insert(|_| Some(h));
        }
        worked
    }
}

fn stack_cfg(last: u8) -> StackConfig {
    StackConfig {
        mac: [2, 0, 0, 0, 0, last],
        addr: Ipv4Addr::new(10, 9, 0, last),
        prefix_len: 24,
        gateway: None,
        mtu: 1500,
        core: 0,
        cores: 1,
        rx_buffer: 16384,
        tx_buffer: 16384,
        max_connections: 64,
        spare_sockets: 4,
        handshake_timeout: NetDuration::from_secs(5),
        idle_timeout: NetDuration::from_secs(60),
        ack_delay: None,
        seed: 1,
        syn_cookies_after: usize::MAX,
    }
}

fn driver() -> (Driver<Rec>, MemoryPeer) {
    let (port, peer) = memory::wire(1, [2, 0, 0, 0, 0, 1], 1500);
    let q = port.into_queues().pop().unwrap();
    let stack = Stack::new(stack_cfg(1), NetInstant::from_micros(0));
    let net = Net::new(Box::new(q), None, stack);
    (Driver::new(net, Offload::inline(), Rec::default()), peer)
}

fn scripted(label: u32, deadline: Option<u64>, again: u32, done_from: Option<u64>) -> TestConn {
    TestConn::Scripted {
        label,
        deadline,
        again,
        done_from,
    }
}

/// The steps of iteration `i`: (label, wake).
fn steps(d: &Driver<Rec>, i: u64) -> Vec<(u32, Wake)> {
    d.app
        .seen
        .iter()
        .filter(|s| s.1 == i)
        .map(|s| (s.0, s.2))
        .collect()
}

fn wake(f: impl FnOnce(&mut Wake)) -> Wake {
    let mut w = Wake::default();
    f(&mut w);
    w
}

#[test]
fn ready_handlers_are_stepped_once_per_iteration_in_the_order_they_became_ready() {
    let (mut d, _peer) = driver();
    // A: due at 112 µs. B: asks again twice, and is also due at 32 µs. C: due at 48
    // µs, done when stepped from iteration 4 on. (Deadlines on the timer wheel's 16 µs
    // ticks: a deadline comes due at the end of its tick.)
    d.app.add = vec![
        scripted(1, Some(112), 0, None),
        scripted(2, Some(32), 2, None),
        scripted(3, Some(48), 0, Some(4)),
    ];
    let new = wake(|w| w.new = true);
    assert!(d.poll_once(0));
    assert_eq!(steps(&d, 1), vec![(1, new), (2, new), (3, new)]);
    // B asked again: only B, not yet due.
    assert!(d.poll_once(10));
    assert_eq!(steps(&d, 2), vec![(2, wake(|w| w.again = true))]);
    // B asks again and its timer is due in the same iteration: one step, both
    // reasons. C's timer too (after B, which was ready first).
    assert!(d.poll_once(60));
    assert_eq!(
        steps(&d, 3),
        vec![
            (
                2,
                wake(|w| {
                    w.again = true;
                    w.timer = true
                })
            ),
            (3, wake(|w| w.timer = true)),
        ]
    );
    // Nothing is due: nobody is stepped, and the iteration did no work.
    assert!(!d.poll_once(70));
    assert!(steps(&d, 4).is_empty());
    // A's deadline.
    assert!(d.poll_once(112));
    assert_eq!(steps(&d, 5), vec![(1, wake(|w| w.timer = true))]);
    assert_eq!(d.conns().len(), 3);
}

#[test]
fn a_handler_that_is_done_is_dropped_and_its_timer_never_fires() {
    let (mut d, _peer) = driver();
    d.app.add = vec![scripted(7, Some(1_000), 1, Some(2))];
    d.poll_once(0);
    // Stepped again in iteration 2, where it is done.
    d.poll_once(1);
    assert_eq!(d.conns().len(), 0);
    d.poll_once(5_000);
    let labels: Vec<u64> = d.app.seen.iter().map(|s| s.1).collect();
    assert_eq!(labels, vec![1, 2], "{:?}", d.app.seen);
}

#[test]
fn loop_phases_count_busy_iterations_only_and_only_when_switched_on() {
    let (mut d, _peer) = driver();
    let stats = d.phase_stats();
    let iterations = |s: &driver::phases::PhaseStats| {
        s.snapshot()
            .into_iter()
            .find(|&(k, _)| k == "iterations")
            .map(|(_, v)| v)
    };
    // Off (the default): a busy iteration counts nothing.
    d.app.add = vec![scripted(1, None, 1, None)];
    assert!(d.poll_once(0));
    assert_eq!(iterations(&stats), Some(0));
    // On: the handler's again-step is a busy iteration, the next one is idle.
    d.account_phases(true);
    assert!(d.poll_once(1));
    assert!(!d.poll_once(2));
    let snap = stats.snapshot();
    assert_eq!(iterations(&stats), Some(1), "{snap:?}");
    let names: Vec<&str> = snap.iter().map(|&(k, _)| k).collect();
    assert_eq!(
        names[..driver::phases::PHASES.len()],
        driver::phases::PHASES
    );
    // The step that did the work took cycles (the steps phase is not empty).
    let steps = snap.iter().find(|&&(k, _)| k == "steps").unwrap().1;
    assert!(steps > 0, "{snap:?}");
}

/// A `PortQueue` over the wire's far end, for a second stack playing the client.
struct PeerQueue(MemoryPeer, QueueCounters);

impl PortQueue for PeerQueue {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(f) = self.0.recv() else { break };
            out.push(Frame::from_vec(f));
            n += 1;
        }
        n
    }
    fn alloc_tx(&mut self, len: usize) -> Option<Frame> {
        Some(Frame::from_vec(vec![0; len]))
    }
    fn send(&mut self, frame: Frame) {
        self.1.tx_frames += 1;
        self.0.send(frame.to_vec());
    }
    fn flush(&mut self) {}
    fn counters(&self) -> QueueCounters {
        self.1
    }
}

/// One round of the client stack at `now_us`: what the port sent in, then out.
fn client_round(c: &mut Stack<u32>, q: &mut PeerQueue, now_us: i64) {
    let now = NetInstant::from_micros(now_us);
    let mut rx = Vec::new();
    q.rx_burst(&mut rx, 64);
    for f in rx {
        c.ingress(&f, q, now);
    }
    c.egress(q, now);
}

#[test]
fn segments_that_arrive_together_wake_their_handler_once() {
    let (mut d, peer) = driver();
    d.net.stack.listen(7, 0);
    let mut q = PeerQueue(peer, QueueCounters::default());
    let mut c: Stack<u32> = Stack::new(stack_cfg(2), NetInstant::from_micros(0));
    let id = c
        .connect(SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 7), 1)
        .unwrap();
    // Connect (ARP, SYN, SYN-ACK, ACK) with both sides taking turns.
    let mut t = 0;
    for _ in 0..20 {
        t += 100;
        client_round(&mut c, &mut q, t);
        d.poll_once(t as u64);
    }
    assert_eq!(d.conns().len(), 1, "accepted: {:?}", d.app.seen);
    // Three writes, three segments (no Nagle), all on the wire before the driver looks.
    for part in [&b"one "[..], b"two ", b"three"] {
        c.socket(id).unwrap().send_slice(part).unwrap();
        t += 1;
        c.egress(&mut q, NetInstant::from_micros(t));
    }
    let before = d.app.seen.len();
    d.poll_once(t as u64);
    let echo: Vec<&Seen> = d.app.seen[before..].iter().collect();
    assert_eq!(echo.len(), 1, "{echo:?}");
    assert_eq!(echo[0].2, wake(|w| w.legs = 1));
    // The echo comes back whole.
    let mut got = Vec::new();
    for _ in 0..20 {
        t += 100;
        client_round(&mut c, &mut q, t);
        d.poll_once(t as u64);
        let s = c.socket(id).unwrap();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = s.recv_slice(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(got, b"one two three");
    // No iteration stepped the echo handler twice.
    let mut per_iter: Vec<u64> = d
        .app
        .seen
        .iter()
        .filter(|s| s.0 > 100)
        .map(|s| s.1)
        .collect();
    let n = per_iter.len();
    per_iter.dedup();
    assert_eq!(per_iter.len(), n, "{:?}", d.app.seen);
}
