//! The DPDK port: EAL initialisation, one ethdev with a queue pair per poll-mode core,
//! and [`DpdkQueue`], the safe face of `rte_eth_rx_burst` / `rte_eth_tx_burst`.
//!
//! Any PMD or vdev the EAL arguments bring up works. On a box without a DPDK NIC,
//! `--no-huge --no-pci --vdev=net_af_packet0,iface=IF,qpairs=N` drives a veth.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::sync::Mutex;

use crate::port::{PortInfo, PortQueue, QueueCounters, BURST};
use crate::Frame;

/// Why the DPDK port could not be brought up. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("DPDK EAL initialisation failed with eal_args {args:?}: {reason} (EAL's own message, if any, is printed above)")]
    Eal { args: Vec<String>, reason: String },
    #[error("the DPDK EAL is already initialised in this process; it can be initialised once per process (run each appliance instance as its own process)")]
    EalTwice,
    #[error("DPDK found no Ethernet port: add a device to eal_args, e.g. --vdev=net_af_packet0,iface=veth0, and check the interface exists in this network namespace")]
    NoPort,
    #[error("DPDK port {wanted:?} does not exist; ports found: {found:?}")]
    PortNotFound { wanted: String, found: Vec<String> },
    #[error("DPDK found several ports {found:?}; name one with dataplane.port")]
    PortAmbiguous { found: Vec<String> },
    #[error("DPDK port {port} ({driver}) offers {max} RX/TX queue pairs but {wanted} poll-mode cores are configured; for net_af_packet add qpairs={wanted} to its --vdev")]
    TooFewQueues {
        port: String,
        driver: String,
        max: u16,
        wanted: usize,
    },
    #[error("DPDK port {port}: {step} failed: {reason}")]
    Setup {
        port: String,
        step: &'static str,
        reason: String,
    },
}

fn rte_error(rc: i32) -> String {
    let err = if rc < 0 {
        -rc
    } else {
        // SAFETY: reads DPDK's per-thread errno.
        unsafe { dpdk_sys::tlsa_errno() }
    };
    // SAFETY: rte_strerror returns a static or thread-local NUL-terminated string.
    let s = unsafe { CStr::from_ptr(dpdk_sys::tlsa_strerror(err)) };
    format!("{} (errno {err})", s.to_string_lossy())
}

static EAL_STARTED: Mutex<bool> = Mutex::new(false);

/// Initialises DPDK's EAL once for this process with `args` (no argv[0]).
///
/// Two defaults are added when `args` does not set them, so that instances and
/// tests side by side do not collide: `--file-prefix=appliance-PID` (EAL's runtime
/// directory) and `-l CPU`, the first CPU this process may run on, as EAL's main
/// lcore. EAL pins the calling thread to that lcore; the caller's CPU affinity is
/// restored afterwards, since poll-mode cores are pinned by `dataplane` itself.
pub fn init_eal(args: &[String]) -> Result<(), DpdkError> {
    let mut started = EAL_STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if *started {
        return Err(DpdkError::EalTwice);
    }
    let mut full: Vec<String> = vec!["appliance".into()];
    full.extend(args.iter().cloned());
    let has = |prefixes: &[&str]| {
        args.iter().any(|a| {
            prefixes
                .iter()
                .any(|p| a == p || a.starts_with(&format!("{p}=")))
        })
    };
    if !has(&["--file-prefix"]) {
        full.push(format!("--file-prefix=appliance-{}", std::process::id()));
    }
    let saved = crate::cores::current_affinity();
    if !has(&["-l", "-c", "--lcores"])
        && !args
            .iter()
            .any(|a| a.starts_with("-l") || a.starts_with("-c"))
    {
        if let Some(cpu) = saved.as_ref().and_then(|s| s.first().copied()) {
            full.push("-l".into());
            full.push(cpu.to_string());
        }
    }
    let cargs: Vec<CString> = full
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| DpdkError::Eal {
            args: args.to_vec(),
            reason: "an argument contains a NUL byte".into(),
        })?;
    let mut argv: Vec<*mut libc::c_char> = cargs.iter().map(|c| c.as_ptr() as *mut _).collect();
    argv.push(std::ptr::null_mut());
    log::info!("starting DPDK EAL: {}", full[1..].join(" "));
    // SAFETY: argv is a NULL-terminated array of C strings that outlive the call
    // (EAL may keep pointers into it; `cargs` is leaked below for that reason).
    let rc = unsafe { dpdk_sys::tlsa_eal_init(argv.len() as i32 - 1, argv.as_mut_ptr()) };
    std::mem::forget(cargs);
    if let Some(cpus) = saved {
        crate::cores::set_affinity(&cpus);
    }
    if rc < 0 {
        return Err(DpdkError::Eal {
            args: args.to_vec(),
            reason: rte_error(0),
        });
    }
    *started = true;
    Ok(())
}

