//! Record offload through the data plane: application records of many connections
//! sealed and opened in record jobs on the crypto pool (`[crypto] records = "pool"`,
//! the default with workers), checked byte for byte by real clients; and a worker that
//! dies with record jobs out, under live traffic. Needs root.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tests::veth::*;

/// The appliance with one crypto worker (on a CPU of its own when there is one), an
/// echo backend behind `tls` vserver "echo" (port 443) and the web site behind "site"
/// (port 8443).
fn records_net(tag: &str, env: &[(&str, &str)]) -> Net {
    let mut net = Net::up(tag);
    write_site(&net.dir, 8 << 20);
    make_certs(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    let echo = repo().join("tests/py/echo_backend.py");
    let c = net.in_hosts(&["python3", echo.to_str().unwrap(), "10.77.0.2", "9000"]);
    net.spawn(c, "echo.log");
    std::thread::sleep(Duration::from_millis(500));
    let all = cpus();
    let poll = *all.last().unwrap();
    let crypto = match all.iter().find(|&&c| c != poll) {
        Some(c) => format!("[crypto]\nworkers = 1\ncpus = [{c}]\nrecord_batch = 4\n"),
        None => "[crypto]\nworkers = 1\nrecord_batch = 4\n".into(),
    };
    let vs = [
        tls_vserver(
            &net.dir,
            "echo",
            443,
            &["10.77.0.2:9000"],
            &["ec", "rsa"],
            "",
        ),
        tls_vserver(&net.dir, "site", 8443, &["10.77.0.2:8080"], &["ec"], ""),
    ]
    .concat();
    net.start_appliance_env(&[poll], &format!("{crypto}\n{vs}"), env);
    net
}

/// `tests/py/bulk_client.py`: `conns` connections each echoing `size` bytes.
fn bulk(net: &Net, conns: usize, size: usize) -> Vec<Value> {
    let script = repo().join("tests/py/bulk_client.py");
    let ca = net.dir.join("ca.pem");
    let o = net
        .in_hosts(&[
            "python3",
            script.to_str().unwrap(),
            ca.to_str().unwrap(),
            "443",
            &conns.to_string(),
            &size.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bulk client: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["results"].as_array().unwrap().clone()
}

fn curl_big(net: &Net, out: &Path) {
    let ca = net.dir.join("ca.pem");
    let o = net
        .in_hosts(&[
            "curl",
            "-sS",
            "--max-time",
            "60",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            "appliance.test:8443:10.77.0.1",
            "-o",
            out.to_str().unwrap(),
            "https://appliance.test:8443/big.bin",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("a number: {v}"))
}

#[test]
fn bulk_both_ways_through_record_jobs_on_the_pool() {
    let net = records_net("rj", &[]);
    let results = bulk(&net, 8, 1 << 20);
    let kinds: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            assert_eq!(r["result"], "ok", "{r}");
            (r["version"].to_string(), r["cipher"].to_string())
        })
        .collect();
    assert_eq!(
        kinds[..4]
            .iter()
            .map(|(v, c)| format!("{} {}", v.trim_matches('"'), c.trim_matches('"')))
            .collect::<Vec<_>>(),
        [
            "TLSv1.3 TLS_AES_128_GCM_SHA256",
            "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256",
            "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384",
            "TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305",
        ]
    );
    let big = net.dir.join("big.out");
    curl_big(&net, &big);
    assert_eq!(
        sha_file(&big),
        sha_file(&net.dir.join("www/big.bin")),
        "8 MiB byte-exact"
    );

    let s = net.stats();
    let p = &s["cores"][0]["proxy"];
    let jobs = n(&p["record_jobs"]);
    let conns = n(&p["record_job_conns"]);
    // 8 MiB up in records of at most 16 KiB; 8 MiB echoed and 8 MiB of file down.
    assert!(n(&p["record_job_opens"]) >= 8 * 64, "{s}");
    assert!(n(&p["record_job_seals"]) >= 8 * 64 + 512, "{s}");
    assert!(
        conns >= jobs && conns <= 4 * jobs,
        "1 to record_batch connections per job: {s}"
    );
    assert_eq!(n(&p["record_jobs_failed"]), 0, "{s}");
    assert_eq!(n(&p["crypto_failed"]), 0, "{s}");
    // All of it ran on the worker, with the handshakes' jobs.
    let w = &s["crypto"]["workers"][0];
    assert_eq!(n(&w["jobs"]), n(&p["tls_jobs"]) + jobs, "{s}");
    assert_eq!(n(&w["errors"]), 0, "{s}");
    eprintln!(
        "record jobs: {jobs}, {:.2} connections and {:.1} records per job",
        conns as f64 / jobs as f64,
        (n(&p["record_job_opens"]) + n(&p["record_job_seals"])) as f64 / jobs as f64
    );
}

#[test]
fn a_worker_dying_with_record_jobs_out_ends_only_their_connections() {
    // The 40th record job crashes its worker: 8 connections are echoing then.
    let net = records_net("rf", &[("APPLIANCE_FAULT_INJECT", "record-job:40")]);
    let results = bulk(&net, 8, 1 << 20);
    let failed: Vec<&Value> = results.iter().filter(|r| r["result"] != "ok").collect();
    assert!(!failed.is_empty(), "{results:?}");
    for r in &failed {
        let e = r["result"].as_str().unwrap();
        assert!(
            e.contains("INTERNAL_ERROR"),
            "an internal_error alert, not a hang or reset: {r}"
        );
    }
    let s = net.stats();
    let p = &s["cores"][0]["proxy"];
    // The crashed job and the jobs of the same worker batch not yet run are lost
    // (see crypto_offload::pool): record jobs, and handshake jobs of connections still
    // handshaking then. Exactly their connections fail, each once.
    let lost = n(&p["record_jobs_failed"]);
    let handshakes_lost = n(&p["crypto_failed"]) - lost;
    assert!(
        (1..=16).contains(&(lost + handshakes_lost)),
        "at most one worker batch (max_batch 16): {s}"
    );
    assert_eq!(
        n(&p["record_job_conns_failed"]) + handshakes_lost,
        failed.len() as u64,
        "{s}"
    );
    assert_eq!(n(&p["tls_local_error"]), failed.len() as u64, "{s}");
    let w = &s["crypto"]["workers"][0];
    assert_eq!(
        (n(&w["restarts"]), w["alive"].clone()),
        (1, Value::Bool(true)),
        "{s}"
    );
    // The appliance goes on: a new round, all of it fine.
    for r in bulk(&net, 4, 256 << 10) {
        assert_eq!(r["result"], "ok", "{r}");
    }
    let s = net.stats();
    assert_eq!(
        n(&s["cores"][0]["proxy"]["record_jobs_failed"]),
        lost,
        "{s}"
    );
    assert!(
        net.log("appliance.log").contains("record job for"),
        "the loss is logged"
    );
}
