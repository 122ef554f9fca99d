//! `[dataplane]`, `[tcp]`, `[control]`, `[log]` and `[metrics]`: the port and its
//! cores and address, TCP buffers and timers, the control socket, the daemon's logs, and
//! the Prometheus endpoint.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use dataplane::cores::IdlePolicy;
use netstack::in_subnet;

use super::raw::{RawControl, RawDataplane, RawLog, RawMetrics, RawTcp};
use super::{Checker, ConfigError, DEFAULT_CONTROL_SOCKET};

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
    /// IP MTU set on the port (`None`: the port's own, 1500 on a veth).
    pub mtu: Option<u16>,
    /// Count each poll-mode core's busy cycles by step of its loop (served as
    /// `loop_phases` in the stats); off by default: eleven cycle-counter reads per
    /// iteration.
    pub loop_phases: bool,
}

/// The delayed ACK (`[tcp] ack_delay`) unless configured: 200 µs. A pure ACK waits that
/// long for data of ours to ride on (a response, our close_notify and FIN), so a
/// resumed TLS 1.2 connection that closes costs 3 frames out instead of 5 (BENCHMARKS.md,
/// "Delayed ACK"); a peer whose Nagle waits for our ACK before its next small write
/// waits at most this long (smoltcp's own default, 10 ms, stalled such peers). Every
/// second full segment is still ACKed at once (RFC 9293).
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_micros(200);

/// `[tcp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// Delayed-ACK time; zero means ACK at once. Default [`DEFAULT_ACK_DELAY`].
    pub ack_delay: Duration,
    pub spare_sockets: usize,
    /// Half-open client connections per core from which SYNs get SYN cookies.
    pub syn_cookies_after: usize,
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

/// `[metrics]`: where the Prometheus text endpoint listens (kernel networking, the
/// management address; never the data plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: std::net::SocketAddr,
}

