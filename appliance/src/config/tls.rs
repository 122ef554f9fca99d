//! `[vserver.tls]`: certificates and server names, ALPN, versions, suites, groups,
//! timeouts and padding, resumption (session cache, tickets, PSK modes), client
//! certificates.

use std::path::Path;
use std::time::Duration;

/// The largest certificate chain or key file read (a long chain is a few tens of KiB).
const MAX_PEM_FILE: u64 = 1 << 20;

use super::raw::RawTls;
use super::{Checker, ConfigError};

impl Checker<'_> {
    /// A `[vserver.tls]` table: certificates (paths relative to the config file),
    /// versions, ALPN, handshake timeout, record padding.
    /// Also returns how many TLS 1.2 sessions (by ID) it keeps (`session_cache`, 0 for
    /// none): the daemon gives it its table in the session store.
    pub(super) fn tls(
        &self,
        field: &str,
        t: RawTls,
    ) -> Result<(std::sync::Arc<tls::ServerConfig>, usize), ConfigError> {
        let site = self.site(field, &t)?;
        let mut cfg = tls::ServerConfig::new(vec![site]).map_err(|e| self.err(field, e))?;
        self.versions(field, &t, &mut cfg)?;
        self.suites(field, &t, &mut cfg)?;
        self.groups(field, &t, &mut cfg)?;
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
        let session_cache = self.int_in(
            &format!("{field}.session_cache"),
            t.session_cache,
            20_000usize,
            0,
            10_000_000,
        )?;
        cfg.resumption = self.resumption(field, &t)?;
        self.client_auth(field, &t, &mut cfg)?;
        cfg.validate().map_err(|e| self.err(field, e))?;
        Ok((std::sync::Arc::new(cfg), session_cache))
    }

    /// The site: its certificates, read and paired with their keys; the server names
    /// SNI matches (the certificates' own when not given); ALPN protocols.
    fn site(&self, field: &str, t: &RawTls) -> Result<tls::Site, ConfigError> {
        if t.certificates.is_empty() {
            return Err(self.err(
                format!("{field}.certificates"),
                "needs at least one { chain, key } pair",
            ));
        }
        let mut certs = Vec::new();
        for (i, c) in t.certificates.iter().enumerate() {
            let fc = format!("{field}.certificates[{i}]");
            let chain = self.read(format!("{fc}.chain"), &c.chain)?;
            let key = self.read(format!("{fc}.key"), &c.key)?;
            let mut ck = tls::CertifiedKey::from_pem(&chain, &key)
                .map_err(|e| self.err(&fc, e.to_string()))?;
            if let Some(path) = &c.ocsp {
                let f = format!("{fc}.ocsp");
                let der = self.read(f.clone(), path)?;
                ck = ck
                    .with_ocsp(&der, crate::unix_now())
                    .map_err(|e| self.err(&f, format!("{path}: {e}")))?;
                if let Some(st) = &ck.staple {
                    if !st.valid() {
                        log::warn!(
                            "{}: {f}: {path} is outside its validity (nextUpdate passed, or not yet issued); it is not stapled until it is replaced and reloaded",
                            self.file
                        );
                    }
                }
            }
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
        Ok(site)
    }

    /// A file the configuration names: a relative path is relative to the config file.
    /// At most [`MAX_PEM_FILE`] bytes: a path to a device or a huge file is refused,
    /// not read for ever.
    pub(super) fn read(&self, f: String, p: &str) -> Result<Vec<u8>, ConfigError> {
        let base = Path::new(self.file).parent().unwrap_or(Path::new(""));
        super::read_bounded(&base.join(p), MAX_PEM_FILE)
            .map_err(|e| self.err(f, format!("cannot read {p:?}: {e}")))
    }

    /// `versions`: "1.2" and/or "1.3" (both when not given).
    fn versions(
        &self,
        field: &str,
        t: &RawTls,
        cfg: &mut tls::ServerConfig,
    ) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// `suites`: IANA names, either version, in preference order; each enabled version needs one.
    fn suites(
        &self,
        field: &str,
        t: &RawTls,
        cfg: &mut tls::ServerConfig,
    ) -> Result<(), ConfigError> {
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
                let dest = if tls::msgs::suite::is_tls13(code) {
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
        Ok(())
    }

    /// `groups`: key exchange groups in preference order.
    fn groups(
        &self,
        field: &str,
        t: &RawTls,
        cfg: &mut tls::ServerConfig,
    ) -> Result<(), ConfigError> {
        if let Some(list) = &t.groups {
            let mut groups = Vec::new();
            for (i, name) in list.iter().enumerate() {
                use tls::msgs::group;
                let code = match name.as_str() {
                    "x25519" | "X25519" => group::X25519,
                    "x25519mlkem768" | "X25519MLKEM768" => group::X25519MLKEM768,
                    "secp256r1" | "P-256" | "prime256v1" => group::SECP256R1,
                    "secp384r1" | "P-384" => group::SECP384R1,
                    "secp521r1" | "P-521" => group::SECP521R1,
                    "x448" | "X448" => group::X448,
                    o => {
                        return Err(self.err(
                            format!("{field}.groups[{i}]"),
                            format!("{o:?} is not a group the engine has; use \"x25519mlkem768\" (the post-quantum hybrid), \"x25519\", \"secp256r1\" (P-256), \"secp384r1\" (P-384), \"secp521r1\" (P-521) or \"x448\""),
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
        Ok(())
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
        // The session-ID store is the daemon's (see `crate::sessions`): it is given
        // to the vserver when the store runs.
        Ok(tls::Resumption {
            store: None,
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

    /// `client_auth` ("off", "optional", "required") and `client_ca`, which go together.
    fn client_auth(
        &self,
        field: &str,
        t: &RawTls,
        cfg: &mut tls::ServerConfig,
    ) -> Result<(), ConfigError> {
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
                let pem = self.read(format!("{field}.client_ca"), path)?;
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
        Ok(())
    }
}

/// A DNS name as SNI carries it, or a `*.` wildcard over one label.
pub(super) fn check_server_name(n: &str) -> Result<(), String> {
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
