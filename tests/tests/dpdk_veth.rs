//! The real thing: the `appliance` daemon on a DPDK `net_af_packet` port over a veth,
//! in network namespaces this test creates, with curl and a Python HTTP backend in the
//! hosts' namespace. Needs root (namespaces) and the workspace's binaries built
//! (`cargo build --workspace`, which `tools/test.sh` does first).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::veth::*;

#[test]
fn curl_through_the_dpdk_port_byte_exact() {
    let mut net = Net::up("tv");
    write_site(&net.dir, 32 << 20);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    net.start_backend("10.77.0.2", 9090);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = *cpus().last().unwrap();
    net.start_appliance(&[cpu], "[[vserver]]\nname = \"dead\"\nlisten = \"10.77.0.1:81\"\nmode = \"tcp\"\nbackends = [\"10.77.0.2:9999\"]\n");

    // ICMP echo is answered by the appliance's own stack.
    let ping = net
        .in_hosts(&["ping", "-c", "2", "-W", "2", "10.77.0.1"])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    let small = net.dir.join("small.out");
    for _ in 0..4 {
        let o = net.curl("http://10.77.0.1/index.html", &small);
        assert!(
            o.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&small).unwrap(),
            "hello through the appliance\n"
        );
    }
    let big = net.dir.join("big.out");
    let o = net.curl("http://10.77.0.1/big.bin", &big);
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        sha_file(&big),
        sha_file(&net.dir.join("www/big.bin")),
        "32 MiB download is byte-exact"
    );

    // A vserver whose backend refuses: curl sees a reset, and the appliance carries on.
    let o = net.curl("http://10.77.0.1:81/", &small);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // The RST can reach curl while it is still confirming the connect (the backend
    // refuses within a millisecond), so curl reports it either way.
    assert!(
        err.contains("reset") || err.contains("Couldn't connect") || err.contains("Empty reply"),
        "curl said: {err}"
    );
    let o = net.curl("http://10.77.0.1/index.html", &small);
    assert!(o.status.success());

    // An L4 pair that moves no byte for a second gives its sockets' pages back (both
    // buffers of both sockets: `trimmed` counts each socket), and its request, when it
    // comes, is served byte-exact all the same.
    let counter = |net: &Net, name: &str| net.stats()["cores"][0]["stack"][name].as_u64().unwrap();
    let (before, before_rx) = (counter(&net, "trimmed"), counter(&net, "trimmed_rx"));
    let py = r#"
import hashlib, socket, time
s = socket.create_connection(("10.77.0.1", 80), timeout=10)
time.sleep(1.6)
s.sendall(b"GET /big.bin HTTP/1.0\r\nHost: appliance.test\r\n\r\n")
parts = []
while True:
    b = s.recv(65536)
    if not b:
        break
    parts.append(b)
print(hashlib.sha256(b"".join(parts).split(b"\r\n\r\n", 1)[1]).hexdigest())
"#;
    let o = net.in_hosts(&["python3", "-c", py]).output().unwrap();
    let want: String = sha_file(&net.dir.join("www/big.bin"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        want,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        counter(&net, "trimmed") >= before + 2,
        "the idle pair gave both sockets' pages back"
    );
    assert!(counter(&net, "trimmed_rx") >= before_rx + 2);

    let s = net.stats();
    let core = &s["cores"][0];
    assert_eq!(core["proxy"]["accepted"], 8, "{s}");
    assert_eq!(core["proxy"]["backend_failed"], 1, "{s}");
    assert_eq!(s["port"]["driver"], "net_af_packet");
}

#[test]
fn two_cores_share_one_port_with_steering() {
    let all = cpus();
    if all.len() < 2 {
        panic!("this test needs two CPUs; this machine allows {all:?}");
    }
    let mut net = Net::up("tw");
    write_site(&net.dir, 4 << 20);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    std::thread::sleep(Duration::from_millis(500));
    net.start_appliance(&all[..2], "");
    // 24 downloads, 8 at a time, each from a new client port.
    let want = sha_file(&net.dir.join("www/big.bin"));
    for round in 0..3 {
        let kids: Vec<_> = (0..8)
            .map(|i| {
                let out = net.dir.join(format!("d{round}-{i}.out"));
                let c = net
                    .in_hosts(&[
                        "curl",
                        "-sS",
                        "--max-time",
                        "60",
                        "-o",
                        out.to_str().unwrap(),
                        "http://10.77.0.1/big.bin",
                    ])
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (c, out)
            })
            .collect();
        for (c, out) in kids {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(sha_file(&out), want);
        }
    }
    let s = net.stats();
    let accepted: Vec<u64> = (0..2)
        .map(|i| s["cores"][i]["proxy"]["accepted"].as_u64().unwrap())
        .collect();
    assert_eq!(accepted.iter().sum::<u64>(), 24, "{s}");
    assert!(
        accepted.iter().all(|&a| a > 0),
        "both cores own connections: {accepted:?}"
    );
    let steered: u64 = (0..2)
        .map(|i| s["cores"][i]["steering"]["sent"].as_u64().unwrap())
        .sum();
    assert!(
        steered > 0,
        "frames reached the wrong core and were steered: {s}"
    );
}

