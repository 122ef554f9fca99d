//! The appliance: configuration, vservers, the L4 proxy, the control socket, and the
//! `appliance` daemon that puts them on the data plane.
//!
//! This crate owns what a vserver does with a connection and how operators configure
//! and observe it. It must not touch DPDK or smoltcp directly (that is `dataplane` and
//! `netstack`), and the poll-mode cores it starts must never block: no locks, no I/O
//! other than their own port queue, no sleeping except the idle policy's.
//!
//! Today the vserver mode is `tcp` (an L4 proxy, round robin over backends). TLS
//! termination (issue 3), the crypto offload (issue 4) and the operator features of
//! issue 5 are not built yet; the configuration refuses what is not there.

pub mod config;
pub mod control;
pub mod proxy;
pub mod runtime;
