//! The cluster-wide TLS session cache (issue 23), end to end: appliances in network
//! namespaces of their own, each with a DPDK data port on a shared client bridge and a
//! kernel management port on a cluster bridge, a real Redis on that bridge, real
//! clients (`openssl s_client`, Python's `ssl`). See `tests::cluster` for the rig.

use std::time::Duration;

use serde_json::Value;
use tests::cluster::{contains, master_key, Cluster};
use tests::veth::sh;

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// TLS 1.2 session resumption with `s_client`: `-sess_out` on one node, `-sess_in` on
/// another. `ids`: session IDs only (`-no_ticket`). Returns whether it was reused.
fn s_client_12(c: &Cluster, node: usize, sess: &str, save: bool, ids: bool) -> bool {
    let mut args = vec!["-tls1_2"];
    if ids {
        args.push("-no_ticket");
    }
    args.push(if save { "-sess_out" } else { "-sess_in" });
    args.push(sess);
    let out = c.s_client(node, &args);
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    out.contains("Reused, TLSv1.2")
}

/// Python's `ssl` (OpenSSL 3 underneath): a TLS 1.3 handshake with node `first`, an
/// HTTP request read to its end (the tickets arrive after the handshake), then a
/// handshake with node `then` offering the ticket. Prints whether it was reused.
const PY_TLS13_TICKET: &str = r#"
import socket, ssl, sys
ca, first, then = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
def conn(addr, session=None):
    s = socket.create_connection((addr, 443), timeout=5)
    t = ctx.wrap_socket(s, server_hostname="appliance.test", session=session)
    t.sendall(b"GET /index.html HTTP/1.0\r\nHost: appliance.test\r\n\r\n")
    body = b""
    while True:
        b = t.recv(65536)
        if not b:
            break
        body += b
    assert b"hello from the backend" in body, body
    return t
a = conn(first)
sess = a.session
assert sess is not None and sess.has_ticket, "no ticket from the first node"
b = conn(then, sess)
print("reused" if b.session_reused else "full")
"#;

/// N full TLS 1.2 handshakes (session IDs, no tickets) with node `addr`: each leaves a
/// session in the store.
const PY_SESSIONS: &str = r#"
import socket, ssl, sys
ca, addr, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.options |= ssl.OP_NO_TICKET
for _ in range(count):
    s = socket.create_connection((addr, 443), timeout=5)
    t = ctx.wrap_socket(s, server_hostname="appliance.test")
    t.close()
print("ok")
"#;

