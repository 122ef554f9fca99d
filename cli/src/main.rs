//! `appliancectl`: the management CLI. It talks to the daemon's control socket and
//! owns nothing else; it never links DPDK or the data plane.
//!
//! The socket is `--socket PATH`, else `$APPLIANCE_SOCKET`, else
//! `/run/appliance/control.sock` (the daemon's default `[control] socket`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

const USAGE: &str = "usage: appliancectl [--socket PATH] [--json] COMMAND

Commands:
  ping            check that the daemon answers
  stats           per-core counters; busy % is measured over --interval (default 1s)

Options:
  --socket PATH   control socket (default: $APPLIANCE_SOCKET, else /run/appliance/control.sock)
  --json          print the daemon's JSON instead of a table
  --interval SECS sampling interval for busy % and rates (stats; default 1)
  -h, --help      this text";

fn request(path: &str, cmd: &str) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!("cannot reach the appliance at {path}: {e} (is it running? is --socket right?)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    writeln!(s, "{cmd}").map_err(|e| format!("{path}: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("{path}: {e}"))?;
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("{path}: bad reply: {e}"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("the appliance refused: {err}"));
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

fn print_stats(a: &Value, b: &Value, secs: f64) {
    println!(
        "port {} ({}), mac {}, {} queue(s), uptime {:.0}s",
        b["port"]["name"].as_str().unwrap_or("?"),
        b["port"]["driver"].as_str().unwrap_or("?"),
        b["port"]["mac"].as_str().unwrap_or("?"),
        u(b, &["port", "queues"]),
        b["uptime_secs"].as_f64().unwrap_or(0.0)
    );
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
}

fn main() -> ExitCode {
    let mut socket =
        std::env::var("APPLIANCE_SOCKET").unwrap_or_else(|_| "/run/appliance/control.sock".into());
    let (mut json, mut interval, mut cmd) = (false, 1.0f64, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => match args.next() {
                Some(s) => socket = s,
                None => return fail("--socket needs a PATH"),
            },
            "--json" => json = true,
            "--interval" => match args
                .next()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| *s > 0.0 && *s <= 3600.0)
            {
                Some(s) => interval = s,
                None => return fail("--interval needs a number of seconds in (0, 3600]"),
            },
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            c if cmd.is_none() && !c.starts_with('-') => cmd = Some(c.to_string()),
            other => return fail(&format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    let result = match cmd.as_deref() {
        Some("ping") => request(&socket, "ping").map(|v| {
            if json {
                println!("{v}");
            } else {
                println!("appliance at {socket} is up");
            }
        }),
        Some("stats") => request(&socket, "stats").and_then(|a| {
            if json {
                println!("{a}");
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs_f64(interval));
            let b = request(&socket, "stats")?;
            print_stats(&a, &b, interval);
            Ok(())
        }),
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
        None => Err(format!("no command given\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("appliancectl: {msg}");
    ExitCode::FAILURE
}
