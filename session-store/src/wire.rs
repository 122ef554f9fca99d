//! The cluster wire format: every message the peer tier sends, its encoder and its parser.
//!
//! # Layout
//! ```text
//! magic "SS"(2) | version(1) = 1 | type(1) | sender(4) | incarnation(8) | seq(8) | body | mac(16)
//! ```
//! All integers are big-endian. `mac` is HMAC-SHA256 (truncated to 16 bytes, as in
//! RFC 4868) under the cluster key's message subkey ([`crate::seal`]) over everything
//! before it: a node without the key can neither forge nor alter a message. `sender` is
//! the sending node's id ([`crate::node_id`]), `incarnation` the Unix ms it started at
//! (a restarted node is a new incarnation), and `seq` the sender's sequence number:
//! for ADD/UPDATE/DELETE/PURGE (the data stream) the reliable stream's number, gap-free
//! per incarnation; for every other type a separate control counter that receivers
//! check against a replay window.
//!
//! Bodies (`<n>` = a length or count prefix of n bytes):
//! ```text
//! record    = table(3) key<1> expires_ms(8) updated_ms(8) origin(4) has_value(1) [sealed<2>]
//! view      = node(4) incarnation(8) upto(8)
//! scope     = 0 | 1 table(3)
//! 1 Add       record (with a value)        8 SyncRequest sync_id(8)
//! 2 Update    record (with a value)        9 SyncChunk   sync_id(8) index(4) record<2>..
//! 3 Delete    record (without a value)    10 SyncDone    sync_id(8) chunks(4) view<1>.. purge<1>..
//! 4 Purge     scope updated_ms(8) origin(4)  (purge = scope updated_ms(8) origin(4))
//! 5 Ack       to(4) incarnation(8) upto(8) seq(8)<1>..
//! 6 Nack      to(4) incarnation(8) (first(8) last(8))<1>..
//! 7 Heartbeat last_seq(8) state(1) name<1> view<1>..
//! 11 Get      req(8) table(3) key<1>      12 GetReply req(8) has_record(1) [record]
//! 13 SyncAck  sync_id(8) index(4)         14 Gone     to(4) incarnation(8) below(8)
//! ```
//! Record values travel sealed (AEAD, [`crate::seal`]); keys, expiries and versions are
//! visible on the management network but authenticated.
//!
//! # Parsing
//! [`Message::decode`] checks the MAC before it reads a body byte, then parses the whole
//! message: every malformed input (short, wrong magic or version, unknown type, a count
//! over its limit, a flag other than 0/1, an empty NACK range, bytes left over) is an
//! error, never a panic. The encoding is canonical: a message that parses re-encodes to
//! the same bytes (the fuzz target `cluster_wire` checks it).

use std::fmt;

use crypto_offload::prim::{ct_eq, hmac, HashAlg};

use crate::local::{PurgeScope, TableId, Version, MAX_KEY, MAX_VALUE, TABLE_ID_LEN};
use crate::seal::{ClusterKey, SEAL_OVERHEAD};

/// Bytes of the header.
pub const HEADER_LEN: usize = 24;
/// Bytes of the MAC trailer.
pub const MAC_LEN: usize = 16;
const MAGIC: [u8; 2] = *b"SS";
const VERSION: u8 = 1;
/// Longest node name carried in a heartbeat.
pub const MAX_NAME: usize = 64;
/// Most entries in a heartbeat's or sync's view, an ACK's seq list, a NACK's ranges, a
/// sync's purge list.
pub const MAX_LIST: usize = 64;
/// Most records in one sync chunk.
pub const MAX_CHUNK_RECORDS: usize = 1024;
/// The `index` a [`Body::SyncAck`] carries to acknowledge [`Body::SyncDone`].
pub const SYNC_DONE_INDEX: u32 = u32::MAX;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("shorter than a header and MAC")]
    Short,
    #[error("not a cluster message (magic)")]
    Magic,
    #[error("unknown protocol version {0}")]
    Version(u8),
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("MAC does not verify")]
    BadMac,
    #[error("truncated in {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("{0} over its limit")]
    TooMany(&'static str),
    #[error("bytes after the body")]
    Trailing,
    #[error("cannot compute the MAC")]
    Crypto,
}

