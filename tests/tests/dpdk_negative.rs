//! The negative corpus (`tests::negative`) against the appliance on its DPDK port: each
//! case whose answer shows on the wire (a plaintext alert, a ServerHello, a close) is
//! sent on its own TCP connection from the hosts' namespace, and what comes back must
//! be what the RFC requires, as in memory. Meanwhile the appliance keeps serving: a
//! real client fetches a page afterwards. Needs root.

use std::time::Duration;

use tests::negative::{cases, certificate, hex, outcome_of};
use tests::veth::*;

/// Sends each `name hex` line on a fresh connection; prints `name hex-of-answer` when
/// the server closes or has been quiet for 1 s.
const CLIENT: &str = r#"
import socket, sys, time
for line in open(sys.argv[1]):
    name, data = line.split()
    s = socket.create_connection(("10.77.0.1", 443), timeout=10)
    s.sendall(bytes.fromhex(data))
    s.settimeout(1.0)
    got = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except socket.timeout:
        pass
    except ConnectionResetError:
        pass
    s.close()
    print(name, got.hex() or "-", flush=True)
"#;

#[test]
fn the_appliance_answers_the_wire_cases_as_the_rfc_requires() {
    let mut net = Net::up("ng");
    write_site(&net.dir, 1024);
    let (chain, key) = certificate();
    std::fs::write(net.dir.join("neg.pem"), &chain).unwrap();
    std::fs::write(net.dir.join("neg.key"), &key).unwrap();
    net.start_backend("10.77.0.2", 8080);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = *cpus().last().unwrap();
    let vs = tls_vserver(&net.dir, "neg", 443, &["10.77.0.2:8080"], &["neg"], "");
    net.start_appliance(&[cpu], &vs);

    let all = cases();
    let wire: Vec<_> = all.iter().filter(|c| c.wire).collect();
    let list: String = wire
        .iter()
        .map(|c| format!("{} {}\n", c.name, hex(&(c.input)())))
        .collect();
    let file = net.dir.join("cases.txt");
    std::fs::write(&file, list).unwrap();
    let o = net
        .in_hosts(&["python3", "-c", CLIENT, file.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "client script: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut wrong = Vec::new();
    let mut seen = 0;
    for line in out.lines() {
        let (name, data) = line.split_once(' ').unwrap();
        let case = wire.iter().find(|c| c.name == name).unwrap();
        let bytes: Vec<u8> = if data == "-" {
            Vec::new()
        } else {
            (0..data.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&data[i..i + 2], 16).unwrap())
                .collect()
        };
        seen += 1;
        let got = outcome_of(&bytes);
        if got != case.expect {
            wrong.push(format!(
                "{name}: expected {:?}, got {got:?}\n    {}",
                case.expect, case.rfc
            ));
        }
    }
    assert_eq!(seen, wire.len(), "every case answered:\n{out}");
    assert!(
        wrong.is_empty(),
        "{} of {} wire cases wrong:\n{}\n{}",
        wrong.len(),
        wire.len(),
        wrong.join("\n"),
        net.log("appliance.log")
    );

    // Everyone else is still served.
    let page = net.dir.join("page.out");
    let ca = net.dir.join("neg.pem");
    let o = net
        .in_hosts(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            "test.example:443:10.77.0.1",
            "-o",
            page.to_str().unwrap(),
            "https://test.example/index.html",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curl after the corpus: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = net.stats();
    let misbehaved = s["cores"][0]["proxy"]["tls_peer_misbehaved"]
        .as_u64()
        .unwrap();
    assert!(misbehaved >= 20, "the corpus's alerts are counted: {s}");
}
