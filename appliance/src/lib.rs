//! The appliance: configuration, vservers, the L4 proxy, the control socket, and the
//! `appliance` daemon that puts them on the data plane.
//!
//! This crate owns what a vserver does with a connection and how operators configure
//! and observe it. It must not touch DPDK or smoltcp directly (that is `dataplane` and
//! `netstack`), and the poll-mode cores it starts must never block: no I/O other than
//! their own port queue, no sleeping except the idle policy's, and no locks except the
//! TLS session store's and ticket key ring's, each held for one map or ring operation,
//! and [`live`]'s, taken once per reload and per `show sessions` request.
//! Crypto jobs either run inline or go to the `crypto-offload` pool through
//! non-blocking queues.
//!
//! Vserver modes: `tcp` (an L4 proxy) and `tls` (TLS terminated by the `tls` engine,
//! plaintext to the backends; several `tls` vservers may share a port, chosen by SNI).
//! Backends are chosen by weighted round robin or least connections among those that
//! are healthy (active checks run on the poll-mode cores, [`health`]) and not draining
//! ([`backends`]); with `proxy_protocol`, each backend connection starts with a PROXY
//! v2 header. Operators watch and switch it through the control socket ([`control`],
//! `appliancectl`), scrape [`metrics`], read the [`access`] log, and reload the
//! configuration without losing a connection ([`live`]). SIGINT/SIGTERM drain: the
//! ports close, open connections get `control.drain_timeout` to finish.

pub mod access;
pub mod backends;
pub mod config;
pub mod conn;
pub mod control;
pub mod core;
pub mod health;
pub mod live;
pub mod metrics;
pub mod runtime;
pub mod sessions;
pub mod stats;
pub mod transmit;

/// The process's clock origin (monotonic).
pub fn epoch() -> std::time::Instant {
    EPOCH.get_or_init(start).0
}

static EPOCH: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();

fn start() -> (std::time::Instant, u64) {
    let unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    (std::time::Instant::now(), unix_us)
}

/// The cores' clock: Unix time in microseconds, read off the monotonic clock (the wall
/// clock at start plus the time since), so it never goes back while the process runs.
/// TLS sessions, tickets and ticket-key epochs carry these times to other nodes of a
/// cluster, whose clocks agree with it as well as their wall clocks do.
pub fn now_us() -> u64 {
    let (at, unix_us) = *EPOCH.get_or_init(start);
    unix_us + at.elapsed().as_micros() as u64
}

/// Unix time in seconds (for validity windows such as OCSP responses').
pub fn unix_now() -> i64 {
    (now_us() / 1_000_000) as i64
}

/// [`now_us`] in milliseconds.
pub fn now_ms() -> u64 {
    now_us() / 1000
}