/// Who sent a message, in which life, with which sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub sender: u32,
    pub incarnation: u64,
    pub seq: u64,
}

/// A record as it travels: the value sealed, or absent for a tombstone.
#[derive(Clone, PartialEq, Eq)]
pub struct WireRecord {
    pub table: TableId,
    pub key: Vec<u8>,
    pub expires_ms: u64,
    pub version: Version,
    pub sealed: Option<Vec<u8>>,
}

impl fmt::Debug for WireRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireRecord")
            .field("table", &self.table)
            .field("key_len", &self.key.len())
            .field("expires_ms", &self.expires_ms)
            .field("version", &self.version)
            .field("sealed_len", &self.sealed.as_ref().map(Vec::len))
            .finish()
    }
}

/// What a node knows it has received from one sender: everything up to `upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewEntry {
    pub node: u32,
    pub incarnation: u64,
    pub upto: u64,
}

/// Whether a node is still copying the cache or serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Syncing,
    Ready,
}

/// A message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Add(WireRecord),
    Update(WireRecord),
    Delete(WireRecord),
    Purge {
        scope: PurgeScope,
        version: Version,
    },
    /// To `to` about its stream `incarnation`: everything up to `upto` received, and
    /// these later ones too (positive acknowledgement of ADDs).
    Ack {
        to: u32,
        incarnation: u64,
        upto: u64,
        seqs: Vec<u64>,
    },
    /// To `to`: these ranges (inclusive) of its stream `incarnation` are missing.
    Nack {
        to: u32,
        incarnation: u64,
        ranges: Vec<(u64, u64)>,
    },
    Heartbeat {
        /// The last data sequence number the sender sent.
        last_seq: u64,
        state: NodeState,
        name: Vec<u8>,
        view: Vec<ViewEntry>,
    },
    SyncRequest {
        sync_id: u64,
    },
    SyncChunk {
        sync_id: u64,
        index: u32,
        records: Vec<WireRecord>,
    },
    SyncDone {
        sync_id: u64,
        chunks: u32,
        /// What the snapshot included from each sender, when it started.
        view: Vec<ViewEntry>,
        purges: Vec<(PurgeScope, Version)>,
    },
    Get {
        req: u64,
        table: TableId,
        key: Vec<u8>,
    },
    GetReply {
        req: u64,
        record: Option<WireRecord>,
    },
    SyncAck {
        sync_id: u64,
        index: u32,
    },
    /// To `to`: its NACK asked for messages below `below` that are no longer kept.
    Gone {
        to: u32,
        incarnation: u64,
        below: u64,
    },
}

impl Body {
    fn type_byte(&self) -> u8 {
        match self {
            Body::Add(_) => 1,
            Body::Update(_) => 2,
            Body::Delete(_) => 3,
            Body::Purge { .. } => 4,
            Body::Ack { .. } => 5,
            Body::Nack { .. } => 6,
            Body::Heartbeat { .. } => 7,
            Body::SyncRequest { .. } => 8,
            Body::SyncChunk { .. } => 9,
            Body::SyncDone { .. } => 10,
            Body::Get { .. } => 11,
            Body::GetReply { .. } => 12,
            Body::SyncAck { .. } => 13,
            Body::Gone { .. } => 14,
        }
    }

    /// Whether it belongs to the sender's reliable data stream (gap-free `seq`).
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Body::Add(_) | Body::Update(_) | Body::Delete(_) | Body::Purge { .. }
        )
    }
}

/// A whole cluster message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub body: Body,
}

impl Message {
    /// Encode and authenticate with the cluster key's message subkey.
    pub fn encode(&self, key: &ClusterKey) -> Result<Vec<u8>, WireError> {
        let mut v = self.encode_unauthenticated();
        let mac = hmac(HashAlg::Sha256, key.mac_key(), &[&v]).map_err(|_| WireError::Crypto)?;
        v.extend_from_slice(&mac.bytes()[..MAC_LEN]);
        Ok(v)
    }

