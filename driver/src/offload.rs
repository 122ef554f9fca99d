//! The offload link: one core's way to the crypto workers, used by every kind of
//! connection the same way.
//!
//! - **Handshake steps**: an engine's jobs ([`Offload::run_jobs`]) run at once on the
//!   core (inline mode), or go to the pool tagged with their handler's id; a job that
//!   finds every queue full waits in the core's backlog (bounded: past it the
//!   handshake is refused with an internal_error alert). Nothing jumps the backlog.
//! - **Record work**: with record offload on, what a connection's step cut and
//!   received is lent here ([`Offload::lend`]) and goes to the pool after the ready
//!   connections have been stepped, up to `record_batch` connections per record job
//!   ([`Offload::submit_records`]); a record job never waits for room in the backlog's
//!   bound (each engine has at most one out, so the backlog is bounded by them). A
//!   handler may run two engines (the client's connection and a TLS connection to the
//!   backend): each job and each record work is tagged with its [`Leg`] ([`tag`]).
//! - **Completions** ([`Offload::poll`]): the backlog gets another try first, then
//!   finished jobs come back routed to their handlers ([`Routed`]); the driver hands
//!   each to its handler and marks it ready. A record job lost with its worker comes
//!   back as [`JobDone::RecordsLost`] for every connection in it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crypto_offload::{Completion, CoreLink, CryptoError, Done, Job, RecordJob, RecordWork};
use serde::Serialize;

use crate::HandlerId;

/// Tags of record jobs have this bit; handshake jobs carry their handler's id, which
/// never has it ([`HandlerId::to_bits`]).
const RECORD_JOB: u64 = 1 << 63;
/// A job's tag, or a record work's owner, has this bit when it is for the backend
/// leg's engine ([`Leg`]).
const BACKEND_LEG: u64 = 1 << 62;

/// Which of a handler's TLS engines a handshake job is for: a handler may run two at
/// once (the client's connection, and its TLS connection to the backend), and every
/// step of either is the same kind of job, so the completion says whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The client's connection (the appliance is the TLS server), or work for it.
    Client,
    /// The connection to the backend (the appliance is the TLS client).
    Backend,
}

/// What the link counts (served flattened into each core's proxy counters).
#[derive(Debug, Default, Serialize)]
pub struct OffloadStats {
    /// Crypto jobs sent to the worker pool; of those, how many waited in the core's
    /// backlog for room, were refused (backlog full too), or came back failed (a
    /// worker died).
    pub crypto_submitted: AtomicU64,
    pub crypto_deferred: AtomicU64,
    pub crypto_refused: AtomicU64,
    pub crypto_failed: AtomicU64,
    /// Record offload: record jobs sent to the pool, the connections' work in them
    /// (one per connection per job), the records they opened and sealed, and jobs
    /// lost with a worker and their connections (closed with an internal_error
    /// alert); record jobs that waited in the backlog for room.
    pub record_jobs: AtomicU64,
    pub record_jobs_deferred: AtomicU64,
    pub record_job_conns: AtomicU64,
    /// Of those, the work of backend legs (TLS towards the backend).
    pub record_job_backend: AtomicU64,
    pub record_job_opens: AtomicU64,
    pub record_job_seals: AtomicU64,
    pub record_jobs_failed: AtomicU64,
    pub record_job_conns_failed: AtomicU64,
}

/// Adds to a counter only this core writes (no locked instruction).
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// A finished job, for its handler.
// Records is the large variant (two key-and-buffer batches, about 250 bytes): each
// completion is moved once, into its handler, which costs less than boxing it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum JobDone {
    /// A handshake step's result for the engine of `Leg` (an error: the job failed;
    /// the engine alerts).
    Step(Leg, Result<Done, CryptoError>),
    /// The record work of the engine of `Leg` is back, sealed and opened.
    Records(Leg, RecordWork),
    /// The record job carrying the work of the engine of `Leg` was lost with its
    /// worker.
    RecordsLost(Leg, CryptoError),
}

