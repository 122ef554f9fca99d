//! `[vserver.socks]` of a `socks5` vserver: which authentication methods it takes
//! (RFC 1929 username/password against a users file of Argon2 hashes, the TLS client
//! certificate, or none), and the allow/deny policy by CIDR and port for CONNECT
//! targets.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use super::raw::RawSocks;
use super::{Checker, ConfigError};

/// A users file is at most this big (a million users of ~100 bytes).
const MAX_USERS_FILE: u64 = 128 << 20;

/// The checked `[vserver.socks]`.
#[derive(Debug, Clone)]
pub struct SocksConfig {
    /// Method 0x00 is offered: clients need no credentials.
    pub auth_none: bool,
    /// Method 0x02 (RFC 1929) against [`SocksConfig::users`].
    pub auth_password: bool,
    /// A client certificate verified by the TLS handshake is the identity (the
    /// vserver's `[vserver.tls] client_auth` must be on): such a client is selected
    /// method 0x00.
    pub auth_certificate: bool,
    pub users: Arc<Users>,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    /// Accept unprotected RFC 1928 UDP beside secure datagrams (UDP ASSOCIATE).
    pub plain_udp: bool,
    /// Secure datagrams' replay window, in datagrams (64..=8192).
    pub replay_window: u32,
    /// The data plane's address, subnet and gateway: what CONNECT can reach.
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// Users and their password hashes (PHC strings).
#[derive(Default)]
pub struct Users(HashMap<Vec<u8>, Arc<str>>);

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({} entries)", self.0.len())
    }
}

impl Users {
    /// The stored hash of `user`.
    pub fn hash(&self, user: &[u8]) -> Option<&Arc<str>> {
        self.0.get(user)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads `name:hash` lines (blank lines and `#` comments skipped); an error names
    /// the line.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = n + 1;
            let Some((name, hash)) = line.split_once(':') else {
                return Err(format!("line {at}: expected NAME:HASH"));
            };
            if name.is_empty() || name.len() > 255 {
                return Err(format!(
                    "line {at}: a user name is 1 to 255 bytes (RFC 1929)"
                ));
            }
            crypto_offload::password::valid_hash(hash)
                .map_err(|e| format!("line {at} (user {name:?}): not an Argon2 PHC hash: {e}"))?;
            if users
                .insert(name.as_bytes().to_vec(), Arc::<str>::from(hash))
                .is_some()
            {
                return Err(format!("line {at}: user {name:?} is listed twice"));
            }
        }
        Ok(Users(users))
    }
}

/// One policy entry: an IPv4 network and, optionally, one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub net: Ipv4Addr,
    pub prefix: u8,
    pub port: Option<u16>,
}