    /// Header and body without the MAC (the fuzz target and tests re-encode with it).
    pub fn encode_unauthenticated(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(128);
        v.extend_from_slice(&MAGIC);
        v.push(VERSION);
        v.push(self.body.type_byte());
        v.extend_from_slice(&self.header.sender.to_be_bytes());
        v.extend_from_slice(&self.header.incarnation.to_be_bytes());
        v.extend_from_slice(&self.header.seq.to_be_bytes());
        encode_body(&self.body, &mut v);
        v
    }

    /// Check the MAC, then parse.
    pub fn decode(bytes: &[u8], key: &ClusterKey) -> Result<Message, WireError> {
        if bytes.len() < HEADER_LEN + MAC_LEN {
            return Err(WireError::Short);
        }
        let (signed, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let want =
            hmac(HashAlg::Sha256, key.mac_key(), &[signed]).map_err(|_| WireError::Crypto)?;
        if !ct_eq(&want.bytes()[..MAC_LEN], mac) {
            return Err(WireError::BadMac);
        }
        Message::parse_unauthenticated(signed)
    }

    /// Parse header and body with no MAC (already checked, or a fuzzer's input).
    pub fn parse_unauthenticated(b: &[u8]) -> Result<Message, WireError> {
        if b.len() < HEADER_LEN {
            return Err(WireError::Short);
        }
        let mut r = Reader { b, pos: 0 };
        if r.take(2, "magic")? != MAGIC {
            return Err(WireError::Magic);
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let ty = r.u8("type")?;
        let header = Header {
            sender: r.u32("sender")?,
            incarnation: r.u64("incarnation")?,
            seq: r.u64("seq")?,
        };
        let body = parse_body(ty, &mut r)?;
        if r.pos != b.len() {
            return Err(WireError::Trailing);
        }
        Ok(Message { header, body })
    }
}

fn put_table(v: &mut Vec<u8>, t: TableId) {
    v.extend_from_slice(&t.to_bytes());
}

fn put_version(v: &mut Vec<u8>, ver: Version) {
    v.extend_from_slice(&ver.updated_ms.to_be_bytes());
    v.extend_from_slice(&ver.origin.to_be_bytes());
}

fn put_bytes8(v: &mut Vec<u8>, b: &[u8]) {
    // Lengths are bounded by construction (MAX_KEY, MAX_NAME); truncation keeps the
    // encoding well-formed if a caller passes more.
    let b = &b[..b.len().min(255)];
    v.push(b.len() as u8);
    v.extend_from_slice(b);
}

fn put_count8(v: &mut Vec<u8>, n: usize) {
    v.push(n.min(MAX_LIST) as u8);
}

fn put_scope(v: &mut Vec<u8>, s: PurgeScope) {
    match s {
        PurgeScope::All => v.push(0),
        PurgeScope::Table(t) => {
            v.push(1);
            put_table(v, t);
        }
    }
}

fn put_view(v: &mut Vec<u8>, view: &[ViewEntry]) {
    let view = &view[..view.len().min(MAX_LIST)];
    put_count8(v, view.len());
    for e in view {
        v.extend_from_slice(&e.node.to_be_bytes());
        v.extend_from_slice(&e.incarnation.to_be_bytes());
        v.extend_from_slice(&e.upto.to_be_bytes());
    }
}

fn put_record(v: &mut Vec<u8>, r: &WireRecord) {
    put_table(v, r.table);
    put_bytes8(v, &r.key);
    v.extend_from_slice(&r.expires_ms.to_be_bytes());
    put_version(v, r.version);
    match &r.sealed {
        None => v.push(0),
        Some(s) => {
            let s = &s[..s.len().min(u16::MAX as usize)];
            v.push(1);
            v.extend_from_slice(&(s.len() as u16).to_be_bytes());
            v.extend_from_slice(s);
        }
    }
}

fn encode_body(body: &Body, v: &mut Vec<u8>) {
    match body {
        Body::Add(r) | Body::Update(r) | Body::Delete(r) => put_record(v, r),
        Body::Purge { scope, version } => {
            put_scope(v, *scope);
            put_version(v, *version);
        }
        Body::Ack {
            to,
            incarnation,
            upto,
            seqs,
        } => {
            v.extend_from_slice(&to.to_be_bytes());
            v.extend_from_slice(&incarnation.to_be_bytes());
            v.extend_from_slice(&upto.to_be_bytes());
            let seqs = &seqs[..seqs.len().min(MAX_LIST)];
            put_count8(v, seqs.len());
            for s in seqs {
                v.extend_from_slice(&s.to_be_bytes());
            }
        }
        Body::Nack {
            to,
            incarnation,
            ranges,
        } => {
            v.extend_from_slice(&to.to_be_bytes());
            v.extend_from_slice(&incarnation.to_be_bytes());
            let ranges = &ranges[..ranges.len().min(MAX_LIST)];
            put_count8(v, ranges.len());
            for (a, b) in ranges {
                v.extend_from_slice(&a.to_be_bytes());
                v.extend_from_slice(&b.to_be_bytes());
            }
        }
        Body::Heartbeat {
            last_seq,
            state,
            name,
            view,
        } => {
            v.extend_from_slice(&last_seq.to_be_bytes());
            v.push(match state {
                NodeState::Syncing => 0,
                NodeState::Ready => 1,
            });
            put_bytes8(v, &name[..name.len().min(MAX_NAME)]);
            put_view(v, view);
        }
        Body::SyncRequest { sync_id } => v.extend_from_slice(&sync_id.to_be_bytes()),
        Body::SyncChunk {
            sync_id,
            index,
            records,
        } => {
            v.extend_from_slice(&sync_id.to_be_bytes());
            v.extend_from_slice(&index.to_be_bytes());
            let records = &records[..records.len().min(MAX_CHUNK_RECORDS)];
            v.extend_from_slice(&(records.len() as u16).to_be_bytes());
            for r in records {
                put_record(v, r);
            }
        }
        Body::SyncDone {
            sync_id,
            chunks,
            view,
            purges,
        } => {
            v.extend_from_slice(&sync_id.to_be_bytes());
            v.extend_from_slice(&chunks.to_be_bytes());
            put_view(v, view);
            let purges = &purges[..purges.len().min(MAX_LIST)];
            put_count8(v, purges.len());
            for (s, ver) in purges {
                put_scope(v, *s);
                put_version(v, *ver);
            }
        }
        Body::Get { req, table, key } => {
            v.extend_from_slice(&req.to_be_bytes());
            put_table(v, *table);
            put_bytes8(v, key);
        }
        Body::GetReply { req, record } => {
            v.extend_from_slice(&req.to_be_bytes());
            match record {
                None => v.push(0),
                Some(r) => {
                    v.push(1);
                    put_record(v, r);
                }
            }
        }
        Body::SyncAck { sync_id, index } => {
            v.extend_from_slice(&sync_id.to_be_bytes());
            v.extend_from_slice(&index.to_be_bytes());
        }
        Body::Gone {
            to,
            incarnation,
            below,
        } => {
            v.extend_from_slice(&to.to_be_bytes());
            v.extend_from_slice(&incarnation.to_be_bytes());
            v.extend_from_slice(&below.to_be_bytes());
        }
    }
}

/// A cursor that refuses to read past the end.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated(what))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(WireError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid(what)),
        }
    }

    fn count(&mut self, what: &'static str) -> Result<usize, WireError> {
        let n = usize::from(self.u8(what)?);
        if n > MAX_LIST {
            return Err(WireError::TooMany(what));
        }
        Ok(n)
    }

    fn table(&mut self) -> Result<TableId, WireError> {
        Ok(TableId::from_bytes(self.array::<TABLE_ID_LEN>("table")?))
    }

    fn key(&mut self) -> Result<Vec<u8>, WireError> {
        let n = usize::from(self.u8("key length")?);
        if n > MAX_KEY {
            return Err(WireError::TooMany("key"));
        }
        Ok(self.take(n, "key")?.to_vec())
    }

    fn version(&mut self) -> Result<Version, WireError> {
        Ok(Version {
            updated_ms: self.u64("version")?,
            origin: self.u32("version")?,
        })
    }

    fn scope(&mut self) -> Result<PurgeScope, WireError> {
        match self.u8("scope")? {
            0 => Ok(PurgeScope::All),
            1 => Ok(PurgeScope::Table(self.table()?)),
            _ => Err(WireError::Invalid("scope")),
        }
    }

    fn view(&mut self) -> Result<Vec<ViewEntry>, WireError> {
        let n = self.count("view")?;
        (0..n)
            .map(|_| {
                Ok(ViewEntry {
                    node: self.u32("view")?,
                    incarnation: self.u64("view")?,
                    upto: self.u64("view")?,
                })
            })
            .collect()
    }

    fn record(&mut self) -> Result<WireRecord, WireError> {
        let table = self.table()?;
        let key = self.key()?;
        let expires_ms = self.u64("expiry")?;
        let version = self.version()?;
        let sealed = if self.flag("value flag")? {
            let n = usize::from(self.u16("value length")?);
            if !(SEAL_OVERHEAD..=MAX_VALUE + SEAL_OVERHEAD).contains(&n) {
                return Err(WireError::Invalid("sealed value length"));
            }
            Some(self.take(n, "value")?.to_vec())
        } else {
            None
        };
        Ok(WireRecord {
            table,
            key,
            expires_ms,
            version,
            sealed,
        })
    }
}

