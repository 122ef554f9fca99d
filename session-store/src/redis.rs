//! The repository tier: Redis servers reached by agent threads (seed C9: the
//! repository "cache memory server devices", two or more for redundancy).
//!
//! One agent thread per server, each with its own connection (the `redis` crate's sync
//! client, with connect, read and write timeouts) and a bounded job queue. Writes go to
//! every server (`SET key value PX ttl`, `DEL`, and a purge by `SCAN MATCH prefix*` +
//! `DEL`, never `FLUSHALL`); a read goes to the first server that is up, and on an error
//! moves on to the next one. Cores only `try_send` a job and poll a one-slot reply with
//! a deadline ([`RepoLookup::poll`]): past it the lookup is a miss, counted as a
//! timeout, whatever Redis is doing.
//!
//! A server that fails (error, timeout) is marked down and reconnected with exponential
//! backoff; while it is down its writes are dropped and counted (the peers and the local
//! tier still hold them) and reads skip it. Values are sealed ([`crate::seal`]) before
//! they are sent: a Redis dump shows keys, expiries and ciphertext only.
//!
//! Keys: `prefix || hex(kind, vserver, key)`; values: `updated_ms(8) origin(4)
//! expires_ms(8) sealed`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};
use crypto_offload::Secret;
use serde::Serialize;

use crate::local::{LocalTable, PurgeScope, Record, TableId, Version};
use crate::net::unix_ms;
use crate::seal::{ClusterKey, Sealer};

/// The repository tier's settings (`[session_store] redis = [...]` and tuning).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `host:port` of each server, in order of preference for reads.
    pub servers: Vec<String>,
    pub connect_timeout: Duration,
    /// Read and write timeout of each command.
    pub io_timeout: Duration,
    /// Every key starts with it; a purge deletes only keys with it.
    pub prefix: String,
    /// Jobs each agent's queue holds.
    pub queue: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// An idle connection is checked this often.
    pub ping_every: Duration,
}

impl RedisConfig {
    /// Defaults for these servers.
    pub fn new(servers: Vec<String>) -> Self {
        RedisConfig {
            servers,
            connect_timeout: Duration::from_millis(300),
            io_timeout: Duration::from_millis(300),
            prefix: "appliance:ss:".into(),
            queue: 16_384,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            ping_every: Duration::from_secs(1),
        }
    }
}

/// One server's state and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServerStats {
    pub server: String,
    pub up: bool,
    pub errors: u64,
    pub reconnects: u64,
    pub writes: u64,
    /// Writes not done: the server was down or failed them.
    pub write_failures: u64,
    pub reads: u64,
    pub hits: u64,
    /// Values that did not parse or open (another writer, or tampering).
    pub corrupt: u64,
    /// Jobs refused because its queue was full.
    pub queue_full: u64,
}

/// The repository tier's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepoStats {
    pub servers: Vec<ServerStats>,
    pub lookups: u64,
    pub hits: u64,
    pub misses: u64,
    /// Lookups past their deadline (a miss for the caller).
    pub timeouts: u64,
    /// Lookups answered at once as misses because no server was up.
    pub down: u64,
}

#[derive(Default)]
struct AgentShared {
    up: AtomicBool,
    errors: AtomicU64,
    reconnects: AtomicU64,
    writes: AtomicU64,
    write_failures: AtomicU64,
    reads: AtomicU64,
    hits: AtomicU64,
    corrupt: AtomicU64,
    queue_full: AtomicU64,
}

#[derive(Default)]
struct RepoShared {
    stop: AtomicBool,
    lookups: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    timeouts: AtomicU64,
    down: AtomicU64,
}

enum Job {
    Put {
        table: TableId,
        key: Vec<u8>,
        value: Secret,
        expires_ms: u64,
        version: Version,
    },
    Delete {
        table: TableId,
        key: Vec<u8>,
    },
    Purge {
        scope: PurgeScope,
    },
    Get {
        table: TableId,
        key: Vec<u8>,
        deadline: Instant,
        reply: Sender<Option<Secret>>,
    },
}

impl Clone for Job {
    fn clone(&self) -> Self {
        match self {
            Job::Put {
                table,
                key,
                value,
                expires_ms,
                version,
            } => Job::Put {
                table: *table,
                key: key.clone(),
                value: value.clone(),
                expires_ms: *expires_ms,
                version: *version,
            },
            Job::Delete { table, key } => Job::Delete {
                table: *table,
                key: key.clone(),
            },
            Job::Purge { scope } => Job::Purge { scope: *scope },
            Job::Get {
                table,
                key,
                deadline,
                reply,
            } => Job::Get {
                table: *table,
                key: key.clone(),
                deadline: *deadline,
                reply: reply.clone(),
            },
        }
    }
}

