//! The Prometheus text endpoint (`[metrics] listen`): `GET /metrics` on the kernel's
//! management network, never on the data plane, served by one thread of its own.
//!
//! It exposes every counter the cores keep (port queue, network stack, proxy and TLS,
//! steering; one series per core), each core's busy and idle seconds, the crypto
//! workers' counters with their job latency as a histogram, and each vserver's and
//! backend's state. Counters end in `_total`; names are
//! `appliance_<group>_<counter>`. The format is the text exposition format 0.0.4.
//!
//! The same listener serves a read-only status page at `/` (one self-contained HTML
//! document: vservers, backends and their state, per-core busy % and handshakes/s),
//! which refreshes itself from `/status.json` every two seconds.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::control::State;

/// The metrics listener; it serves until the process exits.
pub struct MetricsServer {
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves on a thread.
    pub fn start(addr: SocketAddr, state: Arc<State>) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
                    let mut reader = BufReader::new(&conn);
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        continue;
                    }
                    // The rest of the request head, unread otherwise.
                    let mut line = String::new();
                    for _ in 0..100 {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if line.trim().is_empty() => break,
                            Ok(_) => {}
                        }
                    }
                    let mut parts = first.split_whitespace();
                    let (method, target) = (parts.next(), parts.next());
                    let (status, ctype, body) = match (method, target) {
                        (Some("GET"), Some("/metrics")) => (
                            "200 OK",
                            "text/plain; version=0.0.4; charset=utf-8",
                            render(&state),
                        ),
                        // The status page: one self-contained document (no external
                        // assets), refreshed from /status.json. Read-only.
                        (Some("GET"), Some("/")) => (
                            "200 OK",
                            "text/html; charset=utf-8",
                            STATUS_PAGE.to_string(),
                        ),
                        (Some("GET"), Some("/status.json")) => (
                            "200 OK",
                            "application/json",
                            status_json(&state),
                        ),
                        (Some("GET"), Some(_)) => (
                            "404 Not Found",
                            "text/plain; charset=utf-8",
                            "the appliance serves /metrics, its status page at / and /status.json\n"
                                .to_string(),
                        ),
                        _ => (
                            "405 Method Not Allowed",
                            "text/plain; charset=utf-8",
                            "only GET\n".to_string(),
                        ),
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            })?;
        Ok(MetricsServer { addr })
    }
}

/// The status page (`GET /`).
const STATUS_PAGE: &str = include_str!("status.html");

