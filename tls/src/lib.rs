//! The appliance's TLS engine: a sans-IO TLS 1.2 and 1.3 server, and a TLS 1.2 and
//! 1.3 client role ([`client`]) for TLS towards backends and the load generator.
//!
//! What it owns: the record layer and the connection state both roles share (`conn`),
//! the handshake messages and their parsers, the server and client state machines of
//! both versions, the protocol's crypto steps as job definitions ([`jobs`]: key
//! schedules, the TLS 1.2 PRF, Finished framing, tickets; `crypto-offload` only runs
//! them), the keying material exporters ([`exporter`]), alerts, record offload for both
//! roles ([`offload`]), and the two methods the appliance is built around: handshake
//! transcripts kept as bytes and digested once in a crypto job
//! (shared precomputed messages are referred to, not copied), and certificate flights
//! encoded once at configuration time and written with the ServerHello in one write.
//!
//! What it must not do: touch sockets, threads, clocks or queues, or name an OpenSSL
//! type. It takes bytes and a time in milliseconds, and gives back bytes, crypto
//! [`crypto_offload::Job`]s and a deadline; see [`ServerConn`] for how to drive it.
//! Primitives come from `crypto-offload`: handshake steps go to it as jobs; record
//! protection as direct calls on opaque keys, or, with record offload on ([`offload`]),
//! as record work the caller batches with other connections' into record jobs.
//!
//! Several configurations may share one listener through an [`SniRouter`]: the
//! ClientHello's name chooses one before anything is negotiated.
//!
//! Not built yet: 0-RTT (early data is never accepted).

pub mod client;
pub mod codec;
pub mod config;
mod conn;
#[cfg(feature = "hostile")]
pub mod craft;
pub mod error;
pub mod exporter;
pub mod jobs;
pub mod msgs;
pub mod offload;
pub mod record;
pub mod server;
pub mod session;
mod tls12;
mod tls13;

pub use client::{ClientConfig, ClientConn, ClientInfo, Ticket};
pub use config::{CertifiedKey, ClientAuth, NameMatch, ServerConfig, Site, SniRouter};
pub use error::{Error, ErrorClass};
pub use exporter::Exporter;
pub use jobs::client13::KeyShare;
pub use server::{suite_aead, HandshakeInfo, Resumed, Sealed, ServerConn};
pub use session::{LocalStore, Lookup, PendingLookup, PskMode, Resumption, Session, SessionStore};
