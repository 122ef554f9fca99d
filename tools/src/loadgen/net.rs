//! Where loadgen's connections run: the kernel's TCP (default), or the appliance's own
//! data path (`--dpdk IFACE`).
//!
//! **Kernel**: non-blocking `mio` sockets, one poller per thread.
//!
//! **DPDK**: one DPDK port (`net_af_packet` on IFACE) and one `netstack` stack (smoltcp
//! behind a flow table, the same code the appliance's cores run) with its own address
//! (`--dpdk-addr`), busy-polled by the one load thread: the network half of the
//! appliance's per-core driver ([`driver::Net`]), in the driver's order (timers, RX,
//! ready connections, egress and TX flush). This takes the client kernel's
//! per-connection work off the client core: no socket calls, no kernel TCP state
//! machine, no softirq for the replies (af_packet hands frames over in a shared ring).
//! What the server sees is ordinary TCP from another address. The thread's CPU is
//! then its **busy time** (time not spent in empty poll iterations), the same
//! loop-cycle accounting the appliance reports for its own cores, since a
//! busy-polling thread is always 100% on the CPU.
//!
//! The engines see a [`Stream`] either way: `Read + Write`, non-blocking.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{DpdkPort, DpdkPortConfig, DpdkQueue};
use dataplane::{PortInfo, PortQueue};
use driver::pump::Transport;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use netstack::{ConnId, NetDuration, NetInstant, RecvError, Stack, StackConfig, TcpState};

/// `--dpdk` settings, checked by the argument parser.
#[derive(Debug, Clone)]
pub struct DpdkArgs {
    pub iface: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// One connection's byte stream, on whichever network the run uses.
pub enum Stream {
    Kernel(TcpStream),
    Dpdk(DpdkStream),
}

impl Stream {
    /// `Ok(true)` once the TCP handshake is done; an error if it failed.
    pub fn connected(&mut self) -> io::Result<bool> {
        match self {
            Stream::Kernel(tcp) => {
                if let Ok(Some(e)) | Err(e) = tcp.take_error() {
                    return Err(e);
                }
                match tcp.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Stream::Dpdk(s) => s.connected(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Kernel(s) => s.read(buf),
            Stream::Dpdk(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Kernel(s) => s.write(buf),
            Stream::Dpdk(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Kernel(s) => s.flush(),
            Stream::Dpdk(_) => Ok(()),
        }
    }
}

thread_local! {
    /// One socket read buffer for the thread's connections (see [`Stream`]'s
    /// [`Transport`]).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 16 * 1024]);
}

/// The shared engine-to-socket pump ([`driver::pump`]) moves TLS bytes over a
/// `Stream`: reads go through the thread's one buffer, at most what the engine takes.
impl Transport for Stream {
    fn recv_with(&mut self, max: usize, take: &mut dyn FnMut(&[u8]) -> usize) -> io::Result<usize> {
        READ_BUF.with(|b| {
            let mut b = b.borrow_mut();
            let room = max.min(b.len());
            if room == 0 {
                return Ok(0);
            }
            loop {
                return match self.read(&mut b[..room]) {
                    Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => Ok(take(&b[..n])),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
            }
        })
    }

    fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        loop {
            return match self.write(data) {
                Ok(0) if !data.is_empty() => Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the socket took nothing",
                )),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }
}

/// A connection on the loadgen thread's own stack. Dropping it closes the connection
/// (FIN; RST when unread data is left, as the kernel does) and hands it back to the
/// stack, which frees it once TCP is done with it.
pub struct DpdkStream {
    net: Rc<RefCell<DpdkNet>>,
    id: ConnId,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection is gone")
}

impl DpdkStream {
    /// Asked while connecting only (the loop moves on once it is `true`).
    fn connected(&mut self) -> io::Result<bool> {
        let mut net = self.net.borrow_mut();
        let state = net.net.stack.socket(self.id).ok_or_else(gone)?.state();
        match state {
            TcpState::SynSent | TcpState::SynReceived => Ok(false),
            // A RST (or the stack's handshake timeout) while connecting.
            TcpState::Closed | TcpState::Listen => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection refused",
            )),
            _ => {
                net.net.stack.set_established(self.id);
                Ok(true)
            }
        }
    }
}

impl Read for DpdkStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut net = self.net.borrow_mut();
        let s = net.net.stack.socket(self.id).ok_or_else(gone)?;
        match s.recv_slice(buf) {
            Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            // The peer's FIN, after everything it sent was read.
            Err(RecvError::Finished) => Ok(0),
            Err(RecvError::InvalidState) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )),
        }
    }
}

