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

mod args;

use args::{Cli, Cmd};

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
    let words: Vec<String> = c.cmd.words();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (interval, count, vserver) = c.cmd.options();
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
        if vserver.is_some() {
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
            std::thread::sleep(Duration::from_secs_f64(interval));
            let (_, b) = call::<reply::Stats>(&socket, &Request::Stats)?;
            let _ = print::stats(out, &a, &b, interval);
        }
        ["show", "socks"] => {
            no_vserver_flag("show")?;
            let (_, stats) = call::<reply::Stats>(&socket, &Request::Stats)?;
            let (_, sessions) = call::<reply::Sessions>(&socket, &Request::Sessions)?;
            let v = print::SocksView::new(&stats, &sessions);
            if json {
                println!("{}", serde_json::to_string(&v).map_err(|e| usage(e.to_string()))?);
            } else {
                let _ = print::socks(out, &v);
            }
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
                "show {other:?}: choose stats, vservers, backends, certs, sessions, session-store, cluster or socks"
            )))
        }
        ["show"] => {
            return Err(usage(
                "show what? stats, vservers, backends, certs, sessions, session-store, cluster or socks",
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
                vserver: vserver.clone(),
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
                std::thread::sleep(Duration::from_secs_f64(interval));
                let (_, b) = call::<reply::Stats>(&socket, &Request::Stats)?;
                let (_, backends) = call::<Vec<reply::BackendRow>>(&socket, &Request::Backends)?;
                // Clear the screen and go home, then redraw.
                let _ = write!(out, "\x1b[2J\x1b[H");
                let _ = writeln!(
                    out,
                    "appliancectl top: every {:.1}s (Ctrl-C to quit)\n",
                    interval
                );
                let _ = print::stats(out, &a, &b, interval);
                let _ = writeln!(out);
                let _ = print::backends(out, &backends);
                let _ = out.flush();
                a = b;
                n += 1;
                if count.is_some_and(|max| n >= max) {
                    break;
                }
            }
        }
        // The parser admits nothing else.
        other => return Err(usage(format!("unexpected command {other:?}"))),
    }
    Ok(())
}

fn main() -> ExitCode {
    use clap::Parser;
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Completions { shell } => {
            args::completions(*shell);
            return ExitCode::SUCCESS;
        }
        Cmd::Man { dir } => {
            return match args::man_pages(dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("appliancectl: writing man pages to {}: {e}", dir.display());
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    let result = run(cli);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("appliancectl: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}
