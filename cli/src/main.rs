//! `appliancectl`: the management CLI. It talks to the daemon's control socket and
//! owns nothing else; it never links DPDK or the data plane.
//!
//! The socket is `--socket PATH`, else `$APPLIANCE_SOCKET`, else the `[control] socket`
//! of `--config FILE`, else `/run/appliance/control.sock` (the daemon's default).
//! Requests and replies are the typed ones of `control-proto`; tables are for people
//! ([`print`]); `--json` prints the daemon's JSON for scripts. Exit codes:
//! 0 done, 1 the appliance could not be reached or refused the command, 2 usage.

mod print;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use control_proto::reply;
use control_proto::{decode_reply, BackendAction, ReplyError, Request, VserverAction};

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
  show session-store              TLS sessions held, lookups by tier, evictions
  show cluster                    the other nodes: state, last heard, lag; replication
  flush session-store             drop every TLS session on every node (a PURGE)
  vserver enable|disable NAME     a disabled vserver resets new connections
  backend drain|enable ADDRESS [--vserver NAME]
                                  a draining backend takes no new connections but keeps
                                  its open ones; without --vserver: in every vserver
  reload                          apply the configuration file again (vservers,
                                  certificates, backends); open connections carry on
  top [--interval SECS] [--count N]
                                  show stats and backends, refreshed every SECS
  hash-password USER              read a password on stdin, print USER:HASH (Argon2id) for
                                  a socks5 vserver's users_file (no daemon needed)
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

