//! How `appliancectl` shows each reply to a person (`--json` prints the reply as the
//! daemon sent it instead). Every function takes the typed reply and writes to `out`,
//! so tests check what an operator sees.

use std::collections::BTreeMap;
use std::io::Write;

use control_proto::reply::{
    BackendRow, CertFields, CertInfo, Counters, ReloadSummary, SessionStore, Sessions, Stats,
    Status, VserverSnap,
};

fn num(c: &Counters, k: &str) -> u64 {
    c.get(k).and_then(|v| v.as_u64()).unwrap_or(0)
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Sum of a proxy counter over all cores.
fn total(s: &Stats, key: &str) -> u64 {
    s.cores.iter().map(|c| num(&c.proxy, key)).sum()
}

/// Handshakes per code (`tls_suites`, `tls_groups`), the cores' maps summed.
fn by_code(s: &Stats, key: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::<String, u64>::new();
    for c in &s.cores {
        if let Some(o) = c.proxy.get(key).and_then(|v| v.as_object()) {
            for (k, n) in o {
                *m.entry(k.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    m
}

/// Rates between two samples `secs` apart.
pub fn stats(out: &mut impl Write, a: &Stats, b: &Stats, secs: f64) -> std::io::Result<()> {
    writeln!(
        out,
        "port {} ({}), mac {}, {} queue(s), uptime {:.0}s; rates over {secs:.1}s",
        b.port.name, b.port.driver, b.port.mac, b.port.queues, b.uptime_secs
    )?;
    let rate = |k: &str| total(b, k).saturating_sub(total(a, k)) as f64 / secs;
    let (h12, h13, r12, r13) = (
        rate("tls12_handshakes"),
        rate("tls13_handshakes"),
        rate("tls12_resumed"),
        rate("tls13_resumed"),
    );
    writeln!(
        out,
        "handshakes/s: TLS 1.3 {:.0} full, {:.0} resumed; TLS 1.2 {:.0} full, {:.0} resumed; accepted {:.0} conn/s",
        h13 - r13,
        r13,
        h12 - r12,
        r12,
        rate("accepted")
    )?;
    for (key, title) in [("tls_suites", "by suite"), ("tls_groups", "by group")] {
        let (ca, cb) = (by_code(a, key), by_code(b, key));
        let rates: Vec<String> = cb
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| {
                let d = n.saturating_sub(*ca.get(k).unwrap_or(&0)) as f64 / secs;
                format!("{k} {d:.0}/s ({n} total)")
            })
            .collect();
        if !rates.is_empty() {
            writeln!(out, "{title}: {}", rates.join(", "))?;
        }
    }
    writeln!(
        out,
        "{:>4} {:>4} {:>7} {:>10} {:>10} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "core",
        "cpu",
        "busy%",
        "rx fr/s",
        "tx fr/s",
        "active",
        "accepted",
        "conn/s",
        "be-fail",
        "be-reset",
        "malformed"
    )?;
    for (x, y) in a.cores.iter().zip(&b.cores) {
        let busy = y.loops.busy_cycles.saturating_sub(x.loops.busy_cycles) as f64;
        let idle = y.loops.idle_cycles.saturating_sub(x.loops.idle_cycles) as f64;
        let rate = |cy: &Counters, cx: &Counters, k: &str| {
            num(cy, k).saturating_sub(num(cx, k)) as f64 / secs
        };
        writeln!(
            out,
            "{:>4} {:>4} {:>7.1} {:>10.0} {:>10.0} {:>8} {:>10} {:>9.0} {:>9} {:>9} {:>9}",
            y.index,
            opt(&y.cpu),
            if busy + idle > 0.0 {
                100.0 * busy / (busy + idle)
            } else {
                0.0
            },
            rate(&y.queue, &x.queue, "rx_frames"),
            rate(&y.queue, &x.queue, "tx_frames"),
            num(&y.stack, "active"),
            num(&y.proxy, "accepted"),
            rate(&y.proxy, &x.proxy, "accepted"),
            num(&y.proxy, "backend_failed"),
            num(&y.proxy, "backend_reset"),
            num(&y.stack, "malformed"),
        )?;
    }
    // `[dataplane] loop_phases`: where each core's busy cycles went, by step of its loop.
    for (x, y) in a.cores.iter().zip(&b.cores) {
        let d = |k: &str| num(&y.loop_phases, k).saturating_sub(num(&x.loop_phases, k)) as f64;
        let steps: Vec<(&String, f64)> = y
            .loop_phases
            .keys()
            .filter(|k| *k != "iterations")
            .map(|k| (k, d(k)))
            .collect();
        let total: f64 = steps.iter().map(|(_, c)| c).sum();
        if total <= 0.0 {
            continue;
        }
        let shares: Vec<String> = steps
            .iter()
            .filter(|(_, c)| *c > 0.0)
            .map(|(k, c)| format!("{k} {:.1}%", 100.0 * c / total))
            .collect();
        writeln!(
            out,
            "core {} busy cycles by step ({:.0} busy iterations/s): {}",
            y.index,
            d("iterations") / secs,
            shares.join(", ")
        )?;
    }
    if b.crypto.workers.is_empty() {
        return writeln!(out, "crypto: inline on the poll-mode cores");
    }
    writeln!(
        out,
        "{:>6} {:>10} {:>4} {:>6} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "worker", "device", "cpu", "alive", "jobs/s", "queued", "p50 µs", "p99 µs", "restarts"
    )?;
    for (i, w) in b.crypto.workers.iter().enumerate() {
        let before = a.crypto.workers.get(i).map(|x| num(x, "jobs")).unwrap_or(0);
        writeln!(
            out,
            "{:>6} {:>10} {:>4} {:>6} {:>9.0} {:>7} {:>9} {:>9} {:>9}",
            num(w, "index"),
            w.get("device").and_then(|d| d.as_str()).unwrap_or("cpu"),
            w.get("cpu")
                .and_then(|c| c.as_u64())
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            w.get("alive").and_then(|a| a.as_bool()).unwrap_or(false),
            num(w, "jobs").saturating_sub(before) as f64 / secs,
            num(w, "queued"),
            num(w, "latency_us_p50"),
            num(w, "latency_us_p99"),
            num(w, "restarts"),
        )?;
    }
    Ok(())
}

pub fn status(out: &mut impl Write, v: &Status) -> std::io::Result<()> {
    writeln!(
        out,
        "appliance {} (pid {}), up {:.0}s, config {} (generation {}, applied {:.0}s ago)",
        v.version, v.pid, v.uptime_secs, v.config, v.config_generation, v.config_applied_secs_ago
    )?;
    writeln!(
        out,
        "data plane: port {}, {} poll-mode core(s), crypto {}",
        v.port, v.cores, v.crypto
    )?;
    writeln!(
        out,
        "vservers: {} of {} enabled; backends: {} up, {} down, {} draining of {}",
        v.vservers_enabled,
        v.vservers,
        v.backends_up,
        v.backends_down,
        v.backends_draining,
        v.backends
    )?;
    writeln!(
        out,
        "connections: {} client(s) open, {} proxied now, {} accepted; TLS handshakes: {} ({} resumed)",
        v.clients_open, v.proxied_connections, v.accepted, v.tls_handshakes, v.tls_resumed
    )
}

pub fn vservers(out: &mut impl Write, list: &[VserverSnap]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<16} {:<21} {:<4} {:<8} {:<18} {:<14} {:>8} {:>9} {:>10}",
        "vserver",
        "listen",
        "mode",
        "enabled",
        "balance",
        "check",
        "backends",
        "refused",
        "no-backend"
    )?;
    for x in list {
        let up = x.backends.iter().filter(|b| b.state == "up").count();
        writeln!(
            out,
            "{:<16} {:<21} {:<4} {:<8} {:<18} {:<14} {:>8} {:>9} {:>10}",
            x.name,
            x.listen,
            x.mode,
            if x.enabled { "yes" } else { "DISABLED" },
            x.balance,
            x.health_check.as_deref().unwrap_or("none"),
            format!("{up}/{} up", x.backends.len()),
            x.refused_disabled,
            x.no_backend,
        )?;
    }
    Ok(())
}

pub fn backends(out: &mut impl Write, list: &[BackendRow]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<16} {:<21} {:>6} {:<9} {:>7} {:>9} {:>7} {:>8} {:>8}  last check",
        "vserver", "backend", "weight", "state", "open", "chosen", "failed", "checks+", "checks-",
    )?;
    for r in list {
        let b = &r.backend;
        let mut since = b
            .since_change_secs
            .map(|t| format!(" (changed {t:.0}s ago)"))
            .unwrap_or_default();
        if b.passive_downs > 0 {
            since.push_str(&format!(
                "; taken out {} time(s) by passive health",
                b.passive_downs
            ));
        }
        if let Some(t) = &b.tls {
            let total = t.full + t.resumed;
            let rate = if total > 0 {
                format!("{:.1}% resumed", 100.0 * t.resumed as f64 / total as f64)
            } else {
                "no handshake yet".to_string()
            };
            since.push_str(&format!(
                "; tls {} {} ({} full, {} resumed: {rate}; {} failed)",
                t.version.as_deref().unwrap_or("-"),
                t.suite.as_deref().unwrap_or("-"),
                t.full,
                t.resumed,
                t.failed
            ));
        }
        writeln!(
            out,
            "{:<16} {:<21} {:>6} {:<9} {:>7} {:>9} {:>7} {:>8} {:>8}  {}{since}",
            r.vserver,
            b.address,
            b.weight,
            b.state,
            b.active,
            b.chosen,
            b.failed,
            b.checks_passed,
            b.checks_failed,
            b.last_check,
        )?;
    }
    Ok(())
}

