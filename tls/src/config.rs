//! Server configuration: sites (SNI names with their certificates and ALPN), versions,
//! suites and groups. Everything a handshake reuses is built here once: the TLS 1.2
//! and TLS 1.3 Certificate messages of every certificate are encoded at configuration
//! time and shared by every connection (method 2 of the design).

use std::sync::Arc;

use crypto_offload::prim::{certificate_names, load_chain_pem};
use crypto_offload::{CaStore, CryptoError, KeyKind, SigningKey};

use crate::msgs::{
    certificate12, certificate13, certificate_request12, certificate_request13, group, suite,
    CLIENT_SCHEMES12_SHA256, CLIENT_SCHEMES12_SHA384, CLIENT_SCHEMES13, SERVER_HELLO_DONE,
};
use crate::session::Resumption;

/// A certificate chain with its private key and its precomputed messages.
#[derive(Debug)]
pub struct CertifiedKey {
    pub key: Arc<SigningKey>,
    pub kind: KeyKind,
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// DNS names of the leaf (lower case; may start with `*.`).
    pub names: Vec<String>,
    /// The TLS 1.2 Certificate handshake message.
    pub cert12: Arc<[u8]>,
    /// The TLS 1.3 Certificate handshake message (plaintext, before record protection).
    pub cert13: Arc<[u8]>,
    /// ServerHelloDone (TLS 1.2), shared like the Certificate it follows.
    pub server_hello_done: Arc<[u8]>,
    /// An OCSP response to staple when a client asks (RFC 6066 §8), if configured.
    pub staple: Option<Arc<Staple>>,
}

/// A stapled OCSP response: the messages that carry it, precomputed, and whether it
/// may be stapled now (the caller re-checks against its clock: [`Staple::refresh`];
/// the engine reads no clock).
#[derive(Debug)]
pub struct Staple {
    /// TLS 1.2: the CertificateStatus message.
    pub status12: Arc<[u8]>,
    /// TLS 1.3: the Certificate message with the response in the leaf's entry.
    pub cert13: Arc<[u8]>,
    pub validity: crypto_offload::ocsp::OcspValidity,
    valid: std::sync::atomic::AtomicBool,
}

impl Staple {
    /// Whether it is stapled now.
    pub fn valid(&self) -> bool {
        self.valid.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Re-checks its validity at `now_unix` (seconds); returns whether that changed.
    pub fn refresh(&self, now_unix: i64) -> bool {
        let v = self.validity.valid_at(now_unix);
        self.valid.swap(v, std::sync::atomic::Ordering::Relaxed) != v
    }
}

impl CertifiedKey {
    /// From a PEM chain (leaf first) and a PEM private key; the key must be the leaf's.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, CryptoError> {
        let chain = load_chain_pem(chain_pem)?;
        let key = SigningKey::from_pem(key_pem)?;
        Self::new(chain, key)
    }

    pub fn new(chain: Vec<Vec<u8>>, key: SigningKey) -> Result<Self, CryptoError> {
        let leaf = chain
            .first()
            .ok_or_else(|| CryptoError::Load("empty certificate chain".into()))?;
        if !key.matches_certificate(leaf)? {
            return Err(CryptoError::Load(
                "the private key does not belong to the first certificate".into(),
            ));
        }
        let names = certificate_names(leaf)?;
        Ok(CertifiedKey {
            kind: key.kind(),
            key: Arc::new(key),
            cert12: certificate12(&chain).into(),
            cert13: certificate13(&chain).into(),
            server_hello_done: SERVER_HELLO_DONE.to_vec().into(),
            names,
            chain,
            staple: None,
        })
    }

    /// Staples `der` (a DER OCSP response about the leaf, "good"; the chain must hold
    /// the issuer) when clients ask; `now_unix` decides whether it is valid already.
    pub fn with_ocsp(mut self, der: &[u8], now_unix: i64) -> Result<Self, CryptoError> {
        let validity = crypto_offload::ocsp::check_response(der, &self.chain)?;
        self.staple = Some(Arc::new(Staple {
            status12: crate::msgs::certificate_status12(der).into(),
            cert13: crate::msgs::certificate13_stapled(&self.chain, Some(der)).into(),
            validity,
            valid: std::sync::atomic::AtomicBool::new(validity.valid_at(now_unix)),
        }));
        Ok(self)
    }
}