fn command_help(cmd: &str) -> Option<&'static str> {
    Some(match cmd {
        "status" => "usage: appliancectl status [--json]\n\nThe daemon's version, pid, uptime, configuration file, port and cores, how many\nvservers are enabled and backends up, and totals of connections and handshakes.",
        "show" | "stats" => "usage: appliancectl show stats|vservers|backends|certs|sessions|session-store|cluster [--json] [--interval SECS]\n\n  stats     samples the counters twice, SECS apart (default 1), and prints rates:\n            handshakes/s by version, full and resumed, and by suite; connections;\n            per-core busy %; crypto workers' queues and latency. --json prints one\n            raw sample.\n  vservers  name, listen address, mode, enabled, balancing method, health check,\n            backends up, connections refused (disabled) or closed (no backend)\n  backends  per vserver and backend: state (up, down, draining), weight, open and\n            total connections, failures, health checks passed/failed, last result\n  certs     per tls vserver and certificate: subject, SANs, key, expiry, days left\n  sessions  each open client connection: client, vserver, backend, state, TLS\n            version and suite, SNI, resumed, age, bytes each way; then each tls\n            vserver's session cache (sessions held, capacity) and tickets\n  session-store  TLS sessions held, capacity, lookups answered by tier (local, peer,\n            repository), misses, timeouts, evictions; the repository's servers\n  cluster   this node and the others: state (syncing, ready), up, last heard,\n            lag; replication lag, queue depth, NACKs, retransmits, forged and\n            replayed messages dropped",
        "flush" => "usage: appliancectl flush session-store [--json]\n\nDrops every TLS session this node holds, and sends the purge to every other node\nof the cluster and to the repository: no session issued before resumes anywhere\n(clients make full handshakes). Ticket keys are not changed.",
        "vserver" => "usage: appliancectl vserver enable|disable NAME\n\nA disabled vserver resets new connections (RST); its open connections carry on.",
        "backend" => "usage: appliancectl backend drain|enable ADDRESS [--vserver NAME]\n\nA draining backend is chosen for no new connection; its open connections carry on.\nenable lets it take new connections again. ADDRESS is ip:port as configured.\nWithout --vserver, every vserver that has the backend is changed.",
        "top" => "usage: appliancectl top [--interval SECS] [--count N]\n\nA live view: show stats and show backends, redrawn every SECS (default 1),\nN times (default: until interrupted).",
        "reload" => "usage: appliancectl reload [--json]\n\nThe daemon reads its configuration file again and applies it at once: new\nconnections get the new vservers, certificates, backends and TLS settings; open\nconnections carry on with what they started with. Switches (disabled vservers,\ndraining backends), health and counters carry over by vserver name and backend\naddress, and so do session caches and ticket keys whose settings are unchanged.\nA file with an error is refused with that error, and so is a change to\n[dataplane], [tcp], [crypto], [control], [metrics] or [log] (a restart);\neither way the running configuration stays and the exit status is 1.",
        "ping" => "usage: appliancectl ping\n\nExit status 0 if the daemon answers.",
        "hash-password" => "usage: appliancectl hash-password USER < password\n\nReads one line (the password, without its newline) from standard input and\nprints USER:HASH, a line for a socks5 vserver's users_file: an Argon2id hash with\na random salt (19 MiB, 2 passes). The password itself is never printed or kept.",
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

/// Sends `req` and returns the daemon's reply line, refusals included.
fn send(path: &str, req: &Request) -> Result<String, Failure> {
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
    let wrote = writeln!(s, "{}", req.to_line());
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
    Ok(line)
}

/// Sends `req` and reads its reply as `T`; a refusal is exit status 1 with the
/// daemon's words. Returns the reply line too (what `--json` prints).
fn call<T: serde::de::DeserializeOwned>(path: &str, req: &Request) -> Result<(String, T), Failure> {
    let line = send(path, req)?;
    match decode_reply::<T>(&line) {
        Ok(v) => Ok((line.trim_end().to_string(), v)),
        Err(ReplyError::Refused(e)) => Err(failed(format!("the appliance refused: {e}"))),
        Err(e) => Err(failed(format!("{path}: {e}"))),
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
    let no_vserver_flag = |cmd: &str| {
        if c.vserver.is_some() {
            Err(usage(format!("{cmd} takes no --vserver")))
        } else {
            Ok(())
        }
    };
    let out = &mut std::io::stdout().lock();
    // A person's view, or the daemon's JSON as it came.
    macro_rules! show {
        ($req:expr, $ty:ty, $print:expr) => {{
            let (line, v) = call::<$ty>(&socket, &$req)?;
            if json {
                println!("{line}");
            } else {
                let _ = $print(out, &v);
            }
        }};
    }
    match words.as_slice() {
        ["hash-password", user] => {
            if user.is_empty() || user.len() > 255 || user.contains(':') {
                return Err(usage("a user name is 1 to 255 bytes without ':'"));
            }
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| usage(format!("reading the password from stdin: {e}")))?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() || password.len() > 255 {
                return Err(usage(
                    "the password (one line on stdin) must be 1 to 255 bytes (RFC 1929)",
                ));
            }
            let hash = crypto_offload::password::hash(password.as_bytes())
                .map_err(|e| usage(format!("hashing: {e}")))?;
            println!("{user}:{hash}");
        }
        ["hash-password", ..] => return Err(usage(command_help("hash-password").unwrap_or_default())),
        ["ping"] => {
            let (line, _) = call::<reply::Ack>(&socket, &Request::Ping)?;
            if json {
                println!("{line}");
            } else {
                println!("appliance at {socket} is up");
            }
        }
        ["status"] => show!(Request::Status, reply::Status, print::status),
        ["stats"] | ["show", "stats"] => {
            let (line, a) = call::<reply::Stats>(&socket, &Request::Stats)?;
            if json {
                println!("{line}");
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs_f64(c.interval));
            let (_, b) = call::<reply::Stats>(&socket, &Request::Stats)?;
            let _ = print::stats(out, &a, &b, c.interval);
        }
        ["show", what @ ("session-store" | "cluster")] => {
            no_vserver_flag("show")?;
            if *what == "cluster" {
                show!(Request::SessionStore, reply::SessionStore, print::cluster)
            } else {
                show!(Request::SessionStore, reply::SessionStore, print::session_store)
            }
        }
        ["flush", "session-store"] => {
            no_vserver_flag("flush")?;
            let (line, v) = call::<reply::Flushed>(&socket, &Request::FlushSessionStore)?;
            if json {
                println!("{line}");
            } else {
                println!(
                    "session store flushed: {} session(s) dropped here{}",
                    v.purged,
                    if v.cluster {
                        "; the purge goes to every node and the repository"
                    } else {
                        ""
                    }
                );
            }
        }
        ["flush", ..] => return Err(usage(command_help("flush").unwrap_or_default())),
        ["show", what @ ("vservers" | "backends" | "certs" | "sessions")] => {
            no_vserver_flag("show")?;
            match *what {
                "vservers" => show!(
                    Request::Vservers,
                    Vec<reply::VserverSnap>,
                    |o, v: &Vec<_>| print::vservers(o, v)
                ),
                "backends" => show!(
                    Request::Backends,
                    Vec<reply::BackendRow>,
                    |o, v: &Vec<_>| print::backends(o, v)
                ),
                "sessions" => show!(Request::Sessions, reply::Sessions, print::sessions),
                _ => show!(Request::Certs, Vec<reply::CertInfo>, |o, v: &Vec<_>| {
                    print::certs(o, v)
                }),
            }
        }
        ["show", other] => {
            return Err(usage(format!(
                "show {other:?}: choose stats, vservers, backends, certs, sessions, session-store or cluster"
            )))
        }
        ["show"] => {
            return Err(usage(
                "show what? stats, vservers, backends, certs, sessions, session-store or cluster",
            ))
        }
        ["vserver", action @ ("enable" | "disable"), name] => {
            no_vserver_flag("vserver")?;
            let action = if *action == "enable" {
                VserverAction::Enable
            } else {
                VserverAction::Disable
            };
            let req = Request::Vserver {
                action,
                name: name.to_string(),
            };
            let (line, v) = call::<reply::VserverSwitched>(&socket, &req)?;
            if json {
                println!("{line}");
            } else {
                println!(
                    "vserver {}: {}",
                    v.vserver,
                    if v.enabled { "enabled" } else { "disabled" }
                );
            }
        }
        ["vserver", ..] => return Err(usage(command_help("vserver").unwrap_or_default())),
        ["backend", action @ ("drain" | "enable"), addr] => {
            if addr.parse::<std::net::SocketAddrV4>().is_err() {
                return Err(usage(format!(
                    "backend {action} {addr:?}: ADDRESS must be ip:port as configured"
                )));
            }
            let req = Request::Backend {
                action: if *action == "drain" {
                    BackendAction::Drain
                } else {
                    BackendAction::Enable
                },
                address: addr.to_string(),
                vserver: c.vserver.clone(),
            };
            let (line, v) = call::<reply::BackendSwitched>(&socket, &req)?;
            if json {
                println!("{line}");
            } else {
                println!(
                    "backend {}: {} in vserver(s) {}",
                    v.backend,
                    if v.draining {
                        "draining (no new connections)"
                    } else {
                        "enabled"
                    },
                    v.vservers.join(", ")
                );
            }
        }
        ["backend", ..] => return Err(usage(command_help("backend").unwrap_or_default())),
        ["reload"] => {
            no_vserver_flag("reload")?;
            show!(Request::Reload, reply::ReloadSummary, print::reload);
        }
        ["top"] => {
            if json {
                return Err(usage("top is for people; use show stats --json"));
            }
            let (_, mut a) = call::<reply::Stats>(&socket, &Request::Stats)?;
            let mut n = 0u64;
            loop {
                std::thread::sleep(Duration::from_secs_f64(c.interval));
                let (_, b) = call::<reply::Stats>(&socket, &Request::Stats)?;
                let (_, backends) = call::<Vec<reply::BackendRow>>(&socket, &Request::Backends)?;
                // Clear the screen and go home, then redraw.
                let _ = write!(out, "\x1b[2J\x1b[H");
                let _ = writeln!(
                    out,
                    "appliancectl top: every {:.1}s (Ctrl-C to quit)\n",
                    c.interval
                );
                let _ = print::stats(out, &a, &b, c.interval);
                let _ = writeln!(out);
                let _ = print::backends(out, &backends);
                let _ = out.flush();
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
