//! `[[vserver]]`: name, mode, listen address and port sharing, backends and balance,
//! `[vserver.health]` and `[vserver.transmit]` (`[vserver.tls]` is checked in `tls`).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use netstack::in_subnet;

use super::dataplane::DataplaneConfig;
use super::raw::{RawHealth, RawTransmit, RawVserver};
use super::{Checker, ConfigError};
use crate::transmit::{Quantum, TransmitConfig};

/// What a vserver does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP (L4) proxy.
    Tcp,
    /// TLS termination: clients speak TLS, backends get the plaintext.
    Tls,
    /// TLS termination, then a SOCKS v5 server inside it (`[vserver.socks]`): clients
    /// choose their targets, within the vserver's policy.
    Socks5,
}

impl Mode {
    /// Whether its clients speak TLS to the appliance.
    pub fn terminates_tls(self) -> bool {
        matches!(self, Mode::Tls | Mode::Socks5)
    }
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
    /// present exactly when `mode` is [`Mode::Tls`] or [`Mode::Socks5`].
    pub tls: Option<std::sync::Arc<tls::ServerConfig>>,
    /// `[vserver.socks]`: present exactly when `mode` is [`Mode::Socks5`].
    pub socks: Option<std::sync::Arc<super::SocksConfig>>,
    /// TLS 1.2 sessions (by ID) it keeps in the session store; 0: no session IDs.
    pub session_cache: usize,
    /// When backend plaintext is sealed into records (`tls` vservers).
    pub transmit: TransmitConfig,
    /// Each backend connection starts with a PROXY protocol v2 header carrying the
    /// client's address and the address it connected to.
    pub proxy_protocol: bool,
    /// When a `tls` vserver opens its client's backend connection.
    pub backend_connect: BackendConnect,
    /// `[vserver.backend_tls]`: TLS towards the backends; `None`: plaintext.
    pub backend_tls: Option<std::sync::Arc<super::BackendTls>>,
}

/// When a `tls` vserver connects to the backend for a client (`backend_connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendConnect {
    /// At accept: the backend's TCP handshake overlaps the TLS one (a `tcp` vserver
    /// always does this: its client may wait for the server to speak first).
    Accept,
    /// Once the TLS handshake is complete.
    Handshake,
    /// Once the client's first plaintext byte has arrived (NGINX and HAProxy connect
    /// then): a client that only handshakes, or closes, costs no backend connection.
    #[default]
    Request,
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
    /// Passive health (`observe = "layer4"`): this many client connections in a row
    /// that the backend refuses, resets or leaves unanswered take it out of rotation
    /// until its active check passes `rise` times again; `None`: not observed.
    pub error_limit: Option<u32>,
}

