//! Crypto for the appliance, over OpenSSL's libcrypto: the primitives ([`prim`]), the
//! job model ([`job`]) and the pool that runs jobs ([`pool`]).
//!
//! What it owns: every OpenSSL type in the appliance, the one primitive OpenSSL 3.0
//! lacks, ML-KEM-768 (from `libcrux-ml-kem`) for the post-quantum hybrid group, and a
//! second software backend for a primitive OpenSSL 3.0 is slow at: X25519 on AWS-LC
//! (`aws-lc-rs`), chosen per process ([`Primitives`], `[crypto] primitives`); OpenSSL is
//! the default and the only route to providers and engines. Keys, cipher contexts and hash
//! states leave this crate only as opaque types ([`SigningKey`], [`EphemeralKey`],
//! [`AeadKey`], [`TranscriptHash`]) or as [`Secret`] bytes that are zeroized on drop and
//! never printed. Work is a [`Job`], run by [`run`] on the calling core (inline mode) or
//! by the worker [`Pool`] ([`pool`]: bounded queues, a non-blocking [`CoreLink`] per
//! poll-mode core, faulty workers replaced). A TLS handshake step is a [`job::Call`]:
//! the `tls` crate defines it (the protocol, its key schedules and Finished framing, is
//! that crate's), this one runs it. It also
//! keeps the session ticket key ring ([`TicketKeys`]) and the trusted
//! client-certificate issuers ([`CaStore`]), and loads OpenSSL providers and engines
//! ([`device`]), reporting which one runs each operation; an accelerator's provider can
//! also run in a library context of its own with workers of its own
//! ([`device::Device`], [`DeviceWorkers`]).
//!
//! Record protection runs as a direct call on an [`AeadKey`] from the engine, or in
//! batches across connections as a record job ([`records`]: the keys and record
//! buffers move into the job and back).
//!
//! The [`ServerVerifier`] checks a server's chain and name for the TLS client role.
//!
//! What it must not do: know about connections, sockets or the data plane, define the
//! TLS protocol's steps, or block a poll-mode core.

pub mod datagram;
pub mod device;
pub mod job;
#[cfg(test)]
mod kat;
pub mod ocsp;
pub mod password;
pub mod pool;
pub mod prim;
pub mod records;
pub mod ticket;

pub use job::{run, Done, Job};
pub use pool::{
    Busy, Completion, CoreLink, DeviceWorkers, Pool, PoolConfig, WorkerSnapshot, WorkerStats,
};
pub use prim::{
    primitives, use_primitives, AeadAlg, AeadKey, CaStore, CryptoError, EphemeralKey, Group,
    HashAlg, KeyKind, Primitives, Secret, ServerVerifier, SigAlg, SigningKey, TranscriptHash,
    TAG_LEN,
};
pub use records::{AeadBatch, AeadOp, RecordJob, RecordWork};
pub use ticket::{SourcedKey, TicketKeyAge, TicketKeySource, TicketKeys};
