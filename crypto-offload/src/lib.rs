//! The crypto-offload worker pool: **not built yet**.
//!
//! This crate will own the crypto job model (one job per handshake step, one-shot
//! transcript digests, batches of record seal/open), the worker pool on bounded
//! channels with per-core completion queues and an inline mode, scheduling across
//! workers and devices, and OpenSSL provider/engine selection (QAT-capable). It must
//! never block a poll-mode core, and it is the only crate that touches OpenSSL types.
//!
//! Issue 4 fills it. Until then it is deliberately empty: nothing in the appliance
//! depends on it, and no feature claims to use it.
