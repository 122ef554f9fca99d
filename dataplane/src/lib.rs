//! The appliance's data plane below TCP: ports, pinned poll-mode cores, flow steering
//! and busy/idle cycle accounting.
//!
//! This crate owns:
//! * [`Frame`] and the [`PortQueue`] abstraction: one RX/TX queue pair per core, with a
//!   DPDK backend ([`dpdk`], any PMD or vdev) and an in-memory wire for tests ([`memory`]);
//! * [`cores`]: start-up checks of the requested CPUs, pinning, the poll loop with its
//!   cycle accounting and idle policy;
//! * [`steer`]: which core owns a frame, and the channels that move frames there;
//! * [`wire`]: the one header parser both steering and the stack's flow table use;
//! * [`timer_wheel`]: O(1) deadlines for the connections of a core (stack and driver).
//!
//! It must not know about TCP connections, TLS or configuration files: the network
//! stack (`netstack`) and the appliance sit on top. All DPDK `unsafe` is here or in
//! `dpdk-sys`; nothing above this crate calls DPDK.

pub mod cores;
pub mod dpdk;
mod frame;
pub mod memory;
mod port;
pub mod steer;
pub mod timer_wheel;
pub mod wire;

pub use frame::Frame;
pub use port::{PortInfo, PortQueue, QueueCounters, BURST};

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
