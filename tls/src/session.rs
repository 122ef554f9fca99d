//! Resumption: what a session remembers, how it is encoded (the same bytes go into a
//! ticket and into a session store), the store interface, and the local store.
//!
//! # The store interface
//! [`SessionStore::lookup`] must not block: it answers at once ([`Lookup::Ready`]) or
//! hands back a [`PendingLookup`] the engine polls on each [`crate::ServerConn::process`]
//! until the lookup's deadline ([`Resumption::lookup_timeout_ms`]); a lookup that has not
//! answered by then counts as a miss and the handshake goes on in full. A cluster-wide
//! store (Redis, memcached) implements the trait with its request in flight; the
//! [`LocalStore`] here always answers at once.
//!
//! # Encoding
//! `format(1) version(2) suite(2) flags(1) created_ms(8) lifetime_s(4) age_add(4)
//! sni<1> alpn<1> peer<2> secret..`: the secret (TLS 1.2 master secret, TLS 1.3 PSK)
//! runs to the end, because the crypto job that derives it appends it to the rest.
//! Stored values and ticket plaintexts are [`Secret`]s: wiped when dropped.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use crypto_offload::{Secret, TicketKeys};

use crate::codec::{put_u16, Reader};
use crate::error::Error;

const FORMAT: u8 = 1;
const FLAG_EMS: u8 = 1;

/// A resumable session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub version: u16,
    pub suite: u16,
    /// TLS 1.2: made with the extended master secret.
    pub ems: bool,
    /// When the session was made (the engine's clock) and for how long it resumes.
    pub created_ms: u64,
    pub lifetime_s: u32,
    /// TLS 1.3: ticket_age_add.
    pub age_add: u32,
    /// The server name the client asked for (lower case).
    pub sni: Option<Vec<u8>>,
    pub alpn: Option<Vec<u8>>,
    /// The client's verified identity, when it authenticated with a certificate.
    pub peer: Option<Vec<u8>>,
    /// TLS 1.2: the master secret. TLS 1.3: the PSK.
    pub secret: Secret,
}

