//! `appliancectl`: the management CLI. It talks to the daemon's control socket and
//! owns nothing else; it never links DPDK or the data plane.
//!
//! The socket is `--socket PATH`, else `$APPLIANCE_SOCKET`, else the `[control] socket`
//! of `--config FILE`, else `/run/appliance/control.sock` (the daemon's default).
//! Tables are for people; `--json` prints the daemon's JSON for scripts. Exit codes:
//! 0 done, 1 the appliance could not be reached or refused the command, 2 usage.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

const DEFAULT_SOCKET: &str = "/run/appliance/control.sock";

const USAGE: &str = "usage: appliancectl [OPTIONS] COMMAND [ARGS]

Commands:
  status                          version, uptime, vservers and backends up, totals
  show stats [--interval SECS]    rates over SECS (default 1): handshakes/s by version,
                                  full/resumed and suite; per-core busy %; crypto queues
  show vservers                   each vserver: mode, enabled, balancing, health check
  show backends                   each backend: state, weight, open connections, checks
  show certs                      each certificate: subject, SANs, key, expiry
  show sessions                   each open client connection; TLS session caches
  vserver enable|disable NAME     a disabled vserver resets new connections
  backend drain|enable ADDRESS [--vserver NAME]
                                  a draining backend takes no new connections but keeps
                                  its open ones; without --vserver: in every vserver
  reload                          apply the configuration file again (vservers,
                                  certificates, backends); open connections carry on
  top [--interval SECS] [--count N]
                                  show stats and backends, refreshed every SECS
  ping                            check that the daemon answers
  stats                           same as show stats
  help [COMMAND]                  this text, or one command's

Options (before or after the command):
  --socket PATH   control socket (default: $APPLIANCE_SOCKET, else the [control] socket
                  of --config FILE, else /run/appliance/control.sock)
  --config FILE   the daemon's configuration, to find its control socket
  --json          print the daemon's JSON instead of a table
  -h, --help      help

Exit status: 0 done; 1 the appliance could not be reached or refused; 2 usage error.";

