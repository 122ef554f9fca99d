//! The appliance's configuration: TOML in, a validated [`Config`] out.
//!
//! Parsing happens in two steps: serde reads the raw shape (unknown fields are
//! errors), then [`Config::from_raw`] checks every value and turns it into typed form.
//! Every error names the file, the field (`vserver[1].backends[0]`) and the reason,
//! and nothing starts half-configured. The README documents each field.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dataplane::cores::IdlePolicy;
use netstack::in_subnet;
use serde::Deserialize;

use crate::transmit::{Quantum, TransmitConfig};

/// A configuration error: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    dataplane: RawDataplane,
    #[serde(default)]
    tcp: RawTcp,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    crypto: RawCrypto,
    metrics: Option<RawMetrics>,
    #[serde(default)]
    log: RawLog,
    #[serde(default, rename = "vserver")]
    vservers: Vec<RawVserver>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    access: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    driver: String,
    #[serde(default)]
    eal_args: Vec<String>,
    port: Option<String>,
    cores: Vec<i64>,
    address: String,
    gateway: Option<String>,
    idle: Option<String>,
    #[serde(default)]
    pin: Option<bool>,
    mbufs_per_queue: Option<i64>,
    rx_descriptors: Option<i64>,
    tx_descriptors: Option<i64>,
    max_connections_per_core: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    rx_buffer: Option<i64>,
    tx_buffer: Option<i64>,
    handshake_timeout: Option<String>,
    idle_timeout: Option<String>,
    ack_delay: Option<String>,
    spare_sockets: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrypto {
    workers: Option<i64>,
    cpus: Option<Vec<i64>>,
    queue_depth: Option<i64>,
    max_batch: Option<i64>,
    max_in_flight: Option<i64>,
    backlog: Option<i64>,
    providers: Option<Vec<String>>,
    engines: Option<Vec<String>>,
    records: Option<String>,
    record_batch: Option<i64>,
    device: Option<Vec<RawDevice>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: Option<String>,
    providers: Option<Vec<String>>,
    workers: Option<i64>,
    cpus: Option<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<String>,
    stats_interval: Option<String>,
    drain_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVserver {
    name: String,
    listen: String,
    mode: String,
    /// Each `"ip:port"` or `{ address = "ip:port", weight = N }`: checked by hand so
    /// that a mistake names its entry.
    backends: Vec<toml::Value>,
    balance: Option<String>,
    tls: Option<RawTls>,
    transmit: Option<RawTransmit>,
    health: Option<RawHealth>,
    proxy_protocol: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    check: String,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<i64>,
    fall: Option<i64>,
    path: Option<String>,
    host: Option<String>,
    expect: Option<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransmit {
    quantum: Option<i64>,
    quantum_segments: Option<i64>,
    timer: Option<String>,
    fin: Option<bool>,
    psh: Option<bool>,
    http: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificates: Vec<RawCertificate>,
    versions: Option<Vec<String>>,
    suites: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    #[serde(default)]
    alpn: Vec<String>,
    handshake_timeout: Option<String>,
    #[serde(default)]
    record_padding: usize,
    session_cache: Option<i64>,
    session_lifetime: Option<String>,
    tickets: Option<bool>,
    ticket_rotation: Option<String>,
    psk_modes: Option<Vec<String>>,
    client_auth: Option<String>,
    client_ca: Option<String>,
    server_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    chain: String,
    key: String,
}

/// Which port driver the data plane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// A DPDK ethdev (any PMD or vdev from `eal_args`).
    Dpdk,
    /// The in-memory wire: tests and benchmarks only; the daemon refuses it.
    Memory,
}

/// `[dataplane]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataplaneConfig {
    pub driver: Driver,
    pub eal_args: Vec<String>,
    pub port: Option<String>,
    pub cores: Vec<usize>,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub idle: IdlePolicy,
    /// Pin each poll-mode thread to its CPU (default true).
    pub pin: bool,
    pub mbufs_per_queue: u32,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    pub max_connections_per_core: usize,
}

/// `[tcp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// Delayed-ACK time; zero means ACK at once.
    pub ack_delay: Duration,
    pub spare_sockets: usize,
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    pub socket: PathBuf,
    /// How often the daemon logs a stats line (0 = never).
    pub stats_interval: Duration,
    /// On SIGINT/SIGTERM: how long open connections may take to finish before the
    /// rest are reset (0: reset at once).
    pub drain_timeout: Duration,
}

/// How the daemon's own log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `time LEVEL target] message`, for people.
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `msg`.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// One line per finished connection is appended here (see `access`); `None`:
    /// no access log.
    pub access: Option<PathBuf>,
}

/// `[crypto]`: where handshake crypto runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoConfig {
    /// Worker threads; 0 = inline on the poll-mode cores.
    pub workers: usize,
    /// CPUs to pin workers to (round robin); empty = not pinned.
    pub cpus: Vec<usize>,
    /// Jobs each worker's queue holds.
    pub queue_depth: usize,
    /// Jobs a worker takes per wake-up.
    pub max_batch: usize,
    /// Jobs one poll-mode core may have out at once.
    pub max_in_flight: usize,
    /// Jobs a core holds back while every queue is full; past it, handshakes are
    /// refused (internal_error alert, counted as `crypto_refused`).
    pub backlog: usize,
    /// OpenSSL 3 providers to load by name (`default` is added as the fallback
    /// unless `fips` is listed); the first other one is preferred.
    pub providers: Vec<String>,
    /// Legacy ENGINEs to load by id, each the default for what it implements.
    pub engines: Vec<String>,
    /// Application records are sealed and opened on the pool (`records = "pool"`, the
    /// default with workers), batched across connections; else on the poll-mode core.
    pub record_offload: bool,
    /// Connections whose records one record job carries, at most.
    pub record_batch: usize,
    /// `[[crypto.device]]`: accelerators with workers of their own beside the CPU
    /// workers, each in an OpenSSL library context of its own.
    pub devices: Vec<DeviceConfig>,
}

/// One `[[crypto.device]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub name: String,
    /// Providers loaded into the device's context (`default` added as the fallback
    /// unless `fips` is listed); the first other one is preferred.
    pub providers: Vec<String>,
    pub workers: usize,
    pub cpus: Vec<usize>,
}

impl CryptoConfig {
    /// Worker threads in all: the CPU workers and every device's.
    pub fn all_workers(&self) -> usize {
        self.workers + self.devices.iter().map(|d| d.workers).sum::<usize>()
    }
}

/// What a vserver does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP (L4) proxy.
    Tcp,
    /// TLS termination: clients speak TLS, backends get the plaintext.
    Tls,
}

/// One `[[vserver]]`.
#[derive(Debug, Clone)]
pub struct Vserver {
    pub name: String,
    pub listen: SocketAddrV4,
    pub mode: Mode,
    pub backends: Vec<Backend>,
    pub balance: Balance,
    /// Active health checks; `None`: every backend counts as healthy.
    pub health: Option<HealthCheck>,
    /// The TLS engine's configuration (certificates loaded, flights precomputed);
    /// present exactly when `mode` is [`Mode::Tls`].
    pub tls: Option<std::sync::Arc<tls::ServerConfig>>,
    /// When backend plaintext is sealed into records (`tls` vservers).
    pub transmit: TransmitConfig,
    /// Each backend connection starts with a PROXY protocol v2 header carrying the
    /// client's address and the address it connected to.
    pub proxy_protocol: bool,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub dataplane: DataplaneConfig,
    pub tcp: TcpConfig,
    pub control: ControlConfig,
    pub crypto: CryptoConfig,
    /// `[metrics]`: the Prometheus endpoint, if configured.
    pub metrics: Option<MetricsConfig>,
    pub log: LogConfig,
    pub vservers: Vec<Vserver>,
}

/// `[metrics]`: where the Prometheus text endpoint listens (kernel networking, the
/// management address; never the data plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: std::net::SocketAddr,
}

/// One backend of a vserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddrV4,
    /// Share of new connections relative to the other backends (1..=1000).
    pub weight: u32,
}