impl Session {
    /// Everything but the secret (the job that derives the secret appends it).
    pub fn encode_state(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + self.sni.as_ref().map_or(0, |s| s.len()));
        v.push(FORMAT);
        put_u16(&mut v, self.version);
        put_u16(&mut v, self.suite);
        v.push(if self.ems { FLAG_EMS } else { 0 });
        v.extend_from_slice(&self.created_ms.to_be_bytes());
        v.extend_from_slice(&self.lifetime_s.to_be_bytes());
        v.extend_from_slice(&self.age_add.to_be_bytes());
        for field in [&self.sni, &self.alpn] {
            let f = field.as_deref().unwrap_or(&[]);
            v.push(f.len().min(255) as u8);
            v.extend_from_slice(&f[..f.len().min(255)]);
        }
        let peer = self.peer.as_deref().unwrap_or(&[]);
        let peer = &peer[..peer.len().min(u16::MAX as usize)];
        put_u16(&mut v, peer.len() as u16);
        v.extend_from_slice(peer);
        v
    }

    /// The whole session, secret included, as a store keeps it.
    pub fn encode(&self) -> Secret {
        let state = self.encode_state();
        let mut s = Secret::new(Vec::with_capacity(state.len() + self.secret.bytes().len()));
        s.extend(&state);
        s.extend(self.secret.bytes());
        s
    }

    /// Parse an encoded session. Input comes from our own tickets and store, but a
    /// shared store is another machine, so a malformed value is an error, not a panic.
    pub fn decode(b: &[u8]) -> Result<Session, Error> {
        let mut r = Reader::new(b);
        if r.u8()? != FORMAT {
            return Err(Error::Decode("session format"));
        }
        let version = r.u16()?;
        let suite = r.u16()?;
        let flags = r.u8()?;
        let created_ms = r.u64()?;
        let lifetime_s = r.u32()?;
        let age_add = r.u32()?;
        let opt = |v: &[u8]| (!v.is_empty()).then(|| v.to_vec());
        let sni = opt(r.vec8()?);
        let alpn = opt(r.vec8()?);
        let peer = opt(r.vec16()?);
        let secret = r.rest();
        if !(32..=48).contains(&secret.len()) {
            return Err(Error::Decode("session secret length"));
        }
        Ok(Session {
            version,
            suite,
            ems: flags & FLAG_EMS != 0,
            created_ms,
            lifetime_s,
            age_add,
            sni,
            alpn,
            peer,
            secret: Secret::new(secret.to_vec()),
        })
    }

    /// Whether the session may still resume at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        now_ms >= self.created_ms && now_ms - self.created_ms < u64::from(self.lifetime_s) * 1000
    }

    /// Whether a hello naming `sni` may resume it (RFC 6066 §3: the same name).
    pub fn same_name(&self, sni: Option<&[u8]>) -> bool {
        match (&self.sni, sni) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

/// The answer to a lookup: at once, or later.
pub enum Lookup {
    /// The encoded session, or `None` for a miss.
    Ready(Option<Secret>),
    Pending(Box<dyn PendingLookup>),
}

/// A lookup in flight. `poll` must not block; `None` means not answered yet.
pub trait PendingLookup: Send {
    fn poll(&mut self) -> Option<Option<Secret>>;
}

/// Where TLS 1.2 sessions are kept, by session ID.
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// Keep `session` (encoded) under `id` until `expires_ms`.
    fn put(&self, id: &[u8], session: Secret, expires_ms: u64);
    /// Start a lookup; must not block.
    fn lookup(&self, id: &[u8], now_ms: u64) -> Lookup;
    /// Sessions held now (for operators).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sessions it holds at most, if bounded (a reload keeps a store whose size is
    /// unchanged, and with it the sessions in it).
    fn capacity(&self) -> Option<usize> {
        None
    }
}

/// A bounded in-process store shared by every core: at capacity the oldest session
/// goes first. One mutex; a lookup or insert holds it for a hash-map operation.
pub struct LocalStore {
    capacity: usize,
    inner: Mutex<LocalInner>,
}

#[derive(Default)]
struct LocalInner {
    map: HashMap<Vec<u8>, (Secret, u64)>,
    /// Insertion order, for eviction.
    order: VecDeque<Vec<u8>>,
}

