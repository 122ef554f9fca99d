//! Counting what happened, and saying it: errors by kind, latency percentiles from
//! `hdrhistogram`, rates, the text report for people and the JSON one for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::args::Args;

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// TCP connect refused (nothing listening).
    ConnectRefused,
    /// Another socket error while connecting or during I/O.
    Io,
    /// The operation did not finish within `--timeout`.
    Timeout,
    /// The server's certificate did not verify.
    Verify,
    /// The server sent a TLS alert.
    Alert,
    /// The handshake failed on our side (no common version, suite, group...).
    Handshake,
    /// The server closed the connection before the operation was done.
    Closed,
    /// TCP reset (or a broken pipe) mid-connection.
    Reset,
    /// A record-layer failure after the handshake.
    Tls,
    /// A response whose status is not 2xx or 3xx.
    HttpStatus,
    /// A response that cannot be framed as HTTP/1.1.
    BadResponse,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::ConnectRefused => "connect_refused",
            Kind::Io => "io",
            Kind::Timeout => "timeout",
            Kind::Verify => "verify",
            Kind::Alert => "alert",
            Kind::Handshake => "handshake",
            Kind::Closed => "closed",
            Kind::Reset => "reset",
            Kind::Tls => "tls",
            Kind::HttpStatus => "http_status",
            Kind::BadResponse => "bad_response",
        }
    }
}

/// A failed operation: its kind and what the library or socket said.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: Kind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }
}

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

/// One thread's counts; merged at the end.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Operations that succeeded.
    pub ok: u64,
    /// Completed handshakes, and how many of them resumed a session.
    pub handshakes: u64,
    pub resumed: u64,
    /// In resume mode: handshakes that offered a session and got a full one instead.
    pub not_resumed: u64,
    /// HTTP responses received whole.
    pub responses: u64,
    /// Application bytes read and written (TLS plaintext).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Bulk: a keep-alive connection the server had closed, opened again for the request.
    pub reconnects: u64,
    pub errors: BTreeMap<Kind, u64>,
    /// The first detail seen for each kind.
    pub examples: BTreeMap<Kind, String>,
    pub versions: BTreeMap<String, u64>,
    pub ciphers: BTreeMap<String, u64>,
    /// Open loop: operations that were due but never started before the end.
    pub unstarted: u64,
    /// Operations still in flight when the run ended (neither success nor error).
    pub unfinished: u64,
    pub latency: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            ok: 0,
            handshakes: 0,
            resumed: 0,
            not_resumed: 0,
            responses: 0,
            bytes_in: 0,
            bytes_out: 0,
            reconnects: 0,
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
            versions: BTreeMap::new(),
            ciphers: BTreeMap::new(),
            unstarted: 0,
            unfinished: 0,
            latency: new_histogram(),
        }
    }
}

