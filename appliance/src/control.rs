//! The control socket: a Unix stream socket, mode 0600, that answers one command per
//! connection with one JSON document. Only the daemon's own user (or root) is served:
//! the peer's credentials (`SO_PEERCRED`) are checked on every connection, so a
//! permissive umask or a copied socket path does not open it to anyone else.
//!
//! Commands (one line, words separated by spaces; each answers one JSON document,
//! and a refusal is `{"error": "..."}` naming what was wrong):
//! - `ping` → `{"ok": true}`
//! - `status` → version, pid, uptime, configuration file, vservers and backends up,
//!   connections and handshakes so far
//! - `stats` → every counter (see [`crate::runtime::Snapshot`])
//! - `vservers` → each vserver with its backends' state (see [`VserverSnap`])
//! - `backends` → one entry per (vserver, backend)
//! - `certs` → each `tls` vserver's certificates: subject, SANs, issuer, expiry
//! - `vserver enable|disable NAME`
//! - `backend drain|enable ADDRESS [VSERVER]`: every vserver that has the backend,
//!   or only `VSERVER`
//! - `sessions` → every open client connection (client, vserver, backend, state,
//!   TLS version, suite, SNI, resumed, age, bytes each way), as each poll-mode core
//!   lists its own, and each `tls` vserver's session cache size
//! - `reload` → reads the configuration file again and applies it (see
//!   [`crate::live`]); a refusal names the error and the running configuration stays
//! - `session-store` → the TLS session store: entries, lookups by tier, the cluster's
//!   members and replication, the repository's servers
//! - `flush session-store` → drops every TLS session here, and on every other node
//!   and in the repository (a cluster-wide PURGE)

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::live::Live;
use crate::runtime::{self, CoreCounters};
use control_proto::reply::{self, VserverSnap};
use control_proto::{BackendAction, Refusal, Request, VserverAction};
use crypto_offload::device::Route;
use crypto_offload::WorkerStats;
use dataplane::PortInfo;

/// Answers a command; runs on the control thread.
pub type Handler = Arc<dyn Fn(&str) -> serde_json::Value + Send + Sync>;

/// The listening control socket; the socket file is removed on drop.
pub struct ControlServer {
    path: PathBuf,
}

