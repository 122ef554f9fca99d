//! Connection scale: does a packet cost the same with 100 and 50,000 connections open?
//!
//!   cargo bench -p netstack --bench connscale [-- 100,1000,10000,50000] [--no-plain]
//!
//! A server `Stack` listening on four ports and a client `Stack` (our own netstack on
//! both ends, wired back to back in memory) open N connections. Then 20,000 rounds, each
//! on a random connection: the client sends a 64-byte segment, and the **server's**
//! ingress plus egress (the data plane's work for that packet) is timed; the
//! application on the server reads the bytes. The result is ns per server packet, and
//! the ratio to the 100-connection case. A counting allocator measures the server's
//! heap per connection; the part beyond the socket buffers is the fixed cost.
//!
//! The `hot-100` column keeps N connections open but sends on only 100 of them: if it
//! stays flat while the all-random column rises, the rise is the memory hierarchy (N
//! connections' state no longer fits in cache), not work that grows with N.
//!
//! Time is a fake clock advanced 20 µs per round, so delayed ACKs and timers behave as
//! they would under load.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant as Wall;

use dataplane::memory::CaptureQueue;
use netstack::{NetDuration, NetInstant, Stack, StackConfig};

/// Counts heap bytes allocated while `COUNTING` is set on this thread: only the
/// server's calls are wrapped in it, so the client's memory is not counted.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
thread_local!(static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
fn counting() -> bool {
    COUNTING.try_with(|c| c.get()).unwrap_or(false)
}
fn as_server<R>(f: impl FnOnce() -> R) -> R {
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    r
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counting() {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if counting() {
            LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        }
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if counting() {
            LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        }
        System.realloc(p, l, n)
    }
}
#[global_allocator]
static A: Counting = Counting;

const BUF: usize = 4096;
const PORTS: [u16; 4] = [80, 81, 82, 83];

fn cfg(last: u8) -> StackConfig {
    StackConfig {
        mac: [2, 0, 0, 0, 0, last],
        addr: Ipv4Addr::new(10, 9, 0, last),
        prefix_len: 24,
        gateway: None,
        mtu: 1500,
        core: 0,
        cores: 1,
        rx_buffer: BUF,
        tx_buffer: BUF,
        max_connections: 1_000_000,
        spare_sockets: 0,
        handshake_timeout: NetDuration::from_secs(30),
        idle_timeout: NetDuration::from_secs(3600),
        ack_delay: None,
        seed: 1,
        syn_cookies_after: usize::MAX,
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// (ns per server packet, server heap bytes per connection)
fn run(n: usize, hot: usize) -> (f64, f64) {
    let mut now = NetInstant::from_millis(1);
    let mut client: Stack<u32> = Stack::new(cfg(1), now);
    let base = LIVE.load(Ordering::Relaxed);
    let mut server: Stack<u32> = as_server(|| Stack::new(cfg(2), now));
    for p in PORTS {
        server.listen(p, 0);
    }
    let (mut qc, mut qs) = (CaptureQueue::default(), CaptureQueue::default());
    let mut ids = Vec::with_capacity(n);
    let shuttle = |client: &mut Stack<u32>,
                   srv: &mut Stack<u32>,
                   qc: &mut CaptureQueue,
                   qs: &mut CaptureQueue,
                   now: NetInstant| {
        for _ in 0..100 {
            client.egress(qc, now);
            as_server(|| srv.egress(qs, now));
            if qc.sent.is_empty() && qs.sent.is_empty() {
                break;
            }
            for f in std::mem::take(&mut qc.sent) {
                as_server(|| srv.ingress(&f, qs, now));
            }
            for f in std::mem::take(&mut qs.sent) {
                client.ingress(&f, qc, now);
            }
        }
    };
    // Open in chunks so no single burst is enormous.
    for chunk in 0..n.div_ceil(1000) {
        for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
            let port = PORTS[i % PORTS.len()];
            ids.push(
                client
                    .connect(
                        SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), port),
                        i as u32,
                    )
                    .expect("port space"),
            );
        }
        now += NetDuration::from_millis(1);
        shuttle(&mut client, &mut server, &mut qc, &mut qs, now);
    }
    let mut acc = Vec::with_capacity(n);
    server.take_accepted(&mut acc);
    assert_eq!(acc.len(), n, "all connections established");
    let per_conn = (LIVE.load(Ordering::Relaxed) - base) as f64 / n as f64;
    // Queued frames are scratch of the harness, not connection state.
    drop(acc);

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let payload = [7u8; 64];
    let mut ready = Vec::new();
    let mut spent = std::time::Duration::ZERO;
    let mut packets = 0u64;
    let rounds = 20_000;
    for _ in 0..rounds {
        now += NetDuration::from_micros(20);
        let id = ids[(rng.next() % hot.min(n) as u64) as usize];
        client.socket(id).unwrap().send_slice(&payload).unwrap();
        client.egress(&mut qc, now);
        let frames = std::mem::take(&mut qc.sent);
        let t0 = Wall::now();
        for f in &frames {
            server.ingress(f, &mut qs, now);
        }
        server.take_ready(&mut ready);
        for r in ready.drain(..) {
            let s = server.socket(r).unwrap();
            let mut sink = [0u8; 256];
            while s.can_recv() {
                let _ = s.recv_slice(&mut sink);
            }
        }
        server.egress(&mut qs, now);
        spent += t0.elapsed();
        packets += frames.len() as u64;
        for f in std::mem::take(&mut qs.sent) {
            client.ingress(&f, &mut qc, now);
        }
    }
    (spent.as_nanos() as f64 / packets as f64, per_conn)
}