pub fn certs(out: &mut impl Write, list: &[CertInfo]) -> std::io::Result<()> {
    if list.is_empty() {
        writeln!(out, "no tls vserver: no certificates")?;
    }
    for c in list {
        let CertFields::Read {
            subject,
            issuer,
            sans,
            not_before,
            not_after,
            key,
            sha256,
            days_left,
            ..
        } = &c.cert
        else {
            if let CertFields::Unreadable { error } = &c.cert {
                writeln!(
                    out,
                    "vserver {}: unreadable certificate: {error}",
                    c.vserver
                )?;
            }
            continue;
        };
        writeln!(out, "vserver {}: {subject}", c.vserver)?;
        writeln!(
            out,
            "  SANs:     {}",
            if sans.is_empty() {
                "-".into()
            } else {
                sans.join(", ")
            }
        )?;
        writeln!(out, "  issuer:   {issuer}")?;
        writeln!(out, "  key:      {key}, chain of {}", c.chain_length)?;
        writeln!(
            out,
            "  valid:    {not_before} .. {not_after} ({})",
            if *days_left < 0.0 {
                format!("EXPIRED {:.0} days ago", -days_left)
            } else {
                format!("{days_left:.0} days left")
            }
        )?;
        writeln!(out, "  sha256:   {sha256}")?;
    }
    Ok(())
}