struct Agent {
    server: String,
    tx: Sender<Job>,
    shared: Arc<AgentShared>,
    thread: Option<JoinHandle<()>>,
}

/// A repository lookup in flight: [`RepoLookup::poll`] never blocks.
pub struct RepoLookup {
    rx: Receiver<Option<Secret>>,
    deadline: Instant,
    shared: Arc<RepoShared>,
    done: bool,
}

impl std::fmt::Debug for RepoLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepoLookup(done: {})", self.done)
    }
}

impl RepoLookup {
    /// `None`: not answered yet. `Some(v)`: the answer, or `Some(None)` past the
    /// deadline (counted as a timeout).
    pub fn poll(&mut self) -> Option<Option<Secret>> {
        if self.done {
            return Some(None);
        }
        let answer = match self.rx.try_recv() {
            Ok(v) => v,
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => {
                if Instant::now() < self.deadline {
                    return None;
                }
                self.shared.timeouts.fetch_add(1, Ordering::Relaxed);
                self.done = true;
                return Some(None);
            }
        };
        self.done = true;
        let c = if answer.is_some() {
            &self.shared.hits
        } else {
            &self.shared.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        Some(answer)
    }
}

impl Drop for RepoLookup {
    /// Given up before it was answered: a timeout.
    fn drop(&mut self) {
        if !self.done {
            self.shared.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The running repository tier.
pub struct Repository {
    agents: Vec<Agent>,
    shared: Arc<RepoShared>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<&str> = self.agents.iter().map(|a| a.server.as_str()).collect();
        write!(f, "Repository({s:?})")
    }
}

impl Repository {
    /// Start one agent per server. Connections are made by the agents (a server that is
    /// down at start is retried with backoff; nothing here blocks on the network).
    pub fn start(
        cfg: RedisConfig,
        key: Arc<ClusterKey>,
        node_id: u32,
        table: Arc<LocalTable>,
    ) -> Result<Repository, crate::seal::SealError> {
        let shared = Arc::new(RepoShared::default());
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in &cfg.servers {
            let (tx, rx) = bounded(cfg.queue.max(1));
            senders.push(tx);
            receivers.push(rx);
        }
        let agent_shared: Vec<Arc<AgentShared>> = cfg
            .servers
            .iter()
            .map(|_| Arc::new(AgentShared::default()))
            .collect();
        let mut agents = Vec::new();
        for (i, rx) in receivers.into_iter().enumerate() {
            let worker = AgentWorker {
                index: i,
                server: cfg.servers[i].clone(),
                cfg: cfg.clone(),
                sealer: key.sealer(node_id)?,
                table: table.clone(),
                rx,
                others: senders.clone(),
                others_state: agent_shared.clone(),
                shared: agent_shared[i].clone(),
                repo: shared.clone(),
                con: None,
                backoff: cfg.backoff_min,
                next_attempt: Instant::now(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("redis-agent-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| crate::seal::SealError::Crypto(format!("spawn: {e}")))?;
            agents.push(Agent {
                server: cfg.servers[i].clone(),
                tx: senders[i].clone(),
                shared: agent_shared[i].clone(),
                thread: Some(thread),
            });
        }
        Ok(Repository { agents, shared })
    }

    fn post_all(&self, job: Job) {
        for a in &self.agents {
            if a.tx.try_send(job.clone()).is_err() {
                a.shared.queue_full.fetch_add(1, Ordering::Relaxed);
                a.shared.write_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Store a record on every server (ADD and UPDATE alike). Never blocks.
    pub fn put(
        &self,
        table: TableId,
        key: &[u8],
        value: Secret,
        expires_ms: u64,
        version: Version,
    ) {
        self.post_all(Job::Put {
            table,
            key: key.to_vec(),
            value,
            expires_ms,
            version,
        });
    }

    /// Delete a key on every server. Never blocks.
    pub fn delete(&self, table: TableId, key: &[u8]) {
        self.post_all(Job::Delete {
            table,
            key: key.to_vec(),
        });
    }

    /// Delete our keys of `scope` on every server. Never blocks.
    pub fn purge(&self, scope: PurgeScope) {
        self.post_all(Job::Purge { scope });
    }

    /// Start a lookup answered by `deadline` at the latest. `None` when no server is
    /// up (or its queue is full): a miss at once.
    pub fn get(&self, table: TableId, key: &[u8], deadline: Instant) -> Option<RepoLookup> {
        self.shared.lookups.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = bounded(1);
        let job = Job::Get {
            table,
            key: key.to_vec(),
            deadline,
            reply,
        };
        for a in &self.agents {
            if !a.shared.up.load(Ordering::Relaxed) {
                continue;
            }
            if a.tx.try_send(job).is_err() {
                a.shared.queue_full.fetch_add(1, Ordering::Relaxed);
                break;
            }
            return Some(RepoLookup {
                rx,
                deadline,
                shared: self.shared.clone(),
                done: false,
            });
        }
        self.shared.down.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Whether any server is up.
    pub fn up(&self) -> bool {
        self.agents
            .iter()
            .any(|a| a.shared.up.load(Ordering::Relaxed))
    }

    /// Counters.
    pub fn stats(&self) -> RepoStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RepoStats {
            servers: self
                .agents
                .iter()
                .map(|a| ServerStats {
                    server: a.server.clone(),
                    up: a.shared.up.load(Ordering::Relaxed),
                    errors: l(&a.shared.errors),
                    reconnects: l(&a.shared.reconnects),
                    writes: l(&a.shared.writes),
                    write_failures: l(&a.shared.write_failures),
                    reads: l(&a.shared.reads),
                    hits: l(&a.shared.hits),
                    corrupt: l(&a.shared.corrupt),
                    queue_full: l(&a.shared.queue_full),
                })
                .collect(),
            lookups: l(&self.shared.lookups),
            hits: l(&self.shared.hits),
            misses: l(&self.shared.misses),
            timeouts: l(&self.shared.timeouts),
            down: l(&self.shared.down),
        }
    }

    /// Stop the agents (each finishes the command it is in, bounded by its timeouts).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for a in &mut self.agents {
            if let Some(t) = a.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Redis key of a record.
pub fn redis_key(prefix: &str, table: TableId, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 2 * (3 + key.len()));
    k.extend_from_slice(prefix.as_bytes());
    for b in table.to_bytes().iter().chain(key) {
        k.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    k
}

fn scope_pattern(prefix: &str, scope: PurgeScope) -> Vec<u8> {
    let mut p = match scope {
        PurgeScope::All => prefix.as_bytes().to_vec(),
        PurgeScope::Table(t) => redis_key(prefix, t, &[]),
    };
    // SCAN's pattern is a glob: our prefix and hex hold no glob characters but '*'
    // (and friends) in a configured prefix would; escape them.
    let mut out = Vec::with_capacity(p.len() + 1);
    for b in p.drain(..) {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'*');
    out
}

struct AgentWorker {
    index: usize,
    server: String,
    cfg: RedisConfig,
    sealer: Sealer,
    table: Arc<LocalTable>,
    rx: Receiver<Job>,
    others: Vec<Sender<Job>>,
    others_state: Vec<Arc<AgentShared>>,
    shared: Arc<AgentShared>,
    repo: Arc<RepoShared>,
    con: Option<::redis::Connection>,
    backoff: Duration,
    next_attempt: Instant,
}

impl AgentWorker {
    fn run(mut self) {
        let mut ever_up = false;
        while !self.repo.stop.load(Ordering::Relaxed) {
            if self.con.is_none() && Instant::now() >= self.next_attempt {
                match self.connect() {
                    Ok(c) => {
                        self.con = Some(c);
                        self.shared.up.store(true, Ordering::Relaxed);
                        self.backoff = self.cfg.backoff_min;
                        if ever_up {
                            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        ever_up = true;
                        log::info!("redis {}: connected", self.server);
                    }
                    Err(e) => {
                        self.failed(&format!("connect: {e}"));
                    }
                }
            }
            let wait = if self.con.is_some() {
                self.cfg.ping_every
            } else {
                self.next_attempt
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50))
            };
            match self.rx.recv_timeout(wait) {
                Ok(job) => self.job(job),
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(c) = self.con.as_mut() {
                        if let Err(e) = ::redis::cmd("PING").query::<String>(c) {
                            self.failed(&format!("ping: {e}"));
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn connect(&self) -> ::redis::RedisResult<::redis::Connection> {
        let client = ::redis::Client::open(format!("redis://{}/", self.server))?;
        let con = client.get_connection_with_timeout(self.cfg.connect_timeout)?;
        con.set_read_timeout(Some(self.cfg.io_timeout))?;
        con.set_write_timeout(Some(self.cfg.io_timeout))?;
        Ok(con)
    }

    /// Count the error, drop the connection, and wait a growing while before the next try.
    fn failed(&mut self, what: &str) {
        if self.shared.up.swap(false, Ordering::Relaxed) {
            log::warn!("redis {}: down ({what})", self.server);
        }
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        self.con = None;
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(self.cfg.backoff_max);
    }

    fn job(&mut self, job: Job) {
        if let Job::Get {
            table,
            key,
            deadline,
            reply,
        } = job
        {
            self.get(table, key, deadline, reply);
            return;
        }
        let Some(con) = self.con.as_mut() else {
            self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let prefix = self.cfg.prefix.clone();
        let result = match job {
            Job::Put {
                table,
                key,
                value,
                expires_ms,
                version,
            } => {
                let now = unix_ms();
                if expires_ms <= now {
                    return;
                }
                let sealed = match self
                    .sealer
                    .seal(table, &key, expires_ms, version, value.bytes())
                {
                    Ok(s) => s,
                    Err(e) => {
                        log::error!("redis: cannot seal: {e}");
                        return;
                    }
                };
                let mut v = Vec::with_capacity(20 + sealed.len());
                v.extend_from_slice(&version.updated_ms.to_be_bytes());
                v.extend_from_slice(&version.origin.to_be_bytes());
                v.extend_from_slice(&expires_ms.to_be_bytes());
                v.extend_from_slice(&sealed);
                ::redis::cmd("SET")
                    .arg(redis_key(&prefix, table, &key))
                    .arg(v)
                    .arg("PX")
                    .arg(expires_ms - now)
                    .query::<()>(con)
            }
            Job::Delete { table, key } => ::redis::cmd("DEL")
                .arg(redis_key(&prefix, table, &key))
                .query::<()>(con),
            Job::Purge { scope } => purge(con, &scope_pattern(&prefix, scope)),
            Job::Get { .. } => Ok(()),
        };
        match result {
            Ok(()) => {
                self.shared.writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                self.failed(&e.to_string());
            }
        }
    }

    fn get(
        &mut self,
        table: TableId,
        key: Vec<u8>,
        deadline: Instant,
        reply: Sender<Option<Secret>>,
    ) {
        // Nobody waits for it any more (the core moved on): skip the round trip.
        if Instant::now() >= deadline {
            let _ = reply.try_send(None);
            return;
        }
        let Some(con) = self.con.as_mut() else {
            self.forward(table, key, deadline, reply);
            return;
        };
        self.shared.reads.fetch_add(1, Ordering::Relaxed);
        let got = ::redis::cmd("GET")
            .arg(redis_key(&self.cfg.prefix, table, &key))
            .query::<Option<Vec<u8>>>(con);
        match got {
            Ok(None) => {
                let _ = reply.try_send(None);
            }
            Ok(Some(v)) => {
                let value = self.open(table, &key, &v);
                if value.is_some() {
                    self.shared.hits.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.shared.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.try_send(value);
            }
            Err(e) => {
                self.failed(&e.to_string());
                self.forward(table, key, deadline, reply);
            }
        }
    }

    /// Parse and open a stored value; keep it in the local table too.
    fn open(&mut self, table: TableId, key: &[u8], v: &[u8]) -> Option<Secret> {
        if v.len() < 20 {
            return None;
        }
        let updated_ms = u64::from_be_bytes(v[..8].try_into().ok()?);
        let origin = u32::from_be_bytes(v[8..12].try_into().ok()?);
        let expires_ms = u64::from_be_bytes(v[12..20].try_into().ok()?);
        let version = Version { updated_ms, origin };
        let value = self
            .sealer
            .open(table, key, expires_ms, version, &v[20..])
            .ok()?;
        let now = unix_ms();
        if expires_ms <= now {
            return None;
        }
        self.table.merge(
            Record {
                table,
                key: key.to_vec(),
                value: Some(value.clone()),
                expires_ms,
                version,
            },
            now,
        );
        Some(value)
    }

    /// Pass a read on to the next server that is up, or answer it as a miss.
    fn forward(
        &self,
        table: TableId,
        key: Vec<u8>,
        deadline: Instant,
        reply: Sender<Option<Secret>>,
    ) {
        for j in self.index + 1..self.others.len() {
            if !self.others_state[j].up.load(Ordering::Relaxed) {
                continue;
            }
            let job = Job::Get {
                table,
                key,
                deadline,
                reply,
            };
            match self.others[j].try_send(job) {
                Ok(()) => return,
                Err(e) => {
                    let Job::Get { reply, .. } = e.into_inner() else {
                        return;
                    };
                    let _ = reply.try_send(None);
                    return;
                }
            }
        }
        let _ = reply.try_send(None);
    }
}

fn purge(con: &mut ::redis::Connection, pattern: &[u8]) -> ::redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000)
            .query(con)?;
        if !keys.is_empty() {
            ::redis::cmd("DEL").arg(keys).query::<()>(con)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_hex_and_patterns_escaped() {
        let t = TableId::sessions(0x0102);
        assert_eq!(redis_key("p:", t, &[0xab, 0x00]), b"p:010102ab00".to_vec());
        assert_eq!(scope_pattern("p:", PurgeScope::All), b"p:*".to_vec());
        assert_eq!(
            scope_pattern("p:", PurgeScope::Table(t)),
            b"p:010102*".to_vec()
        );
        assert_eq!(scope_pattern("a*b", PurgeScope::All), b"a\\*b*".to_vec());
    }
}
