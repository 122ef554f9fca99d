//! The cluster key, the subkeys derived from it, and the sealing of record values.
//!
//! # The key file
//! One secret shared by every node (`[cluster] key_file`), 32 bytes or more: raw bytes
//! (`head -c 32 /dev/urandom`) or text (`openssl rand -hex 32`; trailing whitespace of
//! a text file is ignored, so an editor's newline does not split a cluster). The node
//! refuses a file that group or others may read or write, naming it and its mode.
//!
//! # Subkeys
//! HKDF-SHA256 (RFC 5869): `PRK = Extract(salt = "appliance session-store v1", file)`,
//! then `Expand(PRK, label, 32)` per use, so a key serves one purpose only:
//! - `"message mac"`: HMAC-SHA256 over every cluster message ([`crate::wire`]);
//! - `"record seal"`: AES-256-GCM over every record value that leaves the node, to a
//!   peer or to Redis;
//! - `"ticket seed"`: the root of every vserver's TLS ticket keys ([`ClusterKey::ticket_key`]);
//! - `"fingerprint"` (8 bytes, not secret): shown to operators so two nodes' keys can be
//!   compared without showing either.
//!
//! # Sealed values
//! `nonce(12) || ciphertext || tag(16)`, with additional data binding the table id, the
//! key, the expiry and the version (`"ss-rec1" | kind | vserver | key_len(1) | key |
//! expires_ms(8) | updated_ms(8) | origin(4)`): a sealed value moved to another key,
//! table or lifetime, or replayed as a newer version, fails to open.
//!
//! # Nonces
//! Every node seals under the same key (any node must open what another sealed), so a
//! nonce must never repeat across nodes or restarts. Nonce = `node tag(4) || counter(8)`:
//! - the tag is the node's id ([`crate::node_id`], a hash of its unique name), so two
//!   nodes never share a nonce while their names' ids differ (the peer tier detects a
//!   collision);
//! - the counter is one per process, shared by every [`Sealer`] of a [`ClusterKey`]
//!   (an atomic), incremented per seal, and starts at a random 63-bit value, so a
//!   restart does not replay the previous run's counters: two runs overlap only if their
//!   random starts fall within the number of seals between them, about `n / 2^63`;
//! - the random start also covers an id collision the operator missed, with the same
//!   odds. A clock-based start was rejected: it repeats after a clock step backwards.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crypto_offload::prim::{hkdf_expand, hkdf_extract, random, AeadAlg, AeadKey, HashAlg};
use crypto_offload::{CryptoError, Secret, TAG_LEN};

use crate::local::{TableId, Version};

/// Shortest key file accepted.
pub const MIN_KEY_LEN: usize = 32;
/// Bytes sealing adds to a value.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;
const SALT: &[u8] = b"appliance session-store v1";

/// Why a cluster key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a regular file", path.display())]
    NotFile { path: PathBuf },
    #[error("{}: mode {mode:04o}; the key file must be owner-only (chmod 600)", path.display())]
    Mode { path: PathBuf, mode: u32 },
    #[error("{}: {len} bytes; the cluster key must be {MIN_KEY_LEN} bytes or more", path.display())]
    Short { path: PathBuf, len: usize },
    #[error("cluster key derivation: {0}")]
    Crypto(String),
}

/// A sealed value that did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed value too short")]
    Short,
    #[error("sealed value does not authenticate (wrong key, table, key, expiry or version)")]
    BadTag,
    #[error("crypto library: {0}")]
    Crypto(String),
}

impl From<CryptoError> for SealError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::BadTag => SealError::BadTag,
            other => SealError::Crypto(other.to_string()),
        }
    }
}

/// The cluster secret's subkeys. Cheap to share (`Arc`); zeroized on drop; its `Debug`
/// shows the fingerprint only.
pub struct ClusterKey {
    mac: Secret,
    seal: Secret,
    ticket_seed: Secret,
    fingerprint: [u8; 8],
    /// The process's nonce counter (see the module doc), shared by its sealers.
    counter: Arc<AtomicU64>,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(fingerprint {})", self.fingerprint_hex())
    }
}