impl LocalStore {
    pub fn new(capacity: usize) -> Self {
        LocalStore {
            capacity: capacity.max(1),
            inner: Mutex::new(LocalInner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, LocalInner> {
        // Each update is one map or queue operation: a poisoned lock holds no torn state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({}/{})", self.len(), self.capacity)
    }
}

impl SessionStore for LocalStore {
    fn put(&self, id: &[u8], session: Secret, expires_ms: u64) {
        let mut g = self.inner();
        // The order queue also holds ids that expired out of the map; bound it too.
        while g.map.len() >= self.capacity || g.order.len() >= 2 * self.capacity {
            match g.order.pop_front() {
                Some(old) => {
                    g.map.remove(&old);
                }
                None => break,
            }
        }
        if g.map.insert(id.to_vec(), (session, expires_ms)).is_none() {
            g.order.push_back(id.to_vec());
        }
    }

    fn lookup(&self, id: &[u8], now_ms: u64) -> Lookup {
        let mut g = self.inner();
        let hit = match g.map.get(id) {
            Some((s, exp)) if now_ms < *exp => Some(s.clone()),
            Some(_) => {
                g.map.remove(id);
                None
            }
            None => None,
        };
        Lookup::Ready(hit)
    }

    fn len(&self) -> usize {
        self.inner().map.len()
    }

    fn capacity(&self) -> Option<usize> {
        Some(self.capacity)
    }
}

/// A TLS 1.3 PSK key exchange mode (RFC 8446 §4.2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PskMode {
    /// PSK only: no (EC)DHE, no forward secrecy for the resumed connection.
    PskKe = 0,
    /// PSK with (EC)DHE.
    PskDheKe = 1,
}

/// Session resumption settings.
#[derive(Debug, Clone)]
pub struct Resumption {
    /// TLS 1.2 session IDs are issued and looked up here; `None`: no session IDs.
    pub store: Option<Arc<dyn SessionStore>>,
    /// RFC 5077 tickets (TLS 1.2) and TLS 1.3 tickets; `None`: no tickets.
    pub tickets: Option<Arc<TicketKeys>>,
    /// How long a session resumes, seconds (TLS 1.3 caps it at 7 days).
    pub lifetime_s: u32,
    /// TLS 1.3 modes accepted, in preference order.
    pub psk_modes: Vec<PskMode>,
    /// How long a handshake waits for a store lookup before going on in full.
    pub lookup_timeout_ms: u64,
}

/// Default session lifetime: two hours.
pub const DEFAULT_LIFETIME_S: u32 = 7200;
/// Default ticket key rotation: hourly.
pub const DEFAULT_TICKET_ROTATION_S: u64 = 3600;

impl Default for Resumption {
    /// Session IDs in a 20,000-entry local store, tickets with hourly key rotation, a
    /// two-hour lifetime, psk_dhe_ke only, and a 5 ms store deadline.
    fn default() -> Self {
        Resumption {
            store: Some(Arc::new(LocalStore::new(20_000))),
            tickets: Some(Arc::new(TicketKeys::new(
                DEFAULT_TICKET_ROTATION_S * 1000,
                u64::from(DEFAULT_LIFETIME_S) * 1000,
            ))),
            lifetime_s: DEFAULT_LIFETIME_S,
            psk_modes: vec![PskMode::PskDheKe],
            lookup_timeout_ms: 5,
        }
    }
}

impl Resumption {
    /// No resumption at all.
    pub fn disabled() -> Self {
        Resumption {
            store: None,
            tickets: None,
            lifetime_s: 0,
            psk_modes: Vec::new(),
            lookup_timeout_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            version: 0x0303,
            suite: 0xc02b,
            ems: true,
            created_ms: 1_000,
            lifetime_s: 10,
            age_add: 7,
            sni: Some(b"a.example".to_vec()),
            alpn: Some(b"h2".to_vec()),
            peer: None,
            secret: Secret::new(vec![9; 48]),
        }
    }

    #[test]
    fn encode_decode_and_refuse_garbage() {
        let s = session();
        let e = s.encode();
        assert_eq!(Session::decode(e.bytes()).unwrap(), s);
        // Every cut that leaves less than a 32-byte secret is refused.
        for n in 0..e.bytes().len() - 16 {
            assert!(Session::decode(&e.bytes()[..n]).is_err(), "prefix {n}");
        }
        assert!(s.live(10_999) && !s.live(11_000) && !s.live(999));
        assert!(s.same_name(Some(b"A.Example")) && !s.same_name(None));
    }

    #[test]
    fn local_store_expires_and_evicts() {
        let st = LocalStore::new(2);
        st.put(b"a", Secret::new(vec![1]), 100);
        st.put(b"b", Secret::new(vec![2]), 100);
        let get = |id: &[u8], now| match st.lookup(id, now) {
            Lookup::Ready(v) => v.map(|s| s.bytes().to_vec()),
            Lookup::Pending(_) => panic!("local store answers at once"),
        };
        assert_eq!(get(b"a", 50), Some(vec![1]));
        st.put(b"c", Secret::new(vec![3]), 100); // evicts "a", the oldest
        assert_eq!(get(b"a", 50), None);
        assert_eq!(get(b"c", 50), Some(vec![3]));
        assert_eq!(get(b"b", 100), None); // expired
        assert_eq!(st.len(), 1);
    }
}
