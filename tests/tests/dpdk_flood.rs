//! Floods and faults on the DPDK port (net_af_packet on a veth, our namespaces only,
//! bounded in time): a SYN flood from spoofed addresses while real clients connect,
//! thousands of idle connections that never start their TLS handshake, and a crypto
//! worker that dies under handshake load. The real clients are served throughout (or,
//! those whose work died with the worker, alerted). Needs root.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tests::veth::*;

/// curl `url` in the hosts' namespace, one fetch after another, starting new ones for
/// `secs`: (fetches started, fetches that got the page).
fn fetches(net: &Net, url: &str, extra: &[&str], secs: u64) -> (usize, usize) {
    let t0 = Instant::now();
    let (mut tried, mut ok) = (0, 0);
    while t0.elapsed() < Duration::from_secs(secs) {
        let mut a = vec!["curl", "-sS", "-o", "/dev/null", "--max-time", "5"];
        a.extend_from_slice(extra);
        a.push(url);
        tried += 1;
        if net.in_hosts(&a).status().is_ok_and(|s| s.success()) {
            ok += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (tried, ok)
}

/// 4,096 spoofed sources send 40,000 SYNs a second for 6 s; the core holds at most
/// 1,000 connections. Past 64 half-open connections SYNs get SYN cookies (no state
/// until the ACK), so the flood never fills the table and every real client gets
/// through. With cookies off the same flood fills the table in its first 25 ms and
/// keeps it full for the 10 s handshake timeout: the real clients' SYNs are dropped
/// (`syn_dropped_full`) and none is served.
///
/// The rate is what one core's af_packet receive path takes with room to spare; the
/// generator's full rate (about 300,000 a second here) is more than that path moves
/// (about 140,000 frames a second on this machine, cookies answered for all of them),
/// and then the port's receive ring drops frames whatever they are, real clients'
/// included: a packet-rate attack on the port, which no TCP state can help with.
#[test]
fn a_syn_flood_from_spoofed_addresses_does_not_starve_real_clients() {
    let mut net = Net::up("fl");
    write_site(&net.dir, 1024);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    net.dataplane_extra = "max_connections_per_core = 1000\n".into();
    net.control_extra = "[tcp]\nsyn_cookies_after = 64\n".into();
    let cpu = *cpus().last().unwrap();
    net.start_appliance(&[cpu], "");
    let mac = net.stats()["port"]["mac"].as_str().unwrap().to_string();
    let script = repo().join("tests/scripts/synflood.py");
    let iface = format!("{}-h0", net.name);
    let flood = net
        .in_hosts(&[
            "python3",
            script.to_str().unwrap(),
            &iface,
            &mac,
            "10.77.0.1",
            "80",
            "6",
            "40000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (tried, served) = fetches(&net, "http://10.77.0.1/index.html", &[], 4);
    let out = flood.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("flood report: {e}: {:?}", out.stdout));
    let s = net.stats();
    let stack = &s["cores"][0]["stack"];
    assert!(tried >= 3, "{tried} fetches in 4 s");
    assert_eq!(
        served, tried,
        "real clients during the flood; {report}; {stack}"
    );
    assert!(report["sent"].as_u64().unwrap() > 200_000, "{report}");
    assert!(
        stack["syn_cookies_sent"].as_u64().unwrap() > 150_000,
        "{stack}"
    );
    assert_eq!(stack["syn_dropped_full"], 0, "{stack}");
    assert!(stack["half_open"].as_u64().unwrap() <= 64, "{stack}");
    // The real clients' connections came through cookies or a socket; none failed.
    assert_eq!(stack["syn_cookies_failed"], 0, "{stack}");
    eprintln!("flood {report}; stack {stack}");
}

/// 2,000 connections to the TLS port that never send a ClientHello: each holds a
/// connection slot until the vserver's handshake timeout (2 s here), while real TLS
/// clients are served; then every one of them is closed by the appliance.
#[test]
fn idle_half_open_handshakes_are_timed_out_without_starving_new_clients() {
    let mut net = Net::up("fi");
    write_site(&net.dir, 1024);
    make_certs(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    let cpu = *cpus().last().unwrap();
    let vs = tls_vserver(
        &net.dir,
        "secure",
        443,
        &["10.77.0.2:8080"],
        &["ec"],
        "handshake_timeout = \"2s\"",
    );
    net.start_appliance(&[cpu], &vs);
    // Opens the connections, reports, then waits for the appliance to close each.
    let py = r#"
import json, resource, selectors, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
socks = []
for i in range(2000):
    s = socket.create_connection(("10.77.0.1", 443), timeout=10)
    s.setblocking(False)
    socks.append(s)
print(json.dumps({"open": len(socks)}), flush=True)
sel = selectors.DefaultSelector()
for s in socks:
    sel.register(s, selectors.EVENT_READ)
closed, t0 = 0, time.time()
while closed < len(socks) and time.time() - t0 < 20:
    for key, _ in sel.select(timeout=1):
        try:
            data = key.fileobj.recv(100)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
            closed += 1
print(json.dumps({"closed": closed, "after_s": round(time.time() - t0, 1)}), flush=True)
"#;
    let mut idle = net
        .in_hosts(&["python3", "-c", py])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(idle.stdout.take().unwrap()));
    let opened = lines.next().unwrap().unwrap();
    assert_eq!(opened, r#"{"open": 2000}"#);
    let s = net.stats();
    assert!(
        s["cores"][0]["proxy"]["clients_open"].as_u64().unwrap() >= 2000,
        "{s}"
    );
    // New clients while the 2,000 wait.
    let ca = net.dir.join("ca.pem");
    let (tried, served) = fetches(
        &net,
        "https://appliance.test/index.html",
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            "appliance.test:443:10.77.0.1",
        ],
        1,
    );
    assert!(tried >= 1);
    assert_eq!(served, tried);
    let closed = lines.next().unwrap().unwrap();
    let _ = idle.wait();
    let closed: serde_json::Value = serde_json::from_str(&closed).unwrap();
    assert_eq!(closed["closed"], 2000, "{closed}");
    let s = net.stats();
    assert_eq!(s["cores"][0]["proxy"]["clients_open"], 0, "{s}");
}

/// Full TLS handshakes, 16 in flight, with their crypto on one worker; the worker that
/// takes the 150th handshake job panics (the test hook `APPLIANCE_FAULT_INJECT`, as a
/// crashing accelerator driver would). The jobs it held are lost: exactly those
/// connections get an internal_error alert, every other one completes, none hangs
/// until a timeout; the supervisor restarts the worker and the next round is clean.
#[test]
fn a_crypto_worker_dying_under_handshake_load_alerts_only_its_connections() {
    let mut net = Net::up("fw");
    write_site(&net.dir, 1024);
    make_certs(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    std::thread::sleep(Duration::from_millis(500));
    let all = cpus();
    let poll = *all.last().unwrap();
    let crypto = match all.iter().find(|&&c| c != poll) {
        Some(c) => format!("[crypto]\nworkers = 1\ncpus = [{c}]\n"),
        None => "[crypto]\nworkers = 1\n".into(),
    };
    let vs = tls_vserver(&net.dir, "secure", 443, &["10.77.0.2:8080"], &["ec"], "");
    net.start_appliance_env(
        &[poll],
        &format!("{crypto}\n{vs}"),
        &[("APPLIANCE_FAULT_INJECT", "handshake-job:150")],
    );
    let loadgen = binary("loadgen");
    let ca = net.dir.join("ca.pem");
    let round = |count: &str| -> serde_json::Value {
        let out = net
            .in_hosts(&[
                loadgen.to_str().unwrap(),
                "--target",
                "10.77.0.1:443",
                "--sni",
                "appliance.test",
                "--ca",
                ca.to_str().unwrap(),
                "--mode",
                "full",
                "--concurrency",
                "16",
                "--count",
                count,
                "--duration",
                "60s",
                "--json",
                "--quiet",
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no loadgen report ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("a number: {v}"));
    let r = round("400");
    let errors = n(&r["error_count"]);
    // Every connection ended: served, or failed with the alert; none unfinished.
    assert_eq!(n(&r["ok"]) + errors, 400, "{r}");
    assert_eq!(n(&r["unfinished"]), 0, "{r}");
    assert!(
        (1..=16).contains(&errors),
        "the jobs of one worker batch at most (max_batch 16): {r}"
    );
    assert_eq!(
        n(&r["errors"]["alert"]),
        errors,
        "alerts, not hangs or resets: {r}"
    );
    let s = net.stats();
    let p = &s["cores"][0]["proxy"];
    // The same lost batch may hold a record job (the records a connection received after
    // its handshake, opened on the pool). Its connection, when still open, is alerted too
    // (record_job_conns_failed), though its client may have counted the handshake as
    // served already; a record job whose connections had closed harms no one.
    let handshakes_lost = n(&p["crypto_failed"]) - n(&p["record_jobs_failed"]);
    let records_lost = n(&p["record_job_conns_failed"]);
    assert!(
        (handshakes_lost..=handshakes_lost + records_lost).contains(&errors),
        "every lost handshake job is one alerted client: {s}"
    );
    assert_eq!(
        n(&p["tls_local_error"]),
        handshakes_lost + records_lost,
        "{s}"
    );
    let w = &s["crypto"]["workers"][0];
    assert_eq!(n(&w["restarts"]), 1, "{s}");
    assert_eq!(w["alive"], true, "{s}");
    assert!(
        net.log("appliance.log")
            .contains("handshake job 150 crashes its worker"),
        "the crash is logged"
    );
    eprintln!("worker crash: {errors} of 400 handshakes alerted, the rest served");
    // The appliance goes on: a clean round on the restarted worker.
    let r = round("200");
    assert_eq!((n(&r["ok"]), n(&r["error_count"])), (200, 0), "{r}");
}