/// Releases EAL resources at process exit (after every port is closed).
pub fn cleanup_eal() {
    let mut started = EAL_STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if *started {
        // SAFETY: no DPDK object is used after this point.
        unsafe { dpdk_sys::tlsa_eal_cleanup() };
        *started = false;
    }
}

/// An opened, started DPDK ethdev. Closing happens on drop.
pub struct DpdkPort {
    id: u16,
    info: PortInfo,
    queues: Vec<DpdkQueue>,
}

/// One queue pair of a [`DpdkPort`], with its own mbuf pool.
pub struct DpdkQueue {
    port: u16,
    queue: u16,
    pool: NonNull<dpdk_sys::rte_mempool>,
    rx: [*mut dpdk_sys::rte_mbuf; BURST],
    pending: Vec<*mut dpdk_sys::rte_mbuf>,
    pending_bytes: u64,
    counters: QueueCounters,
}

// SAFETY: a queue is used by one thread at a time (it moves to its core once).
unsafe impl Send for DpdkQueue {}

/// Ring sizes and pool size for [`DpdkPort::open`].
#[derive(Debug, Clone)]
pub struct DpdkPortConfig {
    /// DPDK port name (e.g. `net_af_packet0`); `None` takes the only port there is.
    pub name: Option<String>,
    /// Queue pairs to set up: one per poll-mode core.
    pub queues: usize,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Mbufs in each queue's pool.
    pub mbufs_per_queue: u32,
    /// IP MTU to set on the port (jumbo frames: up to 9216); `None` keeps the port's
    /// own. Each mbuf then holds a whole frame (frames are never chained).
    pub mtu: Option<u16>,
}

/// Ethernet header, one VLAN tag and the FCS around an IP packet of the MTU.
const FRAME_OVERHEAD: u16 = 14 + 4 + 4;

fn port_names() -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut from = 0u16;
    loop {
        // SAFETY: EAL is initialised; iterates valid port ids.
        let p = unsafe { dpdk_sys::tlsa_eth_next_port(from) };
        if p < 0 {
            break;
        }
        let p = p as u16;
        let mut buf = [0 as libc::c_char; 64];
        // SAFETY: buf is 64 bytes and the shim NUL-terminates within len.
        let name = if unsafe { dpdk_sys::tlsa_eth_port_name(p, buf.as_mut_ptr(), buf.len()) } == 0 {
            unsafe { CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        } else {
            format!("port{p}")
        };
        out.push((p, name));
        if p == u16::MAX {
            break;
        }
        from = p + 1;
    }
    out
}