pub fn sessions(out: &mut impl Write, v: &Sessions) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<21} {:<12} {:<21} {:<10} {:<7} {:<29} {:<20} {:<7} {:>8} {:>10} {:>12}",
        "client",
        "vserver",
        "backend",
        "state",
        "tls",
        "suite",
        "sni",
        "resumed",
        "age",
        "in",
        "out"
    )?;
    for r in &v.sessions {
        writeln!(
            out,
            "{:<21} {:<12} {:<21} {:<10} {:<7} {:<29} {:<20} {:<7} {:>7.1}s {:>10} {:>12}",
            r.client,
            r.vserver,
            opt(&r.backend),
            r.state,
            opt(&r.tls_version),
            opt(&r.suite),
            opt(&r.sni),
            r.resumed
                .map(|b| if b { "yes" } else { "no" })
                .unwrap_or("-"),
            r.age_secs,
            r.bytes_in,
            r.bytes_out,
        )?;
    }
    writeln!(out, "{} open client connection(s)", v.sessions.len())?;
    if !v.cores_not_answering.is_empty() {
        writeln!(
            out,
            "warning: core(s) {:?} did not answer; their connections are missing",
            v.cores_not_answering
        )?;
    }
    for c in &v.session_caches {
        writeln!(
            out,
            "vserver {}: {} cached TLS session(s) of {}; tickets {}",
            c.vserver,
            opt(&c.cached_sessions),
            opt(&c.cache_capacity),
            if c.tickets { "on" } else { "off" }
        )?;
    }
    Ok(())
}