fn print_sessions(v: &Value) {
    let rows = v["sessions"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let f = |r: &Value, k: &str| match &r[k] {
        Value::String(x) => x.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Null => "-".to_string(),
        o => o.to_string(),
    };
    println!(
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
    );
    for r in rows {
        println!(
            "{:<21} {:<12} {:<21} {:<10} {:<7} {:<29} {:<20} {:<7} {:>7.1}s {:>10} {:>12}",
            f(r, "client"),
            f(r, "vserver"),
            f(r, "backend"),
            f(r, "state"),
            f(r, "tls_version"),
            f(r, "suite"),
            f(r, "sni"),
            f(r, "resumed"),
            r["age_secs"].as_f64().unwrap_or(0.0),
            u(r, &["bytes_in"]),
            u(r, &["bytes_out"]),
        );
    }
    println!("{} open client connection(s)", rows.len());
    if let Some(c) = v["cores_not_answering"]
        .as_array()
        .filter(|c| !c.is_empty())
    {
        println!("warning: core(s) {c:?} did not answer; their connections are missing");
    }
    for c in v["session_caches"].as_array().into_iter().flatten() {
        println!(
            "vserver {}: {} cached TLS session(s) of {}; tickets {}",
            f(c, "vserver"),
            f(c, "cached_sessions"),
            f(c, "cache_capacity"),
            if c["tickets"] == Value::Bool(true) {
                "on"
            } else {
                "off"
            }
        );
    }
}

fn print_reload(v: &Value) {
    let list = |k: &str| {
        let l: Vec<&str> = v[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if l.is_empty() {
            "-".to_string()
        } else {
            l.join(", ")
        }
    };
    println!(
        "reloaded: configuration generation {} serves new connections",
        v["generation"]
    );
    for (label, k) in [
        ("vservers added", "added"),
        ("vservers removed", "removed"),
        ("vservers kept", "kept"),
        ("certificates changed", "certificates_changed"),
        ("sessions kept", "sessions_kept"),
    ] {
        println!("  {label:<21} {}", list(k));
    }
    if v["cores_adopted"] == Value::Bool(false) {
        println!("  warning: a poll-mode core has not taken it yet (see the daemon's log)");
    }
}

fn command_help(cmd: &str) -> Option<&'static str> {
    Some(match cmd {
        "status" => "usage: appliancectl status [--json]\n\nThe daemon's version, pid, uptime, configuration file, port and cores, how many\nvservers are enabled and backends up, and totals of connections and handshakes.",
        "show" | "stats" => "usage: appliancectl show stats|vservers|backends|certs|sessions [--json] [--interval SECS]\n\n  stats     samples the counters twice, SECS apart (default 1), and prints rates:\n            handshakes/s by version, full and resumed, and by suite; connections;\n            per-core busy %; crypto workers' queues and latency. --json prints one\n            raw sample.\n  vservers  name, listen address, mode, enabled, balancing method, health check,\n            backends up, connections refused (disabled) or closed (no backend)\n  backends  per vserver and backend: state (up, down, draining), weight, open and\n            total connections, failures, health checks passed/failed, last result\n  certs     per tls vserver and certificate: subject, SANs, key, expiry, days left\n  sessions  each open client connection: client, vserver, backend, state, TLS\n            version and suite, SNI, resumed, age, bytes each way; then each tls\n            vserver's session cache (sessions held, capacity) and tickets",
        "vserver" => "usage: appliancectl vserver enable|disable NAME\n\nA disabled vserver resets new connections (RST); its open connections carry on.",
        "backend" => "usage: appliancectl backend drain|enable ADDRESS [--vserver NAME]\n\nA draining backend is chosen for no new connection; its open connections carry on.\nenable lets it take new connections again. ADDRESS is ip:port as configured.\nWithout --vserver, every vserver that has the backend is changed.",
        "top" => "usage: appliancectl top [--interval SECS] [--count N]\n\nA live view: show stats and show backends, redrawn every SECS (default 1),\nN times (default: until interrupted).",
        "reload" => "usage: appliancectl reload [--json]\n\nThe daemon reads its configuration file again and applies it at once: new\nconnections get the new vservers, certificates, backends and TLS settings; open\nconnections carry on with what they started with. Switches (disabled vservers,\ndraining backends), health and counters carry over by vserver name and backend\naddress, and so do session caches and ticket keys whose settings are unchanged.\nA file with an error is refused with that error, and so is a change to\n[dataplane], [tcp], [crypto], [control], [metrics] or [log] (a restart);\neither way the running configuration stays and the exit status is 1.",
        "ping" => "usage: appliancectl ping\n\nExit status 0 if the daemon answers.",
        "help" => USAGE,
        _ => return None,
    })
}

/// Exit status and message of a failed command.
struct Failure {
    code: u8,
    msg: String,
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        msg: msg.into(),
    }
}

fn failed(msg: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        msg: msg.into(),
    }
}

fn request(path: &str, cmd: &str) -> Result<Value, Failure> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "the control socket admits only the daemon's user and root"
            }
            _ => "is it running? is --socket right?",
        };
        failed(format!(
            "cannot reach the appliance at {path}: {e} ({hint})"
        ))
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // A daemon that refuses us answers without reading: its reply still counts.
    let wrote = writeln!(s, "{cmd}");
    let mut line = String::new();
    let read = BufReader::new(&s).read_line(&mut line);
    match (read, wrote) {
        (Ok(n), _) if n > 0 => {}
        (_, Err(e)) | (Err(e), _) => return Err(failed(format!("{path}: {e}"))),
        (Ok(_), Ok(())) => {
            return Err(failed(format!(
                "{path}: the appliance closed without answering"
            )))
        }
    }
    let v: Value =
        serde_json::from_str(&line).map_err(|e| failed(format!("{path}: bad reply: {e}")))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(failed(format!("the appliance refused: {err}")));
    }
    Ok(v)
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("-")
}