fn python(c: &Cluster, script: &str, args: &[&str]) -> String {
    let mut a = vec!["ip", "netns", "exec"];
    let h = c.ns_hosts();
    a.push(&h);
    a.extend_from_slice(&["python3", "-c", script]);
    a.extend_from_slice(args);
    let o = sh(&a);
    assert!(
        o.status.success(),
        "python: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Every node in `nodes` is ready (has copied the cache, or found nobody to copy it
/// from) and sees every other one up.
fn all_up(c: &Cluster, nodes: &[usize]) -> bool {
    nodes.iter().all(|&i| {
        let s = c.store(i);
        if s["cluster"]["state"] != "ready" {
            return false;
        }
        let up = s["cluster"]["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|m| m["up"] == true)
                    .map(|m| m["name"].as_str().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        nodes
            .iter()
            .filter(|&&j| j != i)
            .all(|j| up.contains(&format!("n{j}")))
    })
}

fn entries(c: &Cluster, i: usize) -> u64 {
    n(&c.store(i)["local"]["entries"])
}

#[test]
fn sessions_made_on_one_node_resume_on_the_others_after_a_death_and_after_a_join() {
    let mut c = Cluster::up("cla");
    c.start_backend();
    c.start_redis();
    let all = [1, 2, 3, 4];
    for i in 1..=3 {
        c.add_node(i, &all);
    }
    c.wait_for(Duration::from_secs(15), "nodes 1-3 see each other", |c| {
        all_up(c, &[1, 2, 3])
    });

    // A TLS 1.2 session ID made on node 1 resumes on nodes 2 and 3.
    let s12 = c.path("s12-ids.pem");
    assert!(!s_client_12(&c, 1, &s12, true, true));
    assert!(
        s_client_12(&c, 2, &s12, false, true),
        "session ID on node 2"
    );
    assert!(
        s_client_12(&c, 3, &s12, false, true),
        "session ID on node 3"
    );
    // A TLS 1.2 ticket made on node 2 resumes on node 3 (cluster ticket keys).
    let t12 = c.path("s12-ticket.pem");
    assert!(!s_client_12(&c, 2, &t12, true, false));
    assert!(
        s_client_12(&c, 3, &t12, false, false),
        "TLS 1.2 ticket on node 3"
    );
    // A TLS 1.3 ticket made on node 3 resumes on node 1.
    let ca = c.path("ec.pem");
    let (d3, d1) = (c.node(3).data.clone(), c.node(1).data.clone());
    assert_eq!(python(&c, PY_TLS13_TICKET, &[&ca, &d3, &d1]), "reused");
    for i in 1..=3 {
        let s = c.store(i);
        assert_eq!(s["cluster"]["counters"]["forged"], 0, "{s}");
    }

    // What reached Redis is sealed: no key or value holds the session's master secret.
    let master = master_key(std::path::Path::new(&s12));
    assert_eq!(master.len(), 48);
    let hex: String = master.iter().map(|b| format!("{b:02x}")).collect();
    c.wait_for(Duration::from_secs(5), "sessions written to Redis", |c| {
        !c.redis_cli(&["--scan"]).is_empty()
    });
    let keys = String::from_utf8_lossy(&c.redis_cli(&["--scan"])).to_string();
    let mut seen = 0;
    for k in keys.lines().filter(|k| !k.is_empty()) {
        let v = c.redis_cli(&["--no-raw", "GET", k]);
        let raw = c.redis_cli(&["--raw", "GET", k]);
        assert!(
            !contains(&raw, &master) && !contains(&v, hex.as_bytes()),
            "{k}"
        );
        assert!(!contains(k.as_bytes(), hex.as_bytes()));
        seen += 1;
    }
    assert!(seen > 0, "no session in Redis");

    // Node 1 dies (SIGKILL) just after making a session: it resumes on node 2.
    // "Just before": once its ADD has reached node 2 (a few ms; replication is
    // asynchronous, so a node killed within that window takes the session with it).
    let last = c.path("s12-last.pem");
    let before = entries(&c, 2);
    assert!(!s_client_12(&c, 1, &last, true, true));
    c.wait_for(Duration::from_secs(2), "node 1's ADD reached node 2", |c| {
        entries(c, 2) > before
    });
    c.kill_node(1);
    assert!(
        s_client_12(&c, 2, &last, false, true),
        "node 1's last session on node 2"
    );

    // Node 4 joins after all this: it copies the cache from a live peer, then serves
    // a session made before it joined.
    c.add_node(4, &all);
    c.wait_for(Duration::from_secs(20), "node 4 ready", |c| {
        c.store(4)["cluster"]["state"] == "ready"
    });
    assert!(
        entries(&c, 4) >= 2,
        "node 4 holds the synced sessions: {}",
        c.store(4)
    );
    assert!(
        s_client_12(&c, 4, &s12, false, true),
        "an old session on node 4"
    );
    assert!(
        s_client_12(&c, 4, &last, false, true),
        "the dead node's session on node 4"
    );
}

#[test]
fn a_multicast_group_replicates_too() {
    let mut c = Cluster::up("clm");
    c.start_backend();
    c.multicast = Some("239.255.77.1:7946".into());
    for i in [1, 2] {
        c.add_node(i, &[]);
    }
    c.wait_for(
        Duration::from_secs(15),
        "the nodes find each other in the group",
        |c| all_up(c, &[1, 2]),
    );
    assert_eq!(c.store(1)["cluster"]["multicast"], true);
    let s = c.path("mc.pem");
    assert!(!s_client_12(&c, 1, &s, true, true));
    c.wait_for(Duration::from_secs(5), "replicated to node 2", |c| {
        entries(c, 2) >= 1
    });
    assert!(s_client_12(&c, 2, &s, false, true), "session ID on node 2");
    // The cluster's counters are a snapshot the cluster thread refreshes every 100 ms.
    c.wait_for(
        Duration::from_secs(2),
        "node 2 measured the replication delay",
        |c| c.store(2)["cluster"]["replication_delay_ms"]["samples"].as_u64() >= Some(1),
    );
}

/// The access log's handshake times (ms, as the appliance measured them) of the
/// connections after the first `skip`.
fn handshake_times(c: &Cluster, node: usize, skip: usize) -> Vec<f64> {
    c.log(&format!("access-{node}.log"))
        .lines()
        .skip(skip)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["handshake_ms"].as_f64())
        .collect()
}

#[test]
fn with_redis_frozen_or_gone_handshakes_go_on_in_full_and_redis_is_used_again() {
    let mut c = Cluster::up("clr");
    c.start_backend();
    c.start_redis();
    let all = [1, 2];
    for i in all {
        c.add_node(i, &all);
    }
    c.wait_for(Duration::from_secs(15), "nodes see each other", |c| {
        all_up(c, &all)
    });
    // A session every tier has forgotten (flushed): offered again, it is looked up
    // locally, at the peers and in Redis.
    let old = c.path("flushed.pem");
    assert!(!s_client_12(&c, 1, &old, true, true));
    let f = appliance::control::request(&c.sock(1), "flush session-store").unwrap();
    assert_eq!(f["ok"], true, "{f}");
    c.wait_for(
        Duration::from_secs(5),
        "the purge reached node 2 and Redis",
        |c| entries(c, 2) == 0 && c.redis_cli(&["--scan"]).is_empty(),
    );
    for (what, signal) in [("frozen", "STOP"), ("killed", "KILL")] {
        c.signal_other("redis.log", signal);
        for node in all {
            let skip = c.log(&format!("access-{node}.log")).lines().count();
            let before = n(&c.store(node)["lookups"]["timeouts"]);
            for k in 0..20 {
                assert!(
                    !s_client_12(&c, node, &old, false, true),
                    "Redis {what}: handshake {k} on node {node} resumed a flushed session"
                );
            }
            let s = c.store(node);
            assert!(
                n(&s["lookups"]["timeouts"]) > before || n(&s["repository"]["down"]) > 0,
                "Redis {what}: lookups on node {node} neither timed out nor found it down: {s}"
            );
            // No core waited for Redis: the server's own handshake times stay within
            // the lookup deadline (5 ms) plus the handshake and this busy box's jitter.
            let times = handshake_times(&c, node, skip);
            assert_eq!(times.len(), 20, "node {node}: {times:?}");
            let worst = times.iter().copied().fold(0.0, f64::max);
            assert!(
                worst < 100.0,
                "Redis {what}: node {node} handshakes (ms): {times:?}"
            );
        }
        if signal == "STOP" {
            c.signal_other("redis.log", "CONT");
        } else {
            c.start_redis();
        }
        // Back: it is used again (a new session reaches it, and the servers are up).
        c.wait_for(
            Duration::from_secs(15),
            "Redis up again on both nodes",
            |c| {
                all.iter()
                    .all(|&i| c.store(i)["repository"]["servers"][0]["up"] == true)
            },
        );
        let fresh = c.path(&format!("after-{what}.pem"));
        assert!(!s_client_12(&c, 1, &fresh, true, true));
        c.wait_for(Duration::from_secs(5), "the new session in Redis", |c| {
            !c.redis_cli(&["--scan"]).is_empty()
        });
        c.redis_cli(&["FLUSHALL"]);
    }
}

/// Drops a share of the cluster's datagrams on the cluster bridge (nftables in the
/// switch namespace: this kernel has no netem), or cuts one node off it.
fn nft(c: &Cluster, rules: &str) {
    let script = c.path("rules.nft");
    std::fs::write(&script, rules).unwrap();
    let o = sh(&["ip", "netns", "exec", &c.ns_switch(), "nft", "-f", &script]);
    assert!(
        o.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn replication_converges_under_loss_and_after_a_partition_heals() {
    let mut c = Cluster::up("cll");
    c.start_backend();
    let all = [1, 2, 3];
    for i in all {
        c.add_node(i, &all);
    }
    c.wait_for(Duration::from_secs(15), "nodes see each other", |c| {
        all_up(c, &all)
    });
    // 10% of the cluster's datagrams lost, each way, on every port of the bridge.
    nft(
        &c,
        "table bridge loss {\n chain filt { type filter hook forward priority 0; udp dport 7946 numgen random mod 10 0 drop; udp sport 7946 numgen random mod 10 0 drop; }\n}\n",
    );
    let ca = c.path("ec.pem");
    let d1 = c.node(1).data.clone();
    python(&c, PY_SESSIONS, &[&ca, &d1, "200"]);
    let want = entries(&c, 1);
    assert!(want >= 200, "node 1 holds {want}");
    c.wait_for(
        Duration::from_secs(20),
        "nodes 2 and 3 converge under loss",
        |c| entries(c, 2) == want && entries(c, 3) == want,
    );
    let repaired: u64 = all
        .iter()
        .map(|&i| {
            let s = c.store(i);
            n(&s["cluster"]["counters"]["retransmits"]) + n(&s["cluster"]["counters"]["nacks_sent"])
        })
        .sum();
    assert!(repaired > 0, "losses were repaired by retransmits or NACKs");

    // Node 3 cut off; node 1 makes sessions; node 3 misses them; healed, it catches up.
    nft(
        &c,
        &format!(
            "flush ruleset\ntable bridge part {{\n chain filt {{ type filter hook forward priority 0; iifname \"{n}-m3s\" drop; oifname \"{n}-m3s\" drop; }}\n}}\n",
            n = c.name
        ),
    );
    python(&c, PY_SESSIONS, &[&ca, &d1, "100"]);
    let want = entries(&c, 1);
    c.wait_for(Duration::from_secs(10), "node 2 gets them", |c| {
        entries(c, 2) == want
    });
    assert!(entries(&c, 3) < want, "node 3 was cut off");
    nft(&c, "flush ruleset\n");
    c.wait_for(
        Duration::from_secs(20),
        "node 3 converges after the partition",
        |c| entries(c, 3) == want,
    );
}

/// Captures one datagram node 1 sends node 2 (AF_PACKET in node 1's namespace).
const PY_CAPTURE: &str = r#"
import socket, struct, sys
iface, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind((iface, 0))
s.settimeout(10)
while True:
    f = s.recv(65535)
    if len(f) < 42 or f[12:14] != b"\x08\x00" or f[23] != 17:
        continue
    ihl = (f[14] & 15) * 4
    src, dst = socket.inet_ntoa(f[26:30]), socket.inet_ntoa(f[30:34])
    sport, dport = struct.unpack("!HH", f[14 + ihl:18 + ihl])
    if src == "10.80.0.1" and dst == "10.80.0.2" and dport == 7946:
        open(out, "wb").write(f[14 + ihl + 8:])
        break
print("ok")
"#;

/// Sends a file's bytes as one datagram from `src` (ip:port) to `dst`.
const PY_SEND: &str = r#"
import socket, sys
src, dst, path, flip = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
data = bytearray(open(path, "rb").read())
if flip >= 0:
    data[flip % len(data)] ^= 1
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
h, p = src.split(":")
s.bind((h, int(p)))
h, p = dst.split(":")
s.sendto(bytes(data), (h, int(p)))
print("ok")
"#;

fn py_in(ns: &str, script: &str, args: &[&str]) {
    let mut a = vec!["ip", "netns", "exec", ns, "python3", "-c", script];
    a.extend_from_slice(args);
    let o = sh(&a);
    assert!(
        o.status.success(),
        "python in {ns}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn forged_replayed_and_stranger_cluster_messages_are_dropped_and_counted() {
    let mut c = Cluster::up("clf");
    let all = [1, 2];
    for i in all {
        c.add_node(i, &all);
    }
    c.wait_for(Duration::from_secs(15), "nodes see each other", |c| {
        all_up(c, &all)
    });
    let cap = c.path("captured.bin");
    let n1 = c.ns_node(1);
    py_in(&n1, PY_CAPTURE, &[&format!("{}-m1", c.name), &cap]);
    let counter = |c: &Cluster, k: &str| n(&c.store(2)["cluster"]["counters"][k]);
    let (forged, replayed, strangers) = (
        counter(&c, "forged"),
        counter(&c, "replayed"),
        counter(&c, "non_member"),
    );
    // Node 1 gone, its address free: the captured message sent again from it is a
    // replay; with a byte flipped, a forgery.
    c.kill_node(1);
    py_in(
        &n1,
        PY_SEND,
        &["10.80.0.1:7946", "10.80.0.2:7946", &cap, "-1"],
    );
    py_in(
        &n1,
        PY_SEND,
        &["10.80.0.1:7946", "10.80.0.2:7946", &cap, "40"],
    );
    // From an address that is not a member (the switch's own), a stranger.
    py_in(
        &c.ns_switch(),
        PY_SEND,
        &["10.80.0.100:7946", "10.80.0.2:7946", &cap, "-1"],
    );
    c.wait_for(Duration::from_secs(5), "all three counted on node 2", |c| {
        counter(c, "replayed") > replayed
            && counter(c, "forged") > forged
            && counter(c, "non_member") > strangers
    });
    // Node 2 goes on serving.
    let s = c.store(2);
    assert_eq!(s["cluster"]["state"], "ready", "{s}");
}
