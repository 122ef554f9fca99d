//! The appliance's configuration: TOML in, a validated [`Config`] out.
//!
//! Parsing happens in two steps: serde reads the raw shape (unknown fields are
//! errors), then [`Config::from_raw`] checks every value and turns it into typed form.
//! Every error names the file, the field (`vserver[1].backends[0]`) and the reason,
//! and nothing starts half-configured. The README documents each field.
//!
//! One module per section checks it and holds its typed form: `dataplane` (with
//! `[tcp]`, `[control]`, `[log]` and `[metrics]`), `crypto`, `vserver` and, for
//! `[vserver.tls]`, `tls`; `cluster` (with `[session_store]`); `raw` is the serde shape. The section types are re-exported
//! here, so each is `config::X`.

use std::path::Path;
use std::time::Duration;

mod backend_tls;
mod cluster;
mod crypto;
mod dataplane;
mod raw;
mod socks;
#[cfg(test)]
mod tests;
mod tls;
mod vserver;

// `self::`: the `dataplane` and `tls` modules share their names with crates.
pub use self::backend_tls::BackendTls;
pub use self::cluster::{ClusterConfig, SessionStoreConfig};
pub use self::crypto::{CryptoConfig, DeviceConfig};
pub use self::dataplane::{
    ControlConfig, DataplaneConfig, Driver, LogConfig, LogFormat, MetricsConfig, TcpConfig,
};
pub use self::socks::{Rule, SocksConfig, Users};
pub use self::vserver::{Backend, BackendConnect, Balance, CheckKind, HealthCheck, Mode, Vserver};

use self::raw::RawConfig;

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
    /// `[cluster]`: the peer tier of the session store, if this node is in a cluster.
    pub cluster: Option<ClusterConfig>,
    pub session_store: SessionStoreConfig,
}

/// Default control socket path.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/appliance/control.sock";

/// The largest configuration file read.
const MAX_CONFIG_FILE: u64 = 16 << 20;

/// Reads at most `max` bytes of `path`; a longer file (or an endless one, a device) is
/// an error, not a read for ever.
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(out)
}

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
        // Checked: the fuzzer found "…894h", whose seconds do not fit in 64 bits.
        "m" | "h" => {
            let per = if unit == "m" { 60 } else { 3600 };
            Duration::from_secs(
                n.checked_mul(per)
                    .ok_or_else(|| format!("{s:?} is longer than any duration can be"))?,
            )
        }
        _ => {
            return Err(format!(
                "{s:?} has no unit: write e.g. \"500ms\", \"10s\", \"2m\""
            ))
        }
    };
    Ok(d)
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = read_bounded(path, MAX_CONFIG_FILE)
            .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text")))
            .map_err(|e| ConfigError {
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

    /// Checks the sections in this order, each stopping at its first mistake: the data
    /// plane, `[tcp]`, `[control]`, `[log]`, `[crypto]`, `[metrics]`, the vservers,
    /// `[cluster]`, `[session_store]`.
    fn from_raw(raw: RawConfig, file: &str) -> Result<Config, ConfigError> {
        let c = Checker { file };
        let dataplane = c.dataplane(raw.dataplane)?;
        let tcp = c.tcp(raw.tcp)?;
        let control = c.control(raw.control)?;
        let log = c.log(raw.log)?;
        let crypto = c.crypto(&raw.crypto, &dataplane.cores)?;
        let metrics = c.metrics(raw.metrics.as_ref(), dataplane.address)?;
        let vservers = c.vservers(raw.vservers, &dataplane)?;
        let cluster = c.cluster(raw.cluster, dataplane.address)?;
        let session_store = c.session_store(raw.session_store, cluster.as_ref())?;
        Ok(Config {
            dataplane,
            tcp,
            control,
            crypto,
            metrics,
            log,
            vservers,
            cluster,
            session_store,
        })
    }
}

/// Checks raw values against the rules of their field; every error names `file`.
struct Checker<'a> {
    file: &'a str,
}

impl Checker<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
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