impl Stats {
    pub fn error(&mut self, f: &Failure) {
        *self.errors.entry(f.kind).or_default() += 1;
        self.examples
            .entry(f.kind)
            .or_insert_with(|| f.detail.clone());
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn latency(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(us);
    }

    pub fn merge(&mut self, o: &Stats) {
        self.ok += o.ok;
        self.handshakes += o.handshakes;
        self.resumed += o.resumed;
        self.not_resumed += o.not_resumed;
        self.responses += o.responses;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.reconnects += o.reconnects;
        self.unstarted += o.unstarted;
        self.unfinished += o.unfinished;
        for (k, n) in &o.errors {
            *self.errors.entry(*k).or_default() += n;
        }
        for (k, d) in &o.examples {
            self.examples.entry(*k).or_insert_with(|| d.clone());
        }
        for (k, n) in &o.versions {
            *self.versions.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &o.ciphers {
            *self.ciphers.entry(k.clone()).or_default() += n;
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
    }
}

/// The whole run.
pub struct Report<'a> {
    pub args: &'a Args,
    pub stats: Stats,
    /// From the start to the last operation's end.
    pub elapsed: Duration,
    /// CPU time loadgen itself used over the run: what one operation costs the
    /// client. On the kernel's TCP, user + system time of all threads (getrusage);
    /// with `--dpdk`, the polling thread's busy time ([`super::net`]).
    pub cpu: Duration,
}

const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
];

impl Report<'_> {
    fn per_sec(&self, n: u64) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            n as f64 / s
        } else {
            0.0
        }
    }

    pub fn json(&self) -> Value {
        let (a, s) = (self.args, &self.stats);
        let mut lat = serde_json::Map::new();
        for (name, q) in PERCENTILES {
            lat.insert(name.into(), json!(s.latency.value_at_percentile(q)));
        }
        lat.insert("max".into(), json!(s.latency.max()));
        lat.insert(
            "mean".into(),
            json!((s.latency.mean() * 10.0).round() / 10.0),
        );
        lat.insert("samples".into(), json!(s.latency.len()));
        let errors: serde_json::Map<String, Value> = s
            .errors
            .iter()
            .map(|(k, n)| (k.name().to_string(), json!(n)))
            .collect();
        let examples: serde_json::Map<String, Value> = s
            .examples
            .iter()
            .map(|(k, d)| (k.name().to_string(), json!(d)))
            .collect();
        json!({
            "target": a.target_text,
            "engine": a.engine.name(),
            "cheapenings": a.cheapenings(),
            "mode": a.mode.name(),
            "resume": a.resume.map(|r| r.name()),
            "tls": a.version.name(),
            "loop": if a.rate.is_some() { "open" } else { "closed" },
            "rate_target": a.rate,
            "threads": a.threads,
            "concurrency": a.concurrency,
            "seconds": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "network": self.network(),
            "client_cpu_method": self.cpu_method(),
            "client_cpu_seconds": (self.cpu.as_secs_f64() * 1000.0).round() / 1000.0,
            "client_cpu_us_per_op": self.cpu_per_op().map(|u| (u * 10.0).round() / 10.0),
            "ok": s.ok,
            "ops_per_sec": (self.per_sec(s.ok) * 10.0).round() / 10.0,
            "handshakes": s.handshakes,
            "handshakes_per_sec": (self.per_sec(s.handshakes) * 10.0).round() / 10.0,
            "resumed": s.resumed,
            "not_resumed": s.not_resumed,
            "responses": s.responses,
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            "bytes_in_per_sec": self.per_sec(s.bytes_in).round(),
            "reconnects": s.reconnects,
            "errors": errors,
            "error_count": s.error_count(),
            "error_examples": examples,
            "unstarted": s.unstarted,
            "unfinished": s.unfinished,
            "versions": s.versions,
            "ciphers": s.ciphers,
            "latency_us": lat,
        })
    }

    /// The latency distribution as an SVG percentile plot (`--plot`).
    pub fn plot(&self) -> Option<String> {
        let (a, s) = (self.args, &self.stats);
        let loop_kind = match a.rate {
            Some(r) => format!("open loop at {r}/s"),
            None => format!("closed loop, {} in flight", a.concurrency),
        };
        let title = format!(
            "loadgen {}: {} mode, {} ok at {:.0}/s, {loop_kind}, {}",
            a.target_text,
            a.mode.name(),
            s.ok,
            self.per_sec(s.ok),
            a.engine.name()
        );
        super::plot::svg(&s.latency, &title)
    }

    /// `kernel`, or `dpdk IFACE ADDR/P`.
    pub fn network(&self) -> String {
        match &self.args.dpdk {
            None => "kernel".into(),
            Some(d) => format!("dpdk {} {}/{}", d.iface, d.addr, d.prefix),
        }
    }

    /// How [`Report::cpu`] was measured.
    pub fn cpu_method(&self) -> &'static str {
        if self.args.dpdk.is_some() {
            "busy-polling"
        } else {
            "getrusage"
        }
    }

    /// loadgen's CPU microseconds per successful operation.
    pub fn cpu_per_op(&self) -> Option<f64> {
        (self.stats.ok > 0).then(|| self.cpu.as_secs_f64() * 1e6 / self.stats.ok as f64)
    }

    pub fn text(&self) -> String {
        let (a, s) = (self.args, &self.stats);
        let mut o = String::new();
        let loop_kind = match a.rate {
            Some(r) => format!("open loop at {r}/s"),
            None => "closed loop".into(),
        };
        let resume = a
            .resume
            .map_or(String::new(), |r| format!(" ({})", r.name()));
        let cheap = a.cheapenings();
        let engine = if cheap.is_empty() {
            a.engine.name().to_string()
        } else {
            format!("{} ({})", a.engine.name(), cheap.join(", "))
        };
        o += &format!(
            "loadgen: {} mode {}{resume}, TLS {}, {engine}, {} thread(s), concurrency {}, {loop_kind}, network {}\n",
            a.target_text,
            a.mode.name(),
            a.version.name(),
            a.threads,
            a.concurrency,
            self.network()
        );
        o += &format!(
            "  ran          {:.2} s: {} ok ({:.1}/s), {} errors\n",
            self.elapsed.as_secs_f64(),
            s.ok,
            self.per_sec(s.ok),
            s.error_count()
        );
        if let Some(u) = self.cpu_per_op() {
            o += &format!(
                "  client cpu   {:.2} s, {u:.1} µs per operation ({})\n",
                self.cpu.as_secs_f64(),
                if self.args.dpdk.is_some() {
                    "busy time of the polling thread"
                } else {
                    "user + system time"
                }
            );
        }
        o += &format!(
            "  handshakes   {} ({:.1}/s): full {}, resumed {}",
            s.handshakes,
            self.per_sec(s.handshakes),
            s.handshakes - s.resumed,
            s.resumed
        );
        if s.not_resumed > 0 {
            o += &format!(
                " (a session was offered and refused {} times)",
                s.not_resumed
            );
        }
        o += "\n";
        if a.mode.http() {
            o += &format!(
                "  responses    {}; {:.1} MB/s in, {:.2} MB/s out",
                s.responses,
                self.per_sec(s.bytes_in) / 1e6,
                self.per_sec(s.bytes_out) / 1e6
            );
            if s.reconnects > 0 {
                o += &format!("; {} keep-alive reconnects", s.reconnects);
            }
            o += "\n";
        }
        if s.latency.is_empty() {
            o += "  latency      no samples\n";
        } else {
            o += "  latency µs  ";
            for (name, q) in PERCENTILES {
                o += &format!(" {name} {}", s.latency.value_at_percentile(q));
            }
            o += &format!(" max {} (mean {:.0})\n", s.latency.max(), s.latency.mean());
        }
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !s.versions.is_empty() {
            o += &format!("  versions     {}\n", list(&s.versions));
            o += &format!("  ciphers      {}\n", list(&s.ciphers));
        }
        for (k, n) in &s.errors {
            let ex = s.examples.get(k).map(String::as_str).unwrap_or("");
            o += &format!("  error        {} {n} (first: {ex})\n", k.name());
        }
        if s.unstarted > 0 {
            o += &format!(
                "  unstarted    {} operations were due and never started (the server fell behind the rate)\n",
                s.unstarted
            );
        }
        if s.unfinished > 0 {
            o += &format!(
                "  unfinished   {} operations were still in flight at the end\n",
                s.unfinished
            );
        }
        o
    }
}