impl DpdkPort {
    /// Finds, configures and starts the port. Requires [`init_eal`] first.
    pub fn open(cfg: &DpdkPortConfig) -> Result<DpdkPort, DpdkError> {
        let ports = port_names();
        if ports.is_empty() {
            return Err(DpdkError::NoPort);
        }
        let names: Vec<String> = ports.iter().map(|(_, n)| n.clone()).collect();
        let (id, name) = match &cfg.name {
            Some(want) => ports
                .iter()
                .find(|(_, n)| n == want)
                .cloned()
                .ok_or_else(|| DpdkError::PortNotFound {
                    wanted: want.clone(),
                    found: names.clone(),
                })?,
            None if ports.len() == 1 => ports[0].clone(),
            None => return Err(DpdkError::PortAmbiguous { found: names }),
        };
        let setup = |step: &'static str, rc: i32| -> Result<(), DpdkError> {
            if rc < 0 {
                Err(DpdkError::Setup {
                    port: name.clone(),
                    step,
                    reason: rte_error(rc),
                })
            } else {
                Ok(())
            }
        };
        let mut di = dpdk_sys::tlsa_dev_info::default();
        // SAFETY: valid port id, di is a valid out pointer.
        setup("rte_eth_dev_info_get", unsafe {
            dpdk_sys::tlsa_eth_dev_info(id, &mut di)
        })?;
        // SAFETY: driver_name is NUL-terminated by the shim (zeroed, then strncpy len-1).
        let driver = unsafe { CStr::from_ptr(di.driver_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let wanted = cfg.queues.max(1);
        if usize::from(di.max_rx_queues.min(di.max_tx_queues)) < wanted {
            return Err(DpdkError::TooFewQueues {
                port: name,
                driver,
                max: di.max_rx_queues.min(di.max_tx_queues),
                wanted,
            });
        }
        let nq = wanted as u16;
        // SAFETY: valid port id.
        setup("rte_eth_dev_configure", unsafe {
            dpdk_sys::tlsa_eth_configure(id, nq, di.rss_offloads)
        })?;
        // A configured MTU: set on the port (af_packet cannot, see below; it needs a
        // ring frame that holds a frame: `framesz` in its vdev arguments), with mbufs
        // whose data room holds a whole frame.
        let data_room = match cfg.mtu {
            Some(mtu) => {
                // SAFETY: valid, configured port id.
                let rc = unsafe { dpdk_sys::tlsa_eth_set_mtu(id, mtu) };
                if rc < 0 && driver == "net_af_packet" {
                    // DPDK 22.11's af_packet reports a 1,518-byte frame limit and refuses
                    // any larger MTU, yet moves whatever frame its ring frame holds: the
                    // interface's own MTU (set with `ip link`) is what counts.
                    log::warn!(
                        "DPDK port {name}: af_packet refuses MTU {mtu} ({}); using it as the interface's own MTU (set it with `ip link set IFACE mtu {mtu}`, and give the vdev a framesz that holds a frame, e.g. framesz=10240,blocksz=40960)",
                        rte_error(rc)
                    );
                } else {
                    setup("rte_eth_dev_set_mtu", rc)?;
                }
                // Rounded up to 2 KiB: af_packet wants the whole ring frame's data to fit
                // (framesz=10240 holds a 9,000-byte MTU's frame and needs 10,208).
                (mtu + FRAME_OVERHEAD).next_multiple_of(2048)
            }
            None => 0,
        };
        let (mut rxd, mut txd) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid port id and out pointers.
        setup("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            dpdk_sys::tlsa_eth_adjust_desc(id, &mut rxd, &mut txd)
        })?;
        let mut queues = Vec::with_capacity(wanted);
        for q in 0..nq {
            let pool_name = CString::new(format!("tlsa_p{id}_q{q}")).expect("no NUL");
            let cache = (cfg.mbufs_per_queue / 8).clamp(32, 256);
            // SAFETY: EAL initialised; name is a valid C string.
            let pool = unsafe {
                dpdk_sys::tlsa_pktmbuf_pool_create(
                    pool_name.as_ptr(),
                    cfg.mbufs_per_queue,
                    cache,
                    di.socket_id.max(0),
                    data_room,
                )
            };
            let pool = NonNull::new(pool).ok_or_else(|| DpdkError::Setup {
                port: name.clone(),
                step: "rte_pktmbuf_pool_create (add memory with -m in eal_args or lower mbufs_per_queue)",
                reason: rte_error(0),
            })?;
            // SAFETY: valid port, queue index < nq, valid pool.
            setup("rte_eth_rx_queue_setup", unsafe {
                dpdk_sys::tlsa_rx_queue_setup(id, q, rxd, di.socket_id.max(0), pool.as_ptr())
            })?;
            // SAFETY: as above.
            setup("rte_eth_tx_queue_setup", unsafe {
                dpdk_sys::tlsa_tx_queue_setup(id, q, txd, di.socket_id.max(0))
            })?;
            queues.push(DpdkQueue {
                port: id,
                queue: q,
                pool,
                rx: [std::ptr::null_mut(); BURST],
                pending: Vec::with_capacity(BURST),
                pending_bytes: 0,
                counters: QueueCounters::default(),
            });
        }
        // SAFETY: configured port.
        setup("rte_eth_dev_start", unsafe { dpdk_sys::tlsa_eth_start(id) })?;
        let mut mac = [0u8; 6];
        // SAFETY: mac has 6 bytes.
        setup("rte_eth_macaddr_get", unsafe {
            dpdk_sys::tlsa_eth_macaddr(id, mac.as_mut_ptr())
        })?;
        let mtu = match (cfg.mtu, di.mtu) {
            (Some(m), _) => usize::from(m),
            (None, 0) => 1500,
            (None, m) => usize::from(m),
        };
        log::info!(
            "DPDK port {name} ({driver}) up: {nq} queue pair(s), {rxd}/{txd} descriptors, mtu {mtu}, mac {}",
            crate::fmt_mac(&mac)
        );
        Ok(DpdkPort {
            id,
            info: PortInfo {
                name,
                driver,
                mac,
                mtu,
                queues: wanted,
            },
            queues,
        })
    }

