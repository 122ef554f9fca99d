//! The TLS protocol's crypto, as job definitions: each handshake step's key schedule,
//! signatures, Finished framing and ticket sealing, for the server ([`server13`],
//! [`server12`]) and the client role ([`client13`]; the client's TLS 1.2 steps are in
//! `client::tls12`), over `crypto-offload`'s primitives ([`schedule`] has the key
//! schedules: HKDF-Expand-Label, the TLS 1.2 PRF, the Finished MACs).
//!
//! A step is a plain function from a request to a result. The engine wraps it in a
//! [`crypto_offload::Job::Call`] ([`call`]) and hands that to whoever runs jobs: inline
//! on the calling core, or a worker of the crypto pool, which runs it without knowing
//! what it is; the result comes back as the engine's own type ([`take`]). Buffers move
//! with the job: the transcript's chunks go in by value and shared precomputed messages
//! as `Arc`s, so nothing is copied on the way in or out.
//!
//! What it must not do: keep state between steps other than what a step hands on, or
//! know about connections, queues or threads.

pub mod client13;
#[cfg(test)]
mod kat;
pub mod schedule;
pub mod server12;
pub mod server13;

use std::sync::Arc;

use crypto_offload::job::{Call, CallResult};
use crypto_offload::prim::verify_signature;
use crypto_offload::{CryptoError, Done, Job, Secret, SigAlg, TicketKeys};

pub(crate) use crate::codec::handshake_header;

pub use schedule::{tls12_finished, tls12_keys, tls13_next_secret, Prf12, TrafficKey};

/// A step as a job: `f` runs where jobs run, its result comes back in a [`Done::Call`].
pub fn call<T: Send + 'static>(f: impl FnOnce() -> Result<T, CryptoError> + Send + 'static) -> Job {
    Job::Call(Call(Box::new(move || {
        f().map(|v| Box::new(v) as CallResult)
    })))
}

/// A step's result back as the type its step returns; anything else is an internal
/// error (a completion that belongs to another step).
pub fn take<T: 'static>(done: Done) -> Result<T, CryptoError> {
    match done {
        Done::Call(v) => v
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| CryptoError::Library("a job's result of another step".into())),
        _ => Err(CryptoError::Library(
            "a job's result of another kind".into(),
        )),
    }
}

/// A piece of the handshake transcript: bytes this connection produced or received, or
/// a message precomputed once for a certificate and shared by every connection.
#[derive(Debug, Clone)]
pub enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

/// How much transcript hashing a job did: `passes` running hashes started, `bytes` fed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestCount {
    pub passes: u32,
    pub bytes: u64,
}

/// A ticket to seal: the engine's encoded session state, to which the job appends the
/// secret it derives (TLS 1.2: the master secret; TLS 1.3: the ticket's PSK).
#[derive(Debug)]
pub struct TicketRequest {
    pub keys: Arc<TicketKeys>,
    pub now_ms: u64,
    pub state: Vec<u8>,
    /// ticket_lifetime(_hint), seconds.
    pub lifetime_s: u32,
    /// TLS 1.3 only: ticket_age_add.
    pub age_add: u32,
}

/// RFC 8446 §4.4.3: check a CertificateVerify signature made with `leaf`'s key over
/// the transcript hash `thash`, under `context` ("TLS 1.3, server CertificateVerify"
/// or the client's, with its zero byte).
pub(crate) fn verify_certificate_verify13(
    leaf: &[u8],
    alg: SigAlg,
    context: &[u8],
    thash: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    verify_signature(leaf, alg, &[&[0x20u8; 64], context, thash], sig)
}

/// A ticket over the engine's state with `secret` appended; the plaintext is wiped.
fn seal_state(t: &TicketRequest, secret: &Secret) -> Result<Vec<u8>, CryptoError> {
    let mut plain = Secret::new(Vec::with_capacity(t.state.len() + secret.bytes().len()));
    plain.extend(&t.state);
    plain.extend(secret.bytes());
    t.keys.seal(t.now_ms, plain.bytes())
}