impl ClusterKey {
    /// Load the key file at `path`: owner-only, a regular file, 32 bytes or more.
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        // Checked on the open file, not the path, so the file read is the file checked.
        let meta = f.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(KeyError::NotFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut buf = Secret::new(Vec::with_capacity(meta.len().min(1 << 16) as usize + 1));
        let mut chunk = zeroize::Zeroizing::new([0u8; 512]);
        loop {
            let n = f.read(&mut chunk[..]).map_err(io)?;
            if n == 0 {
                break;
            }
            if buf.bytes().len() + n > 1 << 16 {
                break; // a key file is not megabytes; what follows adds nothing
            }
            let mut grown = Secret::new(Vec::with_capacity(buf.bytes().len() + n + 512));
            grown.extend(buf.bytes());
            grown.extend(&chunk[..n]);
            buf = grown;
        }
        let ikm = text_trimmed(buf.bytes());
        if ikm.len() < MIN_KEY_LEN {
            return Err(KeyError::Short {
                path: path.to_path_buf(),
                len: ikm.len(),
            });
        }
        ClusterKey::from_secret(ikm)
    }

    /// Derive the subkeys from key material already in memory (tests, tools). Refuses
    /// material shorter than [`MIN_KEY_LEN`].
    pub fn from_secret(ikm: &[u8]) -> Result<ClusterKey, KeyError> {
        if ikm.len() < MIN_KEY_LEN {
            return Err(KeyError::Short {
                path: PathBuf::from("<memory>"),
                len: ikm.len(),
            });
        }
        let c = |e: CryptoError| KeyError::Crypto(e.to_string());
        let prk = hkdf_extract(HashAlg::Sha256, SALT, ikm).map_err(c)?;
        let sub = |label: &[u8], len| hkdf_expand(HashAlg::Sha256, prk.bytes(), label, len);
        let fp = sub(b"fingerprint", 8).map_err(c)?;
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(fp.bytes());
        let mut start = [0u8; 8];
        random(&mut start).map_err(c)?;
        Ok(ClusterKey {
            mac: sub(b"message mac", 32).map_err(c)?,
            seal: sub(b"record seal", 32).map_err(c)?,
            ticket_seed: sub(b"ticket seed", 32).map_err(c)?,
            fingerprint,
            counter: Arc::new(AtomicU64::new(u64::from_be_bytes(start) >> 1)),
        })
    }

    /// The key that authenticates cluster messages ([`crate::wire::Message::encode`]).
    /// Secret: pass it to the codec, never print or store it.
    pub(crate) fn mac_key(&self) -> &[u8] {
        self.mac.bytes()
    }

    /// Not secret: equal on two nodes exactly when their key files derive the same keys.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// The fingerprint in hex, for `show cluster`.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A sealer for node `node_id` (its nonce tag). Each thread that seals or opens
    /// keeps its own (it holds OpenSSL contexts); all share this key's counter.
    pub fn sealer(&self, node_id: u32) -> Result<Sealer, SealError> {
        Ok(Sealer {
            tag: node_id.to_be_bytes(),
            counter: self.counter.clone(),
            seal: AeadKey::new(AeadAlg::Aes256Gcm, self.seal.bytes(), true)?,
            open: AeadKey::new(AeadAlg::Aes256Gcm, self.seal.bytes(), false)?,
        })
    }

    /// The TLS ticket key of `vserver` for rotation `epoch` (`unix_ms / rotation_ms`):
    /// a 16-byte key name and a 32-byte AES-256-GCM key, the same on every node that
    /// holds the cluster key, with no message exchanged. Name and key are separate HKDF
    /// outputs, so the name (sent in every ticket) tells nothing about the key.
    pub fn ticket_key(&self, vserver: u16, epoch: u64) -> ([u8; 16], Secret) {
        let mut info = Vec::with_capacity(32);
        info.extend_from_slice(b"ticket key");
        info.extend_from_slice(&vserver.to_be_bytes());
        info.extend_from_slice(&epoch.to_be_bytes());
        // HKDF-Expand of a 32-byte PRK to 48 bytes is two HMACs over our own inputs; it
        // fails only if the library does, and then the node would fail every handshake
        // anyway: an all-zero key would be worse than a panic, so fall back to a
        // per-process random key (tickets then open on this node only) and log it.
        match hkdf_expand(HashAlg::Sha256, self.ticket_seed.bytes(), &info, 48) {
            Ok(okm) => {
                let mut name = [0u8; 16];
                name.copy_from_slice(&okm.bytes()[..16]);
                (name, Secret::new(okm.bytes()[16..].to_vec()))
            }
            Err(e) => {
                log::error!("ticket key derivation failed ({e}); using a local random key");
                let mut name = [0u8; 16];
                let mut key = vec![0u8; 32];
                let _ = random(&mut name);
                let _ = random(&mut key);
                (name, Secret::new(key))
            }
        }
    }
}