impl Write for DpdkStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut net = self.net.borrow_mut();
        let s = net.net.stack.socket(self.id).ok_or_else(gone)?;
        match s.send_slice(buf) {
            Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection is closed",
            )),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for DpdkStream {
    fn drop(&mut self) {
        // Never borrowed across a drop by the loop; if it were, the stack's timeouts
        // would still end the connection.
        let Ok(mut net) = self.net.try_borrow_mut() else {
            return;
        };
        if let Some(s) = net.net.stack.socket(self.id) {
            if s.recv_queue() > 0 {
                s.abort();
            } else {
                s.close();
            }
        }
        net.net.stack.release(self.id);
    }
}

/// The thread's network: its port queue and stack (the driver's network half).
pub struct DpdkNet {
    net: driver::Net<usize>,
    ids: Vec<ConnId>,
    epoch: Instant,
    tx_seen: u64,
    /// Time spent in poll iterations that found nothing to do.
    idle: Duration,
}

/// The DPDK port of a `--dpdk` run: opened once per process, before the load thread.
pub struct DpdkSetup {
    port: DpdkPort,
}

impl DpdkSetup {
    /// Starts DPDK's EAL with `net_af_packet` on the interface and opens the port.
    pub fn open(d: &DpdkArgs) -> Result<DpdkSetup, String> {
        let eal = vec![
            "--no-huge".to_string(),
            "--no-pci".to_string(),
            "-m".to_string(),
            "256".to_string(),
            "--log-level=*:warning".to_string(),
            "--no-telemetry".to_string(),
            format!("--file-prefix=loadgen-{}", std::process::id()),
            format!("--vdev=net_af_packet0,iface={}", d.iface),
        ];
        dataplane::dpdk::init_eal(&eal).map_err(|e| format!("--dpdk {}: {e}", d.iface))?;
        let port = DpdkPort::open(&DpdkPortConfig {
            name: None,
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mbufs_per_queue: 8191,
            mtu: None,
        })
        .map_err(|e| format!("--dpdk {}: {e}", d.iface))?;
        Ok(DpdkSetup { port })
    }

    pub fn info(&self) -> &PortInfo {
        self.port.info()
    }

    /// The port's one queue, for the load thread (once).
    pub fn take_queue(&mut self) -> Option<DpdkQueue> {
        self.port.take_queues().pop()
    }
}

/// Closes the port and releases EAL (after the load thread has ended).
pub fn close_dpdk(setup: Option<DpdkSetup>) {
    if let Some(s) = setup {
        drop(s);
        dataplane::dpdk::cleanup_eal();
    }
}

/// The network one load thread drives.
pub enum Net {
    Kernel {
        poll: Poll,
        events: Events,
        timer: Timer,
    },
    Dpdk(Rc<RefCell<DpdkNet>>),
}

/// A waker for waits shorter than epoll's millisecond (mio rounds a timeout up to the
/// next millisecond): a `timerfd` in the poll set, armed for the exact wait. Without it
/// an open loop at thousands of arrivals per second starts them in bursts once per
/// millisecond, late by up to a millisecond each, and measures its own pacing.
pub struct Timer {
    fd: libc::c_int,
}

/// The token of the [`Timer`] in the poll set (never a connection's).
const TIMER_TOKEN: usize = usize::MAX;

impl Timer {
    fn new(poll: &Poll) -> io::Result<Timer> {
        // SAFETY: plain system call; the fd is owned by the Timer and closed on drop.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let t = Timer { fd };
        poll.registry().register(
            &mut mio::unix::SourceFd(&t.fd),
            Token(TIMER_TOKEN),
            Interest::READABLE,
        )?;
        Ok(t)
    }