/// How a vserver spreads new connections over its eligible backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted round robin.
    RoundRobin,
    /// The fewest open connections per unit of weight.
    LeastConnections,
}

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// The TCP handshake completes.
    Tcp,
    /// `GET path` over HTTP/1.0 answers with one of `expect`.
    Http {
        path: String,
        /// `Host:` header; `None`: the backend's address.
        host: Option<String>,
        expect: Vec<u16>,
    },
}

/// `[vserver.health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Time between the starts of two checks of one backend.
    pub interval: Duration,
    /// A check not passed within this fails.
    pub timeout: Duration,
    /// Consecutive passes that bring a down backend back.
    pub rise: u32,
    /// Consecutive failures that take an up backend out of rotation.
    pub fall: u32,
}

/// Default control socket path.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/appliance/control.sock";

/// Parses `"250ms"`, `"10s"`, `"2m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"500ms\", \"10s\", \"2m\""))?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "{s:?} has no unit: write e.g. \"500ms\", \"10s\", \"2m\""
            ))
        }
    };
    Ok(d)
}

struct Checker<'a> {
    file: &'a str,
}

impl Checker<'_> {
    /// A `[vserver.tls]` table: certificates (paths relative to the config file),
    /// versions, ALPN, handshake timeout, record padding.
    fn tls(
        &self,
        field: &str,
        t: RawTls,
    ) -> Result<std::sync::Arc<tls::ServerConfig>, ConfigError> {
        if t.certificates.is_empty() {
            return Err(self.err(
                format!("{field}.certificates"),
                "needs at least one { chain, key } pair",
            ));
        }
        let base = Path::new(self.file).parent().unwrap_or(Path::new(""));
        let read = |f: String, p: &str| -> Result<Vec<u8>, ConfigError> {
            std::fs::read(base.join(p)).map_err(|e| self.err(f, format!("cannot read {p:?}: {e}")))
        };
        let mut certs = Vec::new();
        for (i, c) in t.certificates.iter().enumerate() {
            let fc = format!("{field}.certificates[{i}]");
            let chain = read(format!("{fc}.chain"), &c.chain)?;
            let key = read(format!("{fc}.key"), &c.key)?;
            let ck = tls::CertifiedKey::from_pem(&chain, &key)
                .map_err(|e| self.err(&fc, e.to_string()))?;
            certs.push(std::sync::Arc::new(ck));
        }
        let mut site = tls::Site::new(certs);
        if let Some(names) = &t.server_names {
            if names.is_empty() {
                return Err(self.err(
                    format!("{field}.server_names"),
                    "list at least one name, or leave it out to use the certificates' names",
                ));
            }
            for (i, n) in names.iter().enumerate() {
                if let Err(why) = check_server_name(n) {
                    return Err(self.err(format!("{field}.server_names[{i}]"), why));
                }
            }
            site.names = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        }
        for (i, a) in t.alpn.iter().enumerate() {
            if a.is_empty() || a.len() > 255 {
                return Err(self.err(
                    format!("{field}.alpn[{i}]"),
                    "a protocol name is 1 to 255 bytes",
                ));
            }
            site.alpn.push(a.as_bytes().to_vec());
        }
        let mut cfg = tls::ServerConfig::new(vec![site]).map_err(|e| self.err(field, e))?;
        if let Some(vs) = &t.versions {
            cfg.tls12 = false;
            cfg.tls13 = false;
            for (i, v) in vs.iter().enumerate() {
                match v.as_str() {
                    "1.2" => cfg.tls12 = true,
                    "1.3" => cfg.tls13 = true,
                    o => {
                        return Err(self.err(
                            format!("{field}.versions[{i}]"),
                            format!("{o:?} is not a supported version; use \"1.2\" and/or \"1.3\""),
                        ))
                    }
                }
            }
            if vs.is_empty() {
                return Err(self.err(
                    format!("{field}.versions"),
                    "enable at least one of \"1.2\", \"1.3\"",
                ));
            }
        }
        if let Some(list) = &t.suites {
            let (mut s13, mut s12) = (Vec::new(), Vec::new());
            for (i, name) in list.iter().enumerate() {
                let Some(&code) = tls::msgs::suite::ALL
                    .iter()
                    .find(|&&c| tls::msgs::suite::name(c) == name)
                else {
                    let names: Vec<&str> = tls::msgs::suite::ALL
                        .iter()
                        .map(|&c| tls::msgs::suite::name(c))
                        .collect();
                    return Err(self.err(
                        format!("{field}.suites[{i}]"),
                        format!(
                            "{name:?} is not a suite the engine has; use IANA names: {}",
                            names.join(", ")
                        ),
                    ));
                };
                let dest = if code >> 8 == 0x13 {
                    &mut s13
                } else {
                    &mut s12
                };
                if dest.contains(&code) {
                    return Err(self.err(
                        format!("{field}.suites[{i}]"),
                        format!("{name} is listed twice"),
                    ));
                }
                dest.push(code);
            }
            for (on, got, v) in [(cfg.tls13, &s13, "1.3"), (cfg.tls12, &s12, "1.2")] {
                if on && got.is_empty() {
                    return Err(self.err(
                        format!("{field}.suites"),
                        format!("TLS {v} is enabled but no TLS {v} suite is listed (or leave TLS {v} out of versions)"),
                    ));
                }
            }
            cfg.suites13 = s13;
            cfg.suites12 = s12;
        }
        if let Some(list) = &t.groups {
            let mut groups = Vec::new();
            for (i, name) in list.iter().enumerate() {
                use tls::msgs::group;
                let code = match name.as_str() {
                    "x25519" | "X25519" => group::X25519,
                    "secp256r1" | "P-256" | "prime256v1" => group::SECP256R1,
                    "secp384r1" | "P-384" => group::SECP384R1,
                    o => {
                        return Err(self.err(
                            format!("{field}.groups[{i}]"),
                            format!("{o:?} is not a group the engine has; use \"x25519\", \"secp256r1\" (P-256) or \"secp384r1\" (P-384)"),
                        ))
                    }
                };
                if groups.contains(&code) {
                    return Err(self.err(
                        format!("{field}.groups[{i}]"),
                        format!("{name} is listed twice"),
                    ));
                }
                groups.push(code);
            }
            if groups.is_empty() {
                return Err(self.err(format!("{field}.groups"), "list at least one group"));
            }
            cfg.groups = groups;
        }
        let timeout = self.duration(
            &format!("{field}.handshake_timeout"),
            &t.handshake_timeout,
            Duration::from_secs(10),
        )?;
        if timeout.is_zero() {
            return Err(self.err(format!("{field}.handshake_timeout"), "must be more than 0"));
        }
        cfg.handshake_timeout_ms = timeout.as_millis() as u64;
        if t.record_padding > 16384 {
            return Err(self.err(format!("{field}.record_padding"), "at most 16384 bytes"));
        }
        cfg.record_padding = t.record_padding;
        cfg.resumption = self.resumption(field, &t)?;
        let required = match t.client_auth.as_deref().unwrap_or("off") {
            "off" => None,
            "optional" => Some(false),
            "required" => Some(true),
            o => {
                return Err(self.err(
                    format!("{field}.client_auth"),
                    format!("{o:?} is not a setting; use \"off\", \"optional\" or \"required\""),
                ))
            }
        };
        match (required, &t.client_ca) {
            (Some(req), Some(path)) => {
                let pem = read(format!("{field}.client_ca"), path)?;
                let auth = tls::ClientAuth::from_pem(&pem, req)
                    .map_err(|e| self.err(format!("{field}.client_ca"), e.to_string()))?;
                cfg.client_auth = Some(std::sync::Arc::new(auth));
            }
            (Some(_), None) => {
                return Err(self.err(
                    format!("{field}.client_ca"),
                    "client_auth needs client_ca: a PEM bundle of the CAs that issue client certificates",
                ))
            }
            (None, Some(_)) => {
                return Err(self.err(
                    format!("{field}.client_auth"),
                    "client_ca is set but client_auth is \"off\"; set \"optional\" or \"required\"",
                ))
            }
            (None, None) => {}
        }
        cfg.validate().map_err(|e| self.err(field, e))?;
        Ok(std::sync::Arc::new(cfg))
    }

    /// Session cache size, lifetime, tickets and their key rotation, TLS 1.3 PSK modes.
    fn resumption(&self, field: &str, t: &RawTls) -> Result<tls::Resumption, ConfigError> {
        use std::sync::Arc;
        let f = |name: &str| format!("{field}.{name}");
        let lifetime = self.duration(
            &f("session_lifetime"),
            &t.session_lifetime,
            Duration::from_secs(u64::from(tls::session::DEFAULT_LIFETIME_S)),
        )?;
        if lifetime.as_secs() < 1 || lifetime.as_secs() > 604_800 {
            return Err(self.err(f("session_lifetime"), "between 1s and 7 days (168h)"));
        }
        let entries: usize =
            self.int_in(&f("session_cache"), t.session_cache, 20_000, 0, 10_000_000)?;
        let rotation = self.duration(
            &f("ticket_rotation"),
            &t.ticket_rotation,
            Duration::from_secs(tls::session::DEFAULT_TICKET_ROTATION_S),
        )?;
        if rotation.as_secs() < 1 {
            return Err(self.err(f("ticket_rotation"), "at least 1s"));
        }
        let mut psk_modes = Vec::new();
        for (i, m) in t
            .psk_modes
            .clone()
            .unwrap_or_else(|| vec!["psk_dhe_ke".into()])
            .iter()
            .enumerate()
        {
            psk_modes.push(match m.as_str() {
                "psk_dhe_ke" => tls::PskMode::PskDheKe,
                "psk_ke" => tls::PskMode::PskKe,
                o => {
                    return Err(self.err(
                        format!("{field}.psk_modes[{i}]"),
                        format!("{o:?} is not a mode; use \"psk_dhe_ke\" and/or \"psk_ke\""),
                    ))
                }
            });
        }
        Ok(tls::Resumption {
            store: (entries > 0)
                .then(|| Arc::new(tls::LocalStore::new(entries)) as Arc<dyn tls::SessionStore>),
            tickets: t.tickets.unwrap_or(true).then(|| {
                Arc::new(crypto_offload::TicketKeys::new(
                    rotation.as_millis() as u64,
                    lifetime.as_millis() as u64,
                ))
            }),
            lifetime_s: lifetime.as_secs() as u32,
            psk_modes,
            lookup_timeout_ms: 5,
        })
    }

    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// `[vserver.transmit]`: the transmittal conditions of a `tls` vserver.
    fn transmit(&self, field: &str, r: &RawTransmit) -> Result<TransmitConfig, ConfigError> {
        let d = TransmitConfig::default();
        let f = |n: &str| format!("{field}.{n}");
        let max = tls::record::MAX_FRAGMENT as i64;
        let quantum = match (r.quantum, r.quantum_segments) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    field,
                    "give quantum (bytes) or quantum_segments (TCP segments), not both",
                ))
            }
            (q, None) => Quantum::Bytes(self.int_in(
                &f("quantum"),
                q,
                tls::record::MAX_FRAGMENT,
                256,
                max,
            )?),
            (None, Some(n)) => {
                Quantum::Segments(self.int_in(&f("quantum_segments"), Some(n), 1, 1, 64)?)
            }
        };
        let timer = self.duration(&f("timer"), &r.timer, d.timer)?;
        if timer > Duration::from_secs(60) {
            return Err(self.err(f("timer"), "at most 60s: staged bytes wait this long"));
        }
        Ok(TransmitConfig {
            quantum,
            timer,
            fin: r.fin.unwrap_or(d.fin),
            psh: r.psh.unwrap_or(d.psh),
            http: r.http.unwrap_or(d.http),
        })
    }

    /// Worker CPUs at `field`: CPU numbers, never a poll-mode core's, none twice.
    fn worker_cpus(
        &self,
        field: &str,
        v: &Option<Vec<i64>>,
        poll_cores: &[usize],
    ) -> Result<Vec<usize>, ConfigError> {
        let mut cpus = Vec::new();
        for (i, &cpu) in v.iter().flatten().enumerate() {
            let f = format!("{field}[{i}]");
            if !(0..4096).contains(&cpu) {
                return Err(self.err(f, format!("{cpu} is not a CPU number")));
            }
            let cpu = cpu as usize;
            if poll_cores.contains(&cpu) {
                return Err(self.err(
                    f,
                    format!("CPU {cpu} is a poll-mode core (dataplane.cores); workers need CPUs of their own"),
                ));
            }
            if cpus.contains(&cpu) {
                return Err(self.err(f, format!("CPU {cpu} is listed twice")));
            }
            cpus.push(cpu);
        }
        Ok(cpus)
    }

    /// `[[crypto.device]]`: named, with at least one provider and one worker.
    fn crypto_devices(
        &self,
        r: &RawCrypto,
        poll_cores: &[usize],
    ) -> Result<Vec<DeviceConfig>, ConfigError> {
        let mut out: Vec<DeviceConfig> = Vec::new();
        for (i, d) in r.device.iter().flatten().enumerate() {
            let at = |k: &str| format!("crypto.device[{i}].{k}");
            let name = d
                .name
                .clone()
                .ok_or_else(|| self.err(at("name"), "missing: every device has a name"))?;
            let why = if !is_device_name(&name) {
                Some(format!(
                    "{name:?} is not a name: letters, digits, '-', '_' or '.'"
                ))
            } else if name == "cpu" {
                Some("\"cpu\" names the CPU workers".to_string())
            } else if out.iter().any(|o| o.name == name) {
                Some(format!("{name:?} is listed twice"))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(self.err(at("name"), why));
            }
            let providers = self.device_names(&at("providers"), &d.providers)?;
            if providers.is_empty() {
                return Err(self.err(
                    at("providers"),
                    "a device runs at least one provider (its accelerator's)",
                ));
            }
            out.push(DeviceConfig {
                name,
                providers,
                workers: self.int_in(&at("workers"), d.workers, 1usize, 1, 256)?,
                cpus: self.worker_cpus(&at("cpus"), &d.cpus, poll_cores)?,
            });
        }
        Ok(out)
    }

    /// `[crypto]`: worker count and CPUs (never a poll-mode core's), queue sizes, devices.
    fn crypto(&self, r: &RawCrypto, poll_cores: &[usize]) -> Result<CryptoConfig, ConfigError> {
        let workers = self.int_in("crypto.workers", r.workers, 0usize, 0, 256)?;
        let cpus = self.worker_cpus("crypto.cpus", &r.cpus, poll_cores)?;
        if workers == 0 && !cpus.is_empty() {
            return Err(self.err(
                "crypto.cpus",
                "CPUs are given but workers = 0 (inline); set workers",
            ));
        }
        let devices = self.crypto_devices(r, poll_cores)?;
        let pool = workers > 0 || !devices.is_empty();
        let record_offload = match r.records.as_deref() {
            None => pool,
            Some("pool") if pool => true,
            Some("pool") => {
                return Err(self.err(
                    "crypto.records",
                    "\"pool\" needs crypto workers (workers = 0 is inline)",
                ))
            }
            Some("inline") => false,
            Some(other) => {
                return Err(self.err(
                    "crypto.records",
                    format!("\"{other}\" is not one of \"pool\", \"inline\""),
                ))
            }
        };
        Ok(CryptoConfig {
            record_offload,
            record_batch: self.int_in("crypto.record_batch", r.record_batch, 32, 1, 1024)?,
            workers,
            cpus,
            queue_depth: self.int_in("crypto.queue_depth", r.queue_depth, 256, 1, 65_536)?,
            max_batch: self.int_in("crypto.max_batch", r.max_batch, 16, 1, 1024)?,
            max_in_flight: self.int_in(
                "crypto.max_in_flight",
                r.max_in_flight,
                1024,
                1,
                1 << 20,
            )?,
            backlog: self.int_in("crypto.backlog", r.backlog, 4096, 0, 1 << 20)?,
            providers: self.device_names("crypto.providers", &r.providers)?,
            engines: self.device_names("crypto.engines", &r.engines)?,
            devices,
        })
    }

    /// Provider names and engine ids: what OpenSSL accepts as a name, each once.
    fn device_names(
        &self,
        field: &str,
        v: &Option<Vec<String>>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = Vec::new();
        for (i, n) in v.iter().flatten().enumerate() {
            if !is_device_name(n) {
                return Err(self.err(
                    format!("{field}[{i}]"),
                    format!("{n:?} is not a name: letters, digits, '-', '_' or '.'"),
                ));
            }
            if out.contains(n) {
                return Err(self.err(format!("{field}[{i}]"), format!("{n:?} is listed twice")));
            }
            out.push(n.clone());
        }
        Ok(out)
    }

    /// One entry of `backends`: `"ip:port"` or `{ address = "ip:port", weight = N }`.
    fn backend(&self, field: &str, v: &toml::Value) -> Result<Backend, ConfigError> {
        let (text, weight) = match v {
            toml::Value::String(s) => (s.as_str(), 1),
            toml::Value::Table(t) => {
                if let Some(k) = t.keys().find(|k| *k != "address" && *k != "weight") {
                    return Err(self.err(
                        format!("{field}.{k}"),
                        "unknown field; a backend has `address` and `weight`",
                    ));
                }
                let a = match t.get("address") {
                    Some(toml::Value::String(s)) => s.as_str(),
                    Some(_) => {
                        return Err(
                            self.err(format!("{field}.address"), "must be a string \"ip:port\"")
                        )
                    }
                    None => return Err(self.err(field, "needs address = \"ip:port\"")),
                };
                let w = match t.get("weight") {
                    None => 1,
                    Some(toml::Value::Integer(w)) if (1..=1000).contains(w) => *w as u32,
                    Some(w) => {
                        return Err(self.err(
                            format!("{field}.weight"),
                            format!("{w} must be an integer 1..=1000"),
                        ))
                    }
                };
                (a, w)
            }
            other => {
                return Err(self.err(
                    field,
                    format!(
                        "{other} must be \"ip:port\" or {{ address = \"ip:port\", weight = N }}"
                    ),
                ))
            }
        };
        let addr: SocketAddrV4 = text
            .parse()
            .map_err(|_| self.err(field, format!("{text:?} is not an IPv4 address:port")))?;
        if addr.port() == 0 {
            return Err(self.err(field, "port 0 is not a backend port"));
        }
        Ok(Backend { addr, weight })
    }

    /// `[vserver.health]`.
    fn health(&self, field: &str, h: &RawHealth) -> Result<HealthCheck, ConfigError> {
        let f = |k: &str| format!("{field}.{k}");
        let http_only = [
            ("path", h.path.is_some()),
            ("host", h.host.is_some()),
            ("expect", h.expect.is_some()),
        ];
        let kind = match h.check.as_str() {
            "tcp" => {
                if let Some((k, _)) = http_only.iter().find(|(_, set)| *set) {
                    return Err(self.err(f(k), "only check = \"http\" takes it"));
                }
                CheckKind::Tcp
            }
            "http" => {
                let path = h.path.clone().unwrap_or_else(|| "/".into());
                if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(self.err(
                        f("path"),
                        format!(
                            "{path:?} must start with '/' and hold no spaces or control characters"
                        ),
                    ));
                }
                if let Some(host) = &h.host {
                    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
                        return Err(
                            self.err(f("host"), format!("{host:?} is not a Host header value"))
                        );
                    }
                }
                let expect = match &h.expect {
                    None => vec![200],
                    Some(list) if list.is_empty() => {
                        return Err(self.err(f("expect"), "list at least one status code"))
                    }
                    Some(list) => {
                        let mut out = Vec::new();
                        for (j, &code) in list.iter().enumerate() {
                            if !(100..=599).contains(&code) {
                                return Err(self.err(
                                    format!("{field}.expect[{j}]"),
                                    format!("{code} is not an HTTP status (100..=599)"),
                                ));
                            }
                            out.push(code as u16);
                        }
                        out
                    }
                };
                CheckKind::Http {
                    path,
                    host: h.host.clone(),
                    expect,
                }
            }
            o => {
                return Err(self.err(
                    f("check"),
                    format!("{o:?} is not a check; use \"tcp\" or \"http\""),
                ))
            }
        };
        let interval = self.duration(&f("interval"), &h.interval, Duration::from_secs(2))?;
        let timeout = self.duration(&f("timeout"), &h.timeout, Duration::from_secs(1))?;
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            return Err(self.err(f("interval"), "must be 100ms..=1h"));
        }
        if timeout.is_zero() || timeout > interval {
            return Err(self.err(
                f("timeout"),
                format!("must be more than 0 and at most the interval ({interval:?})"),
            ));
        }
        Ok(HealthCheck {
            kind,
            interval,
            timeout,
            rise: self.int_in(&f("rise"), h.rise, 2u32, 1, 100)?,
            fall: self.int_in(&f("fall"), h.fall, 3u32, 1, 100)?,
        })
    }

    fn int_in<T: TryFrom<i64>>(
        &self,
        field: &str,
        v: Option<i64>,
        default: T,
        lo: i64,
        hi: i64,
    ) -> Result<T, ConfigError> {
        match v {
            None => Ok(default),
            Some(x) if x < lo || x > hi => {
                Err(self.err(field, format!("{x} is out of range {lo}..={hi}")))
            }
            Some(x) => T::try_from(x).map_err(|_| self.err(field, format!("{x} is out of range"))),
        }
    }

    fn duration(
        &self,
        field: &str,
        v: &Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|e| self.err(field, e)),
        }
    }
}