/// What the status page shows: the control socket's `status`, `stats`, `vservers`
/// and `backends` answers in one document.
fn status_json(state: &State) -> String {
    let ask = |q: &str| crate::control::dispatch(state, q);
    serde_json::json!({
        "status": ask("status"),
        "stats": ask("stats"),
        "vservers": ask("vservers"),
        "backends": ask("backends"),
    })
    .to_string()
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Collects series by metric name so each family is written once with its TYPE.
#[derive(Default)]
struct Families {
    order: Vec<String>,
    map: std::collections::HashMap<String, (&'static str, String, Vec<String>)>,
}

impl Families {
    fn add(&mut self, name: &str, kind: &'static str, help: &str, labels: &str, value: f64) {
        let v = if value.fract() == 0.0 && value.abs() < 1e15 {
            format!("{}", value as i64)
        } else {
            format!("{value}")
        };
        let line = if labels.is_empty() {
            format!("{name} {v}")
        } else {
            format!("{name}{{{labels}}} {v}")
        };
        self.raw(name, kind, help, line);
    }

    /// A sample line of family `name`, written as is (histograms name theirs
    /// `_bucket`, `_sum`, `_count`).
    fn raw(&mut self, name: &str, kind: &'static str, help: &str, line: String) {
        let e = self.map.entry(name.to_string()).or_insert_with(|| {
            self.order.push(name.to_string());
            (kind, help.to_string(), Vec::new())
        });
        e.2.push(line);
    }

    fn write(self, out: &mut String) {
        for name in &self.order {
            let (kind, help, lines) = &self.map[name];
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
}

/// Counters of one group of a core's snapshot, as `appliance_<group>_<field>_total`;
/// a field that is a map (per-suite counts) becomes a label.
fn core_group(f: &mut Families, group: &str, core: usize, obj: &control_proto::reply::Counters) {
    for (k, val) in obj {
        if let (true, Some(m)) = (k == "tls_first_answer_us", val.as_object()) {
            first_answer(f, core, m);
            continue;
        }
        // Levels, not running counts: exported without `_total`.
        let gauge = matches!(
            (group, k.as_str()),
            ("stack", "active")
                | ("stack", "half_open")
                | ("queue", "mbufs_in_use")
                | ("proxy", "clients_open")
        );
        if let Some(n) = val.as_f64() {
            let (name, kind) = if gauge {
                (format!("appliance_{group}_{k}"), "gauge")
            } else {
                (format!("appliance_{group}_{k}_total"), "counter")
            };
            f.add(
                &name,
                kind,
                &format!("{group} counter {k} (per poll-mode core)"),
                &format!("core=\"{core}\""),
                n,
            );
        } else if let Some(m) = val.as_object() {
            let name = format!("appliance_{group}_{k}_total");
            // The label names what the map is keyed by (tls_suites, tls_groups).
            let by = match k.as_str() {
                "tls_groups" => "group",
                _ => "suite",
            };
            for (label, n) in m {
                if let Some(n) = n.as_f64() {
                    f.add(
                        &name,
                        "counter",
                        &format!("{group} counter {k}, by {by} (per poll-mode core)"),
                        &format!("core=\"{core}\",{by}=\"{}\"", esc(label)),
                        n,
                    );
                }
            }
        }
    }
}

/// A core's `tls_first_answer_us` buckets (µs bound → count) as a Prometheus histogram.
fn first_answer(f: &mut Families, core: usize, m: &serde_json::Map<String, serde_json::Value>) {
    let name = "appliance_tls_first_answer_seconds";
    let help = "TLS handshakes: time from the ClientHello's arrival to the first answer to it (per poll-mode core)";
    let sum_us = m.get("sum_us").and_then(|v| v.as_f64()).unwrap_or(0.0);
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter(|(k, _)| *k != "sum_us")
        .map(|(le, n)| {
            let le = le.parse::<f64>().map_or(f64::INFINITY, |us| us / 1e6);
            (le, n.as_f64().unwrap_or(0.0))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut cum = 0.0;
    for (le, n) in buckets {
        cum += n;
        let le = if le.is_finite() {
            le.to_string()
        } else {
            "+Inf".into()
        };
        f.raw(
            name,
            "histogram",
            help,
            format!("{name}_bucket{{core=\"{core}\",le=\"{le}\"}} {cum}"),
        );
    }
    f.raw(
        name,
        "histogram",
        help,
        format!("{name}_sum{{core=\"{core}\"}} {}", sum_us / 1e6),
    );
    f.raw(
        name,
        "histogram",
        help,
        format!("{name}_count{{core=\"{core}\"}} {cum}"),
    );
}

/// The whole exposition.
pub fn render(st: &State) -> String {
    let snap =
        crate::runtime::snapshot(&st.counters, &st.workers, &st.routes, &st.port, st.started);
    let mut f = Families::default();
    f.add(
        "appliance_uptime_seconds",
        "gauge",
        "seconds since the data plane started",
        "",
        snap.uptime_secs,
    );
    let hz = snap.cycles_per_second.max(1) as f64;
    for c in &snap.cores {
        let l = format!("core=\"{}\"", c.index);
        f.add(
            "appliance_core_busy_seconds_total",
            "counter",
            "time a poll-mode core spent in iterations that did work",
            &l,
            c.loops.busy_cycles as f64 / hz,
        );
        f.add(
            "appliance_core_idle_seconds_total",
            "counter",
            "time a poll-mode core spent in empty iterations or asleep",
            &l,
            c.loops.idle_cycles as f64 / hz,
        );
        for (group, v) in [
            ("queue", &c.queue),
            ("stack", &c.stack),
            ("proxy", &c.proxy),
            ("steering", &c.steering),
        ] {
            core_group(&mut f, group, c.index, v);
        }
    }
    for w in st.workers.iter() {
        let s = w.snapshot();
        // Device names are letters, digits, '-', '_' and '.' (config.rs): no escaping.
        let l = format!("worker=\"{}\",device=\"{}\"", s.index, s.device);
        for (k, n, kind) in [
            ("jobs_total", s.jobs, "counter"),
            ("errors_total", s.errors, "counter"),
            ("batches_total", s.batches, "counter"),
            ("restarts_total", s.restarts, "counter"),
            ("queued", s.queued, "gauge"),
            ("alive", u64::from(s.alive), "gauge"),
        ] {
            f.add(
                &format!("appliance_crypto_worker_{k}"),
                kind,
                &format!("crypto worker {k}"),
                &l,
                n as f64,
            );
        }
        f.add(
            "appliance_crypto_worker_cpu_seconds_total",
            "counter",
            "CPU time of a crypto worker thread",
            &l,
            s.cpu_ns as f64 / 1e9,
        );
        let h = w.latency_us.lock().unwrap_or_else(|p| p.into_inner());
        let name = "appliance_crypto_job_latency_seconds";
        let help = "crypto job time from submission to completion";
        for le_us in [
            50u64, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000,
        ] {
            let n = h.count_between(0, le_us);
            f.raw(
                name,
                "histogram",
                help,
                format!("{name}_bucket{{{l},le=\"{}\"}} {n}", le_us as f64 / 1e6),
            );
        }
        f.raw(
            name,
            "histogram",
            help,
            format!("{name}_bucket{{{l},le=\"+Inf\"}} {}", h.len()),
        );
        f.raw(
            name,
            "histogram",
            help,
            format!("{name}_sum{{{l}}} {}", h.mean() * h.len() as f64 / 1e6),
        );
        f.raw(
            name,
            "histogram",
            help,
            format!("{name}_count{{{l}}} {}", h.len()),
        );
    }
    session_store(&mut f, &st.live.store);
    let gen = st.live.current();
    f.add(
        "appliance_config_generation",
        "gauge",
        "the configuration generation serving new connections (1 at start, +1 per reload)",
        "",
        gen.id as f64,
    );
    f.add(
        "appliance_config_reloads_failed_total",
        "counter",
        "reloads refused (the running configuration stayed)",
        "",
        st.reloads_failed.load(Ordering::Relaxed) as f64,
    );
    for v in gen.vservers.iter() {
        let vl = format!("vserver=\"{}\"", esc(&v.cfg.name));
        f.add(
            "appliance_vserver_enabled",
            "gauge",
            "1 if the vserver takes new connections",
            &vl,
            f64::from(u8::from(v.enabled())),
        );
        f.add(
            "appliance_vserver_refused_disabled_total",
            "counter",
            "new connections reset while the vserver was disabled",
            &vl,
            v.refused_disabled.load(Ordering::Relaxed) as f64,
        );
        f.add(
            "appliance_vserver_no_backend_total",
            "counter",
            "new connections closed because no backend was eligible",
            &vl,
            v.no_backend.load(Ordering::Relaxed) as f64,
        );
        for b in &v.backends {
            let bl = format!("{vl},backend=\"{}\"", b.addr);
            for (k, kind, help, n) in [
                (
                    "up",
                    "gauge",
                    "1 if healthy (or unchecked)",
                    u64::from(b.healthy()),
                ),
                (
                    "draining",
                    "gauge",
                    "1 while draining",
                    u64::from(b.draining()),
                ),
                (
                    "active_connections",
                    "gauge",
                    "open connections to the backend",
                    b.active(),
                ),
                (
                    "chosen_total",
                    "counter",
                    "connections the backend was chosen for",
                    b.chosen.load(Ordering::Relaxed),
                ),
                (
                    "failed_total",
                    "counter",
                    "of those, refused or unanswered",
                    b.failed.load(Ordering::Relaxed),
                ),
                (
                    "transitions_total",
                    "counter",
                    "times the backend went down or came up",
                    b.transitions.load(Ordering::Relaxed),
                ),
            ] {
                f.add(&format!("appliance_backend_{k}"), kind, help, &bl, n as f64);
            }
            for (result, n) in [("passed", &b.checks_passed), ("failed", &b.checks_failed)] {
                f.add(
                    "appliance_backend_checks_total",
                    "counter",
                    "health checks by result",
                    &format!("{bl},result=\"{result}\""),
                    n.load(Ordering::Relaxed) as f64,
                );
            }
        }
    }
    let mut out = String::new();
    f.write(&mut out);
    out
}

/// The session store's families: the local table, lookups by tier, the cluster and the
/// repository (`appliance_session_store_*`, `appliance_cluster_*`).
fn session_store(f: &mut Families, store: &session_store::Store) {
    let s = store.stats();
    let l = &s.local;
    for (k, kind, help, n) in [
        (
            "entries",
            "gauge",
            "TLS sessions held on this node",
            l.entries,
        ),
        (
            "capacity",
            "gauge",
            "TLS sessions this node holds at most",
            l.capacity,
        ),
        ("bytes", "gauge", "key and value bytes held", l.bytes),
        (
            "evictions_total",
            "counter",
            "sessions dropped to make room",
            l.evictions,
        ),
        (
            "expired_total",
            "counter",
            "lookups that found a session past its lifetime",
            l.expired,
        ),
    ] {
        f.add(
            &format!("appliance_session_store_{k}"),
            kind,
            help,
            "",
            n as f64,
        );
    }
    let k = &s.lookups;
    for (tier, n) in [
        ("local", k.hits_local),
        ("peer", k.hits_peer),
        ("repository", k.hits_repository),
    ] {
        f.add(
            "appliance_session_store_hits_total",
            "counter",
            "session-ID lookups answered, by the tier that had the session",
            &format!("tier=\"{tier}\""),
            n as f64,
        );
    }
    f.add(
        "appliance_session_store_misses_total",
        "counter",
        "session-ID lookups no tier could answer (a full handshake)",
        "",
        k.misses as f64,
    );
    f.add(
        "appliance_session_store_timeouts_total",
        "counter",
        "session-ID lookups past lookup_timeout (a full handshake)",
        "",
        k.timeouts as f64,
    );
    if let Some(c) = &s.cluster {
        let up = c.peer.members.iter().filter(|m| m.up).count();
        f.add(
            "appliance_cluster_members",
            "gauge",
            "other nodes heard from recently",
            "",
            up as f64,
        );
        f.add(
            "appliance_cluster_ready",
            "gauge",
            "1 once this node has copied the cluster's sessions",
            "",
            f64::from(u8::from(c.peer.state == session_store::NodeState::Ready)),
        );
        f.add(
            "appliance_cluster_replication_lag",
            "gauge",
            "largest number of this node's messages a live member has not acknowledged",
            "",
            c.peer.replication_lag as f64,
        );
        f.add(
            "appliance_cluster_queue_depth",
            "gauge",
            "local writes waiting for the flow control",
            "",
            c.peer.queue_depth as f64,
        );
        let pc = &c.peer.counters;
        for (k, help, n) in [
            ("sent_total", "datagrams sent", pc.sent),
            ("received_total", "datagrams accepted", pc.received),
            ("nacks_total", "gaps reported (NACKs sent)", pc.nacks_sent),
            ("retransmits_total", "messages sent again", pc.retransmits),
            ("forged_total", "datagrams dropped: bad MAC", pc.forged),
            (
                "replayed_total",
                "datagrams dropped: already delivered",
                pc.replayed,
            ),
            (
                "non_member_total",
                "datagrams dropped: not from a configured peer",
                pc.non_member,
            ),
            (
                "member_downs_total",
                "times a member was declared down",
                pc.member_downs,
            ),
        ] {
            f.add(
                &format!("appliance_cluster_{k}"),
                "counter",
                help,
                "",
                n as f64,
            );
        }
        if let Some(rtt) = c.peer.self_receipt_rtt_ms {
            f.add(
                "appliance_cluster_self_receipt_rtt_seconds",
                "gauge",
                "time for this node's multicast message to come back to it",
                "",
                rtt / 1000.0,
            );
        }
    }
    if let Some(r) = &s.repository {
        for srv in &r.servers {
            let lbl = format!("server=\"{}\"", esc(&srv.server));
            f.add(
                "appliance_cluster_repository_up",
                "gauge",
                "1 while the Redis server answers",
                &lbl,
                f64::from(u8::from(srv.up)),
            );
            f.add(
                "appliance_cluster_repository_errors_total",
                "counter",
                "Redis errors",
                &lbl,
                srv.errors as f64,
            );
        }
    }
}
