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
//! Time is the caller's milliseconds on any clock that does not go backwards; the keys
//! never leave the process, so the clock only has to agree with itself.

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
}

/// The ticket key ring; shared (`Arc`) by every connection of a vserver.
pub struct TicketKeys {
    rotation_ms: u64,
    lifetime_ms: u64,
    /// Oldest first; the last one seals.
    ring: Mutex<Vec<TicketKey>>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys")
            .field("rotation_ms", &self.rotation_ms)
            .field("lifetime_ms", &self.lifetime_ms)
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
        }
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

    /// Drop keys whose last ticket has expired; make a new sealing key when due.
    /// Returns how many keys the ring holds.
    pub fn rotate(&self, now_ms: u64) -> Result<usize, CryptoError> {
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
            ring.push(TicketKey {
                name,
                key: Secret::new(key),
                created_ms: now_ms,
            });
        }
        Ok(ring.len())
    }

    /// Seal `plaintext` into a ticket with the current key (rotating first if due).
    pub fn seal(&self, now_ms: u64, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.rotate(now_ms)?;
        let (name, key) = {
            let ring = self.ring();
            let k = ring
                .last()
                .ok_or_else(|| CryptoError::Library("empty ticket key ring".into()))?;
            (k.name, k.key.clone())
        };
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let mut t = Vec::with_capacity(TICKET_OVERHEAD + plaintext.len());
        t.extend_from_slice(&name);
        t.extend_from_slice(&nonce);
        t.extend_from_slice(plaintext);
        let mut tag = [0u8; TAG_LEN];
        let body = NAME_LEN + NONCE_LEN;
        AeadKey::new(AeadAlg::Aes256Gcm, key.bytes(), true)?.seal(
            &nonce,
            &name,
            &mut t[body..],
            &mut tag,
        )?;
        t.extend_from_slice(&tag);
        Ok(t)
    }

    /// Open a ticket: `None` when it is malformed, forged, or its key has left the ring.
    pub fn open(&self, now_ms: u64, ticket: &[u8]) -> Option<Secret> {
        if ticket.len() < TICKET_OVERHEAD {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let key = {
            let ring = self.ring();
            let keep = self.rotation_ms.saturating_add(self.lifetime_ms);
            ring.iter()
                .find(|k| k.name == name && now_ms.saturating_sub(k.created_ms) < keep)?
                .key
                .clone()
        };
        let mut buf = Secret::new(ct.to_vec());
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().ok()?;
        AeadKey::new(AeadAlg::Aes256Gcm, key.bytes(), false)
            .ok()?
            .open(nonce, name, buf.bytes_mut(), tag)
            .ok()?;
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