/// One name-based site: the certificates it may present and the ALPN protocols it
/// serves, in preference order.
#[derive(Debug, Clone)]
pub struct Site {
    /// Names matched against SNI; by default the first certificate's names.
    pub names: Vec<String>,
    pub certs: Vec<Arc<CertifiedKey>>,
    /// Empty: ALPN is not negotiated.
    pub alpn: Vec<Vec<u8>>,
}

impl Site {
    pub fn new(certs: Vec<Arc<CertifiedKey>>) -> Self {
        let names = certs.iter().flat_map(|c| c.names.iter().cloned()).collect();
        Site {
            names,
            certs,
            alpn: Vec::new(),
        }
    }

    /// Whether this site serves `host` (exact, or one label under a `*.` wildcard).
    pub fn serves(&self, host: &[u8]) -> bool {
        self.match_rank(host) != NameMatch::None
    }

    /// How this site's names match `host`: an exact name beats a wildcard.
    pub fn match_rank(&self, host: &[u8]) -> NameMatch {
        let host = host.strip_suffix(b".").unwrap_or(host);
        let mut best = NameMatch::None;
        for n in &self.names {
            let n = n.as_bytes();
            if let Some(suffix) = n.strip_prefix(b"*") {
                if host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && !host[..host.len() - suffix.len()].contains(&b'.')
                {
                    best = NameMatch::Wildcard;
                }
            } else if host.eq_ignore_ascii_case(n) {
                return NameMatch::Exact;
            }
        }
        best
    }
}

/// How well a name matches a site ([`Site::match_rank`]); ordered, better is greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameMatch {
    None,
    Wildcard,
    Exact,
}

/// The best match for `host` among `sites`, tagged with whatever the caller
/// enumerates them by: an exact name beats a wildcard, and the first of equals wins.
pub(crate) fn best_match<'a, K>(
    sites: impl IntoIterator<Item = (K, &'a Site)>,
    host: &[u8],
) -> Option<K> {
    let mut best: Option<(NameMatch, K)> = None;
    for (k, site) in sites {
        let rank = site.match_rank(host);
        if rank != NameMatch::None && best.as_ref().is_none_or(|(b, _)| rank > *b) {
            best = Some((rank, k));
        }
    }
    best.map(|(_, k)| k)
}

/// Several configurations on one listening address (the appliance's vservers that
/// share a `listen`): the ClientHello's SNI chooses one before anything is
/// negotiated, and the connection then runs exactly as if it had been made with it:
/// its versions, suites, certificates, client authentication and session store.
/// An exact name beats a wildcard across all of them; the first configuration is the
/// default when SNI is absent or matches no name.
#[derive(Debug, Clone)]
pub struct SniRouter {
    configs: Vec<Arc<ServerConfig>>,
}

impl SniRouter {
    pub fn new(configs: Vec<Arc<ServerConfig>>) -> Result<Self, String> {
        if configs.is_empty() {
            return Err("an SNI router needs at least one configuration".into());
        }
        Ok(SniRouter { configs })
    }

    pub fn configs(&self) -> &[Arc<ServerConfig>] {
        &self.configs
    }

    /// The index of the configuration for the client's server name.
    pub fn choose(&self, sni: Option<&[u8]>) -> usize {
        let sites = self
            .configs
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.sites.iter().map(move |s| (i, s)));
        sni.and_then(|host| best_match(sites, host)).unwrap_or(0)
    }
}

/// The engine's configuration, shared (`Arc`) by every connection.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The first site is the default when SNI is absent or matches nothing.
    pub sites: Vec<Site>,
    pub tls12: bool,
    pub tls13: bool,
    /// TLS 1.3 suites in server preference order.
    pub suites13: Vec<u16>,
    /// TLS 1.2 suites in server preference order.
    pub suites12: Vec<u16>,
    /// Groups in server preference order.
    pub groups: Vec<u16>,
    /// Milliseconds from the first byte to the end of the handshake.
    pub handshake_timeout_ms: u64,
    /// TLS 1.3: pad inner plaintexts to a multiple of this many bytes (0: no padding).
    pub record_padding: usize,
    /// Session IDs, tickets and their settings.
    pub resumption: Resumption,
    /// Ask clients for a certificate (full handshakes; a resumed session keeps the
    /// identity it was made with).
    pub client_auth: Option<Arc<ClientAuth>>,
}

