//! The appliance as an operator runs it, through the DPDK port: health checks take a
//! killed backend out of rotation and bring it back; weights and draining steer new
//! connections while open ones finish byte-exact; a disabled vserver and a vserver
//! with no backend up refuse or close new clients; `appliancectl` answers every
//! command as a table and as JSON and refuses a caller that is not the socket's
//! owner; the metrics endpoint parses as Prometheus text; and a reload swaps a
//! certificate and vservers while a download over an old connection finishes
//! byte-exact, refusing bad files. Needs root.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::veth::*;

const CHECKED: &str = r#"
[metrics]
listen = "127.0.0.1:9464"

[[vserver]]
name = "checked"
listen = "10.77.0.1:81"
mode = "tcp"
backends = ["10.77.0.2:8080", { address = "10.77.0.3:8080", weight = 2 }]
[vserver.health]
check = "http"
path = "/health.txt"
interval = "300ms"
timeout = "250ms"
rise = 2
fall = 2
"#;

fn ctl(net: &Net, args: &[&str]) -> Output {
    net.ctl(args)
}

/// `appliancectl ARGS` that must succeed; its stdout.
fn ctl_ok(net: &Net, args: &[&str]) -> String {
    let o = ctl(net, args);
    assert!(
        o.status.success(),
        "appliancectl {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn ctl_json(net: &Net, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ctl_ok(net, &a)).unwrap()
}

/// The backend `addr` of vserver "checked", as `show backends --json` reports it.
fn backend(net: &Net, addr: &str) -> Value {
    let all = ctl_json(net, &["show", "backends"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|b| b["vserver"] == "checked" && b["address"] == addr)
        .cloned()
        .unwrap_or_else(|| panic!("no backend {addr} in {all}"))
}

/// Waits (at most 15 s) until `f` holds for backend `addr`.
fn wait_backend(net: &Net, addr: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let b = backend(net, addr);
        if f(&b) {
            return b;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "backend {addr} never became {what}: {b}\n{}",
            net.log("appliance.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fetches `/{file}` through vserver "checked" `n` times, one connection each;
/// returns how many requests for it each backend's log shows.
fn fetch_n(net: &Net, file: &str, n: usize) -> (usize, usize) {
    let out = net.dir.join("out.html");
    for i in 0..n {
        let o = net.curl(&format!("http://10.77.0.1:81/{file}"), &out);
        assert!(
            o.status.success(),
            "fetch {i} of {file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let count = |ip: &str| {
        net.log(&format!("backend-{ip}-8080.log"))
            .matches(&format!("GET /{file} "))
            .count()
    };
    (count("10.77.0.2"), count("10.77.0.3"))
}

/// A download of `url` into `out` at `rate` bytes per second (curl's `--limit-rate`),
/// running in the background.
fn slow_get(net: &Net, url: &str, rate: &str, out: &Path) -> std::process::Child {
    net.in_hosts(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        "--limit-rate",
        rate,
        "-o",
        out.to_str().unwrap(),
        url,
    ])
    .spawn()
    .unwrap()
}

/// curl for `https://appliance.test{path}` through the appliance, verified against
/// `ca.pem`, with `args` added.
fn https(net: &Net, args: &[&str], path: &str) -> Output {
    https_cmd(net, "ca.pem", args, path).output().unwrap()
}

/// The curl command of [`https`], trusting only the certificates in `ca`.
fn https_cmd(net: &Net, ca: &str, args: &[&str], path: &str) -> Command {
    let ca = net.dir.join(ca);
    let url = format!("https://appliance.test{path}");
    let mut a = vec![
        "curl",
        "-sS",
        "--max-time",
        "20",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        "appliance.test:443:10.77.0.1",
    ];
    a.extend_from_slice(args);
    a.push(&url);
    net.in_hosts(&a)
}

fn write_pages(dir: &Path) {
    let www = dir.join("www");
    std::fs::write(www.join("health.txt"), "ok\n").unwrap();
    for p in ["p1", "p2", "p3", "p4", "p5", "p6"] {
        std::fs::write(www.join(format!("{p}.html")), format!("{p}\n")).unwrap();
    }
}

#[test]
fn health_checks_weights_drain_and_disable() {
    let mut net = Net::up("op");
    write_site(&net.dir, 16 << 20);
    write_pages(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    let mut b3 = net.start_backend("10.77.0.3", 8080);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = *cpus().last().unwrap();
    net.start_appliance(&[cpu], CHECKED);

    // Both pass their checks; weights 1:2 in round robin.
    for a in ["10.77.0.2:8080", "10.77.0.3:8080"] {
        wait_backend(&net, a, "checked twice", |b| {
            b["checks_passed"].as_u64().unwrap() >= 2
        });
    }
    assert_eq!(fetch_n(&net, "p1.html", 6), (2, 4));

    // A backend killed: down after `fall` failed checks; all traffic to the other.
    net.stop(b3);
    let b = wait_backend(&net, "10.77.0.3:8080", "down", |b| b["state"] == "down");
    assert_eq!(b["last_check"], "connection refused", "{b}");
    assert_eq!(fetch_n(&net, "p2.html", 4), (4, 0));
    let table = ctl_ok(&net, &["show", "backends"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("10.77.0.3:8080") && l.contains("down")),
        "{table}"
    );

    // Back: up after `rise` passes, and in rotation again.
    b3 = net.start_backend("10.77.0.3", 8080);
    let b = wait_backend(&net, "10.77.0.3:8080", "up again", |b| b["state"] == "up");
    assert_eq!(b["transitions"], 2, "{b}");
    let (x, y) = fetch_n(&net, "p3.html", 6);
    assert_eq!((x, y), (2, 4));

    // Drain: a download in flight on the drained backend finishes byte-exact while
    // new connections go to the other one. First the earlier fetches' connections
    // must be gone, so the download's backend is the one with a connection open.
    for a in ["10.77.0.2:8080", "10.77.0.3:8080"] {
        wait_backend(&net, a, "idle", |b| b["active"] == 0);
    }
    let big = net.dir.join("big.out");
    let mut slow = slow_get(&net, "http://10.77.0.1:81/big.bin", "4M", &big);
    let t0 = Instant::now();
    let busy = loop {
        let all = ctl_json(&net, &["show", "backends"]);
        let open: Vec<Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["vserver"] == "checked" && b["active"].as_u64() == Some(1))
            .cloned()
            .collect();
        if open.len() == 1 {
            break open[0]["address"].as_str().unwrap().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "download never started: {all}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Without --vserver: in every vserver that has the backend.
    let out = ctl_ok(&net, &["backend", "drain", &busy]);
    assert!(
        out.contains("draining") && out.contains("web, checked"),
        "{out}"
    );
    assert_eq!(backend(&net, &busy)["state"], "draining");
    let (x, y) = fetch_n(&net, "p4.html", 4);
    if busy == "10.77.0.2:8080" {
        assert_eq!((x, y), (0, 4));
    } else {
        assert_eq!((x, y), (4, 0));
    }
    assert_eq!(
        backend(&net, &busy)["active"],
        1,
        "the draining backend keeps its download"
    );
    let st = slow.wait().unwrap();
    assert!(st.success(), "the download over the drained backend failed");
    assert_eq!(
        sha_file(&big),
        sha_file(&net.dir.join("www/big.bin")),
        "download over a drained backend is not byte-exact"
    );
    let j = ctl_json(&net, &["backend", "enable", &busy]);
    assert_eq!(j["vservers"], serde_json::json!(["web", "checked"]));
    // Any three round-robin slots in a row: one for weight 1, two for weight 2.
    assert_eq!(fetch_n(&net, "p5.html", 3), (1, 2));

    // Disabled: new clients are reset; enabled again: served.
    ctl_ok(&net, &["vserver", "disable", "checked"]);
    let o = net.curl("http://10.77.0.1:81/p6.html", &net.dir.join("x"));
    assert!(!o.status.success(), "a disabled vserver served a client");
    let vs = ctl_json(&net, &["show", "vservers"]);
    let checked = vs
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "checked")
        .unwrap()
        .clone();
    assert_eq!(checked["enabled"], false);
    assert!(
        checked["refused_disabled"].as_u64().unwrap() >= 1,
        "{checked}"
    );
    // The other vserver is untouched.
    let o = net.curl("http://10.77.0.1:80/p6.html", &net.dir.join("x"));
    assert!(o.status.success());
    ctl_ok(&net, &["vserver", "enable", "checked"]);
    fetch_n(&net, "p6.html", 1);

    // No backend up: a plain vserver closes the client cleanly (curl: empty reply).
    net.stop(b3);
    ctl_ok(
        &net,
        &["backend", "drain", "10.77.0.2:8080", "--vserver", "checked"],
    );
    wait_backend(&net, "10.77.0.3:8080", "down", |b| b["state"] == "down");
    let o = net.curl("http://10.77.0.1:81/p6.html", &net.dir.join("x"));
    assert_eq!(
        o.status.code(),
        Some(52),
        "curl should see an empty reply (FIN): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let vs = ctl_json(&net, &["show", "vservers"]);
    let checked = &vs.as_array().unwrap()[1];
    assert!(checked["no_backend"].as_u64().unwrap() >= 1, "{checked}");
    let status = ctl_json(&net, &["status"]);
    assert_eq!(status["backends_down"], 1, "{status}");
    assert_eq!(status["backends_draining"], 1, "{status}");
}

#[test]
fn appliancectl_commands_metrics_and_owner_only() {
    let mut net = Net::up("ctl");
    write_site(&net.dir, 1 << 20);
    write_pages(&net.dir);
    make_certs(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = *cpus().last().unwrap();
    let extra = format!(
        "{CHECKED}{}",
        tls_vserver(
            &net.dir,
            "secure",
            443,
            &["10.77.0.2:8080"],
            &["ec", "rsa"],
            ""
        )
    );
    // The loop's busy cycles by step, served in the stats.
    net.dataplane_extra = "loop_phases = true\n".into();
    net.start_appliance(&[cpu], &extra);
    // Some TLS traffic so the counters move.
    let o = https(&net, &["-o", "/dev/null"], "/p1.html");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Every command, as a table and as JSON.
    let t = ctl_ok(&net, &["status"]);
    assert!(t.contains("vservers: 3 of 3 enabled"), "{t}");
    assert!(t.contains("TLS handshakes: 1"), "{t}");
    let j = ctl_json(&net, &["status"]);
    assert_eq!(j["tls_handshakes"], 1);
    assert_eq!(j["backends"], 5);
    assert!(j["config"].as_str().unwrap().ends_with("appliance.toml"));

    let t = ctl_ok(&net, &["show", "stats", "--interval", "0.2"]);
    assert!(t.contains("handshakes/s: TLS 1.3"), "{t}");
    assert!(t.contains("0/s (1 total)"), "{t}");
    // curl (OpenSSL 3.0) has no post-quantum group: X25519.
    assert!(t.contains("by group: x25519 0/s (1 total)"), "{t}");
    assert!(t.contains("busy%"), "{t}");
    let j = ctl_json(&net, &["show", "stats"]);
    let phases = j["cores"][0]["loop_phases"].as_object().unwrap();
    assert!(phases["iterations"].as_u64().unwrap() > 0, "{phases:?}");
    assert!(phases["steps"].as_u64().unwrap() > 0, "{phases:?}");
    assert!(phases["rx"].as_u64().unwrap() > 0, "{phases:?}");
    let suites = j["cores"][0]["proxy"]["tls_suites"].as_object().unwrap();
    assert_eq!(suites.len(), 9);
    let used: Vec<&String> = suites
        .iter()
        .filter(|(_, n)| *n == 1)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(used.len(), 1, "{suites:?}");
    let suite = used[0].clone();

    let t = ctl_ok(&net, &["show", "vservers"]);
    for want in [
        "web",
        "checked",
        "secure",
        "http GET /health.txt",
        "round_robin",
    ] {
        assert!(t.contains(want), "{want} missing in\n{t}");
    }
    let j = ctl_json(&net, &["show", "vservers"]);
    assert_eq!(j.as_array().unwrap().len(), 3);
    assert_eq!(j[1]["backends"][1]["weight"], 2);

    let t = ctl_ok(&net, &["show", "backends"]);
    assert_eq!(t.lines().count(), 1 + 5, "{t}");
    let j = ctl_json(&net, &["show", "backends"]);
    assert_eq!(j.as_array().unwrap().len(), 5);

    let t = ctl_ok(&net, &["show", "certs"]);
    assert!(t.contains("DNS:appliance.test, IP:10.77.0.1"), "{t}");
    assert!(t.contains("ECDSA P-256") && t.contains("RSA 2048"), "{t}");
    assert!(
        t.contains("29 days left") || t.contains("30 days left"),
        "{t}"
    );
    let j = ctl_json(&net, &["show", "certs"]);
    assert_eq!(j.as_array().unwrap().len(), 2);
    assert_eq!(j[0]["subject"], "CN=appliance.test");

    let t = ctl_ok(&net, &["top", "--interval", "0.2", "--count", "2"]);
    assert_eq!(t.matches("appliancectl top").count(), 2, "{t}");
    assert!(ctl_ok(&net, &["ping"]).contains("is up"));
    assert_eq!(ctl_json(&net, &["ping"])["ok"], true);

    // Help on every command; usage errors exit 2 naming the problem; refusals exit 1.
    for cmd in [
        "status", "show", "vserver", "backend", "reload", "top", "ping",
    ] {
        let h = ctl_ok(&net, &[cmd, "--help"]);
        assert!(
            h.contains(&format!("Usage: appliancectl {cmd}")),
            "{cmd}: {h}"
        );
    }
    for (args, code, want) in [
        (
            &["show", "everything"][..],
            2,
            "unrecognized subcommand 'everything'",
        ),
        (&["frobnicate"], 2, "unrecognized subcommand 'frobnicate'"),
        (&["backend", "drain", "nonsense"], 2, "ip:port"),
        (&["show", "stats", "--interval", "0"], 2, "--interval"),
        (
            &["vserver", "disable", "nope"],
            1,
            "no vserver named \"nope\"",
        ),
        (
            &["backend", "drain", "10.77.0.9:1"],
            1,
            "no backend \"10.77.0.9:1\"",
        ),
    ] {
        let o = ctl(&net, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let o = Command::new(binary("appliancectl"))
        .args(["--socket", "/nonexistent/ctl.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the appliance"));
    // The socket found through $APPLIANCE_SOCKET and through --config.
    let o = Command::new(binary("appliancectl"))
        .arg("ping")
        .env("APPLIANCE_SOCKET", net.dir.join("ctl.sock"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = Command::new(binary("appliancectl"))
        .args([
            "--config",
            net.dir.join("appliance.toml").to_str().unwrap(),
            "ping",
        ])
        .env_remove("APPLIANCE_SOCKET")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Another user: the socket file (mode 0600) keeps them out; and with the file
    // opened up, the daemon's peer-credential check still refuses them.
    let sock = net.dir.join("ctl.sock");
    let mode = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    let as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary("appliancectl"))
            .arg("--socket")
            .arg(&sock)
            .arg("status")
            .output()
            .unwrap()
    };
    // The test directory must be passable for the second half.
    std::fs::set_permissions(&net.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Permission denied") && err.contains("admits only"),
        "{err}"
    );
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the appliance refused: permission denied"),
        "the daemon served another user: {err}"
    );
    assert!(net
        .log("appliance.log")
        .contains("refused a connection from uid Some(65534)"));

    // Metrics: scraped in the appliance's namespace and parsed by Prometheus' parser.
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-a", net.name),
            "/usr/bin/python3",
        ])
        .arg(repo().join("tests/py/prom_scrape.py"))
        .arg("http://127.0.0.1:9464/metrics")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "scrape: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    let sample = |fam: &str, name: &str, labels: &[(&str, &str)]| -> f64 {
        m[fam]["samples"]
            .as_array()
            .unwrap_or_else(|| panic!("no family {fam}"))
            .iter()
            .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {}", m[fam]))
    };
    assert_eq!(m["appliance_proxy_tls13_handshakes"]["type"], "counter");
    assert_eq!(
        sample(
            "appliance_proxy_tls13_handshakes",
            "appliance_proxy_tls13_handshakes_total",
            &[("core", "0")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            "appliance_proxy_tls_suites",
            "appliance_proxy_tls_suites_total",
            &[("suite", suite.as_str())]
        ),
        1.0
    );
    assert_eq!(
        sample(
            "appliance_proxy_tls_groups",
            "appliance_proxy_tls_groups_total",
            &[("group", "x25519")]
        ),
        1.0
    );
    // The one handshake's first answer, as a Prometheus histogram per core.
    assert_eq!(m["appliance_tls_first_answer_seconds"]["type"], "histogram");
    assert_eq!(
        sample(
            "appliance_tls_first_answer_seconds",
            "appliance_tls_first_answer_seconds_count",
            &[("core", "0")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            "appliance_tls_first_answer_seconds",
            "appliance_tls_first_answer_seconds_bucket",
            &[("core", "0"), ("le", "+Inf")]
        ),
        1.0
    );
    assert_eq!(m["appliance_stack_active"]["type"], "gauge");
    assert_eq!(
        sample(
            "appliance_backend_up",
            "appliance_backend_up",
            &[("vserver", "checked"), ("backend", "10.77.0.3:8080")]
        ),
        1.0
    );
    assert!(
        sample(
            "appliance_backend_checks",
            "appliance_backend_checks_total",
            &[("vserver", "checked"), ("result", "passed")]
        ) >= 1.0
    );
    assert!(
        sample(
            "appliance_core_busy_seconds",
            "appliance_core_busy_seconds_total",
            &[]
        ) > 0.0
    );
    assert!(
        m.as_object().unwrap().len() > 60,
        "only {} families",
        m.as_object().unwrap().len()
    );
}

#[test]
fn http_aware_tls_vserver_answers_503_when_no_backend_is_up() {
    let mut net = Net::up("n503");
    write_site(&net.dir, 1024);
    make_certs(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    std::thread::sleep(Duration::from_millis(300));
    let cpu = *cpus().last().unwrap();
    // Its only backend is a host that does not exist: the TCP check takes it down. A
    // crypto worker with record offload: the 503 is the last record before the client
    // is released, so it is sealed at once (no record job follows it).
    let extra = "[crypto]\nworkers = 1\n".to_string()
        + &tls_vserver(
        &net.dir,
        "maint",
        443,
        &["10.77.0.9:8080"],
        &["ec"],
        "[vserver.transmit]\nhttp = true\n[vserver.health]\ncheck = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nfall = 1\n",
    );
    net.start_appliance(&[cpu], &extra);
    let t0 = Instant::now();
    loop {
        let all = ctl_json(&net, &["show", "backends"]);
        let b = all
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["vserver"] == "maint")
            .unwrap()
            .clone();
        if b["state"] == "down" {
            assert_eq!(b["last_check"], "timed out", "{b}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never down: {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..2 {
        let o = https(&net, &["-w", "\n%{http_code}"], "/index.html");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.ends_with("\n503") && out.contains("no backend server is available"),
            "{out}"
        );
    }
    let vs = ctl_json(&net, &["show", "vservers"]);
    assert_eq!(vs[1]["name"], "maint");
    assert_eq!(vs[1]["no_backend"], 2, "{vs}");
    // The plain vserver still serves.
    let o = net.curl("http://10.77.0.1:80/index.html", &net.dir.join("x"));
    assert!(o.status.success());
}

/// `openssl s_client` to the tls vserver over TLS 1.2, saving its session to
/// `sess_out` or resuming `sess_in`; its stdout.
fn s_client(net: &Net, sess: (&str, &Path)) -> String {
    let o = net
        .in_hosts(&[
            "openssl",
            "s_client",
            "-connect",
            "10.77.0.1:443",
            "-servername",
            "appliance.test",
            "-tls1_2",
            sess.0,
            sess.1.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `appliancectl reload` refused: exit 1, the error contains `want`, and generation
/// `gen` still serves.
fn reload_refused(net: &Net, want: &str, gen: u64) {
    let o = ctl(net, &["reload"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("reload refused") && err.contains(want),
        "{want:?} missing in: {err}"
    );
    assert_eq!(ctl_json(net, &["status"])["config_generation"], gen);
}

#[test]
fn reload_swaps_a_certificate_while_an_old_download_finishes() {
    let mut net = Net::up("rld");
    write_site(&net.dir, 16 << 20);
    make_certs(&net.dir);
    let san = "DNS:appliance.test,IP:10.77.0.1";
    self_signed(&net.dir, "ec2", "ec", "appliance.test", san);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = *cpus().last().unwrap();
    let secure = tls_vserver(&net.dir, "secure", 443, &["10.77.0.2:8080"], &["ec"], "");
    net.start_appliance(&[cpu], &secure);
    let cfg_path = net.dir.join("appliance.toml");
    let original = std::fs::read_to_string(&cfg_path).unwrap();
    // Whether a fetch trusting only the old (or only the new) certificate succeeds.
    let old_only = |net: &Net| {
        let mut o = https_cmd(net, "ec.pem", &["-o", "/dev/null"], "/index.html");
        o.output().unwrap().status.success()
    };
    let new_only = |net: &Net| {
        let mut o = https_cmd(net, "ec2.pem", &["-o", "/dev/null"], "/index.html");
        o.output().unwrap().status.success()
    };
    assert!(old_only(&net));
    assert!(!new_only(&net));
    // A TLS 1.2 session (with its ticket) from before the reload.
    let sess = net.dir.join("tls12.sess");
    let first = s_client(&net, ("-sess_out", &sess));
    assert!(first.contains("New, TLSv1.2"), "{first}");

    // A long download over the old certificate's connection.
    let big = net.dir.join("big.out");
    let mut slow = https_cmd(
        &net,
        "ec.pem",
        &["--limit-rate", "4M", "-o", big.to_str().unwrap()],
        "/big.bin",
    )
    .spawn()
    .unwrap();
    let t0 = Instant::now();
    while ctl_json(&net, &["show", "backends"])[2]["active"] != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "download never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Bad files are refused with their error; the running configuration stays.
    let bad = format!(
        "{original}\n[[vserver]]\nname = \"added\"\nlisten = \"10.77.0.1:82\"\nmode = \"tcp\"\nbackends = [{{ address = \"10.77.0.3:8080\", weight = 0 }}]\n"
    );
    std::fs::write(&cfg_path, &bad).unwrap();
    reload_refused(&net, "vserver[2].backends[0].weight", 1);
    std::fs::write(&cfg_path, original.replace("\"256\"", "\"512\"")).unwrap();
    reload_refused(&net, "[dataplane] changed", 1);
    std::fs::write(&cfg_path, "this is not toml").unwrap();
    reload_refused(&net, "appliance.toml", 1);
    assert!(old_only(&net));

    // An operator's switch survives the reload.
    ctl_ok(&net, &["vserver", "disable", "web"]);

    // The new file: a new certificate for "secure", and a vserver on a new port.
    let changed = format!(
        "{}\n[[vserver]]\nname = \"added\"\nlisten = \"10.77.0.1:82\"\nmode = \"tcp\"\nbackends = [\"10.77.0.3:8080\"]\n",
        original.replace("/ec.pem", "/ec2.pem").replace("/ec.key", "/ec2.key")
    );
    std::fs::write(&cfg_path, &changed).unwrap();
    assert!(
        net.curl("http://10.77.0.1:82/index.html", &net.dir.join("x"))
            .status
            .code()
            == Some(7),
        "port 82 answered before the reload"
    );
    let t = ctl_ok(&net, &["reload"]);
    assert!(t.contains("generation 2"), "{t}");
    let j = ctl_json(&net, &["status"]);
    assert_eq!(j["config_generation"], 2, "{j}");
    let log = net.log("appliance.log");
    assert!(
        log.contains("certificates changed [\"secure\"]")
            && log.contains("sessions kept [\"secure\"]")
            && log.contains("added [\"added\"]"),
        "{log}"
    );
    // New connections see the new certificate; the old one is gone.
    assert!(new_only(&net), "the new certificate is not served");
    assert!(!old_only(&net));
    let certs = ctl_json(&net, &["show", "certs"]);
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(net.dir.join("ec2.pem"))
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&o.stdout);
    let fp = fp.trim().rsplit('=').next().unwrap().replace(':', "");
    assert_eq!(
        certs[0]["sha256"].as_str().map(str::to_uppercase),
        Some(fp),
        "{certs}"
    );
    // The session from before the reload still resumes (ticket keys kept).
    let again = s_client(&net, ("-sess_in", &sess));
    assert!(again.contains("Reused, TLSv1.2"), "{again}");
    // The new vserver serves; the disabled one stayed disabled.
    let o = net.curl("http://10.77.0.1:82/index.html", &net.dir.join("x"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vs = ctl_json(&net, &["show", "vservers"]);
    assert_eq!(vs[0]["name"], "web");
    assert_eq!(vs[0]["enabled"], false, "{vs}");
    assert_eq!(vs.as_array().unwrap().len(), 3);

    // The download that started before any of this finishes byte-exact.
    let st = slow.wait().unwrap();
    assert!(st.success(), "the download across the reload failed");
    assert_eq!(
        sha_file(&big),
        sha_file(&net.dir.join("www/big.bin")),
        "the download across the reload is not byte-exact"
    );

    // Back to the first file: the added vserver's port closes again.
    std::fs::write(&cfg_path, &original).unwrap();
    let j = ctl_json(&net, &["reload"]);
    assert_eq!(j["generation"], 3, "{j}");
    assert_eq!(j["removed"], serde_json::json!(["added"]), "{j}");
    let o = net.curl("http://10.77.0.1:82/index.html", &net.dir.join("x"));
    assert_eq!(o.status.code(), Some(7), "port 82 still open");
    assert!(old_only(&net));
}

/// nginx in the hosts' namespace on `ip:port`, expecting a PROXY protocol header
/// and answering each request with the client address the header carried, then the
/// address the connection really came from.
fn start_proxy_protocol_nginx(net: &mut Net, ip: &str, port: u16) -> usize {
    let d = net.dir.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
         fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
         server {{\n    listen {ip}:{port} proxy_protocol;\n    location / {{\n      \
         default_type text/plain;\n      \
         return 200 \"$proxy_protocol_addr:$proxy_protocol_port via $remote_addr\\n\";\n    }}\n  }}\n}}\n"
    );
    let path = net.dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let c = net.in_hosts(&["nginx", "-c", path.to_str().unwrap()]);
    net.spawn(c, "nginx.log")
}

/// The access log's lines as maps of their `key=value` fields.
fn access_lines(net: &Net) -> Vec<std::collections::HashMap<String, String>> {
    net.log("access.log")
        .lines()
        .map(|l| {
            l.split(' ')
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn access_log_sessions_proxy_protocol_and_drain_on_sigterm() {
    let mut net = Net::up("drn");
    write_site(&net.dir, 16 << 20);
    make_certs(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    start_proxy_protocol_nginx(&mut net, "10.77.0.3", 8081);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = *cpus().last().unwrap();
    net.control_extra = "drain_timeout = \"6s\"".into();
    let extra = format!(
        "{}\n[[vserver]]\nname = \"pp\"\nlisten = \"10.77.0.1:82\"\nmode = \"tcp\"\n\
         backends = [\"10.77.0.3:8081\"]\nproxy_protocol = true\n\n[log]\naccess = \"{}/access.log\"\n",
        tls_vserver(
            &net.dir,
            "secure",
            443,
            &["10.77.0.2:8080"],
            &["ec"],
            // The server's preference decides: ChaCha20 although curl prefers AES.
            "suites = [\"TLS_CHACHA20_POLY1305_SHA256\", \"TLS_AES_128_GCM_SHA256\", \"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\"]"
        ),
        net.dir.display()
    );
    let daemon = net.start_appliance(&[cpu], &extra);

    // PROXY v2: nginx sees the client's own address and port through the header.
    let o = net
        .in_hosts(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "%{local_ip}:%{local_port}",
            "http://10.77.0.1:82/",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let (body, local) = out.split_once('\n').unwrap();
    assert_eq!(
        body,
        format!("{local} via 10.77.0.1"),
        "nginx did not get the client's address"
    );
    // TLS fetches for the access log.
    let o = https(&net, &["-o", "/dev/null"], "/index.html");
    assert!(o.status.success());

    // Two downloads: one that ends within the drain, one that cannot.
    let (fast, slow) = (net.dir.join("fast.out"), net.dir.join("slow.out"));
    let mut fast_dl = https_cmd(
        &net,
        "ca.pem",
        &["--limit-rate", "5M", "-o", fast.to_str().unwrap()],
        "/big.bin",
    )
    .spawn()
    .unwrap();
    let mut slow_dl = slow_get(&net, "http://10.77.0.1:80/big.bin", "200K", &slow);
    // show sessions lists both, with the TLS one's handshake.
    let t0 = Instant::now();
    let sessions = loop {
        let j = ctl_json(&net, &["show", "sessions"]);
        let rows = j["sessions"].as_array().unwrap().clone();
        if rows.len() == 2 && rows.iter().all(|r| r["bytes_out"].as_u64() > Some(0)) {
            break j;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{j}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rows = sessions["sessions"].as_array().unwrap();
    let tls = rows.iter().find(|r| r["vserver"] == "secure").unwrap();
    assert_eq!(tls["state"], "open", "{tls}");
    assert_eq!(tls["tls_version"], "TLSv1.3");
    assert_eq!(tls["sni"], "appliance.test");
    assert_eq!(tls["backend"], "10.77.0.2:8080");
    let plain = rows.iter().find(|r| r["vserver"] == "web").unwrap();
    assert_eq!(plain["tls_version"], Value::Null);
    assert_eq!(sessions["session_caches"][0]["vserver"], "secure");
    let t = ctl_ok(&net, &["show", "sessions"]);
    assert!(t.contains("2 open client connection(s)"), "{t}");
    assert!(t.contains(tls["client"].as_str().unwrap()), "{t}");

    // SIGTERM: the ports close at once, open connections go on.
    net.signal(daemon, "TERM");
    let t0 = Instant::now();
    // Fetches that beat the signal to the cores are served (and logged).
    let mut served_before = 0;
    loop {
        let o = net.curl("http://10.77.0.1:80/index.html", &net.dir.join("x"));
        if o.status.code() == Some(7) {
            break;
        }
        served_before += usize::from(o.status.success());
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "still accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        fast_dl.wait().unwrap().success(),
        "the download within the drain failed"
    );
    assert_eq!(sha_file(&fast), sha_file(&net.dir.join("www/big.bin")));
    // The one that could not finish is reset at the deadline, and the daemon exits.
    let st = slow_dl.wait().unwrap();
    assert_eq!(st.code(), Some(56), "the slow download should see a reset");
    let st = net
        .wait_exit(daemon, Duration::from_secs(15))
        .expect("the appliance did not exit after its drain deadline");
    let log = net.log("appliance.log");
    assert!(st.success(), "{log}");
    assert!(
        // Two downloads, and maybe a fetch that raced the signal.
        log.contains("client connection(s) for up to 6s")
            && log.contains("drain ended with 1 client connection(s) open: resetting them")
            && log.contains("stopped cleanly"),
        "{log}"
    );

    // The access log: one line per connection, each field as documented.
    let lines = access_lines(&net);
    let find = |f: &dyn Fn(&std::collections::HashMap<String, String>) -> bool| {
        lines
            .iter()
            .find(|l| f(l))
            .unwrap_or_else(|| panic!("no such line in\n{}", net.log("access.log")))
            .clone()
    };
    let pp = find(&|l| l["vserver"] == "pp");
    assert_eq!(pp["client"], local);
    assert_eq!(pp["backend"], "10.77.0.3:8081");
    assert_eq!(pp["close"], "done");
    assert_eq!(pp["tls"], "-");
    let big = (16u64 << 20).to_string();
    let dl =
        find(&|l| l["vserver"] == "secure" && l["bytes_out"].parse::<u64>().unwrap() > 1 << 24);
    assert_eq!(dl["tls"], "TLSv1.3");
    assert_eq!(dl["suite"], "TLS_CHACHA20_POLY1305_SHA256");
    assert_eq!(dl["sni"], "appliance.test");
    assert_eq!(dl["resumed"], "no");
    assert_eq!(dl["close"], "done");
    assert!(dl["handshake_ms"].parse::<f64>().unwrap() > 0.0);
    assert!(dl["bytes_out"].parse::<u64>().unwrap() > big.parse().unwrap());
    let cut = find(&|l| l["vserver"] == "web" && l["close"] == "shutdown");
    assert_eq!(cut["listen"], "10.77.0.1:80");
    assert!(
        cut["duration_ms"].parse::<f64>().unwrap() > 5000.0,
        "{cut:?}"
    );
    assert_eq!(lines.len(), 4 + served_before, "{}", net.log("access.log"));
}

/// Operators' signals: SIGHUP reloads the configuration file exactly as `appliancectl
/// reload` (a bad file is refused and the running configuration stays), and SIGUSR1
/// reopens the access log after logrotate moved it. Neither stops the daemon.
#[test]
fn sighup_reloads_and_sigusr1_reopens_the_access_log() {
    let mut net = Net::up("sig");
    write_site(&net.dir, 4096);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    let cpu = *cpus().last().unwrap();
    let log = net.dir.join("access.log");
    let app = net.start_appliance(
        &[cpu],
        &format!("\n[log]\naccess = \"{}\"\n", log.display()),
    );
    let get = |net: &Net, port: u16| {
        let url = format!("http://10.77.0.1:{port}/index.html");
        net.curl(&url, &net.dir.join("got")).status.success()
    };
    assert!(get(&net, 80));
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "not within 10 s: {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("the first line is written", &|| lines(&log) == 1);

    // logrotate: move the file, then SIGUSR1; the next line goes to a new file.
    let rotated = net.dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    net.signal(app, "USR1");
    wait("the log reopened", &|| log.exists());
    assert!(get(&net, 80));
    wait("the next line in the new file", &|| lines(&log) == 1);
    assert_eq!(lines(&rotated), 1, "the old file keeps its line");

    // SIGHUP: a vserver added to the file serves once the generation moves on.
    let cfg_path = net.dir.join("appliance.toml");
    let original = std::fs::read_to_string(&cfg_path).unwrap();
    let more = "\n[[vserver]]\nname = \"more\"\nlisten = \"10.77.0.1:81\"\nmode = \"tcp\"\nbackends = [\"10.77.0.3:8080\"]\n";
    std::fs::write(&cfg_path, format!("{original}{more}")).unwrap();
    net.signal(app, "HUP");
    wait("generation 2", &|| {
        ctl_json(&net, &["status"])["config_generation"] == 2
    });
    assert!(get(&net, 81), "the new vserver serves");
    // A broken file: refused and logged, generation 2 stays, everything still serves.
    std::fs::write(&cfg_path, "this is not TOML [").unwrap();
    net.signal(app, "HUP");
    wait("the refusal logged", &|| {
        net.log("appliance.log").contains("reload refused")
    });
    assert_eq!(ctl_json(&net, &["status"])["config_generation"], 2);
    assert!(get(&net, 80) && get(&net, 81));
}

/// Accepts every connection and resets it at once (SO_LINGER 0): a TCP health check
/// passes (the handshake completes), every client connection fails.
const RESETTER: &str = r#"
import socket, struct, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
"#;

/// Passive health (HAProxy's `observe layer4`): a backend that passes its TCP check but
/// resets every client connection goes out of rotation after `error_limit` failures in
/// a row, comes back only after `rise` fresh passes of its check, and goes out again;
/// the same backends without `observe` keep failing one client in two.
#[test]
fn passive_health_takes_out_a_backend_that_resets_clients() {
    let mut net = Net::up("ph");
    write_site(&net.dir, 1024);
    net.start_backend("10.77.0.2", 8080);
    let c = net.in_hosts(&["python3", "-c", RESETTER, "10.77.0.3", "8080"]);
    net.spawn(c, "resetter.log");
    std::thread::sleep(Duration::from_millis(500));
    let health = "check = \"tcp\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2";
    let vs = format!(
        r#"
[[vserver]]
name = "checked"
listen = "10.77.0.1:81"
mode = "tcp"
backends = ["10.77.0.2:8080", "10.77.0.3:8080"]
[vserver.health]
{health}
observe = "layer4"
error_limit = 3

[[vserver]]
name = "unobserved"
listen = "10.77.0.1:82"
mode = "tcp"
backends = ["10.77.0.2:8080", "10.77.0.3:8080"]
[vserver.health]
{health}
"#
    );
    net.start_appliance(&[*cpus().last().unwrap()], &vs);
    wait_backend(&net, "10.77.0.3:8080", "checked", |b| {
        b["checks_passed"].as_u64().unwrap() >= 2
    });
    let out = net.dir.join("out.html");
    let failures = |port: u16, n: usize| -> usize {
        (0..n)
            .filter(|_| {
                !net.curl(&format!("http://10.77.0.1:{port}/index.html"), &out)
                    .status
                    .success()
            })
            .count()
    };
    // Round robin: every other client goes to the resetter until it has failed three
    // in a row; then all go to the good one.
    assert_eq!(failures(81, 12), 3);
    let b = backend(&net, "10.77.0.3:8080");
    assert_eq!(
        (b["state"].as_str(), b["passive_downs"].as_u64()),
        (Some("down"), Some(1)),
        "{b}"
    );
    // Without observe: one in two, and it stays up.
    assert_eq!(failures(82, 8), 4);
    // Back after two fresh passes of its check (its passes before do not count) ...
    let b = wait_backend(&net, "10.77.0.3:8080", "up again", |b| b["state"] == "up");
    assert_eq!(b["transitions"], 2, "{b}");
    // ... and out again after three more failures.
    assert_eq!(failures(81, 12), 3);
    let b = backend(&net, "10.77.0.3:8080");
    assert_eq!(b["passive_downs"], 2, "{b}");
    let s = net.stats();
    assert_eq!(s["cores"][0]["proxy"]["backend_passive_downs"], 2, "{s}");
    assert!(net
        .log("appliance.log")
        .contains("failed 3 client connections in a row; out of rotation"));
    let table = ctl_ok(&net, &["show", "backends"]);
    assert!(
        table.contains("taken out 2 time(s) by passive health"),
        "{table}"
    );
}

/// Headless Chromium (Debian's) in the appliance's namespace: the rendered page's text
/// (after its scripts ran and fetched /status.json), and a screenshot into `png`.
fn chromium(net: &Net, url: &str, png: &Path) -> String {
    let ns = format!("{}-a", net.name);
    let profile = net.dir.join("chromium-profile");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
        "--window-size=1280,900",
    ];
    let user_dir = format!("--user-data-dir={}", profile.display());
    let shot = format!("--screenshot={}", png.display());
    let run = |extra: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns, "timeout", "60", "chromium"])
            .args(common)
            .arg(&user_dir)
            .args(extra)
            .arg(url);
        let o = c.output().expect("chromium (tools/setup.sh installs it)");
        assert!(
            o.status.success(),
            "chromium {extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&[&shot]);
    run(&["--dump-dom"])
}

/// The status page on the metrics listener, as a person sees it in a browser: the
/// vservers and backends with their state, rendered by the page's own script; after
/// `appliancectl backend drain` the page shows the backend draining.
#[test]
fn the_status_page_renders_in_a_browser_and_follows_a_drain() {
    let mut net = Net::up("sp");
    write_site(&net.dir, 1024);
    write_pages(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    std::thread::sleep(Duration::from_millis(500));
    net.start_appliance(&[*cpus().last().unwrap()], CHECKED);
    wait_backend(&net, "10.77.0.3:8080", "up", |b| b["state"] == "up");
    let png = net.dir.join("status.png");
    let dom = chromium(&net, "http://127.0.0.1:9464/", &png);
    // The rows the script built: the vserver, and each backend with its state.
    assert!(
        dom.contains("<td>checked</td><td>10.77.0.1:81</td><td>tcp</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<td>checked</td><td>10.77.0.3:8080</td><td class=\"up\">up</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<div id=\"error\"></div>"),
        "no fetch error: {dom}"
    );
    let shot = std::fs::read(&png).unwrap();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
        "a screenshot"
    );
    ctl_ok(&net, &["backend", "drain", "10.77.0.3:8080"]);
    let dom = chromium(&net, "http://127.0.0.1:9464/", &png);
    assert!(
        dom.contains("<td>10.77.0.3:8080</td><td class=\"draining\">draining</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<td>10.77.0.2:8080</td><td class=\"up\">up</td>"),
        "{dom}"
    );
}