impl Rule {
    /// `A.B.C.D/N` or `A.B.C.D/N:PORT` (a bare address is /32).
    pub fn parse(s: &str) -> Result<Rule, String> {
        let (net, port) = match s.rsplit_once(':') {
            Some((n, p)) => (
                n,
                Some(
                    p.parse::<u16>()
                        .ok()
                        .filter(|&p| p > 0)
                        .ok_or_else(|| format!("{p:?} is not a port 1..65535"))?,
                ),
            ),
            None => (s, None),
        };
        let (addr, prefix) = match net.split_once('/') {
            Some((a, p)) => (
                a,
                p.parse::<u8>()
                    .ok()
                    .filter(|&p| p <= 32)
                    .ok_or_else(|| format!("{p:?} is not a prefix length 0..32"))?,
            ),
            None => (net, 32),
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let masked = u32::from(addr) & mask(prefix);
        if masked != u32::from(addr) {
            return Err(format!(
                "{addr}/{prefix} has host bits set; the network is {}/{prefix}",
                Ipv4Addr::from(masked)
            ));
        }
        Ok(Rule {
            net: addr,
            prefix,
            port,
        })
    }

    pub fn matches(&self, a: SocketAddrV4) -> bool {
        u32::from(*a.ip()) & mask(self.prefix) == u32::from(self.net)
            && self.port.is_none_or(|p| p == a.port())
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl SocksConfig {
    /// Whether CONNECT may reach `a`: allowed by a rule, and denied by none.
    pub fn allowed(&self, a: SocketAddrV4) -> bool {
        self.allow.iter().any(|r| r.matches(a)) && !self.deny.iter().any(|r| r.matches(a))
    }

    /// Whether the data plane has a route to `ip` (its subnet, or a gateway), and it
    /// is not the appliance itself.
    pub fn routable(&self, ip: Ipv4Addr) -> bool {
        ip != self.address
            && !ip.is_unspecified()
            && !ip.is_broadcast()
            && !ip.is_multicast()
            && (self.gateway.is_some() || netstack::in_subnet(ip, self.address, self.prefix_len))
    }
}

impl Checker<'_> {
    /// `vserver[i].socks` (`field`), given whether the vserver's TLS verifies client
    /// certificates.
    pub(super) fn socks(
        &self,
        field: &str,
        raw: &RawSocks,
        client_certs: bool,
        dp: &super::DataplaneConfig,
    ) -> Result<SocksConfig, ConfigError> {
        let (mut none, mut password, mut certificate) = (false, false, false);
        if raw.auth.is_empty() {
            return Err(self.err(
                format!("{field}.auth"),
                "list at least one method: \"password\", \"certificate\" or \"none\"",
            ));
        }
        for (j, a) in raw.auth.iter().enumerate() {
            let slot = match a.as_str() {
                "none" => &mut none,
                "password" => &mut password,
                "certificate" => &mut certificate,
                o => {
                    return Err(self.err(
                        format!("{field}.auth[{j}]"),
                        format!(
                            "{o:?} is not a method; use \"password\", \"certificate\" or \"none\""
                        ),
                    ))
                }
            };
            if std::mem::replace(slot, true) {
                return Err(self.err(
                    format!("{field}.auth[{j}]"),
                    format!("{a:?} is listed twice"),
                ));
            }
        }
        if none && (password || certificate) {
            return Err(self.err(
                format!("{field}.auth"),
                "\"none\" lets every client in: it cannot be combined with other methods",
            ));
        }
        if certificate && !client_certs {
            return Err(self.err(
                format!("{field}.auth"),
                "\"certificate\" needs client certificates: set client_auth and client_ca in [vserver.tls]",
            ));
        }
        let users = match (&raw.users_file, password) {
            (Some(p), true) => {
                let f = format!("{field}.users_file");
                let base = Path::new(self.file).parent().unwrap_or(Path::new(""));
                let bytes = super::read_bounded(&base.join(p), MAX_USERS_FILE)
                    .map_err(|e| self.err(&f, format!("cannot read {p:?}: {e}")))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| self.err(&f, format!("{p:?} is not UTF-8 text")))?;
                let users = Users::parse(&text).map_err(|e| self.err(&f, format!("{p}: {e}")))?;
                if users.is_empty() {
                    return Err(self.err(&f, format!("{p:?} lists no user")));
                }
                users
            }
            (None, true) => {
                return Err(self.err(
                    format!("{field}.users_file"),
                    "\"password\" needs a users_file (lines NAME:ARGON2-HASH; `appliancectl hash-password` makes them)",
                ))
            }
            (Some(_), false) => {
                return Err(self.err(
                    format!("{field}.users_file"),
                    "a users_file is only read with the \"password\" method",
                ))
            }
            (None, false) => Users::default(),
        };
        let rules = |name: &str, list: &[String]| -> Result<Vec<Rule>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(j, r)| {
                    Rule::parse(r).map_err(|e| self.err(format!("{field}.{name}[{j}]"), e))
                })
                .collect()
        };
        let allow = rules("allow", &raw.allow)?;
        if allow.is_empty() {
            return Err(self.err(
                format!("{field}.allow"),
                "list the targets clients may reach (CIDR, optionally :port; \"0.0.0.0/0\" for all): an open proxy is never the default",
            ));
        }
        let deny = rules("deny", &raw.deny)?;
        let replay_window = match raw.replay_window {
            None => 64,
            Some(w) if (64..=8192).contains(&w) => w as u32,
            Some(w) => {
                return Err(self.err(
                    format!("{field}.replay_window"),
                    format!("{w} is not 64..8192 datagrams"),
                ))
            }
        };
        Ok(SocksConfig {
            auth_none: none,
            auth_password: password,
            auth_certificate: certificate,
            users: Arc::new(users),
            allow,
            deny,
            plain_udp: raw.plain_udp.unwrap_or(false),
            replay_window,
            address: dp.address,
            prefix_len: dp.prefix_len,
            gateway: dp.gateway,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_match_and_name_their_mistakes() {
        let r = Rule::parse("10.78.0.0/24").unwrap();
        assert!(r.matches("10.78.0.9:80".parse().unwrap()));
        assert!(!r.matches("10.78.1.9:80".parse().unwrap()));
        let p = Rule::parse("192.0.2.10/32:53").unwrap();
        assert!(p.matches("192.0.2.10:53".parse().unwrap()));
        assert!(!p.matches("192.0.2.10:54".parse().unwrap()));
        assert_eq!(Rule::parse("192.0.2.10").unwrap().prefix, 32);
        assert!(Rule::parse("0.0.0.0/0")
            .unwrap()
            .matches("1.2.3.4:5".parse().unwrap()));
        for (bad, says) in [
            ("10.78.0.1/24", "host bits"),
            ("10.78.0.0/33", "prefix"),
            ("10.78.0.0/24:0", "port"),
            ("10.78.0.0/24:http", "port"),
            ("example.com/32", "IPv4"),
        ] {
            let e = Rule::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn users_files_name_the_bad_line() {
        let h = crypto_offload::password::hash(b"pw").unwrap();
        let u = Users::parse(&format!("# users\n\nalice:{h}\nbob:{h}\n")).unwrap();
        assert_eq!(u.len(), 2);
        assert!(u.hash(b"alice").is_some() && u.hash(b"carol").is_none());
        for (text, says) in [
            (
                format!("alice:{h}\nalice:{h}"),
                "line 2: user \"alice\" is listed twice",
            ),
            (
                "alice:secret".to_string(),
                "line 1 (user \"alice\"): not an Argon2",
            ),
            ("alice".to_string(), "line 1: expected NAME:HASH"),
            (format!(":{h}"), "line 1: a user name"),
        ] {
            let e = Users::parse(&text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
