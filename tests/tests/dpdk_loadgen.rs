//! loadgen against the appliance through the data plane (DPDK on a veth): in every mode
//! its counts of handshakes, resumptions and responses must equal the appliance's own
//! counters for the same run. Needs root.

use serde_json::Value;
use tests::veth::*;

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("a number: {v}"))
}

/// The appliance's TLS counters: (1.2 handshakes, 1.2 resumed, 1.3 handshakes, 1.3 resumed).
fn counters(net: &Net) -> [u64; 4] {
    let s = net.stats();
    let p = &s["cores"][0]["proxy"];
    [
        n(&p["tls12_handshakes"]),
        n(&p["tls12_resumed"]),
        n(&p["tls13_handshakes"]),
        n(&p["tls13_resumed"]),
    ]
}

/// The appliance on one core with a TLS vserver on :443 in front of the hosts'
/// backend (10.77.0.2:8080), whose site has a file of `big` bytes.
fn rig(tag: &str, big: usize) -> Net {
    let mut net = Net::up(tag);
    write_site(&net.dir, big);
    make_certs(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    let vs = tls_vserver(&net.dir, "secure", 443, &["10.77.0.2:8080"], &["ec"], "");
    net.start_appliance(&[*cpus().last().unwrap()], &vs);
    net
}

/// Runs loadgen (`args` with `--json`) in the hosts' namespace: it must exit 0 with a
/// report, which is returned.
fn run_ok(net: &Net, args: &[&str]) -> Value {
    let out = net.in_hosts(args).output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: no report ({e}): stdout {:?} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{args:?}: {r}");
    r
}

#[test]
fn loadgen_counts_match_the_appliances() {
    let net = rig("lg", 1 << 20);
    let loadgen = binary("loadgen");
    let ca = net.dir.join("ca.pem");

    // (flags, TLS 1.3?, operations, resumption expected)
    let cases: &[(&[&str], bool, u64, bool)] = &[
        (&["--mode", "full", "--tls", "1.3"], true, 40, false),
        (&["--mode", "full", "--tls", "1.2"], false, 40, false),
        (&["--mode", "resume", "--tls", "1.3"], true, 40, true),
        (&["--mode", "resume", "--resume", "ticket"], false, 40, true),
        (&["--mode", "resume", "--resume", "id"], false, 40, true),
        (
            &["--mode", "request", "--path", "/index.html"],
            true,
            20,
            false,
        ),
        (&["--mode", "bulk", "--path", "/big.bin"], true, 20, false),
        // The engine's own client role, verifying, then with its cheapenings.
        (&["--engine", "own", "--mode", "full"], true, 40, false),
        (
            &["--engine", "own", "--mode", "resume", "--reuse-key-share"],
            true,
            40,
            true,
        ),
        (
            &["--engine", "own", "--mode", "resume", "--reuse-ticket"],
            true,
            40,
            true,
        ),
        (
            &[
                "--engine",
                "own",
                "--mode",
                "request",
                "--path",
                "/index.html",
            ],
            true,
            20,
            false,
        ),
        // The post-quantum hybrid (the own engine's ML-KEM; OpenSSL 3.0 has none).
        (
            &[
                "--engine",
                "own",
                "--mode",
                "full",
                "--groups",
                "X25519MLKEM768",
            ],
            true,
            20,
            false,
        ),
    ];
    for &(flags, tls13, count, resumes) in cases {
        let before = counters(&net);
        let groups_before = groups(&net);
        let count_s = count.to_string();
        let mut args = vec![
            loadgen.to_str().unwrap(),
            "--target",
            "10.77.0.1:443",
            "--sni",
            "appliance.test",
            "--ca",
            ca.to_str().unwrap(),
            "--concurrency",
            "4",
            "--count",
            &count_s,
            "--duration",
            "60s",
            "--json",
            "--quiet",
        ];
        args.extend_from_slice(flags);
        let r = run_ok(&net, &args);
        assert_eq!(n(&r["ok"]), count, "{flags:?}: {r}");
        assert_eq!(n(&r["error_count"]), 0, "{flags:?}: {r}");
        let after = counters(&net);
        let d: Vec<u64> = (0..4).map(|i| after[i] - before[i]).collect();
        let (hs, resumed) = if tls13 { (d[2], d[3]) } else { (d[0], d[1]) };
        // The other version saw nothing.
        let (other_hs, _) = if tls13 { (d[0], d[1]) } else { (d[2], d[3]) };
        assert_eq!(
            hs,
            n(&r["handshakes"]),
            "{flags:?}: appliance {d:?}, loadgen {r}"
        );
        assert_eq!(
            resumed,
            n(&r["resumed"]),
            "{flags:?}: appliance {d:?}, loadgen {r}"
        );
        assert_eq!(other_hs, 0, "{flags:?}: {d:?}");
        if resumes {
            // The 4 connections of the first round have no session to offer yet.
            assert!(n(&r["resumed"]) >= count - 4, "{flags:?}: {r}");
            assert_eq!(n(&r["not_resumed"]), 0, "{flags:?}: {r}");
        }
        if flags.contains(&"bulk") {
            // The backend (Python's http.server) answers HTTP/1.0 and closes after each
            // response; the appliance passes that on, and loadgen follows it: a new
            // connection per download, none of them a failed reuse.
            assert_eq!(n(&r["handshakes"]), count, "{r}");
            assert_eq!(n(&r["reconnects"]), 0, "{r}");
            assert!(n(&r["bytes_in"]) >= 20 << 20, "{r}");
        }
        if flags.contains(&"request") {
            assert_eq!(n(&r["responses"]), count, "{r}");
        }
        // Every full handshake is counted under its key exchange group: the hybrid
        // when asked for, X25519 (both clients' first choice) otherwise.
        let groups_after = groups(&net);
        let used = |g: &str| groups_after[g] - groups_before[g];
        if !resumes {
            let g = if flags.contains(&"X25519MLKEM768") {
                "X25519MLKEM768"
            } else {
                "x25519"
            };
            assert_eq!(used(g), n(&r["handshakes"]), "{flags:?}: {groups_after:?}");
        }
    }
}

/// The appliance's handshakes by key exchange group.
fn groups(net: &Net) -> std::collections::BTreeMap<String, u64> {
    let s = net.stats();
    let m = s["cores"][0]["proxy"]["tls_groups"].as_object().unwrap();
    m.iter().map(|(k, v)| (k.clone(), n(v))).collect()
}

/// `--dpdk`: loadgen's connections on its own stack over DPDK (net_af_packet on the
/// hosts' end of the veth, address 10.77.0.50, which the kernel there does not have).
/// Both engines, full handshakes and requests: the counts still equal the appliance's,
/// the report names the network and says its CPU is the polling thread's busy time,
/// and the kernel's TCP in the hosts' namespace never made a connection to the
/// appliance (loadgen's did).
#[test]
fn loadgen_on_its_own_dpdk_stack_counts_match_the_appliances() {
    let net = rig("lgd", 1 << 16);
    let loadgen = binary("loadgen");
    let ca = net.dir.join("ca.pem");
    let iface = format!("{}-h0", net.name);
    let kernel_conns = |net: &Net| {
        let out = net
            .in_hosts(&["ss", "-Htn", "state", "all", "dst", "10.77.0.1:443"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let cases: &[(&[&str], u64)] = &[
        (&["--engine", "own", "--mode", "full"], 60),
        (
            &[
                "--engine",
                "own",
                "--mode",
                "full",
                "--no-verify",
                "--reuse-key-share",
            ],
            60,
        ),
        (&["--mode", "full"], 30),
        (
            &[
                "--engine",
                "own",
                "--mode",
                "request",
                "--path",
                "/index.html",
            ],
            20,
        ),
    ];
    for &(flags, count) in cases {
        let before = counters(&net);
        let count_s = count.to_string();
        let mut args = vec![
            loadgen.to_str().unwrap(),
            "--target",
            "10.77.0.1:443",
            "--sni",
            "appliance.test",
            "--ca",
            ca.to_str().unwrap(),
            "--tls",
            "1.3",
            "--concurrency",
            "8",
            "--count",
            &count_s,
            "--duration",
            "60s",
            "--dpdk",
            &iface,
            "--dpdk-addr",
            "10.77.0.50/24",
            "--json",
            "--quiet",
        ];
        args.extend_from_slice(flags);
        let r = run_ok(&net, &args);
        assert_eq!(n(&r["ok"]), count, "{flags:?}: {r}");
        assert_eq!(n(&r["error_count"]), 0, "{flags:?}: {r}");
        assert_eq!(r["network"], format!("dpdk {iface} 10.77.0.50/24"), "{r}");
        assert_eq!(r["client_cpu_method"], "busy-polling", "{r}");
        let cpu = r["client_cpu_seconds"].as_f64().unwrap();
        let secs = r["seconds"].as_f64().unwrap();
        assert!(
            cpu > 0.0 && cpu <= secs + 0.1,
            "busy time within the run: {r}"
        );
        let after = counters(&net);
        assert_eq!(after[2] - before[2], n(&r["handshakes"]), "{flags:?}: {r}");
        assert_eq!(n(&r["handshakes"]), count, "{flags:?}: {r}");
        if flags.contains(&"request") {
            assert_eq!(n(&r["responses"]), count, "{r}");
        }
    }
    assert_eq!(kernel_conns(&net), 0, "the kernel's TCP was not used");

    // A bad interface is a clear error naming it, exit 2, nothing on stdout.
    let out = net
        .in_hosts(&[
            loadgen.to_str().unwrap(),
            "--target",
            "10.77.0.1:443",
            "--dpdk",
            "nosuchif0",
            "--dpdk-addr",
            "10.77.0.50/24",
            "--count",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--dpdk nosuchif0"), "{err}");
}