pub fn reload(out: &mut impl Write, v: &ReloadSummary) -> std::io::Result<()> {
    let list = |l: &[String]| {
        if l.is_empty() {
            "-".to_string()
        } else {
            l.join(", ")
        }
    };
    writeln!(
        out,
        "reloaded: configuration generation {} serves new connections",
        v.generation
    )?;
    for (label, l) in [
        ("vservers added", &v.added),
        ("vservers removed", &v.removed),
        ("vservers kept", &v.kept),
        ("certificates changed", &v.certificates_changed),
        ("sessions kept", &v.sessions_kept),
    ] {
        writeln!(out, "  {label:<21} {}", list(l))?;
    }
    if !v.cores_adopted {
        writeln!(
            out,
            "  warning: a poll-mode core has not taken it yet (see the daemon's log)"
        )?;
    }
    Ok(())
}

pub fn session_store(out: &mut impl Write, v: &SessionStore) -> std::io::Result<()> {
    let l = &v.local;
    writeln!(
        out,
        "node {}: {} TLS session(s) of {} ({} bytes), {} tombstone(s); {} evicted, {} expired",
        v.node,
        num(l, "entries"),
        num(l, "capacity"),
        num(l, "bytes"),
        num(l, "tombstones"),
        num(l, "evictions"),
        num(l, "expired"),
    )?;
    let k = &v.lookups;
    writeln!(
        out,
        "lookups: {} hit here, {} from a peer, {} from the repository, {} missed, {} timed out",
        num(k, "hits_local"),
        num(k, "hits_peer"),
        num(k, "hits_repository"),
        num(k, "misses"),
        num(k, "timeouts"),
    )?;
    match &v.cluster {
        None => writeln!(out, "cluster: off (this node's sessions are its own)")?,
        Some(c) => writeln!(
            out,
            "cluster: {} ({}), {} of {} other node(s) up; see show cluster",
            c.state,
            if c.multicast { "multicast" } else { "unicast" },
            c.members.iter().filter(|m| m.up).count(),
            c.members.len()
        )?,
    }
    match &v.repository {
        None => writeln!(out, "repository: none"),
        Some(r) => {
            writeln!(
                out,
                "repository: {} lookup(s), {} hit, {} missed, {} timed out, {} with no server up",
                r.lookups, r.hits, r.misses, r.timeouts, r.down
            )?;
            for srv in &r.servers {
                writeln!(
                    out,
                    "  {:<22} {:<5} errors {:>6} reconnects {:>5} writes {:>8} failed {:>6}",
                    srv.get("server").and_then(|x| x.as_str()).unwrap_or("?"),
                    if srv.get("up").and_then(|x| x.as_bool()).unwrap_or(false) {
                        "up"
                    } else {
                        "DOWN"
                    },
                    num(srv, "errors"),
                    num(srv, "reconnects"),
                    num(srv, "writes"),
                    num(srv, "write_failures"),
                )?;
            }
            Ok(())
        }
    }
}

pub fn cluster(out: &mut impl Write, v: &SessionStore) -> std::io::Result<()> {
    let Some(c) = &v.cluster else {
        return writeln!(
            out,
            "node {}: not in a cluster (no [cluster] in its configuration)",
            v.node
        );
    };
    writeln!(
        out,
        "node {} ({}, {}), key {}; last seq {}, replication lag {}, queue {}, retransmit buffer {}, unacked ADDs {}{}",
        c.node,
        c.state,
        if c.multicast { "multicast" } else { "unicast" },
        v.key_fingerprint.as_deref().unwrap_or("-"),
        c.last_seq,
        c.replication_lag,
        c.queue_depth,
        c.retransmit_buffer,
        c.unacked_adds,
        c.self_receipt_rtt_ms
            .map(|r| format!(", self-receipt {r:.1} ms"))
            .unwrap_or_default(),
    )?;
    if let Some(d) = c.replication_delay_ms {
        writeln!(
            out,
            "replication delay of the last {} write(s) from other nodes: p50 {} ms, p99 {} ms",
            d.samples, d.p50, d.p99
        )?;
    }
    writeln!(
        out,
        "{:<16} {:<22} {:<5} {:<8} {:>12} {:>8} {:>8}",
        "node", "address", "up", "state", "last heard", "lag", "behind"
    )?;
    for m in &c.members {
        writeln!(
            out,
            "{:<16} {:<22} {:<5} {:<8} {:>12} {:>8} {:>8}",
            m.name,
            m.addr.as_deref().unwrap_or("-"),
            if m.up { "yes" } else { "DOWN" },
            m.state,
            m.last_heard_ago_ms
                .map(|t| format!("{:.1}s ago", t as f64 / 1000.0))
                .unwrap_or_else(|| "never".into()),
            m.lag,
            m.behind,
        )?;
    }
    let n = |k: &str| num(&c.counters, k);
    writeln!(
        out,
        "messages: {} sent, {} received; ACKs {}/{}; NACKs {}/{}; {} retransmitted",
        n("sent"),
        n("received"),
        n("acks_sent"),
        n("acks_received"),
        n("nacks_sent"),
        n("nacks_received"),
        n("retransmits"),
    )?;
    writeln!(
        out,
        "dropped: {} forged, {} replayed, {} from non-members, {} malformed; {} write(s) the cores could not queue",
        n("forged"),
        n("replayed"),
        n("non_member"),
        n("malformed"),
        c.channel_full,
    )
}