/// Client certificate authentication: the trusted CAs and the CertificateRequest
/// messages, encoded once (method 2 of the design, like the server's Certificate).
#[derive(Debug)]
pub struct ClientAuth {
    pub roots: Arc<CaStore>,
    /// Refuse clients without a certificate (else the handshake goes on anonymously).
    pub required: bool,
    pub request13: Arc<[u8]>,
    /// TLS 1.2, one per suite hash (SHA-256, SHA-384).
    pub request12_sha256: Arc<[u8]>,
    pub request12_sha384: Arc<[u8]>,
}

impl ClientAuth {
    /// From a PEM bundle of the CAs that issue client certificates.
    pub fn from_pem(ca_bundle: &[u8], required: bool) -> Result<Self, CryptoError> {
        let roots = CaStore::from_pem(ca_bundle)?;
        let names = roots.names();
        Ok(ClientAuth {
            request13: certificate_request13(&CLIENT_SCHEMES13, names).into(),
            request12_sha256: certificate_request12(&CLIENT_SCHEMES12_SHA256, names).into(),
            request12_sha384: certificate_request12(&CLIENT_SCHEMES12_SHA384, names).into(),
            roots: Arc::new(roots),
            required,
        })
    }
}

pub const DEFAULT_SUITES13: [u16; 3] = [
    suite::TLS13_AES_128_GCM_SHA256,
    suite::TLS13_AES_256_GCM_SHA384,
    suite::TLS13_CHACHA20_POLY1305_SHA256,
];

pub const DEFAULT_SUITES12: [u16; 6] = [
    suite::ECDHE_ECDSA_AES128_GCM_SHA256,
    suite::ECDHE_RSA_AES128_GCM_SHA256,
    suite::ECDHE_ECDSA_AES256_GCM_SHA384,
    suite::ECDHE_RSA_AES256_GCM_SHA384,
    suite::ECDHE_ECDSA_CHACHA20_POLY1305,
    suite::ECDHE_RSA_CHACHA20_POLY1305,
];

/// Every group the engine speaks, in the default order of preference: the
/// post-quantum hybrid first (TLS 1.3 only; a TLS 1.2 handshake skips it), then X25519
/// and P-256 (what nearly every client sends a share for), then the larger and slower
/// curves by cost (X448 about 6× X25519, P-521 7×, P-384 20× in OpenSSL 3.0: see
/// BENCHMARKS.md, key exchange per group).
pub const DEFAULT_GROUPS: [u16; 6] = group::ALL;

impl ServerConfig {
    /// A configuration with the defaults: TLS 1.2 and 1.3, every supported suite and
    /// group, a 10 s handshake timeout, no record padding, resumption as
    /// [`Resumption::default`] says.
    pub fn new(sites: Vec<Site>) -> Result<Self, String> {
        let cfg = ServerConfig {
            sites,
            tls12: true,
            tls13: true,
            suites13: DEFAULT_SUITES13.to_vec(),
            suites12: DEFAULT_SUITES12.to_vec(),
            groups: DEFAULT_GROUPS.to_vec(),
            handshake_timeout_ms: 10_000,
            record_padding: 0,
            resumption: Resumption::default(),
            client_auth: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the engine relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.sites.is_empty() || self.sites.iter().any(|s| s.certs.is_empty()) {
            return Err("every site needs at least one certificate".into());
        }
        if !self.tls12 && !self.tls13 {
            return Err("no protocol version enabled".into());
        }
        if let Some(s) = self.suites13.iter().find(|s| !DEFAULT_SUITES13.contains(s)) {
            return Err(format!("unsupported TLS 1.3 suite {s:#06x}"));
        }
        if let Some(s) = self.suites12.iter().find(|s| !DEFAULT_SUITES12.contains(s)) {
            return Err(format!("unsupported TLS 1.2 suite {s:#06x}"));
        }
        if let Some(g) = self.groups.iter().find(|g| !DEFAULT_GROUPS.contains(g)) {
            return Err(format!("unsupported group {g}"));
        }
        if self.groups.is_empty() {
            return Err("no groups enabled".into());
        }
        if self.tls13 && self.suites13.is_empty() || self.tls12 && self.suites12.is_empty() {
            return Err("a version is enabled with no suites".into());
        }
        // RFC 8446 §4.6.1: a ticket lives at most seven days.
        if self.resumption.lifetime_s > 604_800 {
            return Err("session lifetime over 7 days (604800 s)".into());
        }
        Ok(())
    }
}