/// A DNS name as SNI carries it, or a `*.` wildcard over one label.
fn check_server_name(n: &str) -> Result<(), String> {
    let host = n.strip_prefix("*.").unwrap_or(n);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if n.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!(
            "{n:?} is not a DNS name (labels of letters, digits and '-', optionally after a leading \"*.\")"
        ));
    }
    Ok(())
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            field: String::new(),
            reason: e.to_string().trim_end().replace('\n', "\n    "),
        })?;
        Self::from_raw(raw, file)
    }

    fn from_raw(raw: RawConfig, file: &str) -> Result<Config, ConfigError> {
        let c = Checker { file };
        let d = raw.dataplane;
        let driver = match d.driver.as_str() {
            "dpdk" => Driver::Dpdk,
            "memory" => Driver::Memory,
            other => {
                return Err(c.err(
                    "dataplane.driver",
                    format!(
                        "{other:?} is not a driver; use \"dpdk\" (\"memory\" exists for tests)"
                    ),
                ))
            }
        };
        if d.cores.is_empty() {
            return Err(c.err("dataplane.cores", "must list at least one CPU"));
        }
        let mut cores = Vec::new();
        for (i, &cpu) in d.cores.iter().enumerate() {
            if !(0..4096).contains(&cpu) {
                return Err(c.err(
                    format!("dataplane.cores[{i}]"),
                    format!("{cpu} is not a CPU number"),
                ));
            }
            if cores.contains(&(cpu as usize)) {
                return Err(c.err(
                    format!("dataplane.cores[{i}]"),
                    format!("CPU {cpu} is listed twice"),
                ));
            }
            cores.push(cpu as usize);
        }
        let (addr, prefix) = d.address.split_once('/').ok_or_else(|| {
            c.err(
                "dataplane.address",
                format!(
                    "{:?} needs a prefix length, like \"10.77.0.1/24\"",
                    d.address
                ),
            )
        })?;
        let address: Ipv4Addr = addr.parse().map_err(|_| {
            c.err(
                "dataplane.address",
                format!("{addr:?} is not an IPv4 address"),
            )
        })?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| {
                c.err(
                    "dataplane.address",
                    format!("prefix length {prefix:?} must be 1..=32"),
                )
            })?;
        let gateway = match &d.gateway {
            None => None,
            Some(g) => {
                let gw: Ipv4Addr = g.parse().map_err(|_| {
                    c.err("dataplane.gateway", format!("{g:?} is not an IPv4 address"))
                })?;
                if !in_subnet(gw, address, prefix_len) {
                    return Err(c.err(
                        "dataplane.gateway",
                        format!("{gw} is not in {address}/{prefix_len}"),
                    ));
                }
                Some(gw)
            }
        };
        let idle = match d.idle.as_deref() {
            None | Some("adaptive") => IdlePolicy::Adaptive,
            Some("busy") => IdlePolicy::Busy,
            Some(o) => {
                return Err(c.err(
                    "dataplane.idle",
                    format!("{o:?} must be \"adaptive\" (default) or \"busy\""),
                ))
            }
        };
        if driver == Driver::Dpdk && d.eal_args.is_empty() {
            return Err(c.err("dataplane.eal_args", "is empty: DPDK needs at least a device, e.g. [\"--no-huge\", \"--no-pci\", \"--vdev=net_af_packet0,iface=veth0\"]"));
        }
        let dataplane = DataplaneConfig {
            driver,
            eal_args: d.eal_args,
            port: d.port,
            cores,
            address,
            prefix_len,
            gateway,
            idle,
            pin: d.pin.unwrap_or(true),
            mbufs_per_queue: c.int_in(
                "dataplane.mbufs_per_queue",
                d.mbufs_per_queue,
                4095u32,
                512,
                1 << 20,
            )?,
            rx_descriptors: c.int_in(
                "dataplane.rx_descriptors",
                d.rx_descriptors,
                1024u16,
                64,
                16384,
            )?,
            tx_descriptors: c.int_in(
                "dataplane.tx_descriptors",
                d.tx_descriptors,
                1024u16,
                64,
                16384,
            )?,
            max_connections_per_core: c.int_in(
                "dataplane.max_connections_per_core",
                d.max_connections_per_core,
                100_000usize,
                2,
                10_000_000,
            )?,
        };
        let t = raw.tcp;
        let tcp = TcpConfig {
            rx_buffer: c.int_in("tcp.rx_buffer", t.rx_buffer, 65536usize, 1024, 16 << 20)?,
            tx_buffer: c.int_in("tcp.tx_buffer", t.tx_buffer, 65536usize, 1024, 16 << 20)?,
            handshake_timeout: c.duration(
                "tcp.handshake_timeout",
                &t.handshake_timeout,
                Duration::from_secs(10),
            )?,
            idle_timeout: c.duration(
                "tcp.idle_timeout",
                &t.idle_timeout,
                Duration::from_secs(120),
            )?,
            ack_delay: c.duration("tcp.ack_delay", &t.ack_delay, Duration::ZERO)?,
            spare_sockets: c.int_in(
                "tcp.spare_sockets",
                t.spare_sockets,
                1024usize,
                0,
                1_000_000,
            )?,
        };
        if tcp.ack_delay > Duration::from_millis(500) {
            return Err(c.err("tcp.ack_delay", "must be at most 500ms (RFC 1122)"));
        }
        if tcp.handshake_timeout.is_zero() || tcp.idle_timeout.is_zero() {
            return Err(c.err("tcp", "timeouts must be greater than zero"));
        }
        let control = ControlConfig {
            socket: PathBuf::from(
                raw.control
                    .socket
                    .unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into()),
            ),
            stats_interval: c.duration(
                "control.stats_interval",
                &raw.control.stats_interval,
                Duration::from_secs(10),
            )?,
            drain_timeout: c.duration(
                "control.drain_timeout",
                &raw.control.drain_timeout,
                Duration::from_secs(10),
            )?,
        };
        if control.drain_timeout > Duration::from_secs(3600) {
            return Err(c.err("control.drain_timeout", "must be at most 1h"));
        }
        let log = LogConfig {
            format: match raw.log.format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(o) => {
                    return Err(c.err(
                        "log.format",
                        format!("{o:?} is not a format; use \"text\" or \"json\""),
                    ))
                }
            },
            access: match raw.log.access.as_deref() {
                None => None,
                Some("") => {
                    return Err(c.err("log.access", "is empty; leave it out for no access log"))
                }
                Some(p) => Some(PathBuf::from(p)),
            },
        };
        let crypto = c.crypto(&raw.crypto, &dataplane.cores)?;
        let metrics = match &raw.metrics {
            None => None,
            Some(m) => Some(MetricsConfig {
                listen: m.listen.parse().map_err(|_| {
                    c.err(
                        "metrics.listen",
                        format!(
                            "{:?} is not an address:port, like \"127.0.0.1:9464\"",
                            m.listen
                        ),
                    )
                })?,
            }),
        };
        if let Some(m) = &metrics {
            if m.listen.ip() == std::net::IpAddr::V4(address) {
                return Err(c.err("metrics.listen", format!("{} is the data plane's address; the metrics endpoint is on the kernel's management network (e.g. 127.0.0.1)", m.listen.ip())));
            }
        }
        if raw.vservers.is_empty() {
            return Err(c.err(
                "vserver",
                "no [[vserver]] is configured: the appliance would serve nothing",
            ));
        }
        let mut vservers: Vec<Vserver> = Vec::new();
        for (i, v) in raw.vservers.into_iter().enumerate() {
            let f = |name: &str| format!("vserver[{i}].{name}");
            if v.name.is_empty()
                || !v
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                return Err(c.err(
                    f("name"),
                    format!(
                        "{:?} must be non-empty letters, digits, '-', '_' or '.'",
                        v.name
                    ),
                ));
            }
            if vservers.iter().any(|o| o.name == v.name) {
                return Err(c.err(
                    f("name"),
                    format!("{:?} is used by another vserver", v.name),
                ));
            }
            let mode = match v.mode.as_str() {
                "tcp" => Mode::Tcp,
                "tls" => Mode::Tls,
                "socks5" => {
                    return Err(c.err(
                        f("mode"),
                        "\"socks5\" is not available in this build yet; use \"tcp\" or \"tls\"",
                    ))
                }
                o => {
                    return Err(c.err(
                        f("mode"),
                        format!("{o:?} is not a mode; use \"tcp\" or \"tls\""),
                    ))
                }
            };
            let tls = match (mode, v.tls) {
                (Mode::Tls, Some(t)) => Some(c.tls(&f("tls"), t)?),
                (Mode::Tls, None) => {
                    return Err(c.err(
                        f("tls"),
                        "mode \"tls\" needs a [vserver.tls] table with certificates",
                    ))
                }
                (Mode::Tcp, Some(_)) => {
                    return Err(c.err(
                        f("tls"),
                        "only a vserver with mode = \"tls\" takes a [vserver.tls] table",
                    ))
                }
                (Mode::Tcp, None) => None,
            };
            let transmit = match (mode, &v.transmit) {
                (Mode::Tls, t) => c.transmit(&f("transmit"), t.as_ref().unwrap_or(&RawTransmit::default()))?,
                (Mode::Tcp, None) => TransmitConfig::default(),
                (Mode::Tcp, Some(_)) => {
                    return Err(c.err(
                        f("transmit"),
                        "only a vserver with mode = \"tls\" seals records; a tcp vserver forwards bytes as they come",
                    ))
                }
            };
            let listen: SocketAddrV4 = v.listen.parse().map_err(|_| {
                c.err(
                    f("listen"),
                    format!("{:?} is not an IPv4 address:port", v.listen),
                )
            })?;
            if *listen.ip() != address {
                return Err(c.err(
                    f("listen"),
                    format!("{} is not the data plane's address {address}", listen.ip()),
                ));
            }
            if listen.port() == 0 || listen.port() >= dataplane::steer::EPHEMERAL_FIRST {
                return Err(c.err(f("listen"), format!("port {} must be 1..{} (higher ports are the appliance's own for backend connections)", listen.port(), dataplane::steer::EPHEMERAL_FIRST)));
            }
            let sharing: Vec<&Vserver> = vservers
                .iter()
                .filter(|o| o.listen.port() == listen.port())
                .collect();
            if let Some(o) = sharing
                .iter()
                .find(|o| o.mode != Mode::Tls || mode != Mode::Tls)
            {
                return Err(c.err(
                    f("listen"),
                    format!(
                        "port {} is already used by vserver {:?}; only vservers with mode = \"tls\" share a listen address (SNI chooses among them)",
                        listen.port(),
                        o.name
                    ),
                ));
            }
            // SNI must be able to tell them apart: no name served twice.
            if let Some(mine) = &tls {
                for o in &sharing {
                    let theirs = o.tls.as_ref().map(|t| &t.sites[..]).unwrap_or(&[]);
                    let clash = mine.sites.iter().flat_map(|s| &s.names).find(|n| {
                        theirs
                            .iter()
                            .flat_map(|s| &s.names)
                            .any(|m| m.eq_ignore_ascii_case(n))
                    });
                    if let Some(n) = clash {
                        return Err(c.err(
                            f("tls.server_names"),
                            format!(
                                "{n:?} is also served by vserver {:?} on port {}; set server_names so that each name has one vserver",
                                o.name,
                                listen.port()
                            ),
                        ));
                    }
                }
            }
            if v.backends.is_empty() {
                return Err(c.err(f("backends"), "needs at least one backend address:port"));
            }
            let mut backends: Vec<Backend> = Vec::new();
            for (j, b) in v.backends.iter().enumerate() {
                let fb = format!("vserver[{i}].backends[{j}]");
                let be = c.backend(&fb, b)?;
                let a = be.addr;
                if *a.ip() == address {
                    return Err(c.err(&fb, format!("{a} is the appliance itself")));
                }
                if gateway.is_none() && !in_subnet(*a.ip(), address, prefix_len) {
                    return Err(c.err(&fb, format!("{a} is outside {address}/{prefix_len} and dataplane.gateway is not set")));
                }
                if backends.iter().any(|o| o.addr == a) {
                    return Err(c.err(
                        &fb,
                        format!("{a} is listed twice; give it a weight instead"),
                    ));
                }
                backends.push(be);
            }
            let balance = match v.balance.as_deref() {
                None | Some("round_robin") => Balance::RoundRobin,
                Some("least_connections") => Balance::LeastConnections,
                Some(o) => {
                    return Err(c.err(
                        f("balance"),
                        format!("{o:?} is not a method; use \"round_robin\" (default) or \"least_connections\""),
                    ))
                }
            };
            let health = match &v.health {
                None => None,
                Some(h) => Some(c.health(&f("health"), h)?),
            };
            vservers.push(Vserver {
                name: v.name,
                listen,
                mode,
                backends,
                balance,
                health,
                tls,
                transmit,
                proxy_protocol: v.proxy_protocol.unwrap_or(false),
            });
        }
        Ok(Config {
            dataplane,
            tcp,
            control,
            crypto,
            metrics,
            log,
            vservers,
        })
    }
}