/// One key of a vserver's cluster ticket ring (see [`ClusterKey::ticket_ring`]).
pub struct RingKey {
    pub name: [u8; 16],
    pub key: Secret,
    pub epoch: u64,
    /// Unix ms when this epoch starts sealing.
    pub from_ms: u64,
    /// Whether it is the one to seal new tickets with at the time asked.
    pub sealing: bool,
}

impl fmt::Debug for RingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingKey")
            .field("epoch", &self.epoch)
            .field("sealing", &self.sealing)
            .finish_non_exhaustive()
    }
}

impl ClusterKey {
    /// The ticket keys `vserver` needs at `now_ms`, oldest first: the current epoch's
    /// (which seals), every earlier one whose tickets may still be alive (a key seals
    /// for `rotation_ms`, its tickets live `lifetime_ms` after that), and the next
    /// epoch's, open-only, so a ticket sealed by a node whose clock runs a little ahead
    /// still opens here. Keys that fall out of this list are dropped by the ring that
    /// holds them (and zeroized with their [`Secret`]).
    pub fn ticket_ring(
        &self,
        vserver: u16,
        now_ms: u64,
        rotation_ms: u64,
        lifetime_ms: u64,
    ) -> Vec<RingKey> {
        let rot = rotation_ms.max(1);
        let cur = ticket_epoch(now_ms, rot);
        let back = lifetime_ms.div_ceil(rot);
        let first = cur.saturating_sub(back);
        (first..=cur.saturating_add(1))
            .filter(|e| (e + 1).saturating_mul(rot).saturating_add(lifetime_ms) > now_ms)
            .map(|epoch| {
                let (name, key) = self.ticket_key(vserver, epoch);
                RingKey {
                    name,
                    key,
                    epoch,
                    from_ms: epoch.saturating_mul(rot),
                    sealing: epoch == cur,
                }
            })
            .collect()
    }
}

/// The rotation epoch a ticket key for `unix_ms` belongs to.
pub fn ticket_epoch(unix_ms: u64, rotation_ms: u64) -> u64 {
    unix_ms / rotation_ms.max(1)
}

/// Seals and opens record values for one thread. `Debug` shows the node tag only.
pub struct Sealer {
    tag: [u8; 4],
    counter: Arc<AtomicU64>,
    seal: AeadKey,
    open: AeadKey,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer(tag {:02x?})", self.tag)
    }
}

fn aad(table: TableId, key: &[u8], expires_ms: u64, version: Version) -> Vec<u8> {
    let mut a = Vec::with_capacity(7 + 3 + 1 + key.len() + 20);
    a.extend_from_slice(b"ss-rec1");
    a.extend_from_slice(&table.to_bytes());
    a.push(key.len().min(255) as u8);
    a.extend_from_slice(key);
    a.extend_from_slice(&expires_ms.to_be_bytes());
    a.extend_from_slice(&version.updated_ms.to_be_bytes());
    a.extend_from_slice(&version.origin.to_be_bytes());
    a
}

impl Sealer {
    /// Seal `value` for the record `(table, key, expires_ms, version)`.
    pub fn seal(
        &mut self,
        table: TableId,
        key: &[u8],
        expires_ms: u64,
        version: Version,
        value: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.tag);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + value.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let mut tag = [0u8; TAG_LEN];
        let aad = aad(table, key, expires_ms, version);
        self.seal
            .seal(&nonce, &aad, &mut out[NONCE_LEN..], &mut tag)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Open a sealed value of the record `(table, key, expires_ms, version)`.
    pub fn open(
        &mut self,
        table: TableId,
        key: &[u8],
        expires_ms: u64,
        version: Version,
        sealed: &[u8],
    ) -> Result<Secret, SealError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(SealError::Short);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut nonce_a = [0u8; NONCE_LEN];
        nonce_a.copy_from_slice(nonce);
        let mut buf = Secret::new(ct.to_vec());
        let aad = aad(table, key, expires_ms, version);
        self.open
            .open(&nonce_a, &aad, buf.bytes_mut(), tag)
            .map_err(|_| SealError::BadTag)?;
        Ok(buf)
    }
}