fn parse_body(ty: u8, r: &mut Reader<'_>) -> Result<Body, WireError> {
    Ok(match ty {
        1..=3 => {
            let rec = r.record()?;
            match (ty, rec.sealed.is_some()) {
                (1, true) => Body::Add(rec),
                (2, true) => Body::Update(rec),
                (3, false) => Body::Delete(rec),
                (3, true) => return Err(WireError::Invalid("delete with a value")),
                _ => return Err(WireError::Invalid("write without a value")),
            }
        }
        4 => Body::Purge {
            scope: r.scope()?,
            version: r.version()?,
        },
        5 => {
            let to = r.u32("ack")?;
            let incarnation = r.u64("ack")?;
            let upto = r.u64("ack")?;
            let n = r.count("ack seqs")?;
            let seqs = (0..n)
                .map(|_| r.u64("ack seqs"))
                .collect::<Result<_, _>>()?;
            Body::Ack {
                to,
                incarnation,
                upto,
                seqs,
            }
        }
        6 => {
            let to = r.u32("nack")?;
            let incarnation = r.u64("nack")?;
            let n = r.count("nack ranges")?;
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                let (a, b) = (r.u64("nack range")?, r.u64("nack range")?);
                if a > b || a == 0 {
                    return Err(WireError::Invalid("nack range"));
                }
                ranges.push((a, b));
            }
            Body::Nack {
                to,
                incarnation,
                ranges,
            }
        }
        7 => {
            let last_seq = r.u64("heartbeat")?;
            let state = match r.u8("state")? {
                0 => NodeState::Syncing,
                1 => NodeState::Ready,
                _ => return Err(WireError::Invalid("state")),
            };
            let n = usize::from(r.u8("name length")?);
            if n > MAX_NAME {
                return Err(WireError::TooMany("name"));
            }
            let name = r.take(n, "name")?.to_vec();
            Body::Heartbeat {
                last_seq,
                state,
                name,
                view: r.view()?,
            }
        }
        8 => Body::SyncRequest {
            sync_id: r.u64("sync id")?,
        },
        9 => {
            let sync_id = r.u64("sync id")?;
            let index = r.u32("chunk index")?;
            let n = usize::from(r.u16("chunk records")?);
            if n > MAX_CHUNK_RECORDS {
                return Err(WireError::TooMany("chunk records"));
            }
            let records = (0..n).map(|_| r.record()).collect::<Result<_, _>>()?;
            Body::SyncChunk {
                sync_id,
                index,
                records,
            }
        }
        10 => {
            let sync_id = r.u64("sync id")?;
            let chunks = r.u32("chunks")?;
            let view = r.view()?;
            let n = r.count("purges")?;
            let purges = (0..n)
                .map(|_| Ok((r.scope()?, r.version()?)))
                .collect::<Result<_, WireError>>()?;
            Body::SyncDone {
                sync_id,
                chunks,
                view,
                purges,
            }
        }
        11 => Body::Get {
            req: r.u64("request id")?,
            table: r.table()?,
            key: r.key()?,
        },
        12 => {
            let req = r.u64("request id")?;
            let record = if r.flag("reply flag")? {
                Some(r.record()?)
            } else {
                None
            };
            Body::GetReply { req, record }
        }
        13 => Body::SyncAck {
            sync_id: r.u64("sync id")?,
            index: r.u32("chunk index")?,
        },
        14 => Body::Gone {
            to: r.u32("gone")?,
            incarnation: r.u64("gone")?,
            below: r.u64("gone")?,
        },
        other => return Err(WireError::Type(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::Kind;

    fn key() -> ClusterKey {
        ClusterKey::from_secret(&[0x11; 32]).unwrap()
    }

    fn rec(sealed: bool) -> WireRecord {
        WireRecord {
            table: TableId {
                kind: Kind::SESSION_ID,
                vserver: 513,
            },
            key: vec![7; 32],
            expires_ms: 1_700_000_300_000,
            version: Version {
                updated_ms: 1_700_000_000_000,
                origin: 0xdead_beef,
            },
            sealed: sealed.then(|| vec![0x5a; SEAL_OVERHEAD + 48]),
        }
    }

    fn view() -> Vec<ViewEntry> {
        vec![
            ViewEntry {
                node: 1,
                incarnation: 2,
                upto: 3,
            },
            ViewEntry {
                node: 4,
                incarnation: 5,
                upto: 6,
            },
        ]
    }

    /// One message of every type.
    fn samples() -> Vec<Message> {
        let t = TableId::sessions(9);
        let v = Version {
            updated_ms: 77,
            origin: 3,
        };
        let bodies = vec![
            Body::Add(rec(true)),
            Body::Update(rec(true)),
            Body::Delete(rec(false)),
            Body::Purge {
                scope: PurgeScope::All,
                version: v,
            },
            Body::Purge {
                scope: PurgeScope::Table(t),
                version: v,
            },
            Body::Ack {
                to: 9,
                incarnation: 10,
                upto: 11,
                seqs: vec![13, 15],
            },
            Body::Nack {
                to: 9,
                incarnation: 10,
                ranges: vec![(1, 1), (5, 9)],
            },
            Body::Heartbeat {
                last_seq: 40,
                state: NodeState::Ready,
                name: b"node-a".to_vec(),
                view: view(),
            },
            Body::Heartbeat {
                last_seq: 0,
                state: NodeState::Syncing,
                name: vec![],
                view: vec![],
            },
            Body::SyncRequest { sync_id: 99 },
            Body::SyncChunk {
                sync_id: 99,
                index: 3,
                records: vec![rec(true), rec(false)],
            },
            Body::SyncDone {
                sync_id: 99,
                chunks: 4,
                view: view(),
                purges: vec![(PurgeScope::All, v), (PurgeScope::Table(t), v)],
            },
            Body::Get {
                req: 5,
                table: t,
                key: vec![1, 2, 3],
            },
            Body::GetReply {
                req: 5,
                record: Some(rec(true)),
            },
            Body::GetReply {
                req: 6,
                record: None,
            },
            Body::SyncAck {
                sync_id: 99,
                index: SYNC_DONE_INDEX,
            },
            Body::Gone {
                to: 9,
                incarnation: 10,
                below: 1000,
            },
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Message {
                header: Header {
                    sender: 0x0102_0304,
                    incarnation: 1_700_000_000_000 + i as u64,
                    seq: 1 + i as u64,
                },
                body,
            })
            .collect()
    }

    #[test]
    fn every_type_round_trips() {
        let key = key();
        let mut types = std::collections::BTreeSet::new();
        for m in samples() {
            let b = m.encode(&key).unwrap();
            assert_eq!(Message::decode(&b, &key).unwrap(), m);
            assert_eq!(b, {
                let mut u = m.encode_unauthenticated();
                u.extend_from_slice(&b[b.len() - MAC_LEN..]);
                u
            });
            types.insert(m.body.type_byte());
        }
        assert_eq!(types.len(), 14);
    }

    #[test]
    fn every_truncation_is_refused() {
        let key = key();
        for m in samples() {
            let b = m.encode(&key).unwrap();
            for n in 0..b.len() {
                assert!(
                    Message::decode(&b[..n], &key).is_err(),
                    "{:?} cut at {n}",
                    m.body
                );
            }
            // Without the MAC the parser itself refuses every cut of the body.
            let u = m.encode_unauthenticated();
            for n in 0..u.len() {
                assert!(
                    Message::parse_unauthenticated(&u[..n]).is_err(),
                    "{:?} cut at {n}",
                    m.body
                );
            }
        }
    }

    #[test]
    fn a_flipped_byte_or_a_wrong_key_is_refused() {
        let key = key();
        let other = ClusterKey::from_secret(&[0x12; 32]).unwrap();
        for m in samples() {
            let b = m.encode(&key).unwrap();
            for i in 0..b.len() {
                let mut f = b.clone();
                f[i] ^= 0x01;
                assert_eq!(
                    Message::decode(&f, &key),
                    Err(WireError::BadMac),
                    "byte {i}"
                );
            }
            assert_eq!(Message::decode(&b, &other), Err(WireError::BadMac));
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let base = Message {
            header: Header {
                sender: 1,
                incarnation: 2,
                seq: 3,
            },
            body: Body::SyncRequest { sync_id: 1 },
        };
        let mut u = base.encode_unauthenticated();
        u.push(0);
        assert_eq!(Message::parse_unauthenticated(&u), Err(WireError::Trailing));
        let mut u = base.encode_unauthenticated();
        u[0] = b'X';
        assert_eq!(Message::parse_unauthenticated(&u), Err(WireError::Magic));
        let mut u = base.encode_unauthenticated();
        u[2] = 2;
        assert_eq!(
            Message::parse_unauthenticated(&u),
            Err(WireError::Version(2))
        );
        let mut u = base.encode_unauthenticated();
        u[3] = 200;
        assert_eq!(
            Message::parse_unauthenticated(&u),
            Err(WireError::Type(200))
        );
        // An ADD with no value, a DELETE with one.
        let mut m = base.clone();
        m.body = Body::Add(rec(false));
        assert_eq!(
            Message::parse_unauthenticated(&m.encode_unauthenticated()),
            Err(WireError::Invalid("write without a value"))
        );
        m.body = Body::Delete(rec(true));
        assert!(Message::parse_unauthenticated(&m.encode_unauthenticated()).is_err());
        // A NACK range backwards or from zero.
        for ranges in [vec![(5, 4)], vec![(0, 4)]] {
            m.body = Body::Nack {
                to: 1,
                incarnation: 1,
                ranges,
            };
            assert_eq!(
                Message::parse_unauthenticated(&m.encode_unauthenticated()),
                Err(WireError::Invalid("nack range"))
            );
        }
        // A sealed value shorter than nonce and tag.
        let mut r = rec(true);
        r.sealed = Some(vec![1; SEAL_OVERHEAD - 1]);
        m.body = Body::Add(r);
        assert!(Message::parse_unauthenticated(&m.encode_unauthenticated()).is_err());
        // A count over its limit, a flag that is not 0/1, a state that is not 0/1.
        m.body = Body::Ack {
            to: 1,
            incarnation: 1,
            upto: 1,
            seqs: vec![],
        };
        let mut u = m.encode_unauthenticated();
        *u.last_mut().unwrap() = (MAX_LIST + 1) as u8;
        assert_eq!(
            Message::parse_unauthenticated(&u),
            Err(WireError::TooMany("ack seqs"))
        );
        m.body = Body::GetReply {
            req: 1,
            record: None,
        };
        let mut u = m.encode_unauthenticated();
        *u.last_mut().unwrap() = 2;
        assert_eq!(
            Message::parse_unauthenticated(&u),
            Err(WireError::Invalid("reply flag"))
        );
    }

    #[test]
    fn mutated_messages_never_panic_and_reencode_canonically() {
        // A seeded mutation loop (the fuzz target does the same without a bound).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let samples: Vec<Vec<u8>> = samples()
            .iter()
            .map(|m| m.encode_unauthenticated())
            .collect();
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut b = samples[(next() % samples.len() as u64) as usize].clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() % b.len() as u64) as usize;
                match next() % 3 {
                    0 => b[i] = next() as u8,
                    1 => b.truncate(i.max(1)),
                    _ => b.insert(i, next() as u8),
                }
            }
            if let Ok(m) = Message::parse_unauthenticated(&b) {
                assert_eq!(m.encode_unauthenticated(), b);
                parsed += 1;
            }
        }
        assert!(parsed > 100, "mutations that still parse: {parsed}");
    }
}
