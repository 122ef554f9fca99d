//! Jobs: work handed to whoever runs jobs ([`run`], inline on the calling core, or a
//! worker of [`crate::Pool`]), with a [`Done`] back. One job per handshake step, so a
//! step costs one queue round trip.
//!
//! This crate defines only the jobs it owns the work of (record protection, password
//! checks). A TLS handshake step is defined by the `tls` crate, which owns the protocol
//! (its key schedules, Finished framing and tickets): it comes here as a [`Call`], which
//! the pool runs without knowing what it is, and its result goes back unopened.

use crate::prim::CryptoError;
use crate::records::RecordJob;

/// A step defined by a crate above this one (a TLS handshake step, built from this
/// crate's primitives): it runs where jobs run, inline or on a worker, and its result
/// goes back unopened to whoever made it.
pub struct Call(pub Box<dyn FnOnce() -> Result<CallResult, CryptoError> + Send>);

/// What a [`Call`] returns: the caller's own type, downcast where it is taken back.
pub type CallResult = Box<dyn std::any::Any + Send>;

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Call")
    }
}

/// A piece of crypto work.
#[derive(Debug)]
pub enum Job {
    /// Record protection for many connections ([`crate::records`]).
    Records(RecordJob),
    /// A password against its stored hash ([`crate::password`]).
    PasswordCheck(Box<crate::password::PasswordCheck>),
    /// A step another crate defined ([`Call`]).
    Call(Call),
}

/// A job's result.
#[derive(Debug)]
pub enum Done {
    /// The same items, their records protected (or each batch's failure noted).
    Records(RecordJob),
    /// Whether the password matched.
    PasswordCheck(bool),
    /// A [`Call`]'s result.
    Call(CallResult),
}

/// Run a job on the calling thread (inline mode).
pub fn run(job: Job) -> Result<Done, CryptoError> {
    Ok(match job {
        Job::Records(j) => Done::Records(crate::records::run_records(j)),
        Job::PasswordCheck(j) => Done::PasswordCheck(crate::password::check(&j)?),
        Job::Call(c) => Done::Call((c.0)()?),
    })
}
