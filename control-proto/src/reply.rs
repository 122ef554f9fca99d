//! What each [`crate::Request`] answers. Field names are the JSON keys scripts read
//! (`appliancectl --json`), so they are part of the interface: add, do not rename.
//! Per-core counter groups are maps from counter name to value ([`Counters`]): there
//! are many, they grow with the product, and every consumer reads them by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A group of named counters (a core's `queue`, `stack`, `proxy` or `steering`).
/// Values are numbers, except a few maps of numbers (handshakes per suite).
pub type Counters = BTreeMap<String, serde_json::Value>;

/// A refusal: what was wrong with the request, or why it could not be done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub error: String,
}

impl Refusal {
    pub fn new(e: impl Into<String>) -> Self {
        Refusal { error: e.into() }
    }
}

/// `ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub ok: bool,
}

/// `status`: what an operator checks first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: f64,
    /// The configuration file, its generation (1 at start, one more per reload) and
    /// how long ago that generation was applied.
    pub config: String,
    pub config_generation: u64,
    pub config_applied_secs_ago: f64,
    pub port: String,
    pub cores: usize,
    /// "inline" or "pool of N".
    pub crypto: String,
    pub vservers: usize,
    pub vservers_enabled: usize,
    pub backends: usize,
    pub backends_up: usize,
    pub backends_down: usize,
    pub backends_draining: usize,
    /// Backend connections open now.
    pub proxied_connections: u64,
    pub accepted: u64,
    pub clients_open: u64,
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
}

/// `stats`: every counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub uptime_secs: f64,
    /// Of the cycle counter the cores' busy and idle cycles are counted in.
    pub cycles_per_second: u64,
    pub port: Port,
    pub cores: Vec<Core>,
    pub crypto: Crypto,
}

/// The data port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    pub driver: String,
    pub mac: String,
    pub mtu: usize,
    pub queues: usize,
}

/// One poll-mode core's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Core {
    pub index: usize,
    pub cpu: Option<usize>,
    pub loops: Loops,
    pub queue: Counters,
    pub stack: Counters,
    /// Connections, TLS, transmittal and the core's crypto link.
    pub proxy: Counters,
    pub steering: Counters,
    /// Busy cycles by step of the poll loop, and the busy iterations counted
    /// (`[dataplane] loop_phases = true`; empty when off).
    #[serde(default)]
    pub loop_phases: Counters,
}

/// A poll loop's busy and idle time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loops {
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub busy_loops: u64,
    pub idle_loops: u64,
    pub sleeps: u64,
}

impl Loops {
    /// The share of cycles spent busy since `earlier` (0 when no cycles passed).
    pub fn busy_fraction_since(&self, earlier: &Loops) -> f64 {
        let busy = self.busy_cycles.saturating_sub(earlier.busy_cycles) as f64;
        let idle = self.idle_cycles.saturating_sub(earlier.idle_cycles) as f64;
        if busy + idle == 0.0 {
            0.0
        } else {
            busy / (busy + idle)
        }
    }
}

/// Where crypto runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crypto {
    /// "inline" or "pool".
    pub mode: String,
    /// Each worker's counters.
    pub workers: Vec<Counters>,
    /// Which OpenSSL provider or engine (and library context) runs each operation.
    pub devices: Vec<Counters>,
}

/// A vserver's state (`vservers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VserverSnap {
    pub name: String,
    pub listen: String,
    /// "tcp" or "tls".
    pub mode: String,
    pub enabled: bool,
    /// "round_robin" or "least_connections".
    pub balance: String,
    /// `None`: no active check (every backend counts as healthy).
    pub health_check: Option<String>,
    /// New clients reset because the vserver was disabled, or closed because no
    /// backend was eligible.
    pub refused_disabled: u64,
    pub no_backend: u64,
    pub backends: Vec<BackendSnap>,
}

/// A backend's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendSnap {
    pub address: String,
    pub weight: u32,
    /// "up", "down" or "draining".
    pub state: String,
    pub healthy: bool,
    pub draining: bool,
    /// Connections open now, chosen so far, and failed to connect.
    pub active: u64,
    pub chosen: u64,
    pub failed: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub last_check: String,
    pub transitions: u64,
    /// Times passive health (`observe`) took it out of rotation.
    #[serde(default)]
    pub passive_downs: u64,
    /// Seconds since it last went down or up; `None` if it never changed.
    pub since_change_secs: Option<f64>,
    /// TLS towards it (`[vserver.backend_tls]`); `None` for plaintext backends.
    #[serde(default)]
    pub tls: Option<BackendTlsSnap>,
}

/// A backend's TLS, as the appliance's client role sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendTlsSnap {
    /// The version and suite of the newest handshake (`None` before the first).
    pub version: Option<String>,
    pub suite: Option<String>,
    /// Handshakes in full, resumed (a ticket), and TLS failures (certificate,
    /// alert, timeout, bad records).
    pub full: u64,
    pub resumed: u64,
    pub failed: u64,
}

/// A backend with its vserver's name (`backends`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendRow {
    pub vserver: String,
    #[serde(flatten)]
    pub backend: BackendSnap,
}

/// A `tls` vserver's certificate (`certs`), or why it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertInfo {
    pub vserver: String,
    pub server_names: Vec<String>,
    pub chain_length: usize,
    #[serde(flatten)]
    pub cert: CertFields,
}

/// What a certificate says, or the error reading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CertFields {
    Read {
        subject: String,
        issuer: String,
        sans: Vec<String>,
        not_before: String,
        not_after: String,
        not_after_unix: i64,
        key: String,
        sha256: String,
        days_left: f64,
    },
    Unreadable {
        error: String,
    },
}

