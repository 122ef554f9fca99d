//! `[vserver.backend_tls]`: TLS towards a vserver's backends:
//! the trust store and the name each backend's certificate must carry, versions,
//! suites, ALPN, session reuse. Everything is checked and built here, once per
//! configuration: the connections only pick their backend's client configuration.
//!
//! The client role speaks TLS 1.2 and 1.3 (the backend chooses), with a client
//! certificate (`certificate`, loaded once; its Certificate messages are
//! precomputed). `tls` vservers re-encrypt; `tcp` vservers originate TLS for their
//! plaintext clients.

use std::sync::Arc;

use crypto_offload::ServerVerifier;
use tls::msgs::suite::is_tls13;

use super::raw::RawBackendTls;
use super::vserver::Backend;
use super::{Checker, ConfigError};

/// A vserver's TLS towards its backends.
#[derive(Debug)]
pub struct BackendTls {
    /// One client configuration per backend, in the order of `Vserver::backends`:
    /// they differ only in the name their verifier checks (`server_name`, or the
    /// backend's IP address when none is given).
    pub per_backend: Vec<Arc<tls::ClientConfig>>,
    /// The name sent as SNI and checked, if configured.
    pub server_name: Option<String>,
    /// Whether backend certificates are verified (`verify = false` is for tests).
    pub verify: bool,
    /// Each core keeps the newest ticket of each backend and offers it (resumption).
    pub session_reuse: bool,
}

impl Checker<'_> {
    /// `[vserver.backend_tls]` of a vserver with these `backends`.
    pub(super) fn backend_tls(
        &self,
        field: &str,
        t: &RawBackendTls,
        backends: &[Backend],
    ) -> Result<BackendTls, ConfigError> {
        let f = |name: &str| format!("{field}.{name}");
        let (mut v12, mut v13) = (t.versions.is_none(), t.versions.is_none());
        for (i, v) in t.versions.iter().flatten().enumerate() {
            match v.as_str() {
                "1.3" => v13 = true,
                "1.2" => v12 = true,
                o => {
                    return Err(self.err(
                        format!("{field}.versions[{i}]"),
                        format!("{o:?} is not a version; use \"1.2\" and/or \"1.3\""),
                    ))
                }
            }
        }
        if !v12 && !v13 {
            return Err(self.err(f("versions"), "needs at least one version"));
        }
        let mut cfg = tls::ClientConfig {
            // The default: every suite the engine has, of the enabled versions.
            suites: tls::msgs::suite::ALL
                .iter()
                .copied()
                .filter(|&c| if is_tls13(c) { v13 } else { v12 })
                .collect(),
            ..tls::ClientConfig::default()
        };
        if let Some(list) = &t.suites {
            let mut suites = Vec::new();
            for (i, name) in list.iter().enumerate() {
                let fi = format!("{field}.suites[{i}]");
                let code = tls::msgs::suite::ALL
                    .iter()
                    .copied()
                    .find(|&c| tls::msgs::suite::name(c) == name)
                    .ok_or_else(|| {
                        self.err(&fi, format!("{name:?} is not a suite the engine has"))
                    })?;
                let (v, enabled) = if is_tls13(code) {
                    ("1.3", v13)
                } else {
                    ("1.2", v12)
                };
                if !enabled {
                    return Err(self.err(
                        &fi,
                        format!("{name:?} is a TLS {v} suite, and TLS {v} is not in versions"),
                    ));
                }
                suites.push(code);
            }
            for (on, v, is) in [(v12, "1.2", false), (v13, "1.3", true)] {
                if on && !suites.iter().any(|&c| is_tls13(c) == is) {
                    return Err(self.err(
                        f("suites"),
                        format!("TLS {v} is enabled but no TLS {v} suite is listed (or leave TLS {v} out of versions)"),
                    ));
                }
            }
            cfg.suites = suites;
        }
        for (i, a) in t.alpn.iter().flatten().enumerate() {
            if a.is_empty() || a.len() > 255 {
                return Err(self.err(
                    format!("{field}.alpn[{i}]"),
                    "a protocol name is 1 to 255 bytes",
                ));
            }
            cfg.alpn.push(a.as_bytes().to_vec());
        }
        if let Some(n) = &t.server_name {
            if n.starts_with("*.") {
                return Err(self.err(f("server_name"), "a host name, not a wildcard"));
            }
            super::tls::check_server_name(n).map_err(|why| self.err(f("server_name"), why))?;
            cfg.server_name = Some(n.to_ascii_lowercase());
        }
        let verify = t.verify.unwrap_or(true);
        let ca = match (&t.ca, verify) {
            (Some(path), true) => Some(self.read(f("ca"), path)?),
            (None, true) => {
                return Err(self.err(
                    f("ca"),
                    "needs the CA bundle that backend certificates are verified against (or verify = false, for tests only)",
                ))
            }
            (Some(_), false) => {
                return Err(self.err(f("ca"), "is not used with verify = false; remove one"))
            }
            (None, false) => {
                log::warn!(
                    "{}: {field}: verify = false: backend certificates are not checked, so anyone on the backend network can read and change the traffic",
                    self.file
                );
                None
            }
        };
        if let Some(c) = &t.certificate {
            let chain = self.read(f("certificate.chain"), &c.chain)?;
            let key = self.read(f("certificate.key"), &c.key)?;
            let ck = tls::CertifiedKey::from_pem(&chain, &key)
                .map_err(|e| self.err(f("certificate"), e.to_string()))?;
            cfg.certificate = Some(Arc::new(ck));
        }
        cfg.validate().map_err(|e| self.err(field, e))?;
        let mut per_backend = Vec::with_capacity(backends.len());
        for b in backends {
            let mut c = cfg.clone();
            if let Some(pem) = &ca {
                let name = match &cfg.server_name {
                    Some(n) => n.clone(),
                    None => b.addr.ip().to_string(),
                };
                let v = ServerVerifier::new(Some(pem), &name)
                    .map_err(|e| self.err(f("ca"), e.to_string()))?;
                c.verifier = Some(Arc::new(v));
            }
            per_backend.push(Arc::new(c));
        }
        Ok(BackendTls {
            per_backend,
            server_name: cfg.server_name.clone(),
            verify,
            session_reuse: t.session_reuse.unwrap_or(true),
        })
    }
}