/// Sum of a proxy counter over all cores.
fn total(v: &Value, key: &str) -> u64 {
    v["cores"]
        .as_array()
        .map(|cs| cs.iter().map(|c| u(c, &["proxy", key])).sum())
        .unwrap_or(0)
}

fn print_stats(a: &Value, b: &Value, secs: f64) {
    println!(
        "port {} ({}), mac {}, {} queue(s), uptime {:.0}s; rates over {secs:.1}s",
        b["port"]["name"].as_str().unwrap_or("?"),
        b["port"]["driver"].as_str().unwrap_or("?"),
        b["port"]["mac"].as_str().unwrap_or("?"),
        u(b, &["port", "queues"]),
        b["uptime_secs"].as_f64().unwrap_or(0.0)
    );
    let rate = |k: &str| total(b, k).saturating_sub(total(a, k)) as f64 / secs;
    let (h12, h13, r12, r13) = (
        rate("tls12_handshakes"),
        rate("tls13_handshakes"),
        rate("tls12_resumed"),
        rate("tls13_resumed"),
    );
    println!(
        "handshakes/s: TLS 1.3 {:.0} full, {:.0} resumed; TLS 1.2 {:.0} full, {:.0} resumed; accepted {:.0} conn/s",
        h13 - r13,
        r13,
        h12 - r12,
        r12,
        rate("accepted")
    );
    // Per suite: the per-core maps summed.
    let suites = |v: &Value| {
        let mut m = std::collections::BTreeMap::<String, u64>::new();
        for c in v["cores"].as_array().into_iter().flatten() {
            if let Some(o) = c["proxy"]["tls_suites"].as_object() {
                for (k, n) in o {
                    *m.entry(k.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
        m
    };
    let (sa, sb) = (suites(a), suites(b));
    let by_suite: Vec<String> = sb
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(k, &n)| {
            let d = n.saturating_sub(*sa.get(k).unwrap_or(&0)) as f64 / secs;
            format!("{k} {d:.0}/s ({n} total)")
        })
        .collect();
    if !by_suite.is_empty() {
        println!("by suite: {}", by_suite.join(", "));
    }
    println!(
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
    );
    let empty = vec![];
    let (ca, cb) = (
        a["cores"].as_array().unwrap_or(&empty),
        b["cores"].as_array().unwrap_or(&empty),
    );
    for (x, y) in ca.iter().zip(cb) {
        let busy =
            u(y, &["loops", "busy_cycles"]).saturating_sub(u(x, &["loops", "busy_cycles"])) as f64;
        let idle =
            u(y, &["loops", "idle_cycles"]).saturating_sub(u(x, &["loops", "idle_cycles"])) as f64;
        let rate = |p: &[&str]| (u(y, p).saturating_sub(u(x, p))) as f64 / secs;
        println!(
            "{:>4} {:>4} {:>7.1} {:>10.0} {:>10.0} {:>8} {:>10} {:>9.0} {:>9} {:>9} {:>9}",
            u(y, &["index"]),
            y["cpu"]
                .as_u64()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            if busy + idle > 0.0 {
                100.0 * busy / (busy + idle)
            } else {
                0.0
            },
            rate(&["queue", "rx_frames"]),
            rate(&["queue", "tx_frames"]),
            u(y, &["stack", "active"]),
            u(y, &["proxy", "accepted"]),
            rate(&["proxy", "accepted"]),
            u(y, &["proxy", "backend_failed"]),
            u(y, &["proxy", "backend_reset"]),
            u(y, &["stack", "malformed"]),
        );
    }
    let workers = b["crypto"]["workers"].as_array().unwrap_or(&empty);
    if workers.is_empty() {
        println!("crypto: inline on the poll-mode cores");
    } else {
        println!(
            "{:>6} {:>10} {:>4} {:>6} {:>9} {:>7} {:>9} {:>9} {:>9}",
            "worker", "device", "cpu", "alive", "jobs/s", "queued", "p50 µs", "p99 µs", "restarts"
        );
        let wa = a["crypto"]["workers"].as_array().unwrap_or(&empty);
        for (i, w) in workers.iter().enumerate() {
            let before = wa.get(i).map(|x| u(x, &["jobs"])).unwrap_or(0);
            println!(
                "{:>6} {:>10} {:>4} {:>6} {:>9.0} {:>7} {:>9} {:>9} {:>9}",
                u(w, &["index"]),
                w["device"].as_str().unwrap_or("cpu"),
                w["cpu"]
                    .as_u64()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                w["alive"].as_bool().unwrap_or(false),
                u(w, &["jobs"]).saturating_sub(before) as f64 / secs,
                u(w, &["queued"]),
                u(w, &["latency_us_p50"]),
                u(w, &["latency_us_p99"]),
                u(w, &["restarts"]),
            );
        }
    }
}

fn print_status(v: &Value) {
    println!(
        "appliance {} (pid {}), up {:.0}s, config {} (generation {}, applied {:.0}s ago)",
        s(v, "version"),
        u(v, &["pid"]),
        v["uptime_secs"].as_f64().unwrap_or(0.0),
        s(v, "config"),
        u(v, &["config_generation"]),
        v["config_applied_secs_ago"].as_f64().unwrap_or(0.0)
    );
    println!(
        "data plane: port {}, {} poll-mode core(s), crypto {}",
        s(v, "port"),
        u(v, &["cores"]),
        s(v, "crypto")
    );
    println!(
        "vservers: {} of {} enabled; backends: {} up, {} down, {} draining of {}",
        u(v, &["vservers_enabled"]),
        u(v, &["vservers"]),
        u(v, &["backends_up"]),
        u(v, &["backends_down"]),
        u(v, &["backends_draining"]),
        u(v, &["backends"])
    );
    println!(
        "connections: {} client(s) open, {} proxied now, {} accepted; TLS handshakes: {} ({} resumed)",
        u(v, &["clients_open"]),
        u(v, &["proxied_connections"]),
        u(v, &["accepted"]),
        u(v, &["tls_handshakes"]),
        u(v, &["tls_resumed"])
    );
}

fn print_vservers(v: &Value) {
    println!(
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
    );
    for x in v.as_array().into_iter().flatten() {
        let bs = x["backends"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let up = bs.iter().filter(|b| b["state"] == "up").count();
        println!(
            "{:<16} {:<21} {:<4} {:<8} {:<18} {:<14} {:>8} {:>9} {:>10}",
            s(x, "name"),
            s(x, "listen"),
            s(x, "mode"),
            if x["enabled"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "DISABLED"
            },
            s(x, "balance"),
            x["health_check"].as_str().unwrap_or("none"),
            format!("{up}/{} up", bs.len()),
            u(x, &["refused_disabled"]),
            u(x, &["no_backend"]),
        );
    }
}

fn print_backends(v: &Value) {
    println!(
        "{:<16} {:<21} {:>6} {:<9} {:>7} {:>9} {:>7} {:>8} {:>8}  last check",
        "vserver", "backend", "weight", "state", "open", "chosen", "failed", "checks+", "checks-",
    );
    for b in v.as_array().into_iter().flatten() {
        let since = b["since_change_secs"]
            .as_f64()
            .map(|t| format!(" (changed {t:.0}s ago)"))
            .unwrap_or_default();
        println!(
            "{:<16} {:<21} {:>6} {:<9} {:>7} {:>9} {:>7} {:>8} {:>8}  {}{since}",
            s(b, "vserver"),
            s(b, "address"),
            u(b, &["weight"]),
            s(b, "state"),
            u(b, &["active"]),
            u(b, &["chosen"]),
            u(b, &["failed"]),
            u(b, &["checks_passed"]),
            u(b, &["checks_failed"]),
            s(b, "last_check"),
        );
    }
}

fn print_certs(v: &Value) {
    let list = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        println!("no tls vserver: no certificates");
    }
    for c in list {
        if let Some(e) = c["error"].as_str() {
            println!("vserver {}: unreadable certificate: {e}", s(c, "vserver"));
            continue;
        }
        let sans: Vec<&str> = c["sans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let days = c["days_left"].as_f64().unwrap_or(0.0);
        println!("vserver {}: {}", s(c, "vserver"), s(c, "subject"));
        println!(
            "  SANs:     {}",
            if sans.is_empty() {
                "-".into()
            } else {
                sans.join(", ")
            }
        );
        println!("  issuer:   {}", s(c, "issuer"));
        println!(
            "  key:      {}, chain of {}",
            s(c, "key"),
            u(c, &["chain_length"])
        );
        println!(
            "  valid:    {} .. {} ({})",
            s(c, "not_before"),
            s(c, "not_after"),
            if days < 0.0 {
                format!("EXPIRED {:.0} days ago", -days)
            } else {
                format!("{days:.0} days left")
            }
        );
        println!("  sha256:   {}", s(c, "sha256"));
    }
}

/// Parsed command line.
struct Cli {
    socket: Option<String>,
    config: Option<String>,
    json: bool,
    interval: f64,
    count: Option<u64>,
    vserver: Option<String>,
    words: Vec<String>,
    help: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Cli, Failure> {
    let mut c = Cli {
        socket: None,
        config: None,
        json: false,
        interval: 1.0,
        count: None,
        vserver: None,
        words: Vec::new(),
        help: false,
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match a.as_str() {
            "--socket" => c.socket = Some(value("--socket")?),
            "--config" => c.config = Some(value("--config")?),
            "--json" => c.json = true,
            "--interval" => {
                let v = value("--interval")?;
                c.interval = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s >= 0.1 && *s <= 3600.0)
                    .ok_or_else(|| {
                        usage(format!("--interval {v:?}: give seconds in [0.1, 3600]"))
                    })?;
            }
            "--count" => {
                let v = value("--count")?;
                c.count =
                    Some(v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        usage(format!("--count {v:?}: give a whole number >= 1"))
                    })?);
            }
            "--vserver" => c.vserver = Some(value("--vserver")?),
            "-h" | "--help" => c.help = true,
            o if o.starts_with('-') => return Err(usage(format!("unknown option {o:?}"))),
            _ => c.words.push(a),
        }
    }
    Ok(c)
}

/// The `[control] socket` of a configuration file, if it sets one.
fn socket_from_config(path: &str) -> Result<Option<String>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("--config {path}: cannot read it: {e}")))?;
    let v: toml::Value =
        toml::from_str(&text).map_err(|e| usage(format!("--config {path}: not TOML: {e}")))?;
    Ok(v.get("control")
        .and_then(|c| c.get("socket"))
        .and_then(|s| s.as_str())
        .map(str::to_string))
}