/// `sessions`: open client connections, and each `tls` vserver's session cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    pub sessions: Vec<SessionRow>,
    /// Cores that did not answer in time (their connections are missing).
    pub cores_not_answering: Vec<usize>,
    pub session_caches: Vec<SessionCache>,
}

/// One open client connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub core: usize,
    pub client: String,
    pub vserver: String,
    pub backend: Option<String>,
    /// "handshake", "open", "no_backend" (answering 503), or "closing".
    pub state: String,
    pub tls_version: Option<String>,
    pub suite: Option<String>,
    pub sni: Option<String>,
    pub resumed: Option<bool>,
    pub age_secs: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A `tls` vserver's session cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCache {
    pub vserver: String,
    pub cached_sessions: Option<usize>,
    pub cache_capacity: Option<usize>,
    pub tickets: bool,
}

/// `reload`: what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSummary {
    pub ok: bool,
    pub generation: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Vservers present before and after (their new configuration applies to new
    /// connections).
    pub kept: Vec<String>,
    /// `tls` vservers whose session cache and ticket keys were carried over.
    pub sessions_kept: Vec<String>,
    /// `tls` vservers whose certificates differ from the ones they had.
    pub certificates_changed: Vec<String>,
    /// Whether every core has taken the new generation (it always should, within
    /// milliseconds; `false` means a core is stuck and the log says which).
    pub cores_adopted: bool,
}

/// `vserver enable|disable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VserverSwitched {
    pub ok: bool,
    pub vserver: String,
    pub enabled: bool,
}

/// `backend drain|enable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSwitched {
    pub ok: bool,
    pub backend: String,
    pub draining: bool,
    /// The vservers it was switched in.
    pub vservers: Vec<String>,
}

/// `session_store`: the node's TLS session store and, in a cluster, its peers
/// (`appliancectl show session-store` and `show cluster` print it two ways).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStore {
    pub node: String,
    /// A fingerprint of the cluster key (never the key): nodes that share it agree.
    pub key_fingerprint: Option<String>,
    /// The local table: entries, tombstones, capacity, bytes, hits, misses, expired,
    /// evictions, stale.
    pub local: Counters,
    /// Lookups by where they were answered: hits_local, hits_peer, hits_repository,
    /// misses, timeouts.
    pub lookups: Counters,
    pub cluster: Option<ClusterView>,
    pub repository: Option<RepositoryView>,
}

/// The peer tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub node: String,
    /// "syncing" (copying the cache from a peer) or "ready".
    pub state: String,
    pub multicast: bool,
    pub members: Vec<Member>,
    pub last_seq: u64,
    /// Local writes waiting for the flow control.
    pub queue_depth: usize,
    /// Sent messages kept for repair, and ADDs not acknowledged by every live member.
    pub retransmit_buffer: usize,
    pub unacked_adds: usize,
    /// Largest lag of a live member behind this node's stream (messages).
    pub replication_lag: u64,
    pub self_receipt_rtt_ms: Option<f64>,
    /// Replication delay of the latest writes from other nodes (ms, write at its origin
    /// to applied here): p50, p99, samples.
    #[serde(default)]
    pub replication_delay_ms: Option<Delay>,
    /// sent, received, acks, nacks, retransmits, forged, replayed, non_member, ...
    pub counters: Counters,
    /// Writes or lookups the cores could not hand to the cluster thread (queue full).
    pub channel_full: u64,
    pub send_errors: u64,
}

/// Percentiles of a delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    pub p50: u64,
    pub p99: u64,
    pub samples: usize,
}

/// Another node, as this one sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub id: u32,
    pub addr: Option<String>,
    pub up: bool,
    pub state: String,
    pub incarnation: u64,
    /// ms since it was last heard (`None`: never).
    pub last_heard_ago_ms: Option<u64>,
    /// Our messages it has not acknowledged, and its messages we miss.
    pub lag: u64,
    pub behind: u64,
}

/// The repository tier (Redis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryView {
    /// Each server: server, up, errors, reconnects, writes, write_failures, reads,
    /// hits, corrupt, queue_full.
    pub servers: Vec<Counters>,
    pub lookups: u64,
    pub hits: u64,
    pub misses: u64,
    pub timeouts: u64,
    pub down: u64,
}

/// `flush_session_store`: a PURGE of every TLS session, on this node and every other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flushed {
    pub ok: bool,
    /// Sessions this node dropped (the others drop theirs as the purge reaches them).
    pub purged: usize,
    /// Whether the purge was sent to the cluster and the repository too.
    pub cluster: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_row_is_its_backend_with_the_vserver_beside() {
        let row = BackendRow {
            vserver: "web".into(),
            backend: BackendSnap {
                address: "10.0.0.2:80".into(),
                weight: 1,
                state: "up".into(),
                healthy: true,
                draining: false,
                active: 3,
                chosen: 9,
                failed: 0,
                checks_passed: 0,
                checks_failed: 0,
                last_check: "none".into(),
                transitions: 0,
                passive_downs: 0,
                since_change_secs: None,
                tls: None,
            },
        };
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["vserver"], "web");
        assert_eq!(v["address"], "10.0.0.2:80");
        assert_eq!(v["active"], 3);
        let back: BackendRow = serde_json::from_value(v).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn a_certificate_that_could_not_be_read_keeps_its_error() {
        let c: CertInfo = serde_json::from_str(
            r#"{"vserver":"s","server_names":[],"chain_length":1,"error":"bad certificate"}"#,
        )
        .unwrap();
        assert_eq!(
            c.cert,
            CertFields::Unreadable {
                error: "bad certificate".into()
            }
        );
    }
}
