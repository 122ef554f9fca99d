//! Session ticket keys: a small ring of AES-256-GCM keys, rotated on a schedule, that
//! seal resumption state into tickets only this process can open (RFC 5077 §4 suggests
//! the layout; the format is ours and nobody else parses it).
//!
//! Ticket layout: `key_name[16] || nonce[12] || ciphertext || tag[16]`, with the key
//! name as additional data. The newest key seals; every key still in the ring opens.
//! A key seals for `rotation_ms`, then stays in the ring for `lifetime_ms` more so the
//! tickets it sealed live out their lifetime; after that it is dropped (and zeroized),
//! and its tickets are refused.
//!
//! Time is the caller's Unix milliseconds. A ring of its own makes random keys that never
//! leave the process. A ring with a [`TicketKeySource`] (a cluster: every node derives
//! the same keys for the same rotation epoch from a shared secret) takes its keys from
//! it instead, so a ticket sealed on one node opens on every other; the source is asked
//! again once per rotation period, and keys it no longer lists are dropped (zeroized).

use std::sync::Mutex;

use crate::prim::{random, AeadAlg, AeadKey, CryptoError, Secret, TAG_LEN};

const NAME_LEN: usize = 16;
const NONCE_LEN: usize = 12;
/// Bytes a ticket adds to the state it seals.
pub const TICKET_OVERHEAD: usize = NAME_LEN + NONCE_LEN + TAG_LEN;

struct TicketKey {
    name: [u8; NAME_LEN],
    key: Secret,
    created_ms: u64,
    /// AES-256-GCM contexts with this key scheduled, made on first use and kept with
    /// the key (dropped, and wiped by OpenSSL, with it): a ticket costs its AEAD pass,
    /// not a key schedule too.
    sealer: Option<AeadKey>,
    opener: Option<AeadKey>,
}

impl TicketKey {
    fn new(name: [u8; NAME_LEN], key: Secret, created_ms: u64) -> Self {
        TicketKey {
            name,
            key,
            created_ms,
            sealer: None,
            opener: None,
        }
    }

    fn context(&mut self, seal: bool) -> Result<&mut AeadKey, CryptoError> {
        let slot = if seal {
            &mut self.sealer
        } else {
            &mut self.opener
        };
        Ok(match slot {
            Some(k) => k,
            None => slot.insert(AeadKey::new(AeadAlg::Aes256Gcm, self.key.bytes(), seal)?),
        })
    }
}

/// One key a [`TicketKeySource`] lists.
pub struct SourcedKey {
    pub name: [u8; NAME_LEN],
    /// 32 bytes (AES-256-GCM).
    pub key: Secret,
    /// The one that seals new tickets now (exactly one should).
    pub sealing: bool,
}

/// Where a ring's keys come from when they are not its own (see the module docs).
pub trait TicketKeySource: Send + Sync {
    /// Every key that may open a live ticket at `now_ms`, one of them marked sealing.
    fn keys(&self, now_ms: u64) -> Vec<SourcedKey>;
}

/// Which key of the ring opened a ticket ([`TicketKeys::open_aged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketKeyAge {
    /// The key that seals new tickets now.
    Sealing,
    /// An older key, kept for the tickets it sealed until they expire.
    Retiring,
}

/// The ticket key ring; shared (`Arc`) by every connection of a vserver.
pub struct TicketKeys {
    rotation_ms: u64,
    lifetime_ms: u64,
    /// Oldest first; the last one seals.
    ring: Mutex<Vec<TicketKey>>,
    /// Keys from outside, and the rotation period they were last asked in.
    source: Option<Sourced>,
}