/// The tag of `owner`'s jobs for its engine on `leg`: a handshake job's, and the owner
/// an engine writes into the record work it lends ([`Offload::lend`]).
pub fn tag(owner: HandlerId, leg: Leg) -> u64 {
    owner.to_bits()
        | match leg {
            Leg::Client => 0,
            Leg::Backend => BACKEND_LEG,
        }
}

fn leg_of(tag: u64) -> Leg {
    if tag & BACKEND_LEG == 0 {
        Leg::Client
    } else {
        Leg::Backend
    }
}

/// A completion and the handler it belongs to.
#[derive(Debug)]
pub struct Routed {
    pub to: HandlerId,
    pub done: JobDone,
}

/// An engine whose handshake crypto comes as jobs.
pub trait JobEngine {
    fn take_job(&mut self) -> Option<Job>;
    fn complete(&mut self, done: Result<Done, CryptoError>) -> Result<(), tls::Error>;
}

impl JobEngine for tls::ServerConn {
    fn take_job(&mut self) -> Option<Job> {
        tls::ServerConn::take_job(self)
    }
    fn complete(&mut self, done: Result<Done, CryptoError>) -> Result<(), tls::Error> {
        tls::ServerConn::complete(self, done)
    }
}

/// One core's way to the crypto workers.
#[derive(Default)]
pub struct Offload {
    /// `None`: inline mode, jobs run on this core.
    link: Option<CoreLink>,
    /// Jobs that found every queue full, oldest first, with their tag.
    backlog: VecDeque<(u64, Job)>,
    backlog_limit: usize,
    completions: Vec<Completion>,
    /// Record offload: application records are protected in record jobs.
    records: bool,
    /// Connections per record job.
    record_batch: usize,
    /// Record work lent in this iteration, for the next jobs.
    pending: Vec<RecordWork>,
    /// Record jobs out: their tag and the handlers whose work is in them.
    lent: HashMap<u64, Vec<u64>>,
    next_record_job: u64,
    pub stats: Arc<OffloadStats>,
}

impl Offload {
    /// Inline mode: every job runs on the calling core.
    pub fn inline() -> Self {
        Offload::default()
    }

    /// Jobs go to the pool through `link`; at most `backlog_limit` wait for room.
    pub fn pool(link: CoreLink, backlog_limit: usize) -> Self {
        Offload {
            link: Some(link),
            backlog_limit,
            ..Offload::default()
        }
    }

    /// Application records go to the pool too, in jobs of up to `batch` connections'
    /// work (see `tls::offload`). Inline mode has no records to offload.
    pub fn with_records(mut self, batch: usize) -> Self {
        self.records = self.link.is_some();
        self.record_batch = batch.max(1);
        self
    }

    /// Whether engines should lend their record work (record offload is on).
    pub fn records(&self) -> bool {
        self.records
    }

    /// Hands the engine's crypto jobs on: run at once (inline), or queued to the pool
    /// tagged `owner` and `leg`, the engine waiting for the completion. A full backlog
    /// refuses the handshake (the engine gets an error and queues its alert).
    pub fn run_jobs<E: JobEngine>(
        &mut self,
        owner: HandlerId,
        leg: Leg,
        t: &mut E,
    ) -> Result<(), tls::Error> {
        let tag = tag(owner, leg);
        while let Some(mut job) = t.take_job() {
            let Some(link) = self.link.as_mut() else {
                t.complete(crypto_offload::run(job))?;
                continue;
            };
            add(&self.stats.crypto_submitted, 1);
            if self.backlog.is_empty() {
                match link.try_submit(tag, job) {
                    Ok(()) => return Ok(()),
                    Err(busy) => job = busy.job,
                }
            }
            if self.backlog.len() < self.backlog_limit {
                add(&self.stats.crypto_deferred, 1);
                self.backlog.push_back((tag, job));
                return Ok(());
            }
            add(&self.stats.crypto_refused, 1);
            t.complete(Err(CryptoError::Unavailable(
                "crypto queues and backlog full".into(),
            )))?;
        }
        Ok(())
    }