    /// The port's facts.
    pub fn info(&self) -> &PortInfo {
        &self.info
    }

    /// Hands out the queues, one per poll-mode core (once).
    pub fn take_queues(&mut self) -> Vec<DpdkQueue> {
        std::mem::take(&mut self.queues)
    }

    /// Link state: (up, speed in Mb/s).
    pub fn link(&self) -> (bool, u32) {
        let (mut speed, mut up) = (0u32, 0i32);
        // SAFETY: valid port id and out pointers.
        unsafe { dpdk_sys::tlsa_eth_link(self.id, &mut speed, &mut up) };
        (up != 0, speed)
    }

    /// The device's own counters (missed frames, errors).
    pub fn device_stats(&self) -> dpdk_sys::tlsa_eth_stats {
        let mut s = dpdk_sys::tlsa_eth_stats::default();
        // SAFETY: valid port id and out pointer.
        unsafe { dpdk_sys::tlsa_eth_stats(self.id, &mut s) };
        s
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        // SAFETY: the port was started by `open`; queues are no longer polled once
        // the cores have been joined, which the owner does before dropping the port.
        unsafe {
            dpdk_sys::tlsa_eth_stop(self.id);
            dpdk_sys::tlsa_eth_close(self.id);
        }
    }
}

impl PortQueue for DpdkQueue {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> usize {
        let want = max.min(BURST) as u16;
        // SAFETY: this thread owns the queue; rx has room for BURST pointers.
        let n =
            unsafe { dpdk_sys::tlsa_rx_burst(self.port, self.queue, self.rx.as_mut_ptr(), want) };
        let mut got = 0;
        for &m in &self.rx[..usize::from(n)] {
            let mut len = 0u32;
            // SAFETY: m is an mbuf DPDK just handed us.
            let data = unsafe { dpdk_sys::tlsa_mbuf_data(m, &mut len) };
            match (NonNull::new(m), NonNull::new(data)) {
                (Some(mb), Some(d)) => {
                    self.counters.rx_frames += 1;
                    self.counters.rx_bytes += u64::from(len);
                    // SAFETY: we own mb; d/len describe its single segment.
                    out.push(unsafe { Frame::from_mbuf(mb, d, len) });
                    got += 1;
                }
                _ => {
                    // A chained (multi-segment) mbuf: jumbo frames are not supported.
                    self.counters.rx_dropped += 1;
                    // SAFETY: we own m.
                    unsafe { dpdk_sys::tlsa_mbuf_free(m) };
                }
            }
        }
        got
    }