/// Runs the daemon with `cfg` and returns (exit code, stderr).
fn run_appliance(dir: &Path, cfg: &str, netns: Option<&str>) -> (Option<i32>, String) {
    let path = dir.join(format!("bad-{}.toml", cfg.len()));
    std::fs::write(&path, cfg).unwrap();
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(binary("appliance"));
            c
        }
        None => Command::new(binary("appliance")),
    };
    let out = c
        .arg("--config")
        .arg(&path)
        .env("APPLIANCE_LOCK_DIR", dir.join("locks"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn start_up_errors_name_what_to_fix() {
    let mut net = Net::up("te");
    write_site(&net.dir, 1024);
    let cpu = *cpus().last().unwrap();
    let dir = net.dir.clone();
    let cfg = |eal: &str, cores: &str| {
        format!(
            "[dataplane]\ndriver = \"dpdk\"\neal_args = [{eal}]\ncores = [{cores}]\naddress = \"10.77.0.1/24\"\n\
             [control]\nsocket = \"{}/ctl-bad.sock\"\n\
             [[vserver]]\nname = \"web\"\nlisten = \"10.77.0.1:80\"\nmode = \"tcp\"\nbackends = [\"10.77.0.2:8080\"]\n",
            dir.display()
        )
    };
    let ns = format!("{}-a", net.name);
    let good_vdev = format!(
        "\"--no-huge\", \"--no-pci\", \"--vdev=net_af_packet0,iface={}-a0\"",
        net.name
    );

    // A configuration mistake: exit code 2, file and field named.
    let (code, err) = run_appliance(&net.dir, &cfg(&good_vdev, "1, 1"), Some(&ns));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("dataplane.cores[1]") && err.contains("listed twice"),
        "{err}"
    );

    // No port: the EAL starts but finds no device.
    let (code, err) = run_appliance(
        &net.dir,
        &cfg("\"--no-huge\", \"--no-pci\"", &cpu.to_string()),
        Some(&ns),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("found no Ethernet port"), "{err}");

    // A vdev on an interface that does not exist.
    let (code, err) = run_appliance(
        &net.dir,
        &cfg(
            "\"--no-huge\", \"--no-pci\", \"--vdev=net_af_packet0,iface=nosuchif0\"",
            &cpu.to_string(),
        ),
        Some(&ns),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("EAL") || err.contains("no Ethernet port"),
        "{err}"
    );

    // A wrong EAL argument.
    let (code, err) = run_appliance(
        &net.dir,
        &cfg("\"--no-huge\", \"--bogus-flag\"", &cpu.to_string()),
        Some(&ns),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("EAL initialisation failed") && err.contains("--bogus-flag"),
        "{err}"
    );

    // A CPU that does not exist.
    let (code, err) = run_appliance(&net.dir, &cfg(&good_vdev, "4000"), Some(&ns));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("CPU 4000") && err.contains("not available"),
        "{err}"
    );

    // A crypto device this machine lacks: named with its field, before anything runs.
    let with_fips = cfg(&good_vdev, &cpu.to_string())
        .replace("[control]", "[crypto]\nproviders = [\"fips\"]\n[control]");
    let (code, err) = run_appliance(&net.dir, &with_fips, Some(&ns));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("crypto.providers[0]: OpenSSL provider \"fips\" failed to start"),
        "{err}"
    );
    // The same for an accelerator's device: its provider is named, with the device.
    let with_device = cfg(&good_vdev, &cpu.to_string()).replace(
        "[control]",
        "[[crypto.device]]\nname = \"qat0\"\nproviders = [\"qatprovider\"]\n[control]",
    );
    let (code, err) = run_appliance(&net.dir, &with_device, Some(&ns));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("crypto.device[0] \"qat0\": OpenSSL provider \"qatprovider\" failed to start"),
        "{err}"
    );

    // A busy core: a running appliance holds it; a second one is refused.
    net.start_backend("10.77.0.2", 8080);
    net.start_appliance(&[cpu], "");
    let (code, err) = run_appliance(&net.dir, &cfg(&good_vdev, &cpu.to_string()), Some(&ns));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("CPU {cpu} is busy")), "{err}");
    // And the first one still serves.
    let out = net.dir.join("still.out");
    assert!(net
        .curl("http://10.77.0.1/index.html", &out)
        .status
        .success());
}