/// `show socks`: the socks5 vservers' counters summed over the cores, and the open UDP
/// associations (from `show sessions`).
#[derive(Debug, serde::Serialize)]
pub struct SocksView {
    /// `socks_*` and `dgram_*` counters, summed over the cores.
    pub counters: BTreeMap<String, u64>,
    pub associations_open: Vec<control_proto::reply::SessionRow>,
    /// Cores that did not answer the sessions request in time.
    pub cores_not_answering: Vec<usize>,
}

impl SocksView {
    pub fn new(stats: &Stats, sessions: &Sessions) -> Self {
        let mut counters = BTreeMap::new();
        for c in &stats.cores {
            for (k, v) in &c.proxy {
                if k.starts_with("socks_") || k.starts_with("dgram_") {
                    *counters.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
                }
            }
        }
        SocksView {
            counters,
            associations_open: sessions
                .sessions
                .iter()
                .filter(|r| r.state == "socks_associated")
                .cloned()
                .collect(),
            cores_not_answering: sessions.cores_not_answering.clone(),
        }
    }

    fn n(&self, k: &str) -> u64 {
        self.counters.get(k).copied().unwrap_or(0)
    }
}

pub fn socks(out: &mut impl Write, v: &SocksView) -> std::io::Result<()> {
    let n = |k: &str| v.n(k);
    writeln!(
        out,
        "requests: {} CONNECT, {} UDP ASSOCIATE; refused: {} by policy, {} failed authentication, {} unsupported, {} target failed, {} malformed",
        n("socks_connects"),
        n("socks_associations"),
        n("socks_refused_policy"),
        n("socks_auth_failed"),
        n("socks_unsupported"),
        n("socks_target_failed"),
        n("socks_malformed"),
    )?;
    writeln!(
        out,
        "datagrams: {} client->target ({} bytes), {} target->client ({} bytes)",
        n("dgram_up"),
        n("dgram_bytes_up"),
        n("dgram_down"),
        n("dgram_bytes_down"),
    )?;
    writeln!(
        out,
        "dropped: {} replayed, {} older than the window, {} failed authentication, {} plain refused, {} from strangers, {} malformed, {} fragments, {} refused by policy, {} too big, {} buffers full",
        n("dgram_replayed"),
        n("dgram_too_old"),
        n("dgram_auth_failed"),
        n("dgram_plain_refused"),
        n("dgram_foreign"),
        n("dgram_malformed"),
        n("dgram_fragment_dropped"),
        n("dgram_refused_policy"),
        n("dgram_too_big"),
        n("dgram_send_full"),
    )?;
    writeln!(out, "associations open: {}", v.associations_open.len())?;
    if !v.associations_open.is_empty() {
        writeln!(
            out,
            "  {:<22} {:<16} {:<22} {:>8} {:>12} {:>12}",
            "CLIENT", "VSERVER", "RELAY", "AGE", "BYTES_UP", "BYTES_DOWN"
        )?;
        for r in &v.associations_open {
            writeln!(
                out,
                "  {:<22} {:<16} {:<22} {:>7.0}s {:>12} {:>12}",
                r.client,
                r.vserver,
                opt(&r.backend),
                r.age_secs,
                r.bytes_in,
                r.bytes_out
            )?;
        }
    }
    if !v.cores_not_answering.is_empty() {
        writeln!(
            out,
            "cores not answering (their associations are missing): {:?}",
            v.cores_not_answering
        )?;
    }
    Ok(())
}
