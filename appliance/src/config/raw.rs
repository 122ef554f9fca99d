//! Every section as serde reads it, one struct per table: unknown fields are errors;
//! the values are checked and typed by the section's module.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) dataplane: RawDataplane,
    #[serde(default)]
    pub(super) tcp: RawTcp,
    #[serde(default)]
    pub(super) control: RawControl,
    #[serde(default)]
    pub(super) crypto: RawCrypto,
    pub(super) metrics: Option<RawMetrics>,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default, rename = "vserver")]
    pub(super) vservers: Vec<RawVserver>,
    pub(super) cluster: Option<RawCluster>,
    #[serde(default)]
    pub(super) session_store: RawSessionStore,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) node: String,
    pub(super) listen: String,
    #[serde(default)]
    pub(super) peers: Vec<String>,
    pub(super) multicast: Option<String>,
    pub(super) key_file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSessionStore {
    #[serde(default)]
    pub(super) redis: Vec<String>,
    pub(super) lookup_timeout: Option<String>,
    pub(super) entries: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) access: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataplane {
    pub(super) driver: String,
    #[serde(default)]
    pub(super) eal_args: Vec<String>,
    pub(super) port: Option<String>,
    pub(super) cores: Vec<i64>,
    pub(super) address: String,
    pub(super) gateway: Option<String>,
    pub(super) idle: Option<String>,
    #[serde(default)]
    pub(super) pin: Option<bool>,
    pub(super) mbufs_per_queue: Option<i64>,
    pub(super) rx_descriptors: Option<i64>,
    pub(super) tx_descriptors: Option<i64>,
    pub(super) max_connections_per_core: Option<i64>,
    pub(super) mtu: Option<i64>,
    pub(super) loop_phases: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    pub(super) rx_buffer: Option<i64>,
    pub(super) tx_buffer: Option<i64>,
    pub(super) handshake_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) ack_delay: Option<String>,
    pub(super) spare_sockets: Option<i64>,
    pub(super) syn_cookies_after: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrypto {
    pub(super) workers: Option<i64>,
    pub(super) cpus: Option<Vec<i64>>,
    pub(super) queue_depth: Option<i64>,
    pub(super) max_batch: Option<i64>,
    pub(super) max_in_flight: Option<i64>,
    pub(super) backlog: Option<i64>,
    pub(super) providers: Option<Vec<String>>,
    pub(super) engines: Option<Vec<String>>,
    pub(super) records: Option<String>,
    pub(super) record_batch: Option<i64>,
    pub(super) primitives: Option<String>,
    pub(super) device: Option<Vec<RawDevice>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub(super) name: Option<String>,
    pub(super) providers: Option<Vec<String>>,
    pub(super) workers: Option<i64>,
    pub(super) cpus: Option<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub(super) socket: Option<String>,
    pub(super) stats_interval: Option<String>,
    pub(super) drain_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVserver {
    pub(super) name: String,
    pub(super) listen: String,
    pub(super) mode: String,
    /// Each `"ip:port"` or `{ address = "ip:port", weight = N }`: checked by hand so
    /// that a mistake names its entry.
    #[serde(default)]
    pub(super) backends: Vec<toml::Value>,
    pub(super) balance: Option<String>,
    pub(super) tls: Option<RawTls>,
    pub(super) socks: Option<RawSocks>,
    pub(super) transmit: Option<RawTransmit>,
    pub(super) health: Option<RawHealth>,
    pub(super) proxy_protocol: Option<bool>,
    pub(super) backend_connect: Option<String>,
    pub(super) backend_tls: Option<RawBackendTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendTls {
    pub(super) ca: Option<String>,
    pub(super) server_name: Option<String>,
    pub(super) verify: Option<bool>,
    pub(super) certificate: Option<RawClientCertificate>,
    pub(super) versions: Option<Vec<String>>,
    pub(super) suites: Option<Vec<String>>,
    pub(super) alpn: Option<Vec<String>>,
    pub(super) session_reuse: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientCertificate {
    pub(super) chain: String,
    pub(super) key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) check: String,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) rise: Option<i64>,
    pub(super) fall: Option<i64>,
    pub(super) path: Option<String>,
    pub(super) host: Option<String>,
    pub(super) expect: Option<Vec<i64>>,
    pub(super) observe: Option<String>,
    pub(super) error_limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTransmit {
    pub(super) quantum: Option<i64>,
    pub(super) quantum_segments: Option<i64>,
    pub(super) timer: Option<String>,
    pub(super) fin: Option<bool>,
    pub(super) psh: Option<bool>,
    pub(super) http: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) certificates: Vec<RawCertificate>,
    pub(super) versions: Option<Vec<String>>,
    pub(super) suites: Option<Vec<String>>,
    pub(super) groups: Option<Vec<String>>,
    #[serde(default)]
    pub(super) alpn: Vec<String>,
    pub(super) handshake_timeout: Option<String>,
    #[serde(default)]
    pub(super) record_padding: usize,
    pub(super) session_cache: Option<i64>,
    pub(super) session_lifetime: Option<String>,
    pub(super) tickets: Option<bool>,
    pub(super) ticket_rotation: Option<String>,
    pub(super) psk_modes: Option<Vec<String>>,
    pub(super) client_auth: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) server_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) chain: String,
    pub(super) key: String,
    pub(super) ocsp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSocks {
    #[serde(default)]
    pub(super) auth: Vec<String>,
    pub(super) users_file: Option<String>,
    #[serde(default)]
    pub(super) allow: Vec<String>,
    #[serde(default)]
    pub(super) deny: Vec<String>,
    pub(super) plain_udp: Option<bool>,
    pub(super) replay_window: Option<i64>,
}