    /// Record work a step cut, for the next record jobs of this iteration.
    pub fn lend(&mut self, w: RecordWork) {
        if leg_of(w.owner) == Leg::Backend {
            add(&self.stats.record_job_backend, 1);
        }
        self.pending.push(w);
    }

    /// Record offload: the work lent in this iteration goes to the pool, up to
    /// `record_batch` connections per job; a job that finds no room waits in the
    /// backlog. Returns whether anything was sent.
    pub fn submit_records(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let stats = &self.stats;
        let mut items = std::mem::take(&mut self.pending);
        while !items.is_empty() {
            let rest = items.split_off(items.len().min(self.record_batch));
            let job = RecordJob { items };
            items = rest;
            let tag = RECORD_JOB | self.next_record_job;
            self.next_record_job = (self.next_record_job + 1) & !RECORD_JOB;
            add(&stats.record_jobs, 1);
            add(&stats.record_job_conns, job.items.len() as u64);
            for w in &job.items {
                add(
                    &stats.record_job_opens,
                    w.open.as_ref().map_or(0, |b| b.ops.len()) as u64,
                );
                add(
                    &stats.record_job_seals,
                    w.seal.as_ref().map_or(0, |b| b.ops.len()) as u64,
                );
            }
            self.lent
                .insert(tag, job.items.iter().map(|w| w.owner).collect());
            let mut job = Job::Records(job);
            if self.backlog.is_empty() {
                match link.try_submit(tag, job) {
                    Ok(()) => continue,
                    Err(busy) => job = busy.job,
                }
            }
            add(&stats.record_jobs_deferred, 1);
            self.backlog.push_back((tag, job));
        }
        true
    }

    /// The pool's side of this core: jobs held back get another try, in order (those
    /// whose handler is gone, by `alive`, are dropped; record jobs always go: their
    /// connections' keys are in them); then finished jobs are appended to `out`,
    /// routed to their handlers. Returns whether anything moved.
    pub fn poll(&mut self, alive: impl Fn(HandlerId) -> bool, out: &mut Vec<Routed>) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let mut moved = false;
        while let Some((tag, job)) = self.backlog.pop_front() {
            if tag & RECORD_JOB == 0 && !alive(HandlerId::from_bits(tag)) {
                continue;
            }
            if let Err(busy) = link.try_submit(tag, job) {
                self.backlog.push_front((tag, busy.job));
                break;
            }
            moved = true;
        }
        let mut done = std::mem::take(&mut self.completions);
        let n = link.drain(&mut done, 4 * dataplane::BURST);
        for c in done.drain(..) {
            if c.tag & RECORD_JOB == 0 {
                if c.result.is_err() {
                    add(&self.stats.crypto_failed, 1);
                }
                out.push(Routed {
                    to: HandlerId::from_bits(c.tag),
                    done: JobDone::Step(leg_of(c.tag), c.result),
                });
                continue;
            }
            let owners = self.lent.remove(&c.tag).unwrap_or_default();
            match c.result {
                Ok(Done::Records(job)) => out.extend(job.items.into_iter().map(|w| Routed {
                    to: HandlerId::from_bits(w.owner),
                    done: JobDone::Records(leg_of(w.owner), w),
                })),
                other => {
                    let e = match other {
                        Err(e) => e,
                        Ok(_) => {
                            CryptoError::Unavailable("a record job completed as another job".into())
                        }
                    };
                    add(&self.stats.record_jobs_failed, 1);
                    add(&self.stats.crypto_failed, 1);
                    log::warn!("record job for {} connections lost: {e}", owners.len());
                    out.extend(owners.into_iter().map(|o| Routed {
                        to: HandlerId::from_bits(o),
                        done: JobDone::RecordsLost(leg_of(o), e.clone()),
                    }));
                }
            }
        }
        self.completions = done;
        moved || n > 0
    }
}