impl Checker<'_> {
    /// Every `[[vserver]]`, each checked against the ones before it; at least one.
    pub(super) fn vservers(
        &self,
        raw: Vec<RawVserver>,
        dp: &DataplaneConfig,
    ) -> Result<Vec<Vserver>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err(
                "vserver",
                "no [[vserver]] is configured: the appliance would serve nothing",
            ));
        }
        let mut vservers: Vec<Vserver> = Vec::new();
        for (i, v) in raw.into_iter().enumerate() {
            let vserver = self.vserver(i, v, &vservers, dp)?;
            // Its sessions are a table of the session store named by a 16-bit id from
            // its name, the same on every node of a cluster: two names must not share
            // one (a session of one vserver never resumes on another).
            let table = crate::sessions::table_of(&vserver.name);
            if let Some(o) = vservers
                .iter()
                .find(|o| crate::sessions::table_of(&o.name) == table)
            {
                return Err(self.err(
                    format!("vserver[{i}].name"),
                    format!(
                        "{:?} and {:?} map to the same session table ({table}); rename one",
                        vserver.name, o.name
                    ),
                ));
            }
            vservers.push(vserver);
        }
        Ok(vservers)
    }

    /// `vserver[i]`: its name and mode, `[vserver.tls]` and `[vserver.transmit]` as the
    /// mode wants them, its listen address, backends, balance and health checks. `before`
    /// are the vservers checked so far.
    fn vserver(
        &self,
        i: usize,
        v: RawVserver,
        before: &[Vserver],
        dp: &DataplaneConfig,
    ) -> Result<Vserver, ConfigError> {
        let f = |name: &str| format!("vserver[{i}].{name}");
        if v.name.is_empty()
            || !v
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return Err(self.err(
                f("name"),
                format!(
                    "{:?} must be non-empty letters, digits, '-', '_' or '.'",
                    v.name
                ),
            ));
        }
        if before.iter().any(|o| o.name == v.name) {
            return Err(self.err(
                f("name"),
                format!("{:?} is used by another vserver", v.name),
            ));
        }
        let mode = match v.mode.as_str() {
            "tcp" => Mode::Tcp,
            "tls" => Mode::Tls,
            "socks5" => Mode::Socks5,
            o => {
                return Err(self.err(
                    f("mode"),
                    format!("{o:?} is not a mode; use \"tcp\", \"tls\" or \"socks5\""),
                ))
            }
        };
        let (tls, session_cache) =
            match (mode.terminates_tls(), v.tls) {
                (true, Some(t)) => {
                    let (cfg, entries) = self.tls(&f("tls"), t)?;
                    (Some(cfg), entries)
                }
                (true, None) => {
                    return Err(self.err(
                        f("tls"),
                        format!(
                            "mode {:?} needs a [vserver.tls] table with certificates",
                            v.mode
                        ),
                    ))
                }
                (false, Some(_)) => return Err(self.err(
                    f("tls"),
                    "only a vserver with mode = \"tls\" or \"socks5\" takes a [vserver.tls] table",
                )),
                (false, None) => (None, 0),
            };
        let socks = match (mode, &v.socks) {
            (Mode::Socks5, Some(s)) => {
                let client_certs = tls.as_ref().is_some_and(|t| t.client_auth.is_some());
                let cfg = self.socks(&f("socks"), s, client_certs, dp)?;
                Some(std::sync::Arc::new(cfg))
            }
            (Mode::Socks5, None) => {
                return Err(self.err(
                    f("socks"),
                    "mode \"socks5\" needs a [vserver.socks] table (auth, allow)",
                ))
            }
            (_, Some(_)) => {
                return Err(self.err(
                    f("socks"),
                    "only a vserver with mode = \"socks5\" takes a [vserver.socks] table",
                ))
            }
            (_, None) => None,
        };
        if mode == Mode::Socks5 {
            // Its clients name their targets: none of the backend settings apply.
            for (set, name) in [
                (!v.backends.is_empty(), "backends"),
                (v.balance.is_some(), "balance"),
                (v.health.is_some(), "health"),
                (v.proxy_protocol.is_some(), "proxy_protocol"),
                (v.backend_connect.is_some(), "backend_connect"),
            ] {
                if set {
                    return Err(self.err(
                        f(name),
                        "a socks5 vserver's clients choose their targets (within [vserver.socks] allow/deny): it has no backends",
                    ));
                }
            }
        }
        let transmit = match (mode, &v.transmit) {
            (Mode::Tls | Mode::Socks5, t) => self.transmit(&f("transmit"), t.as_ref().unwrap_or(&RawTransmit::default()))?,
            (Mode::Tcp, None) => TransmitConfig::default(),
            (Mode::Tcp, Some(_)) => {
                return Err(self.err(
                    f("transmit"),
                    "only a vserver with mode = \"tls\" seals records; a tcp vserver forwards bytes as they come",
                ))
            }
        };
        let listen = self.listen(i, &v.listen, mode, tls.as_deref(), before, dp.address)?;
        let backends = if mode == Mode::Socks5 {
            Vec::new()
        } else {
            self.backends(i, &v.backends, dp)?
        };
        let balance = match v.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_connections") => Balance::LeastConnections,
            Some(o) => {
                return Err(self.err(
                    f("balance"),
                    format!(
                    "{o:?} is not a method; use \"round_robin\" (default) or \"least_connections\""
                ),
                ))
            }
        };
        let health = match &v.health {
            None => None,
            Some(h) => Some(self.health(&f("health"), h)?),
        };
        let backend_tls = match (&v.backend_tls, mode) {
            (None, _) => None,
            (Some(t), Mode::Tls | Mode::Tcp) => Some(std::sync::Arc::new(self.backend_tls(
                &f("backend_tls"),
                t,
                &backends,
            )?)),
            (Some(_), Mode::Socks5) => {
                return Err(self.err(
                    f("backend_tls"),
                    "a socks5 vserver's clients choose their targets: it has no backends",
                ))
            }
        };
        Ok(Vserver {
            name: v.name,
            listen,
            mode,
            backends,
            balance,
            health,
            tls,
            socks,
            session_cache,
            transmit,
            proxy_protocol: v.proxy_protocol.unwrap_or(false),
            backend_connect: self.backend_connect(i, v.backend_connect.as_deref(), mode)?,
            backend_tls,
        })
    }

    /// `vserver[i].backend_connect`: "accept", "handshake" or "request" (default) for a
    /// `tls` vserver; a `tcp` vserver connects at accept.
    fn backend_connect(
        &self,
        i: usize,
        v: Option<&str>,
        mode: Mode,
    ) -> Result<BackendConnect, ConfigError> {
        let field = format!("vserver[{i}].backend_connect");
        let when = match v {
            None if mode == Mode::Tcp => return Ok(BackendConnect::Accept),
            None => return Ok(BackendConnect::default()),
            Some("accept") => BackendConnect::Accept,
            Some("handshake") => BackendConnect::Handshake,
            Some("request") => BackendConnect::Request,
            Some(o) => {
                return Err(self.err(
                    field,
                    format!(
                    "{o:?} is not a moment; use \"accept\", \"handshake\" or \"request\" (default)"
                ),
                ))
            }
        };
        if mode == Mode::Tcp && when != BackendConnect::Accept {
            return Err(self.err(
                field,
                "a tcp vserver connects when the client is accepted (its client may wait for the server to speak first)",
            ));
        }
        Ok(when)
    }

    /// `vserver[i].listen`: the data plane's address and a port below the ephemeral
    /// range, shared only among `tls` vservers whose server names SNI tells apart.
    fn listen(
        &self,
        i: usize,
        text: &str,
        mode: Mode,
        tls: Option<&tls::ServerConfig>,
        before: &[Vserver],
        address: Ipv4Addr,
    ) -> Result<SocketAddrV4, ConfigError> {
        let f = |name: &str| format!("vserver[{i}].{name}");
        let listen: SocketAddrV4 = text.parse().map_err(|_| {
            self.err(
                f("listen"),
                format!("{:?} is not an IPv4 address:port", text),
            )
        })?;
        if *listen.ip() != address {
            return Err(self.err(
                f("listen"),
                format!("{} is not the data plane's address {address}", listen.ip()),
            ));
        }
        if listen.port() == 0 || listen.port() >= dataplane::steer::EPHEMERAL_FIRST {
            return Err(self.err(f("listen"), format!("port {} must be 1..{} (higher ports are the appliance's own for backend connections)", listen.port(), dataplane::steer::EPHEMERAL_FIRST)));
        }
        let sharing: Vec<&Vserver> = before
            .iter()
            .filter(|o| o.listen.port() == listen.port())
            .collect();
        if let Some(o) = sharing
            .iter()
            .find(|o| o.mode != Mode::Tls || mode != Mode::Tls)
        {
            return Err(self.err(
                f("listen"),
                format!(
                    "port {} is already used by vserver {:?}; only vservers with mode = \"tls\" share a listen address (SNI chooses among them)",
                    listen.port(),
                    o.name
                ),
            ));
        }
        // SNI must be able to tell them apart: no name served twice.
        if let Some(mine) = tls {
            for o in &sharing {
                let theirs = o.tls.as_ref().map(|t| &t.sites[..]).unwrap_or(&[]);
                let clash = mine.sites.iter().flat_map(|s| &s.names).find(|n| {
                    theirs
                        .iter()
                        .flat_map(|s| &s.names)
                        .any(|m| m.eq_ignore_ascii_case(n))
                });
                if let Some(n) = clash {
                    return Err(self.err(
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
        Ok(listen)
    }

    /// `vserver[i].backends`: at least one, none twice, none the appliance itself, and
    /// each in the data plane's subnet unless there is a gateway.
    fn backends(
        &self,
        i: usize,
        list: &[toml::Value],
        dp: &DataplaneConfig,
    ) -> Result<Vec<Backend>, ConfigError> {
        let (address, prefix_len, gateway) = (dp.address, dp.prefix_len, dp.gateway);
        let f = |name: &str| format!("vserver[{i}].{name}");
        if list.is_empty() {
            return Err(self.err(f("backends"), "needs at least one backend address:port"));
        }
        let mut backends: Vec<Backend> = Vec::new();
        for (j, b) in list.iter().enumerate() {
            let fb = format!("vserver[{i}].backends[{j}]");
            let be = self.backend(&fb, b)?;
            let a = be.addr;
            if *a.ip() == address {
                return Err(self.err(&fb, format!("{a} is the appliance itself")));
            }
            if gateway.is_none() && !in_subnet(*a.ip(), address, prefix_len) {
                return Err(self.err(
                    &fb,
                    format!(
                        "{a} is outside {address}/{prefix_len} and dataplane.gateway is not set"
                    ),
                ));
            }
            if backends.iter().any(|o| o.addr == a) {
                return Err(self.err(
                    &fb,
                    format!("{a} is listed twice; give it a weight instead"),
                ));
            }
            backends.push(be);
        }
        Ok(backends)
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
            error_limit: match (h.observe.as_deref(), h.error_limit) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(self.err(f("error_limit"), "only with observe = \"layer4\""))
                }
                (Some("layer4"), n) => Some(self.int_in(&f("error_limit"), n, 10u32, 1, 1000)?),
                (Some(o), _) => {
                    return Err(self.err(
                        f("observe"),
                        format!(
                            "{o:?} is not observed; use \"layer4\" (refusals, resets, timeouts)"
                        ),
                    ))
                }
            },
        })
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
}