/// A key source and the rotation period it was last asked in.
type Sourced = (Box<dyn TicketKeySource>, Mutex<Option<u64>>);

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys")
            .field("rotation_ms", &self.rotation_ms)
            .field("lifetime_ms", &self.lifetime_ms)
            .field("sourced", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// A ring that makes a new key every `rotation_ms` and honours tickets for
    /// `lifetime_ms` after they were sealed. Keys are made lazily, on first use.
    pub fn new(rotation_ms: u64, lifetime_ms: u64) -> Self {
        TicketKeys {
            rotation_ms: rotation_ms.max(1),
            lifetime_ms,
            ring: Mutex::new(Vec::new()),
            source: None,
        }
    }

    /// A ring whose keys come from `source` (asked once per rotation period).
    pub fn sourced(rotation_ms: u64, lifetime_ms: u64, source: Box<dyn TicketKeySource>) -> Self {
        TicketKeys {
            source: Some((source, Mutex::new(None))),
            ..TicketKeys::new(rotation_ms, lifetime_ms)
        }
    }

    /// Whether the keys come from a source (a cluster) rather than this process.
    pub fn is_sourced(&self) -> bool {
        self.source.is_some()
    }

    pub fn lifetime_ms(&self) -> u64 {
        self.lifetime_ms
    }

    pub fn rotation_ms(&self) -> u64 {
        self.rotation_ms
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Vec<TicketKey>> {
        // A panic while holding the lock cannot leave the ring half-updated (every
        // update is a push or a retain), so a poisoned lock is still usable.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drop keys whose last ticket has expired; make a new sealing key when due (or,
    /// with a source, take its keys once per rotation period). Returns how many keys
    /// the ring holds.
    pub fn rotate(&self, now_ms: u64) -> Result<usize, CryptoError> {
        if let Some((source, asked)) = &self.source {
            let period = now_ms / self.rotation_ms;
            let mut asked = asked.lock().unwrap_or_else(|p| p.into_inner());
            let mut ring = self.ring();
            if *asked != Some(period) || ring.is_empty() {
                let mut keys = source.keys(now_ms);
                // The sealing key goes last (the ring seals with its last key).
                keys.sort_by_key(|k| k.sealing);
                *ring = keys
                    .into_iter()
                    // Sourced keys leave by the source, not by age.
                    .map(|k| TicketKey::new(k.name, k.key, now_ms))
                    .collect();
                *asked = Some(period);
            }
            return Ok(ring.len());
        }
        let mut ring = self.ring();
        let keep = self.rotation_ms.saturating_add(self.lifetime_ms);
        ring.retain(|k| now_ms.saturating_sub(k.created_ms) < keep);
        let due = ring
            .last()
            .is_none_or(|k| now_ms.saturating_sub(k.created_ms) >= self.rotation_ms);
        if due {
            let mut name = [0u8; NAME_LEN];
            random(&mut name)?;
            let mut key = vec![0u8; 32];
            random(&mut key)?;
            ring.push(TicketKey::new(name, Secret::new(key), now_ms));
        }
        Ok(ring.len())
    }

    /// Seal `plaintext` into a ticket with the current key (rotating first if due).
    pub fn seal(&self, now_ms: u64, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.rotate(now_ms)?;
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let mut t = Vec::with_capacity(TICKET_OVERHEAD + plaintext.len());
        t.extend_from_slice(&[0; NAME_LEN]);
        t.extend_from_slice(&nonce);
        t.extend_from_slice(plaintext);
        let mut tag = [0u8; TAG_LEN];
        let body = NAME_LEN + NONCE_LEN;
        {
            let mut ring = self.ring();
            let k = ring
                .last_mut()
                .ok_or_else(|| CryptoError::Library("empty ticket key ring".into()))?;
            let name = k.name;
            t[..NAME_LEN].copy_from_slice(&name);
            k.context(true)?
                .seal(&nonce, &name, &mut t[body..], &mut tag)?;
        }
        t.extend_from_slice(&tag);
        Ok(t)
    }

    /// Open a ticket: `None` when it is malformed, forged, or its key has left the ring.
    pub fn open(&self, now_ms: u64, ticket: &[u8]) -> Option<Secret> {
        self.open_aged(now_ms, ticket).map(|(state, _)| state)
    }

    /// [`TicketKeys::open`], also saying whether the ticket's key is the one that seals
    /// now. A ticket sealed by the sealing key opens for at least the ring's lifetime
    /// from now (the key stays `rotation + lifetime` from its making, and seals for
    /// less than `rotation` of it), so a server has no reason to replace it; one sealed
    /// by an older key is the one to renew.
    pub fn open_aged(&self, now_ms: u64, ticket: &[u8]) -> Option<(Secret, TicketKeyAge)> {
        if ticket.len() < TICKET_OVERHEAD {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        if self.source.is_some() {
            self.rotate(now_ms).ok()?;
        }
        let mut buf = Secret::new(ct.to_vec());
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().ok()?;
        let mut ring = self.ring();
        let keep = self.rotation_ms.saturating_add(self.lifetime_ms);
        let last = ring.len().checked_sub(1)?;
        let (i, k) = ring.iter_mut().enumerate().find(|(_, k)| {
            k.name == name && (self.source.is_some() || now_ms.saturating_sub(k.created_ms) < keep)
        })?;
        // A ring of its own makes its next key lazily, at the next seal: its newest key
        // past its rotation time is as good as retiring already.
        let sealing = i == last
            && (self.source.is_some() || now_ms.saturating_sub(k.created_ms) < self.rotation_ms);
        k.context(false)
            .ok()?
            .open(nonce, name, buf.bytes_mut(), tag)
            .ok()?;
        let age = if sealing {
            TicketKeyAge::Sealing
        } else {
            TicketKeyAge::Retiring
        };
        Some((buf, age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_says_whether_the_tickets_key_still_seals() {
        let keys = TicketKeys::new(1_000, 5_000);
        let t = keys.seal(10_000, b"state").unwrap();
        let age = |now| {
            keys.open_aged(now, &t)
                .map(|(s, a)| (s.bytes().to_vec(), a))
        };
        assert_eq!(
            age(10_999),
            Some((b"state".to_vec(), TicketKeyAge::Sealing))
        );
        // Past its rotation time, before the ring made its next key (at the next seal).
        assert_eq!(age(11_000).map(|x| x.1), Some(TicketKeyAge::Retiring));
        let _newer = keys.seal(11_500, b"other").unwrap();
        assert_eq!(age(11_500).map(|x| x.1), Some(TicketKeyAge::Retiring));
        assert_eq!(age(15_999).map(|x| x.1), Some(TicketKeyAge::Retiring));
        assert_eq!(age(16_000), None, "its key left the ring");
    }

    #[test]
    fn seal_open_rotate_expire() {
        let keys = TicketKeys::new(1_000, 5_000);
        let t0 = keys.seal(0, b"state").unwrap();
        assert_eq!(t0.len(), 5 + TICKET_OVERHEAD);
        assert_eq!(keys.open(10, &t0).unwrap().bytes(), b"state");
        // A new key after the rotation period; the old one still opens its tickets.
        let t1 = keys.seal(1_500, b"later").unwrap();
        assert_ne!(t0[..NAME_LEN], t1[..NAME_LEN]);
        assert_eq!(keys.open(1_500, &t0).unwrap().bytes(), b"state");
        assert_eq!(keys.rotate(1_500).unwrap(), 2);
        // Past rotation + lifetime the first key is gone.
        assert!(keys.open(6_000, &t0).is_none());
        assert_eq!(keys.open(6_000, &t1).unwrap().bytes(), b"later");
        // Any change to a ticket makes it unopenable; short input is refused.
        for i in 0..t1.len() {
            let mut bad = t1.clone();
            bad[i] ^= 1;
            assert!(keys.open(1_600, &bad).is_none(), "byte {i}");
        }
        assert!(keys.open(1_600, &t1[..TICKET_OVERHEAD - 1]).is_none());
        // Another ring (another process) cannot open it.
        assert!(TicketKeys::new(1_000, 5_000).open(1_600, &t1).is_none());
    }

    /// A source that derives epoch keys from a shared byte, as a cluster derives them
    /// from its secret: key `e` seals during epoch `e`, the previous one still opens.
    struct Shared(u8);
    impl TicketKeySource for Shared {
        fn keys(&self, now_ms: u64) -> Vec<SourcedKey> {
            let cur = now_ms / 1_000;
            (cur.saturating_sub(1)..=cur)
                .map(|e| SourcedKey {
                    name: [e as u8; NAME_LEN],
                    key: Secret::new(vec![self.0 ^ e as u8; 32]),
                    sealing: e == cur,
                })
                .collect()
        }
    }

    #[test]
    fn sourced_rings_open_each_others_tickets_and_follow_the_source() {
        let a = TicketKeys::sourced(1_000, 1_000, Box::new(Shared(7)));
        let b = TicketKeys::sourced(1_000, 1_000, Box::new(Shared(7)));
        assert!(a.is_sourced());
        let t = a.seal(500, b"state").unwrap();
        // Another node with the same source opens it, and so does a later epoch.
        assert_eq!(b.open(900, &t).unwrap().bytes(), b"state");
        assert_eq!(b.open(1_500, &t).unwrap().bytes(), b"state");
        // Two epochs on, the source no longer lists the key: refused.
        assert!(b.open(2_500, &t).is_none());
        // A node with another secret cannot open it.
        assert!(TicketKeys::sourced(1_000, 1_000, Box::new(Shared(8)))
            .open(600, &t)
            .is_none());
        // Tickets sealed in the next epoch use its key.
        let t2 = a.seal(1_200, b"later").unwrap();
        assert_ne!(t[..NAME_LEN], t2[..NAME_LEN]);
        assert_eq!(b.open(1_300, &t2).unwrap().bytes(), b"later");
    }
}
