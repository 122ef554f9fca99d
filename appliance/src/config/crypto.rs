//! `[crypto]` and `[[crypto.device]]`: where handshake and record crypto runs (inline,
//! CPU workers, accelerator devices), the queues between, and the OpenSSL providers and
//! engines.

use super::raw::RawCrypto;
use super::{Checker, ConfigError};

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
    /// Whose software runs the primitives both libraries have (`primitives =
    /// "openssl"`, the default, or `"aws-lc"`: X25519, signatures and AEADs; see
    /// `crypto_offload::Primitives`). Providers, engines and
    /// devices are OpenSSL's alone, so `"aws-lc"` goes without them.
    pub primitives: crypto_offload::Primitives,
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

impl Checker<'_> {
    /// `[crypto]`: worker count and CPUs (never a poll-mode core's), queue sizes, devices.
    pub(super) fn crypto(
        &self,
        r: &RawCrypto,
        poll_cores: &[usize],
    ) -> Result<CryptoConfig, ConfigError> {
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
        let primitives = match r.primitives.as_deref() {
            None | Some("openssl") => crypto_offload::Primitives::OpenSsl,
            Some("aws-lc") => crypto_offload::Primitives::AwsLc,
            Some(other) => {
                return Err(self.err(
                    "crypto.primitives",
                    format!("\"{other}\" is not one of \"openssl\", \"aws-lc\""),
                ))
            }
        };
        let openssl_only = r.providers.as_ref().is_some_and(|v| !v.is_empty())
            || r.engines.as_ref().is_some_and(|v| !v.is_empty())
            || !devices.is_empty();
        if primitives == crypto_offload::Primitives::AwsLc && openssl_only {
            return Err(self.err(
                "crypto.primitives",
                "\"aws-lc\" cannot be combined with providers, engines or [[crypto.device]]: those are OpenSSL's, and the operations they would run must stay on them",
            ));
        }
        Ok(CryptoConfig {
            primitives,
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
}

/// A provider, engine or device name: 1 to 64 letters, digits, '-', '_' or '.'.
fn is_device_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}