/// A provider, engine or device name: 1 to 64 letters, digits, '-', '_' or '.'.
fn is_device_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[dataplane]
driver = "dpdk"
eal_args = ["--no-huge", "--no-pci", "--vdev=net_af_packet0,iface=veth-appl"]
cores = [1]
address = "10.77.0.1/24"

[[vserver]]
name = "web"
listen = "10.77.0.1:80"
mode = "tcp"
backends = ["10.77.0.2:8080", "10.77.0.3:8080"]
"#;

    fn err_of(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn good_config_and_defaults() {
        let c = Config::parse(GOOD, "t.toml").unwrap();
        assert_eq!(c.dataplane.cores, vec![1]);
        assert_eq!(c.dataplane.prefix_len, 24);
        assert_eq!(c.dataplane.idle, IdlePolicy::Adaptive);
        assert_eq!(c.tcp.rx_buffer, 65536);
        assert_eq!(c.vservers[0].backends.len(), 2);
        assert_eq!(c.control.socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
        assert_eq!((c.crypto.workers, c.crypto.queue_depth), (0, 256));
        assert!(c.crypto.devices.is_empty() && !c.crypto.record_offload);
    }

    #[test]
    fn a_crypto_device_alone_makes_a_pool() {
        let text = GOOD.replacen(
            "[[vserver]]",
            "[[crypto.device]]\nname = \"qat0\"\nproviders = [\"qatprovider\"]\ncpus = [0]\n[[vserver]]",
            1,
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        assert_eq!(
            c.crypto.devices,
            vec![DeviceConfig {
                name: "qat0".into(),
                providers: vec!["qatprovider".into()],
                workers: 1,
                cpus: vec![0],
            }]
        );
        assert_eq!((c.crypto.workers, c.crypto.all_workers()), (0, 1));
        assert!(c.crypto.record_offload, "records go to the pool by default");
    }

    #[test]
    fn backends_balancing_health_and_metrics() {
        let text = GOOD.replace(
            "backends = [\"10.77.0.2:8080\", \"10.77.0.3:8080\"]",
            "backends = [\"10.77.0.2:8080\", { address = \"10.77.0.3:8080\", weight = 3 }]\nbalance = \"least_connections\"\n[vserver.health]\ncheck = \"http\"\npath = \"/healthz\"\nexpect = [200, 204]\ninterval = \"5s\"",
        ) + "\n[metrics]\nlisten = \"127.0.0.1:9464\"\n";
        let c = Config::parse(&text, "t.toml").unwrap();
        let v = &c.vservers[0];
        assert_eq!(v.backends[0].weight, 1);
        assert_eq!(v.backends[1].weight, 3);
        assert_eq!(v.balance, Balance::LeastConnections);
        let h = v.health.as_ref().unwrap();
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/healthz".into(),
                host: None,
                expect: vec![200, 204]
            }
        );
        assert_eq!(
            (h.interval, h.timeout, h.rise, h.fall),
            (Duration::from_secs(5), Duration::from_secs(1), 2, 3)
        );
        assert_eq!(c.metrics.unwrap().listen, "127.0.0.1:9464".parse().unwrap());
        // Defaults: round robin, no checks, no metrics endpoint.
        let c = Config::parse(GOOD, "t.toml").unwrap();
        assert_eq!(c.vservers[0].balance, Balance::RoundRobin);
        assert!(c.vservers[0].health.is_none() && c.metrics.is_none());

        let with = |backends: &str, more: &str| {
            err_of(&GOOD.replace(
                "backends = [\"10.77.0.2:8080\", \"10.77.0.3:8080\"]",
                &format!("backends = {backends}\n{more}"),
            ))
        };
        let ok_b = "[\"10.77.0.2:8080\"]";
        for (backends, more, field, why) in [
            (
                "[{ address = \"10.77.0.2:8080\", weight = 0 }]",
                "",
                "vserver[0].backends[0].weight",
                "1..=1000",
            ),
            (
                "[{ address = \"10.77.0.2:8080\", wieght = 2 }]",
                "",
                "vserver[0].backends[0].wieght",
                "unknown field",
            ),
            (
                "[{ weight = 2 }]",
                "",
                "vserver[0].backends[0]",
                "needs address",
            ),
            (
                "[{ address = 5 }]",
                "",
                "vserver[0].backends[0].address",
                "must be a string",
            ),
            ("[7]", "", "vserver[0].backends[0]", "must be \"ip:port\""),
            (
                "[\"10.77.0.2:8080\", \"10.77.0.2:8080\"]",
                "",
                "vserver[0].backends[1]",
                "listed twice",
            ),
            (
                ok_b,
                "balance = \"random\"",
                "vserver[0].balance",
                "least_connections",
            ),
            (
                ok_b,
                "[vserver.health]\ncheck = \"ping\"",
                "vserver[0].health.check",
                "\"tcp\" or \"http\"",
            ),
            (
                ok_b,
                "[vserver.health]\ncheck = \"tcp\"\npath = \"/\"",
                "vserver[0].health.path",
                "only check = \"http\"",
            ),
            (
                ok_b,
                "[vserver.health]\ncheck = \"http\"\npath = \"x y\"",
                "vserver[0].health.path",
                "must start with '/'",
            ),
            (
                ok_b,
                "[vserver.health]\ncheck = \"http\"\nexpect = [700]",
                "vserver[0].health.expect[0]",
                "not an HTTP status",
            ),
            (
                ok_b,
                "[vserver.health]\ncheck = \"http\"\nexpect = []",
                "vserver[0].health.expect",
                "at least one",
            ),
            (
                ok_b,
                "[vserver.health]\ncheck = \"tcp\"\ninterval = \"10ms\"",
                "vserver[0].health.interval",
                "100ms..=1h",
            ),
            (
                ok_b,
                "[vserver.health]\ncheck = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\"",
                "vserver[0].health.timeout",
                "at most the interval",
            ),
            (
                ok_b,
                "[vserver.health]\ncheck = \"tcp\"\nfall = 0",
                "vserver[0].health.fall",
                "out of range",
            ),
            (
                ok_b,
                "[vserver.health]\ncheck = \"tcp\"\nrise = 1000",
                "vserver[0].health.rise",
                "out of range",
            ),
        ] {
            let e = with(backends, more);
            assert!(
                e.starts_with(&format!("t.toml: {field}: ")) && e.contains(why),
                "{backends} {more}: {e}"
            );
        }
        let e = err_of(&format!("{GOOD}\n[metrics]\nlisten = \"localhost\"\n"));
        assert!(e.starts_with("t.toml: metrics.listen: "), "{e}");
        let e = err_of(&format!("{GOOD}\n[metrics]\nlisten = \"10.77.0.1:9464\"\n"));
        assert!(e.contains("management network"), "{e}");
        let e = err_of(&format!("{GOOD}\n[metrics]\nport = 9464\n"));
        assert!(e.contains("unknown field `port`"), "{e}");
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("driver = \"dpdk\"", "driver = \"pcap\"", "dataplane.driver"),
            ("cores = [1]", "cores = []", "dataplane.cores"),
            ("cores = [1]", "cores = [1, 1]", "dataplane.cores[1]"),
            ("10.77.0.1/24\"", "10.77.0.1\"", "dataplane.address"),
            ("10.77.0.1/24\"", "10.77.0.1/40\"", "dataplane.address"),
            (
                "listen = \"10.77.0.1:80\"",
                "listen = \"10.77.0.1:99999\"",
                "vserver[0].listen",
            ),
            (
                "listen = \"10.77.0.1:80\"",
                "listen = \"10.77.0.9:80\"",
                "vserver[0].listen",
            ),
            (
                "listen = \"10.77.0.1:80\"",
                "listen = \"10.77.0.1:50000\"",
                "vserver[0].listen",
            ),
            ("mode = \"tcp\"", "mode = \"tls\"", "vserver[0].tls"),
            ("mode = \"tcp\"", "mode = \"socks5\"", "vserver[0].mode"),
            ("mode = \"tcp\"", "mode = \"udp\"", "vserver[0].mode"),
            (
                "\"10.77.0.3:8080\"",
                "\"10.99.0.3:8080\"",
                "vserver[0].backends[1]",
            ),
            (
                "\"10.77.0.3:8080\"",
                "\"nonsense\"",
                "vserver[0].backends[1]",
            ),
            ("name = \"web\"", "name = \"we b\"", "vserver[0].name"),
            (
                "[[vserver]]",
                "[crypto]\nworkers = -1\n[[vserver]]",
                "crypto.workers",
            ),
            (
                "[[vserver]]",
                "[crypto]\nworkers = 1\ncpus = [1]\n[[vserver]]",
                "crypto.cpus[0]",
            ),
            (
                "[[vserver]]",
                "[crypto]\ncpus = [0]\n[[vserver]]",
                "crypto.cpus",
            ),
            (
                "[[vserver]]",
                "[crypto]\nworkers = 1\nqueue_depth = 0\n[[vserver]]",
                "crypto.queue_depth",
            ),
            (
                "[[vserver]]",
                "[crypto]\nrecords = \"pool\"\n[[vserver]]",
                "crypto.records",
            ),
            (
                "[[vserver]]",
                "[crypto]\nworkers = 1\nrecords = \"gpu\"\n[[vserver]]",
                "crypto.records",
            ),
            (
                "[[vserver]]",
                "[crypto]\nworkers = 1\nrecord_batch = 0\n[[vserver]]",
                "crypto.record_batch",
            ),
            (
                "[[vserver]]",
                "[crypto]\nproviders = [\"default\", \"qat provider\"]\n[[vserver]]",
                "crypto.providers[1]",
            ),
            (
                "[[vserver]]",
                "[crypto]\nengines = [\"afalg\", \"afalg\"]\n[[vserver]]",
                "crypto.engines[1]",
            ),
            (
                "[[vserver]]",
                "[[crypto.device]]\nproviders = [\"qat\"]\n[[vserver]]",
                "crypto.device[0].name",
            ),
            (
                "[[vserver]]",
                "[[crypto.device]]\nname = \"cpu\"\nproviders = [\"qat\"]\n[[vserver]]",
                "crypto.device[0].name",
            ),
            (
                "[[vserver]]",
                "[[crypto.device]]\nname = \"q\"\nproviders = [\"qat\"]\n[[crypto.device]]\nname = \"q\"\nproviders = [\"qat\"]\n[[vserver]]",
                "crypto.device[1].name",
            ),
            (
                "[[vserver]]",
                "[[crypto.device]]\nname = \"q\"\n[[vserver]]",
                "crypto.device[0].providers",
            ),
            (
                "[[vserver]]",
                "[[crypto.device]]\nname = \"q\"\nproviders = [\"qat\"]\nworkers = 0\n[[vserver]]",
                "crypto.device[0].workers",
            ),
            (
                "[[vserver]]",
                "[[crypto.device]]\nname = \"q\"\nproviders = [\"qat\"]\ncpus = [1]\n[[vserver]]",
                "crypto.device[0].cpus[0]",
            ),
        ];
        for (from, to, field) in cases {
            assert!(GOOD.contains(from), "{from}");
            let e = err_of(&GOOD.replacen(from, to, 1));
            assert!(e.starts_with(&format!("t.toml: {field}: ")), "{field}: {e}");
        }
    }

    #[test]
    fn unknown_fields_and_syntax_errors_point_at_the_line() {
        let e = err_of(&GOOD.replace("cores = [1]", "cores = [1]\ncoers = [2]"));
        assert!(
            e.contains("unknown field `coers`") && e.contains("line"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("cores = [1]", "cores = [1"));
        assert!(e.starts_with("t.toml: ") && e.contains("line"), "{e}");
        let e = err_of(&GOOD.replace(
            "[[vserver]]",
            "[tcp]\nidle_timeout = \"10 parsecs\"\n[[vserver]]",
        ));
        assert!(e.contains("tcp.idle_timeout"), "{e}");
    }

    #[test]
    fn vserver_conflicts_are_refused() {
        let two = format!("{GOOD}\n[[vserver]]\nname = \"web\"\nlisten = \"10.77.0.1:81\"\nmode = \"tcp\"\nbackends = [\"10.77.0.2:1\"]\n");
        assert!(err_of(&two).contains("vserver[1].name"));
        let two = format!("{GOOD}\n[[vserver]]\nname = \"b\"\nlisten = \"10.77.0.1:80\"\nmode = \"tcp\"\nbackends = [\"10.77.0.2:1\"]\n");
        assert!(err_of(&two).contains("already used by vserver \"web\""));
        let none = GOOD.split("[[vserver]]").next().unwrap();
        assert!(err_of(none).contains("no [[vserver]]"));
    }

    /// A `tls` vserver over a certificate made with the openssl CLI in a temp dir.
    fn tls_config(dir: &std::path::Path, tls_extra: &str) -> String {
        if !dir.join("ec.pem").exists() {
            std::fs::create_dir_all(dir).unwrap();
            let o = std::process::Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
                .args(["-subj", "/CN=t", "-keyout", "ec.key", "-out", "ec.pem"])
                .current_dir(dir)
                .output()
                .expect("openssl CLI");
            assert!(o.status.success());
        }
        let d = dir.display();
        GOOD.replace("mode = \"tcp\"", "mode = \"tls\"")
            + &format!(
                "[vserver.tls]\ncertificates = [{{ chain = \"{d}/ec.pem\", key = \"{d}/ec.key\" }}]\n{tls_extra}\n"
            )
    }

    #[test]
    fn tls_settings_and_their_mistakes() {
        let dir = std::env::temp_dir().join(format!("appliance-cfg-{}", std::process::id()));
        let c = Config::parse(
            &tls_config(
                &dir,
                "session_cache = 0\nticket_rotation = \"10m\"\npsk_modes = [\"psk_ke\"]\nclient_auth = \"optional\"\nclient_ca = \"ec.pem\"",
            ),
            &dir.join("t.toml").to_string_lossy(),
        )
        .unwrap();
        let tls = c.vservers[0].tls.as_ref().unwrap();
        assert!(tls.resumption.store.is_none() && tls.resumption.tickets.is_some());
        assert_eq!(tls.resumption.psk_modes, [tls::PskMode::PskKe]);
        assert!(tls.client_auth.as_ref().is_some_and(|a| !a.required));
        // Suites (IANA names, either version, in preference order) and groups.
        let c = Config::parse(
            &tls_config(
                &dir,
                "suites = [\"TLS_CHACHA20_POLY1305_SHA256\", \"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\", \"TLS_AES_128_GCM_SHA256\"]\ngroups = [\"P-256\", \"x25519\"]",
            ),
            "t.toml",
        )
        .unwrap();
        let tls = c.vservers[0].tls.as_ref().unwrap();
        use tls::msgs::{group, suite};
        assert_eq!(
            tls.suites13,
            [
                suite::TLS13_CHACHA20_POLY1305_SHA256,
                suite::TLS13_AES_128_GCM_SHA256
            ]
        );
        assert_eq!(tls.suites12, [suite::ECDHE_ECDSA_AES256_GCM_SHA384]);
        assert_eq!(tls.groups, [group::SECP256R1, group::X25519]);
        let cases = [
            ("suites = [\"RC4-MD5\"]", "vserver[0].tls.suites[0]"),
            (
                "suites = [\"TLS_AES_128_GCM_SHA256\", \"TLS_AES_128_GCM_SHA256\"]",
                "vserver[0].tls.suites[1]",
            ),
            // TLS 1.2 is on by default, and no TLS 1.2 suite is listed.
            (
                "suites = [\"TLS_AES_128_GCM_SHA256\"]",
                "vserver[0].tls.suites",
            ),
            ("groups = [\"ffdhe2048\"]", "vserver[0].tls.groups[0]"),
            ("groups = []", "vserver[0].tls.groups"),
            ("psk_modes = [\"psk\"]", "vserver[0].tls.psk_modes[0]"),
            (
                "session_lifetime = \"200h\"",
                "vserver[0].tls.session_lifetime",
            ),
            ("session_cache = -1", "vserver[0].tls.session_cache"),
            ("ticket_rotation = \"0s\"", "vserver[0].tls.ticket_rotation"),
            ("client_auth = \"maybe\"", "vserver[0].tls.client_auth"),
            ("client_auth = \"required\"", "vserver[0].tls.client_ca"),
            ("client_ca = \"ec.pem\"", "vserver[0].tls.client_auth"),
            (
                "client_auth = \"required\"\nclient_ca = \"missing.pem\"",
                "vserver[0].tls.client_ca",
            ),
        ];
        for (extra, field) in cases {
            let e = Config::parse(&tls_config(&dir, extra), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("t.toml: {field}: ")), "{extra}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn transmit_settings_and_their_mistakes() {
        let dir = std::env::temp_dir().join(format!("appliance-tx-{}", std::process::id()));
        let t = |extra: &str| tls_config(&dir, "") + "[vserver.transmit]\n" + extra;
        let c = Config::parse(&tls_config(&dir, ""), "t.toml").unwrap();
        assert_eq!(c.vservers[0].transmit, TransmitConfig::default());
        let c = Config::parse(
            &t("quantum_segments = 4\ntimer = \"500us\"\nfin = false\npsh = false\nhttp = true"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.vservers[0].transmit,
            TransmitConfig {
                quantum: Quantum::Segments(4),
                timer: Duration::from_micros(500),
                fin: false,
                psh: false,
                http: true,
            }
        );
        let cases = [
            ("quantum = 100", "vserver[0].transmit.quantum"),
            ("quantum = 16385", "vserver[0].transmit.quantum"),
            (
                "quantum_segments = 0",
                "vserver[0].transmit.quantum_segments",
            ),
            (
                "quantum = 4096\nquantum_segments = 2",
                "vserver[0].transmit",
            ),
            ("timer = \"2m\"", "vserver[0].transmit.timer"),
            ("timer = \"5\"", "vserver[0].transmit.timer"),
        ];
        for (extra, field) in cases {
            let e = Config::parse(&t(extra), "t.toml").unwrap_err().to_string();
            assert!(e.starts_with(&format!("t.toml: {field}: ")), "{extra}: {e}");
        }
        let e = Config::parse(&t("nagle = true"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nagle"), "{e}");
        let tcp = GOOD.to_string() + "[vserver.transmit]\ntimer = \"1ms\"\n";
        let e = Config::parse(&tcp, "t.toml").unwrap_err().to_string();
        assert!(
            e.starts_with("t.toml: vserver[0].transmit: only a vserver with mode = \"tls\""),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_vservers_share_a_listener_by_name() {
        let dir = std::env::temp_dir().join(format!("appliance-sni-{}", std::process::id()));
        let one = tls_config(&dir, "server_names = [\"a.example\"]");
        let d = dir.display();
        let with = |first: &str, names: &str, mode: &str| {
            format!(
                "{first}\n[[vserver]]\nname = \"b\"\nlisten = \"10.77.0.1:80\"\nmode = \"{mode}\"\nbackends = [\"10.77.0.9:1\"]\n[vserver.tls]\ncertificates = [{{ chain = \"{d}/ec.pem\", key = \"{d}/ec.key\" }}]\n{names}\n"
            )
        };
        let second = |names: &str, mode: &str| with(&one, names, mode);
        let c =
            Config::parse(&second("server_names = [\"*.B.example\"]", "tls"), "t.toml").unwrap();
        assert_eq!(c.vservers.len(), 2);
        assert_eq!(
            c.vservers[1].tls.as_ref().unwrap().sites[0].names,
            ["*.b.example"]
        );
        // Both keep the certificate's own name "t": SNI could not tell them apart.
        let e = Config::parse(&with(&tls_config(&dir, ""), "", "tls"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "t.toml: vserver[1].tls.server_names: \"t\" is also served by vserver \"web\""
            ),
            "{e}"
        );
        let e = Config::parse(&second("server_names = [\"A.example\"]", "tls"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vserver[1].tls.server_names: \"a.example\" is also served"),
            "{e}"
        );
        // A plain TCP vserver cannot share: nothing would choose between them.
        let tcp = format!("{one}\n[[vserver]]\nname = \"b\"\nlisten = \"10.77.0.1:80\"\nmode = \"tcp\"\nbackends = [\"10.77.0.9:1\"]\n");
        let e = Config::parse(&tcp, "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("t.toml: vserver[1].listen: port 80 is already used by vserver \"web\"; only vservers with mode = \"tls\""), "{e}");
        for (names, field) in [
            ("server_names = []", "vserver[1].tls.server_names"),
            ("server_names = [\"a b\"]", "vserver[1].tls.server_names[0]"),
            (
                "server_names = [\"x.*.example\"]",
                "vserver[1].tls.server_names[0]",
            ),
            (
                "server_names = [\"-x.example\"]",
                "vserver[1].tls.server_names[0]",
            ),
        ] {
            let e = Config::parse(&second(names, "tls"), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("t.toml: {field}: ")), "{names}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
    }
}