fn run(c: Cli) -> Result<(), Failure> {
    let words: Vec<&str> = c.words.iter().map(String::as_str).collect();
    if c.help || words.first() == Some(&"help") {
        let topic = if words.first() == Some(&"help") {
            words.get(1).copied()
        } else {
            words.first().copied()
        };
        match topic {
            None => println!("{USAGE}"),
            Some(t) => match command_help(t) {
                Some(h) => println!("{h}"),
                None => return Err(usage(format!("no command {t:?}\n\n{USAGE}"))),
            },
        }
        return Ok(());
    }
    let socket = match (&c.socket, std::env::var("APPLIANCE_SOCKET").ok(), &c.config) {
        (Some(s), _, _) => s.clone(),
        (None, Some(s), _) => s,
        (None, None, Some(cfg)) => {
            socket_from_config(cfg)?.unwrap_or_else(|| DEFAULT_SOCKET.to_string())
        }
        (None, None, None) => DEFAULT_SOCKET.to_string(),
    };
    let json = c.json;
    let print = |v: &Value| println!("{v}");
    let no_vserver_flag = |cmd: &str| {
        if c.vserver.is_some() {
            Err(usage(format!("{cmd} takes no --vserver")))
        } else {
            Ok(())
        }
    };
    match words.as_slice() {
        ["ping"] => {
            let v = request(&socket, "ping")?;
            if json {
                print(&v);
            } else {
                println!("appliance at {socket} is up");
            }
        }
        ["status"] => {
            let v = request(&socket, "status")?;
            if json {
                print(&v)
            } else {
                print_status(&v)
            }
        }
        ["stats"] | ["show", "stats"] => {
            let a = request(&socket, "stats")?;
            if json {
                print(&a);
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs_f64(c.interval));
            let b = request(&socket, "stats")?;
            print_stats(&a, &b, c.interval);
        }
        ["show", what @ ("vservers" | "backends" | "certs" | "sessions")] => {
            no_vserver_flag("show")?;
            let v = request(&socket, what)?;
            if json {
                print(&v);
            } else {
                match *what {
                    "vservers" => print_vservers(&v),
                    "backends" => print_backends(&v),
                    "sessions" => print_sessions(&v),
                    _ => print_certs(&v),
                }
            }
        }
        ["show", other] => {
            return Err(usage(format!(
                "show {other:?}: choose stats, vservers, backends, certs or sessions"
            )))
        }
        ["show"] => {
            return Err(usage(
                "show what? stats, vservers, backends, certs or sessions",
            ))
        }
        ["vserver", action @ ("enable" | "disable"), name] => {
            no_vserver_flag("vserver")?;
            let v = request(&socket, &format!("vserver {action} {name}"))?;
            if json {
                print(&v);
            } else {
                println!("vserver {name}: {action}d");
            }
        }
        ["vserver", ..] => return Err(usage(command_help("vserver").unwrap_or_default())),
        ["backend", action @ ("drain" | "enable"), addr] => {
            if addr.parse::<std::net::SocketAddrV4>().is_err() {
                return Err(usage(format!(
                    "backend {action} {addr:?}: ADDRESS must be ip:port as configured"
                )));
            }
            let cmd = match &c.vserver {
                Some(v) => format!("backend {action} {addr} {v}"),
                None => format!("backend {action} {addr}"),
            };
            let v = request(&socket, &cmd)?;
            if json {
                print(&v);
            } else {
                let list: Vec<&str> = v["vservers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "backend {addr}: {} in vserver(s) {}",
                    if *action == "drain" {
                        "draining (no new connections)"
                    } else {
                        "enabled"
                    },
                    list.join(", ")
                );
            }
        }
        ["backend", ..] => return Err(usage(command_help("backend").unwrap_or_default())),
        ["reload"] => {
            no_vserver_flag("reload")?;
            let v = request(&socket, "reload")?;
            if json {
                print(&v);
            } else {
                print_reload(&v);
            }
        }
        ["top"] => {
            if json {
                return Err(usage("top is for people; use show stats --json"));
            }
            let mut a = request(&socket, "stats")?;
            let mut n = 0u64;
            loop {
                std::thread::sleep(Duration::from_secs_f64(c.interval));
                let b = request(&socket, "stats")?;
                let backends = request(&socket, "backends")?;
                // Clear the screen and go home, then redraw.
                print!("\x1b[2J\x1b[H");
                println!(
                    "appliancectl top: every {:.1}s (Ctrl-C to quit)\n",
                    c.interval
                );
                print_stats(&a, &b, c.interval);
                println!();
                print_backends(&backends);
                let _ = std::io::stdout().flush();
                a = b;
                n += 1;
                if c.count.is_some_and(|max| n >= max) {
                    break;
                }
            }
        }
        [] => return Err(usage(format!("no command given\n\n{USAGE}"))),
        [other, ..] => {
            return Err(usage(format!(
                "unknown command {:?}\n\n{USAGE}",
                if command_help(other).is_some() {
                    words.join(" ")
                } else {
                    other.to_string()
                }
            )))
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = parse(std::env::args().skip(1)).and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("appliancectl: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}
