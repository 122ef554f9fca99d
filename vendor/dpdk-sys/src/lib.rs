//! Raw FFI to the system's DPDK 22.11, found with pkg-config.
//!
//! This crate owns every `extern "C"` declaration the appliance makes into DPDK and
//! nothing else: no safe wrappers, no policy. The safe API lives in `dataplane`.
//!
//! DPDK's fast path is `static inline` in its headers, and its configuration structs
//! change layout between releases, so this crate does not mirror DPDK's headers at
//! all: `shim/shim.c` is compiled against the installed headers and exposes a flat API
//! of integers and opaque pointers (`tlsa_*`). A DPDK upgrade therefore only needs
//! the shim to compile, never a hand-checked struct layout on the Rust side.
//!
//! Safety: every function here is `unsafe` to call. The EAL must have been
//! initialised (`tlsa_eal_init`) before any other call; mbuf and mempool pointers
//! must come from DPDK; a queue must be used by one thread at a time.
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int};

/// An `rte_mbuf`: only ever handled by pointer.
#[repr(C)]
pub struct rte_mbuf {
    _opaque: [u8; 0],
}

/// An `rte_mempool`: only ever handled by pointer.
#[repr(C)]
pub struct rte_mempool {
    _opaque: [u8; 0],
}

/// What the shim reports of `rte_eth_dev_info` (see `shim.c`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tlsa_dev_info {
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub mtu: u16,
    pub _pad: u16,
    pub rss_offloads: u64,
    pub socket_id: i32,
    pub driver_name: [c_char; 64],
}

impl Default for tlsa_dev_info {
    fn default() -> Self {
        Self {
            max_rx_queues: 0,
            max_tx_queues: 0,
            mtu: 0,
            _pad: 0,
            rss_offloads: 0,
            socket_id: 0,
            driver_name: [0; 64],
        }
    }
}

/// What the shim reports of `rte_eth_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct tlsa_eth_stats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

extern "C" {
    pub fn tlsa_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    pub fn tlsa_eal_cleanup() -> c_int;
    pub fn tlsa_errno() -> c_int;
    pub fn tlsa_strerror(err: c_int) -> *const c_char;
    pub fn tlsa_thread_register() -> c_int;

    pub fn tlsa_eth_dev_count_avail() -> u16;
    pub fn tlsa_eth_port_by_name(name: *const c_char, port_id: *mut u16) -> c_int;
    pub fn tlsa_eth_next_port(from: u16) -> c_int;
    pub fn tlsa_eth_port_name(port_id: u16, out: *mut c_char, len: usize) -> c_int;
    pub fn tlsa_eth_dev_info(port_id: u16, out: *mut tlsa_dev_info) -> c_int;
    pub fn tlsa_eth_configure(port_id: u16, nb_q: u16, rss_offloads: u64) -> c_int;
    pub fn tlsa_eth_adjust_desc(port_id: u16, rx: *mut u16, tx: *mut u16) -> c_int;
    /// `data_room`: frame bytes an mbuf holds after its headroom (0: DPDK's default).
    pub fn tlsa_pktmbuf_pool_create(
        name: *const c_char,
        n: u32,
        cache: u32,
        socket_id: c_int,
        data_room: u16,
    ) -> *mut rte_mempool;
    pub fn tlsa_eth_set_mtu(port_id: u16, mtu: u16) -> c_int;
    pub fn tlsa_mempool_free(mp: *mut rte_mempool);
    /// Mbufs of the pool held now (allocated, in a ring, or in a core's hands).
    pub fn tlsa_mempool_in_use(mp: *const rte_mempool) -> std::os::raw::c_uint;
    pub fn tlsa_rx_queue_setup(
        port_id: u16,
        q: u16,
        nb_desc: u16,
        socket_id: c_int,
        mp: *mut rte_mempool,
    ) -> c_int;
    pub fn tlsa_tx_queue_setup(port_id: u16, q: u16, nb_desc: u16, socket_id: c_int) -> c_int;
    pub fn tlsa_eth_start(port_id: u16) -> c_int;
    pub fn tlsa_eth_stop(port_id: u16) -> c_int;
    pub fn tlsa_eth_close(port_id: u16) -> c_int;
    pub fn tlsa_eth_promiscuous(port_id: u16, on: c_int) -> c_int;
    pub fn tlsa_eth_macaddr(port_id: u16, out: *mut u8) -> c_int;
    pub fn tlsa_eth_link(port_id: u16, speed_mbps: *mut u32, up: *mut c_int) -> c_int;
    pub fn tlsa_eth_stats(port_id: u16, out: *mut tlsa_eth_stats) -> c_int;

    pub fn tlsa_rx_burst(port_id: u16, q: u16, pkts: *mut *mut rte_mbuf, n: u16) -> u16;
    pub fn tlsa_tx_burst(port_id: u16, q: u16, pkts: *mut *mut rte_mbuf, n: u16) -> u16;
    pub fn tlsa_mbuf_alloc(mp: *mut rte_mempool) -> *mut rte_mbuf;
    pub fn tlsa_mbuf_free(m: *mut rte_mbuf);
    pub fn tlsa_mbuf_data(m: *mut rte_mbuf, len: *mut u32) -> *mut u8;
    pub fn tlsa_mbuf_append(m: *mut rte_mbuf, len: u16) -> *mut u8;
    pub fn tlsa_mbuf_trim_to(m: *mut rte_mbuf, len: u16) -> c_int;
}