/// Uid of the process at the other end of `s`.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket file) and serves on a thread.
    pub fn start(path: &Path, handler: Handler) -> std::io::Result<ControlServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            // A live daemon answers; a dead one's file is stale and removed.
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another running appliance", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        std::thread::Builder::new().name("control".into()).spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let uid = peer_uid(&conn);
                if uid != Some(me) && uid != Some(0) {
                    log::warn!("control socket: refused a connection from uid {uid:?}");
                    let _ = writeln!(conn, "{}", serde_json::json!({"error": "permission denied: the control socket admits only its owner"}));
                    continue;
                }
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let reply = handler(line.trim());
                let _ = writeln!(conn, "{reply}");
            }
        })?;
        Ok(ControlServer {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one command to a control socket and returns the JSON reply.
pub fn request(path: &Path, command: &str) -> std::io::Result<serde_json::Value> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    writeln!(s, "{command}")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// What the control commands read and switch.
pub struct State {
    pub config_path: PathBuf,
    pub counters: Arc<Vec<CoreCounters>>,
    /// The configuration generation serving new connections.
    pub live: Arc<Live>,
    /// Reloads refused so far.
    pub reloads_failed: std::sync::atomic::AtomicU64,
    pub workers: Arc<Vec<Arc<WorkerStats>>>,
    pub routes: Arc<Vec<Route>>,
    pub port: PortInfo,
    pub started: std::time::Instant,
}

/// The daemon's command handler over `state`.
pub fn handler(state: Arc<State>) -> Handler {
    Arc::new(move |line: &str| dispatch(&state, line))
}

fn err(msg: impl Into<String>) -> Value {
    json!(Refusal::new(msg))
}

/// The reply as the JSON line it is sent as.
fn reply<T: serde::Serialize>(r: T) -> Value {
    serde_json::to_value(r).unwrap_or_default()
}

/// Answers one request line.
pub fn dispatch(st: &State, line: &str) -> Value {
    match Request::parse(line) {
        Ok(req) => answer(st, req),
        Err(e) => err(e.to_string()),
    }
}

fn answer(st: &State, req: Request) -> Value {
    let gen = st.live.current();
    match req {
        Request::Ping => reply(reply::Ack { ok: true }),
        Request::Status => reply(status(st)),
        Request::Stats => reply(runtime::snapshot(
            &st.counters,
            &st.workers,
            &st.routes,
            &st.port,
            st.started,
        )),
        Request::Vservers => reply(vserver_snaps(st)),
        Request::Backends => reply(
            vserver_snaps(st)
                .into_iter()
                .flat_map(|v| {
                    let name = v.name;
                    v.backends
                        .into_iter()
                        .map(move |backend| reply::BackendRow {
                            vserver: name.clone(),
                            backend,
                        })
                })
                .collect::<Vec<_>>(),
        ),
        Request::Certs => reply(certs(st)),
        Request::Vserver { action, name } => {
            let Some(v) = gen.vservers.iter().find(|v| v.cfg.name == name) else {
                return err(format!(
                    "no vserver named {name:?}; there are: {}",
                    names(&gen)
                ));
            };
            let on = action == VserverAction::Enable;
            v.set_enabled(on);
            log::warn!(
                "control: vserver {name} {}",
                if on { "enabled" } else { "disabled" }
            );
            reply(reply::VserverSwitched {
                ok: true,
                vserver: name,
                enabled: on,
            })
        }
        Request::Backend {
            action,
            address,
            vserver: only,
        } => {
            if let Some(n) = &only {
                if !gen.vservers.iter().any(|v| &v.cfg.name == n) {
                    return err(format!(
                        "no vserver named {n:?}; there are: {}",
                        names(&gen)
                    ));
                }
            }
            let drain = action == BackendAction::Drain;
            let mut hit = Vec::new();
            for v in gen.vservers.iter() {
                if only.as_ref().is_some_and(|n| *n != v.cfg.name) {
                    continue;
                }
                if let Some(i) = v.backend_index(&address) {
                    v.backends[i].set_draining(drain);
                    hit.push(v.cfg.name.clone());
                }
            }
            if hit.is_empty() {
                return err(format!(
                    "no backend {address:?} in {}",
                    only.map(|n| format!("vserver {n:?}"))
                        .unwrap_or_else(|| "any vserver".into())
                ));
            }
            log::warn!(
                "control: backend {address} {} in vserver(s) {}",
                if drain { "draining" } else { "enabled" },
                hit.join(", ")
            );
            reply(reply::BackendSwitched {
                ok: true,
                backend: address,
                draining: drain,
                vservers: hit,
            })
        }
        Request::Sessions => {
            let (sessions, cores_not_answering) =
                st.live.sessions(std::time::Duration::from_secs(2));
            let session_caches = gen
                .vservers
                .iter()
                .filter_map(|v| {
                    let t = v.cfg.tls.as_ref()?;
                    Some(reply::SessionCache {
                        vserver: v.cfg.name.clone(),
                        cached_sessions: t.resumption.store.as_ref().map(|s| s.len()),
                        cache_capacity: t.resumption.store.as_ref().and_then(|s| s.capacity()),
                        tickets: t.resumption.tickets.is_some(),
                    })
                })
                .collect();
            reply(reply::Sessions {
                sessions,
                cores_not_answering,
                session_caches,
            })
        }
        Request::SessionStore => session_store_view(&st.live.store),
        Request::FlushSessionStore => {
            let store = &st.live.store;
            let purged = store.purge(session_store::PurgeScope::All, crate::now_ms());
            let stats = store.stats();
            let cluster = stats.cluster.is_some() || stats.repository.is_some();
            log::warn!(
                "control: session store flushed: {purged} session(s) dropped here{}",
                if cluster {
                    "; purge sent to the cluster"
                } else {
                    ""
                }
            );
            reply(reply::Flushed {
                ok: true,
                purged,
                cluster,
            })
        }
        Request::Reload => match reload(st) {
            Ok(summary) => reply(summary),
            Err(e) => err(e),
        },
    }
}

/// Reads the configuration file again and applies it (`appliancectl reload`, SIGHUP):
/// the summary, or why it was refused (logged and counted either way; the running
/// configuration stays on a refusal).
pub fn reload(st: &State) -> Result<reply::ReloadSummary, String> {
    match st.live.reload() {
        Ok(summary) => {
            log::warn!(
                "reloaded {}: generation {}, vservers added {:?}, removed {:?}, kept {:?}; certificates changed {:?}; sessions kept {:?}",
                st.live.path().display(),
                summary.generation,
                summary.added,
                summary.removed,
                summary.kept,
                summary.certificates_changed,
                summary.sessions_kept
            );
            Ok(summary)
        }
        Err(e) => {
            st.reloads_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::error!("reload refused, the running configuration stays: {e}");
            Err(format!(
                "reload refused; the running configuration stays: {e}"
            ))
        }
    }
}

/// The store's counters as the control protocol's [`reply::SessionStore`] (its JSON
/// shape is the reply's; a store that does not fit it is an error, and the test of
/// this module says so first).
pub fn session_store_view(store: &session_store::Store) -> Value {
    let v = serde_json::to_value(store.stats()).unwrap_or_default();
    match serde_json::from_value::<reply::SessionStore>(v) {
        Ok(r) => reply(r),
        Err(e) => err(format!("session store statistics: {e}")),
    }
}

fn names(gen: &crate::live::Generation) -> String {
    gen.vservers
        .iter()
        .map(|v| v.cfg.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn now_ms() -> u64 {
    crate::now_ms()
}

fn vserver_snaps(st: &State) -> Vec<VserverSnap> {
    let now = now_ms();
    st.live
        .current()
        .vservers
        .iter()
        .map(|v| v.snapshot(now))
        .collect()
}

fn status(st: &State) -> reply::Status {
    let sum = |f: &dyn Fn(&CoreCounters) -> u64| st.counters.iter().map(f).sum::<u64>();
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let snaps = vserver_snaps(st);
    let backends: Vec<_> = snaps.iter().flat_map(|v| &v.backends).collect();
    let in_state = |s: &str| backends.iter().filter(|b| b.state == s).count();
    reply::Status {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_secs: st.started.elapsed().as_secs_f64(),
        config: st.config_path.display().to_string(),
        config_generation: st.live.id(),
        config_applied_secs_ago: st.live.current().applied.elapsed().as_secs_f64(),
        port: st.port.name.clone(),
        cores: st.counters.len(),
        crypto: if st.workers.is_empty() {
            "inline".to_string()
        } else {
            format!("pool of {}", st.workers.len())
        },
        vservers: snaps.len(),
        vservers_enabled: snaps.iter().filter(|v| v.enabled).count(),
        backends: backends.len(),
        backends_up: in_state("up"),
        backends_down: in_state("down"),
        backends_draining: in_state("draining"),
        proxied_connections: backends.iter().map(|b| b.active).sum::<u64>(),
        accepted: sum(&|c| ld(&c.proxy.accepted)),
        clients_open: sum(&|c| ld(&c.proxy.clients_open)),
        tls_handshakes: sum(&|c| ld(&c.proxy.tls12_handshakes) + ld(&c.proxy.tls13_handshakes)),
        tls_resumed: sum(&|c| ld(&c.proxy.tls12_resumed) + ld(&c.proxy.tls13_resumed)),
    }
}

fn certs(st: &State) -> Vec<reply::CertInfo> {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut out = Vec::new();
    for v in st.live.current().vservers.iter() {
        let Some(cfg) = &v.cfg.tls else { continue };
        for site in &cfg.sites {
            for ck in &site.certs {
                let Some(leaf) = ck.chain.first() else {
                    continue;
                };
                let cert = match crypto_offload::prim::certificate_summary(leaf) {
                    Ok(s) => reply::CertFields::Read {
                        days_left: (s.not_after_unix - now_unix) as f64 / 86_400.0,
                        subject: s.subject,
                        issuer: s.issuer,
                        sans: s.sans,
                        not_before: s.not_before,
                        not_after: s.not_after,
                        not_after_unix: s.not_after_unix,
                        key: s.key,
                        sha256: s.sha256,
                    },
                    Err(e) => reply::CertFields::Unreadable {
                        error: e.to_string(),
                    },
                };
                out.push(reply::CertInfo {
                    vserver: v.cfg.name.clone(),
                    server_names: site.names.clone(),
                    chain_length: ck.chain.len(),
                    cert,
                });
            }
        }
    }
    out
}