/// A text key file's trailing whitespace is not key material; a binary one is used as is.
fn text_trimmed(b: &[u8]) -> &[u8] {
    let text = b
        .iter()
        .all(|c| c.is_ascii_graphic() || c.is_ascii_whitespace());
    if text {
        let end = b
            .iter()
            .rposition(|c| !c.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        &b[..end]
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::Kind;
    use std::io::Write;

    const T: TableId = TableId {
        kind: Kind::SESSION_ID,
        vserver: 3,
    };
    const V: Version = Version {
        updated_ms: 1_700_000_000_000,
        origin: 42,
    };

    fn key_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ss-seal-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn key_file_must_be_owner_only_and_long_enough() {
        let d = tmpdir("mode");
        let p = key_file(&d, "cluster.key", &[7u8; 32], 0o644);
        let e = ClusterKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("cluster.key"), "{e}");
        assert!(
            e.ends_with("cluster.key: mode 0644; the key file must be owner-only (chmod 600)"),
            "{e}"
        );
        let p = key_file(&d, "g.key", &[7u8; 32], 0o620);
        assert!(matches!(
            ClusterKey::load(&p),
            Err(KeyError::Mode { mode: 0o620, .. })
        ));
        let p = key_file(&d, "short.key", &[7u8; 31], 0o600);
        let e = ClusterKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("short.key: 31 bytes"), "{e}");
        assert!(matches!(
            ClusterKey::load(&d.join("missing.key")),
            Err(KeyError::Io { .. })
        ));
        assert!(matches!(
            ClusterKey::load(&d),
            Err(KeyError::NotFile { .. })
        ));
        let p = key_file(&d, "ok.key", &[7u8; 32], 0o600);
        assert!(ClusterKey::load(&p).is_ok());
        let p = key_file(&d, "ro.key", &[7u8; 32], 0o400);
        assert!(ClusterKey::load(&p).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn same_file_same_keys_and_text_newline_ignored() {
        let d = tmpdir("same");
        let hex = b"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let a = ClusterKey::load(&key_file(&d, "a", hex, 0o600)).unwrap();
        let mut nl = hex.to_vec();
        nl.push(b'\n');
        let b = ClusterKey::load(&key_file(&d, "b", &nl, 0o600)).unwrap();
        let c = ClusterKey::load(&key_file(&d, "c", &[1u8; 40], 0o600)).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.ticket_key(1, 5).1, b.ticket_key(1, 5).1);
        // A random key file whose last byte happens to be a newline keeps it.
        let mut bin = vec![0u8; 31];
        bin.push(b'\n');
        let e = ClusterKey::load(&key_file(&d, "bin", &bin, 0o600));
        assert!(e.is_ok(), "binary content is used as is: 32 bytes");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn seal_and_open_bind_the_record() {
        let k = ClusterKey::from_secret(&[9u8; 32]).unwrap();
        let mut a = k.sealer(1).unwrap();
        let other = ClusterKey::from_secret(&[9u8; 32]).unwrap();
        let mut b = other.sealer(2).unwrap();
        let secret = b"master secret 48 bytes........................";
        let s = a.seal(T, b"sid", 99, V, secret).unwrap();
        assert_eq!(s.len(), secret.len() + SEAL_OVERHEAD);
        assert!(!s.windows(secret.len()).any(|w| w == secret));
        // Another node with the same key file opens it.
        assert_eq!(b.open(T, b"sid", 99, V, &s).unwrap().bytes(), secret);
        // Moved to another key, table, expiry or version: refused.
        let t2 = TableId::sessions(4);
        let v2 = Version {
            updated_ms: V.updated_ms + 1,
            ..V
        };
        assert_eq!(b.open(T, b"sie", 99, V, &s), Err(SealError::BadTag));
        assert_eq!(b.open(t2, b"sid", 99, V, &s), Err(SealError::BadTag));
        assert_eq!(b.open(T, b"sid", 100, V, &s), Err(SealError::BadTag));
        assert_eq!(b.open(T, b"sid", 99, v2, &s), Err(SealError::BadTag));
        for i in 0..s.len() {
            let mut f = s.clone();
            f[i] ^= 0x40;
            assert_eq!(
                b.open(T, b"sid", 99, V, &f),
                Err(SealError::BadTag),
                "byte {i}"
            );
        }
        for n in 0..SEAL_OVERHEAD {
            assert!(b.open(T, b"sid", 99, V, &s[..n]).is_err());
        }
        // A different key file: refused.
        let mut c = ClusterKey::from_secret(&[8u8; 32])
            .unwrap()
            .sealer(1)
            .unwrap();
        assert_eq!(c.open(T, b"sid", 99, V, &s), Err(SealError::BadTag));
    }

    #[test]
    fn nonces_never_repeat() {
        let k = ClusterKey::from_secret(&[9u8; 32]).unwrap();
        let mut a1 = k.sealer(1).unwrap();
        let mut a2 = k.sealer(1).unwrap();
        let mut b = k.sealer(2).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1_000 {
            for s in [&mut a1, &mut a2, &mut b] {
                let sealed = s.seal(T, b"k", 1, V, b"v").unwrap();
                assert!(seen.insert(sealed[..NONCE_LEN].to_vec()));
            }
        }
        // Two sealers of one process share the counter; the node tag separates nodes.
        let x = a1.seal(T, b"k", 1, V, b"v").unwrap();
        let y = b.seal(T, b"k", 1, V, b"v").unwrap();
        assert_eq!(&x[..4], &1u32.to_be_bytes());
        assert_eq!(&y[..4], &2u32.to_be_bytes());
    }

    #[test]
    fn ticket_keys_agree_across_nodes_and_differ_by_vserver_and_epoch() {
        let a = ClusterKey::from_secret(&[5u8; 48]).unwrap();
        let b = ClusterKey::from_secret(&[5u8; 48]).unwrap();
        let (n1, k1) = a.ticket_key(1, 100);
        let (n2, k2) = b.ticket_key(1, 100);
        assert_eq!((n1, k1.bytes()), (n2, k2.bytes()));
        assert_eq!(k1.bytes().len(), 32);
        assert_ne!(a.ticket_key(2, 100).0, n1);
        assert_ne!(a.ticket_key(1, 101).0, n1);
        assert_ne!(a.ticket_key(1, 101).1, k1);
        assert!(!k1.bytes().starts_with(&n1));
        assert_eq!(ticket_epoch(7_200_000, 3_600_000), 2);
        assert_eq!(ticket_epoch(7_199_999, 3_600_000), 1);
        assert_eq!(ticket_epoch(5, 0), 5);
    }

    #[test]
    fn ticket_ring_holds_live_epochs_and_the_next() {
        let k = ClusterKey::from_secret(&[5u8; 32]).unwrap();
        let hour = 3_600_000;
        // 10:30 with 1 h rotation and 2 h ticket lifetime: epochs 8 and 9 still open
        // tickets (9:00-10:00 + 2 h > 10:30; 8:00-9:00 + 2 h = 11:00 > 10:30), 10 seals,
        // 11 opens for nodes ahead; 7 (ends 8:00 + 2 h = 10:00) is gone.
        let ring = k.ticket_ring(1, 10 * hour + hour / 2, hour, 2 * hour);
        let epochs: Vec<u64> = ring.iter().map(|r| r.epoch).collect();
        assert_eq!(epochs, [8, 9, 10, 11]);
        let sealing: Vec<u64> = ring.iter().filter(|r| r.sealing).map(|r| r.epoch).collect();
        assert_eq!(sealing, [10]);
        assert_eq!(ring[2].from_ms, 10 * hour);
        assert_eq!(ring[2].name, k.ticket_key(1, 10).0);
        assert!(!format!("{:?}", ring[0]).contains("key:"));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let k = ClusterKey::from_secret(&[0xabu8; 32]).unwrap();
        let d = format!("{k:?} {:?}", k.sealer(7).unwrap());
        assert!(d.contains(&k.fingerprint_hex()));
        assert!(!d.contains("abab"), "{d}");
        let (_, tk) = k.ticket_key(1, 1);
        assert_eq!(format!("{tk:?}"), "Secret(32 bytes)");
        assert!(ClusterKey::from_secret(&[1u8; 31]).is_err());
    }
}