    /// Fire once after `d` (replacing any earlier arming, its expiries forgotten).
    fn arm(&self, d: Duration) -> io::Result<()> {
        let d = d.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid fd and a fully initialized itimerspec.
        if unsafe { libc::timerfd_settime(self.fd, 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consume the expiries, so the next one is a new readiness edge.
    fn drain(&self) {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a u64 from our own non-blocking fd.
        let _ = unsafe { libc::read(self.fd, (&mut n as *mut u64).cast(), 8) };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(self.fd) };
    }
}

impl Net {
    pub fn kernel() -> io::Result<Net> {
        let poll = Poll::new()?;
        let timer = Timer::new(&poll)?;
        Ok(Net::Kernel {
            poll,
            events: Events::with_capacity(1024),
            timer,
        })
    }

    /// The thread's own stack over `queue`, with room for `conns` connections.
    pub fn dpdk(
        d: &DpdkArgs,
        info: &PortInfo,
        mut queue: DpdkQueue,
        conns: usize,
        timeout: Duration,
    ) -> Net {
        queue.on_core_start();
        let cfg = StackConfig {
            mac: info.mac,
            addr: d.addr,
            prefix_len: d.prefix,
            gateway: None,
            mtu: info.mtu,
            core: 0,
            cores: 1,
            rx_buffer: 128 * 1024,
            tx_buffer: 16 * 1024,
            // Closing connections (FIN exchange) beside the ones in flight.
            max_connections: conns * 4 + 64,
            spare_sockets: conns * 2,
            handshake_timeout: NetDuration::from_millis(timeout.as_millis() as u64),
            idle_timeout: NetDuration::from_secs(30),
            ack_delay: None,
            seed: netstack::random_seed(),
            // A client: nothing listens, so nothing to protect.
            syn_cookies_after: usize::MAX,
        };
        let epoch = Instant::now();
        let mut stack = Stack::new(cfg, NetInstant::from_micros(0));
        // A random first local port, as an OS picks (see Stack::start_ports_at).
        let span = u16::MAX - dataplane::steer::EPHEMERAL_FIRST;
        stack.start_ports_at(
            dataplane::steer::EPHEMERAL_FIRST + (netstack::random_seed() % u64::from(span)) as u16,
        );
        let net = DpdkNet {
            net: driver::Net::new(Box::new(queue), None, stack),
            ids: Vec::new(),
            epoch,
            tx_seen: 0,
            idle: Duration::ZERO,
        };
        Net::Dpdk(Rc::new(RefCell::new(net)))
    }

    /// Opens a connection to `target`; its readiness comes back from [`Net::wait`]
    /// as `token`.
    pub fn connect(&mut self, target: SocketAddr, token: usize) -> io::Result<Stream> {
        match self {
            Net::Kernel { poll, .. } => {
                let mut tcp = TcpStream::connect(target)?;
                let _ = tcp.set_nodelay(true);
                poll.registry().register(
                    &mut tcp,
                    Token(token),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(Stream::Kernel(tcp))
            }
            Net::Dpdk(net) => {
                let SocketAddr::V4(v4) = target else {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "--dpdk speaks IPv4 only",
                    ));
                };
                let id = net
                    .borrow_mut()
                    .net
                    .stack
                    .connect(v4, token)
                    .map_err(|e| io::Error::other(format!("no local port: {e:?}")))?;
                Ok(Stream::Dpdk(DpdkStream {
                    net: net.clone(),
                    id,
                }))
            }
        }
    }

    /// Waits up to `timeout` for connections to become ready; appends their tokens.
    /// DPDK: polls without sleeping, and returns as soon as one is ready.
    pub fn wait(&mut self, timeout: Duration, ready: &mut Vec<usize>) -> io::Result<()> {
        match self {
            Net::Kernel {
                poll,
                events,
                timer,
            } => {
                // A wait that is not whole milliseconds ends on the timer; poll's own
                // timeout (rounded up) is only the fallback.
                let precise = timeout.subsec_nanos() % 1_000_000 != 0;
                if precise {
                    timer.arm(timeout)?;
                }
                match poll.poll(events, Some(timeout)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                    Err(e) => return Err(e),
                }
                for e in events.iter() {
                    match e.token().0 {
                        TIMER_TOKEN => timer.drain(),
                        t => ready.push(t),
                    }
                }
                Ok(())
            }
            Net::Dpdk(net) => {
                net.borrow_mut().poll(timeout, ready);
                Ok(())
            }
        }
    }

    /// Keeps the network going, reporting nothing, until every connection the stack
    /// holds has finished closing (the peer's FIN answered), or `d` has passed. On
    /// the kernel's TCP the kernel does that after the process is gone; a stack in
    /// this process must do it before, or the peer keeps the connections half-closed.
    pub fn linger(&mut self, d: Duration) {
        if let Net::Dpdk(net) = self {
            let until = Instant::now() + d;
            let mut ready = Vec::new();
            loop {
                let now = Instant::now();
                if now >= until || net.borrow().net.stack.connections() == 0 {
                    return;
                }
                net.borrow_mut()
                    .poll((until - now).min(Duration::from_millis(1)), &mut ready);
                ready.clear();
            }
        }
    }

    /// Time spent polling with nothing to do (DPDK); `None` on the kernel.
    pub fn idle(&self) -> Option<Duration> {
        match self {
            Net::Kernel { .. } => None,
            Net::Dpdk(net) => Some(net.borrow().idle),
        }
    }
}

impl DpdkNet {
    /// Polls until a connection is ready or `timeout` has passed. Every moment in
    /// here is accounted: an iteration that found nothing adds the time since the
    /// previous iteration ended to `idle` (one clock read per iteration, no gaps).
    fn poll(&mut self, timeout: Duration, ready: &mut Vec<usize>) {
        let mut prev = Instant::now();
        let until = prev + timeout;
        loop {
            let now = NetInstant::from_micros(prev.duration_since(self.epoch).as_micros() as i64);
            // Due timers first (their connections come back from take_ready), then
            // what arrived, then what the engines wrote leaves with the ACKs.
            let net = &mut self.net;
            net.stack.poll_timers(now);
            let got = net.rx(now);
            net.stack.take_ready(&mut self.ids);
            for id in self.ids.drain(..) {
                if let Some(&mut token) = net.stack.user(id) {
                    ready.push(token);
                }
            }
            net.tx(now);
            let sent = net.queue.counters().tx_frames;
            let worked = got > 0 || !ready.is_empty() || sent != self.tx_seen;
            self.tx_seen = sent;
            let t = Instant::now();
            if !worked {
                self.idle += t - prev;
            }
            prev = t;
            if !ready.is_empty() || t >= until {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait shorter than a millisecond arms the timer; its firing wakes the wait and
    /// is consumed there: no connection is reported ready, and a later wait is not
    /// woken by the old expiry.
    #[test]
    fn the_timer_wakes_a_short_wait_and_is_never_a_connection() {
        let mut net = Net::kernel().unwrap();
        let mut ready = Vec::new();
        for _ in 0..3 {
            net.wait(Duration::from_micros(300), &mut ready).unwrap();
            assert!(ready.is_empty(), "{ready:?}");
        }
        let Net::Kernel { timer, .. } = &net else {
            unreachable!()
        };
        // The expiry was read by the waits above: nothing is left to read.
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a u64 from the timer's non-blocking fd.
        let r = unsafe { libc::read(timer.fd, (&mut n as *mut u64).cast(), 8) };
        assert_eq!(r, -1, "an expiry was left unread: {n}");
        // A connection's readiness still comes through beside the timer.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _s = net.connect(l.local_addr().unwrap(), 7).unwrap();
        for _ in 0..100 {
            net.wait(Duration::from_micros(300), &mut ready).unwrap();
            if !ready.is_empty() {
                break;
            }
        }
        assert_eq!(ready, vec![7]);
    }
}