/// The same measurement on plain smoltcp: one `Interface`, one `SocketSet` holding all
/// N server sockets (what the flow table replaces). ns per server packet.
fn run_plain(n: usize, rounds: usize) -> f64 {
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
    use smoltcp::socket::tcp;
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Cidr};

    struct Dev<'a> {
        rx: Option<&'a [u8]>,
        tx: &'a mut Vec<Vec<u8>>,
    }
    struct Rx<'a>(&'a [u8]);
    struct Tx<'a>(&'a mut Vec<Vec<u8>>);
    impl RxToken for Rx<'_> {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(self.0)
        }
    }
    impl TxToken for Tx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut v = vec![0; len];
            let r = f(&mut v);
            self.0.push(v);
            r
        }
    }
    impl Device for Dev<'_> {
        type RxToken<'b>
            = Rx<'b>
        where
            Self: 'b;
        type TxToken<'b>
            = Tx<'b>
        where
            Self: 'b;
        fn receive(&mut self, _: NetInstant) -> Option<(Rx<'_>, Tx<'_>)> {
            let f = self.rx.take()?;
            Some((Rx(f), Tx(&mut *self.tx)))
        }
        fn transmit(&mut self, _: NetInstant) -> Option<Tx<'_>> {
            Some(Tx(&mut *self.tx))
        }
        fn capabilities(&self) -> DeviceCapabilities {
            let mut c = DeviceCapabilities::default();
            c.medium = Medium::Ethernet;
            c.max_transmission_unit = 1514;
            c
        }
    }
    let mut now = NetInstant::from_millis(1);
    let mut client: Stack<u32> = Stack::new(cfg(1), now);
    let mut out = Vec::new();
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ethernet(EthernetAddress([
            2, 0, 0, 0, 0, 2,
        ]))),
        &mut Dev {
            rx: None,
            tx: &mut out,
        },
        now,
    );
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Addr::new(10, 9, 0, 2), 24)));
    });
    let mut set = SocketSet::new(Vec::new());
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; BUF]),
            tcp::SocketBuffer::new(vec![0; BUF]),
        );
        s.listen(PORTS[i % PORTS.len()]).unwrap();
        handles.push(set.add(s));
    }
    let mut qc = CaptureQueue::default();
    let mut ids = Vec::with_capacity(n);
    let step = |frame: Option<&[u8]>,
                iface: &mut Interface,
                set: &mut SocketSet,
                out: &mut Vec<Vec<u8>>,
                now| {
        let mut dev = Dev { rx: frame, tx: out };
        iface.poll(now, &mut dev, set);
    };
    for chunk in 0..n.div_ceil(1000) {
        for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
            ids.push(
                client
                    .connect(
                        SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), PORTS[i % PORTS.len()]),
                        0,
                    )
                    .unwrap(),
            );
        }
        for _ in 0..100 {
            now += NetDuration::from_millis(1);
            client.egress(&mut qc, now);
            let frames = std::mem::take(&mut qc.sent);
            let mut back = Vec::new();
            step(None, &mut iface, &mut set, &mut back, now);
            for f in &frames {
                step(Some(f), &mut iface, &mut set, &mut back, now);
            }
            if frames.is_empty() && back.is_empty() {
                break;
            }
            for f in back {
                client.ingress(&f, &mut qc, now);
            }
        }
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut spent = std::time::Duration::ZERO;
    let mut packets = 0u64;
    let mut sink = [0u8; 256];
    for _ in 0..rounds {
        now += NetDuration::from_micros(20);
        let id = ids[(rng.next() % n as u64) as usize];
        client.socket(id).unwrap().send_slice(&[7u8; 64]).unwrap();
        client.egress(&mut qc, now);
        let frames = std::mem::take(&mut qc.sent);
        let mut back = Vec::new();
        let t0 = Wall::now();
        for f in &frames {
            step(Some(f), &mut iface, &mut set, &mut back, now);
        }
        // The application must look at every socket too: smoltcp does not say which.
        for &h in &handles {
            let s = set.get_mut::<tcp::Socket>(h);
            while s.can_recv() {
                let _ = s.recv_slice(&mut sink);
            }
        }
        spent += t0.elapsed();
        packets += frames.len() as u64;
        for f in back {
            client.ingress(&f, &mut qc, now);
        }
    }
    spent.as_nanos() as f64 / packets.max(1) as f64
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .find(|a| a.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 10_000, 50_000]);
    // Without the plain-smoltcp column (most of the run's time): for profiling ours.
    let plain_too = !std::env::args().any(|a| a == "--no-plain");
    println!("connection scale (server stack, in-memory wire, {BUF} B rx + {BUF} B tx buffers per socket)");
    println!(
        "{:>12} {:>12} {:>8} {:>14} {:>13} {:>14} {:>18} {:>10}",
        "connections",
        "ns/packet",
        "ratio",
        "hot-100 ns/pkt",
        "heap B/conn",
        "fixed B/conn",
        "plain smoltcp ns",
        "speedup"
    );
    let mut first = None;
    for n in sizes {
        // Best of three runs, to keep scheduler noise out of the ratio.
        let mut best = (f64::MAX, 0.0);
        let mut hot = f64::MAX;
        for _ in 0..3 {
            let r = run(n, n);
            if r.0 < best.0 {
                best = r;
            }
            hot = hot.min(run(n, 100).0);
        }
        let base = *first.get_or_insert(best.0);
        // Plain smoltcp costs O(n) per packet; fewer rounds keep the run bounded.
        let plain = if plain_too {
            run_plain(n, (2_000_000 / n).clamp(200, 20_000))
        } else {
            f64::NAN
        };
        println!(
            "{n:>12} {:>12.0} {:>8.2} {:>14.0} {:>13.0} {:>14.0} {:>18.0} {:>9.0}x",
            best.0,
            best.0 / base,
            hot,
            best.1,
            best.1 - (2 * BUF) as f64,
            plain,
            plain / best.0
        );
    }
}