impl Checker<'_> {
    /// `[dataplane]`: the driver, the poll-mode cores, the address and gateway, the idle
    /// policy, and the port's sizes.
    pub(super) fn dataplane(&self, d: RawDataplane) -> Result<DataplaneConfig, ConfigError> {
        let driver = match d.driver.as_str() {
            "dpdk" => Driver::Dpdk,
            "memory" => Driver::Memory,
            other => {
                return Err(self.err(
                    "dataplane.driver",
                    format!(
                        "{other:?} is not a driver; use \"dpdk\" (\"memory\" exists for tests)"
                    ),
                ))
            }
        };
        let cores = self.cores(&d)?;
        let (address, prefix_len, gateway) = self.address(&d)?;
        let idle = match d.idle.as_deref() {
            None | Some("adaptive") => IdlePolicy::Adaptive,
            Some("busy") => IdlePolicy::Busy,
            Some(o) => {
                return Err(self.err(
                    "dataplane.idle",
                    format!("{o:?} must be \"adaptive\" (default) or \"busy\""),
                ))
            }
        };
        if driver == Driver::Dpdk && d.eal_args.is_empty() {
            return Err(self.err("dataplane.eal_args", "is empty: DPDK needs at least a device, e.g. [\"--no-huge\", \"--no-pci\", \"--vdev=net_af_packet0,iface=veth0\"]"));
        }
        let mtu = match d.mtu {
            None => None,
            v => Some(self.int_in("dataplane.mtu", v, 1500u16, 576, 9216)?),
        };
        Ok(DataplaneConfig {
            mtu,
            loop_phases: d.loop_phases.unwrap_or(false),
            driver,
            eal_args: d.eal_args,
            port: d.port,
            cores,
            address,
            prefix_len,
            gateway,
            idle,
            pin: d.pin.unwrap_or(true),
            mbufs_per_queue: self.int_in(
                "dataplane.mbufs_per_queue",
                d.mbufs_per_queue,
                4095u32,
                512,
                1 << 20,
            )?,
            rx_descriptors: self.int_in(
                "dataplane.rx_descriptors",
                d.rx_descriptors,
                1024u16,
                64,
                16384,
            )?,
            tx_descriptors: self.int_in(
                "dataplane.tx_descriptors",
                d.tx_descriptors,
                1024u16,
                64,
                16384,
            )?,
            max_connections_per_core: self.int_in(
                "dataplane.max_connections_per_core",
                d.max_connections_per_core,
                100_000usize,
                2,
                10_000_000,
            )?,
        })
    }

    /// `dataplane.cores`: CPU numbers, at least one, none twice.
    fn cores(&self, d: &RawDataplane) -> Result<Vec<usize>, ConfigError> {
        if d.cores.is_empty() {
            return Err(self.err("dataplane.cores", "must list at least one CPU"));
        }
        let mut cores = Vec::new();
        for (i, &cpu) in d.cores.iter().enumerate() {
            if !(0..4096).contains(&cpu) {
                return Err(self.err(
                    format!("dataplane.cores[{i}]"),
                    format!("{cpu} is not a CPU number"),
                ));
            }
            if cores.contains(&(cpu as usize)) {
                return Err(self.err(
                    format!("dataplane.cores[{i}]"),
                    format!("CPU {cpu} is listed twice"),
                ));
            }
            cores.push(cpu as usize);
        }
        Ok(cores)
    }

    /// `dataplane.address` (with its prefix length) and `dataplane.gateway`, which must
    /// be in the address's subnet.
    fn address(&self, d: &RawDataplane) -> Result<(Ipv4Addr, u8, Option<Ipv4Addr>), ConfigError> {
        let (addr, prefix) = d.address.split_once('/').ok_or_else(|| {
            self.err(
                "dataplane.address",
                format!(
                    "{:?} needs a prefix length, like \"10.77.0.1/24\"",
                    d.address
                ),
            )
        })?;
        let address: Ipv4Addr = addr.parse().map_err(|_| {
            self.err(
                "dataplane.address",
                format!("{addr:?} is not an IPv4 address"),
            )
        })?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| {
                self.err(
                    "dataplane.address",
                    format!("prefix length {prefix:?} must be 1..=32"),
                )
            })?;
        let gateway = match &d.gateway {
            None => None,
            Some(g) => {
                let gw: Ipv4Addr = g.parse().map_err(|_| {
                    self.err("dataplane.gateway", format!("{g:?} is not an IPv4 address"))
                })?;
                if !in_subnet(gw, address, prefix_len) {
                    return Err(self.err(
                        "dataplane.gateway",
                        format!("{gw} is not in {address}/{prefix_len}"),
                    ));
                }
                Some(gw)
            }
        };
        Ok((address, prefix_len, gateway))
    }

    /// `[tcp]`: buffer sizes, timeouts, delayed ACKs, spare sockets.
    pub(super) fn tcp(&self, t: RawTcp) -> Result<TcpConfig, ConfigError> {
        let tcp = TcpConfig {
            rx_buffer: self.int_in("tcp.rx_buffer", t.rx_buffer, 65536usize, 1024, 16 << 20)?,
            tx_buffer: self.int_in("tcp.tx_buffer", t.tx_buffer, 65536usize, 1024, 16 << 20)?,
            handshake_timeout: self.duration(
                "tcp.handshake_timeout",
                &t.handshake_timeout,
                Duration::from_secs(10),
            )?,
            idle_timeout: self.duration(
                "tcp.idle_timeout",
                &t.idle_timeout,
                Duration::from_secs(120),
            )?,
            ack_delay: self.duration("tcp.ack_delay", &t.ack_delay, DEFAULT_ACK_DELAY)?,
            spare_sockets: self.int_in(
                "tcp.spare_sockets",
                t.spare_sockets,
                1024usize,
                0,
                1_000_000,
            )?,
            syn_cookies_after: self.int_in(
                "tcp.syn_cookies_after",
                t.syn_cookies_after,
                1024usize,
                0,
                100_000_000,
            )?,
        };
        if tcp.ack_delay > Duration::from_millis(500) {
            return Err(self.err("tcp.ack_delay", "must be at most 500ms (RFC 1122)"));
        }
        if tcp.handshake_timeout.is_zero() || tcp.idle_timeout.is_zero() {
            return Err(self.err("tcp", "timeouts must be greater than zero"));
        }
        Ok(tcp)
    }

    /// `[control]`: the socket path, the stats interval, the drain timeout.
    pub(super) fn control(&self, r: RawControl) -> Result<ControlConfig, ConfigError> {
        let control = ControlConfig {
            socket: PathBuf::from(r.socket.unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into())),
            stats_interval: self.duration(
                "control.stats_interval",
                &r.stats_interval,
                Duration::from_secs(10),
            )?,
            drain_timeout: self.duration(
                "control.drain_timeout",
                &r.drain_timeout,
                Duration::from_secs(10),
            )?,
        };
        if control.drain_timeout > Duration::from_secs(3600) {
            return Err(self.err("control.drain_timeout", "must be at most 1h"));
        }
        Ok(control)
    }

    /// `[log]`: the log line format and the access log's path.
    pub(super) fn log(&self, r: RawLog) -> Result<LogConfig, ConfigError> {
        Ok(LogConfig {
            format: match r.format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(o) => {
                    return Err(self.err(
                        "log.format",
                        format!("{o:?} is not a format; use \"text\" or \"json\""),
                    ))
                }
            },
            access: match r.access.as_deref() {
                None => None,
                Some("") => {
                    return Err(self.err("log.access", "is empty; leave it out for no access log"))
                }
                Some(p) => Some(PathBuf::from(p)),
            },
        })
    }

    /// `[metrics]`: an address:port that is not the data plane's `address`.
    pub(super) fn metrics(
        &self,
        m: Option<&RawMetrics>,
        address: Ipv4Addr,
    ) -> Result<Option<MetricsConfig>, ConfigError> {
        let metrics = match m {
            None => None,
            Some(m) => Some(MetricsConfig {
                listen: m.listen.parse().map_err(|_| {
                    self.err(
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
                return Err(self.err("metrics.listen", format!("{} is the data plane's address; the metrics endpoint is on the kernel's management network (e.g. 127.0.0.1)", m.listen.ip())));
            }
        }
        Ok(metrics)
    }
}