    fn alloc_tx(&mut self, len: usize) -> Option<Frame> {
        let len16 = u16::try_from(len).ok()?;
        // SAFETY: pool is this queue's mempool.
        let m = NonNull::new(unsafe { dpdk_sys::tlsa_mbuf_alloc(self.pool.as_ptr()) })?;
        // SAFETY: m is a fresh, empty mbuf we own.
        let data = unsafe { dpdk_sys::tlsa_mbuf_append(m.as_ptr(), len16) };
        match NonNull::new(data) {
            // SAFETY: data points at len bytes inside m.
            Some(d) => Some(unsafe { Frame::from_mbuf(m, d, len as u32) }),
            None => {
                // SAFETY: we own m.
                unsafe { dpdk_sys::tlsa_mbuf_free(m.as_ptr()) };
                None
            }
        }
    }

    fn send(&mut self, frame: Frame) {
        let len = frame.len() as u64;
        let m = match frame.into_mbuf() {
            Ok(m) => m,
            Err(heap) => {
                // A heap frame (rare: built off the fast path) is copied into an mbuf.
                let Some(mut f) = self.alloc_tx(heap.len()) else {
                    self.counters.tx_dropped += 1;
                    return;
                };
                f.copy_from_slice(&heap);
                match f.into_mbuf() {
                    Ok(m) => m,
                    Err(_) => return,
                }
            }
        };
        self.pending_bytes += len;
        self.pending.push(m.as_ptr());
        if self.pending.len() >= BURST {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let total = self.pending.len();
        self.counters.tx_bursts += 1;
        // SAFETY: this thread owns the queue; pending holds mbufs we own.
        let sent = usize::from(unsafe {
            dpdk_sys::tlsa_tx_burst(
                self.port,
                self.queue,
                self.pending.as_mut_ptr(),
                total as u16,
            )
        });
        self.counters.tx_frames += sent as u64;
        if sent == total {
            self.counters.tx_bytes += self.pending_bytes;
        }
        self.pending_bytes = 0;
        for &m in &self.pending[sent..] {
            // The NIC refused these: free and count, never spin on a full ring.
            // SAFETY: we still own the unsent mbufs.
            unsafe { dpdk_sys::tlsa_mbuf_free(m) };
            self.counters.tx_dropped += 1;
        }
        self.pending.clear();
    }

    fn counters(&self) -> QueueCounters {
        // SAFETY: pool is this queue's mempool, alive as long as the queue.
        let in_use = unsafe { dpdk_sys::tlsa_mempool_in_use(self.pool.as_ptr()) };
        QueueCounters {
            mbufs_in_use: u64::from(in_use),
            ..self.counters
        }
    }

    /// Registers the calling thread with EAL so mempool per-lcore caches work for it.
    fn on_core_start(&mut self) {
        // SAFETY: plain registration call; failure only loses the mempool cache.
        if unsafe { dpdk_sys::tlsa_thread_register() } != 0 {
            log::warn!(
                "rte_thread_register failed: mempool caches off for queue {}",
                self.queue
            );
        }
    }
}

impl Drop for DpdkQueue {
    fn drop(&mut self) {
        for &m in &self.pending {
            // SAFETY: we own pending mbufs.
            unsafe { dpdk_sys::tlsa_mbuf_free(m) };
        }
    }
}
