//! Transmittal conditions on the wire: a backend writing 100-byte pieces through
//! `tls` vservers that each enable one condition, and a client that counts the
//! application-data records it receives (`tests/py/transmit_client.py`). Needs root.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tests::veth::*;

/// One `tls` vserver per condition, all on the same backend and certificate.
fn vservers(dir: &Path) -> String {
    let one = |name: &str, port: u16, transmit: &str| {
        let more = format!("[vserver.transmit]\n{transmit}");
        tls_vserver(dir, name, port, &["10.77.0.2:9000"], &["ec"], &more)
    };
    [
        one(
            "quantum",
            4431,
            "quantum = 4096\ntimer = \"30s\"\nfin = false\npsh = false",
        ),
        one(
            "nocoalesce",
            4432,
            "timer = \"0ms\"\nfin = false\npsh = false",
        ),
        one(
            "http",
            4433,
            "http = true\ntimer = \"30s\"\nfin = false\npsh = false",
        ),
        one("fin", 4434, "timer = \"30s\"\nfin = true\npsh = false"),
        one("psh", 4435, "timer = \"30s\"\nfin = false\npsh = true"),
        one("timer", 4436, "timer = \"50ms\"\nfin = false\npsh = false"),
    ]
    .concat()
}

fn client(net: &Net, port: u16, args: &[&str]) -> Value {
    let script = repo().join("tests/py/transmit_client.py");
    let ca = net.dir.join("ca.pem");
    let port = port.to_string();
    let mut a = vec![
        "python3",
        script.to_str().unwrap(),
        ca.to_str().unwrap(),
        &port,
    ];
    a.extend_from_slice(args);
    let o = net.in_hosts(&a).output().unwrap();
    assert!(
        o.status.success(),
        "client {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn records(v: &Value) -> Vec<u64> {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect()
}

fn step_records(v: &Value) -> Vec<u64> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["records"].as_u64().unwrap())
        .collect()
}

#[test]
fn each_transmittal_condition_seals_records_on_the_wire() {
    let mut net = Net::up("tx");
    make_certs(&net.dir);
    let backend = repo().join("tests/py/transmit_backend.py");
    let c = net.in_hosts(&["python3", backend.to_str().unwrap(), "10.77.0.2", "9000"]);
    net.spawn(c, "backend.log");
    std::thread::sleep(Duration::from_millis(500));
    let cpu = *cpus().last().unwrap();
    net.start_appliance(&[cpu], &vservers(&net.dir));
    let n = 40 * 4096;

    // Quantum alone: 1639 backend writes of 100 bytes become 40 records of exactly
    // the quantum, sent without waiting for the (30 s) timer.
    let q = client(&net, 4431, &["stream", &n.to_string()]);
    assert_eq!(records(&q), vec![4096; 40], "{q}");

    // The same stream with no coalescing (timer 0): a record per backend read.
    let raw = client(&net, 4432, &["stream", &n.to_string()]);
    let raw_records = records(&raw);
    assert_eq!(raw_records.iter().sum::<u64>(), n as u64);
    assert!(
        raw_records.len() > 400,
        "without coalescing the 100-byte writes stay small records: {} records",
        raw_records.len()
    );

    // HTTP-aware: each response (Content-Length, chunked, 204), written in pieces,
    // leaves as one record the moment it is complete. The next request is sent only
    // after the whole response arrived, so a response waiting for the timer (30 s)
    // would fail the client's 10 s socket timeout.
    let h = client(&net, 4433, &["http"]);
    assert_eq!(step_records(&h), vec![1, 1, 1], "{h}");

    // FIN: three writes then the backend closes: one record, then close_notify.
    let f = client(&net, 4434, &["fin"]);
    assert_eq!(records(&f), vec![300], "{f}");
    assert_eq!(f["close_notify"], true, "{f}");

    // PSH: each 300-byte write (one segment, PSH set) is its own record at once.
    let p = client(&net, 4435, &["psh"]);
    assert_eq!(records(&p), vec![300, 300, 300], "{p}");

    // Timer: three writes 1 ms apart, nothing else fires: one record, held until
    // the 50 ms timer (a lower bound: the timer, not an earlier condition, sealed it).
    let t = client(&net, 4436, &["timer"]);
    assert_eq!(records(&t), vec![300], "{t}");
    let waited = t["steps"][0]["seconds"].as_f64().unwrap();
    assert!(waited >= 0.045, "sealed after {waited} s, before the timer");
    eprintln!(
        "timer 50 ms: the client waited {:.1} ms for 3 x 100 bytes",
        waited * 1e3
    );

    let s = net.stats();
    let px = &s["cores"][0]["proxy"];
    let get = |k: &str| px[k].as_u64().unwrap();
    assert!(get("tx_seal_quantum") >= 40, "{px}");
    assert_eq!(get("tx_seal_http_end"), 3, "{px}");
    assert!(get("tx_seal_fin") >= 1, "{px}");
    assert!(get("tx_seal_psh") >= 3, "{px}");
    assert!(get("tx_seal_timer") >= raw_records.len() as u64, "{px}");
    assert_eq!(get("http_framing_errors"), 0, "{px}");
    let recs = get("tls_records_out");
    let expected: u64 = [&q, &raw, &h, &f, &p, &t]
        .iter()
        .map(|v| records(v).len() as u64)
        .sum();
    assert_eq!(
        recs, expected,
        "every record the clients counted, and no others"
    );
    let segs = get("tls_segments_out");
    eprintln!(
        "records {recs}, segments {segs} ({:.2} records per segment), {:.0} bytes per record",
        recs as f64 / segs.max(1) as f64,
        get("tls_record_bytes_out") as f64 / recs as f64
    );
    assert!(segs > 0, "{px}");
    // The stats say which OpenSSL device ran the records' cipher.
    let devices = s["crypto"]["devices"].as_array().unwrap();
    assert!(
        devices
            .iter()
            .any(|d| d["operation"] == "AES-128-GCM" && d["device"] == "provider default"),
        "{devices:?}"
    );
}
