//! The L4 proxy over the in-memory wire, against an independent smoltcp host playing
//! clients and backends: many concurrent connections with byte-exact payloads both
//! ways, one and two poll-mode cores, and backend failures.

use std::sync::atomic::Ordering;
use std::time::Duration;

use appliance::config::Config;
use appliance::runtime::{self, Running};
use dataplane::memory;
use dataplane::PortQueue;
use tests::{BackendBehaviour, Host, APPLIANCE_MAC, HOST_IPS};

fn config(cores: usize, vservers: &str) -> Config {
    let cores: Vec<String> = (0..cores).map(|i| i.to_string()).collect();
    let text = format!(
        r#"
[dataplane]
driver = "memory"
cores = [{}]
address = "10.77.0.1/24"
pin = false
[tcp]
rx_buffer = 32768
tx_buffer = 32768
handshake_timeout = "3s"
{vservers}
"#,
        cores.join(", ")
    );
    Config::parse(&text, "test.toml").unwrap()
}

const WEB: &str = r#"
[[vserver]]
name = "web"
listen = "10.77.0.1:80"
mode = "tcp"
backends = ["10.77.0.2:8080", "10.77.0.3:8080"]
"#;

fn start(cfg: &Config) -> (Running, Host) {
    let (port, peer) = memory::wire(cfg.dataplane.cores.len(), APPLIANCE_MAC, 1500);
    let info = port.info().clone();
    let queues: Vec<Box<dyn PortQueue>> = port
        .into_queues()
        .into_iter()
        .map(|q| Box::new(q) as Box<dyn PortQueue>)
        .collect();
    let running = runtime::start(
        cfg,
        std::path::Path::new("(memory test)"),
        info,
        queues,
        None,
    )
    .unwrap();
    (running, Host::new(peer, 65536))
}

fn proxy_total(r: &Running, key: &str) -> u64 {
    r.snapshot()
        .cores
        .iter()
        .map(|c| c.proxy[key].as_u64().unwrap())
        .sum()
}

fn run_many(cores: usize) -> Running {
    let cfg = config(cores, WEB);
    let (running, mut host) = start(&cfg);
    for ip in HOST_IPS {
        // Enough listeners for every client at once: the test host has no backlog.
        host.backend(ip, 8080, 320, BackendBehaviour::Serve);
    }
    // 300 concurrent connections, payloads of varied sizes both ways, plus two large
    // transfers (4 MiB down, 2 MiB up) among them.
    for i in 0..300u64 {
        host.client(
            80,
            (i as usize * 97) % 20_000,
            (i as usize * 331) % 70_000,
            i,
        );
    }
    host.client(80, 0, 4 << 20, 1000);
    host.client(80, 2 << 20, 10, 1001);
    assert!(
        host.run_until_done(Duration::from_secs(120)),
        "all clients finish"
    );
    let bad: Vec<_> = host
        .clients
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.verified())
        .map(|(i, c)| (i, c.reset, c.got.len()))
        .collect();
    assert!(
        bad.is_empty(),
        "clients with wrong bytes or resets: {bad:?}"
    );
    assert_eq!(proxy_total(&running, "accepted"), 302);
    assert_eq!(proxy_total(&running, "backend_failed"), 0);
    running
}

#[test]
fn hundreds_of_concurrent_connections_byte_exact_one_core() {
    let r = run_many(1);
    r.stop();
    r.join().unwrap();
}

#[test]
fn two_cores_steer_client_and_backend_sides_to_the_owner() {
    let r = run_many(2);
    let snap = r.snapshot();
    for c in &snap.cores {
        // Each core accepted a share, and the wire's hash put frames on the wrong core
        // often enough that both cores steered frames to the other.
        assert!(
            c.proxy["accepted"].as_u64().unwrap() > 50,
            "core {} accepted {}",
            c.index,
            c.proxy["accepted"]
        );
        assert!(
            c.steering["sent"].as_u64().unwrap() > 0,
            "core {} steered nothing",
            c.index
        );
        assert_eq!(c.steering["dropped"].as_u64().unwrap(), 0);
    }
    r.stop();
    r.join().unwrap();
}

#[test]
fn refused_backend_resets_its_client_and_others_keep_flowing() {
    let vs = format!("{WEB}\n[[vserver]]\nname = \"dead\"\nlisten = \"10.77.0.1:81\"\nmode = \"tcp\"\nbackends = [\"10.77.0.2:9999\"]\n");
    let cfg = config(1, &vs);
    let (running, mut host) = start(&cfg);
    for ip in HOST_IPS {
        host.backend(ip, 8080, 8, BackendBehaviour::Serve);
    }
    let dead = host.client(81, 10, 10, 7);
    let good: Vec<_> = (0..5)
        .map(|i| host.client(80, 5000, 200_000, 100 + i))
        .collect();
    assert!(host.run_until_done(Duration::from_secs(60)));
    assert!(
        host.clients[dead].reset,
        "client of a refusing backend gets a RST"
    );
    assert!(host.clients[dead].got.is_empty());
    for i in good {
        assert!(host.clients[i].verified(), "client {i}");
    }
    assert_eq!(proxy_total(&running, "backend_failed"), 1);
    running.stop();
    running.join().unwrap();
}

#[test]
fn backend_dying_mid_transfer_resets_only_its_client() {
    let vs = format!("{WEB}\n[[vserver]]\nname = \"flaky\"\nlisten = \"10.77.0.1:82\"\nmode = \"tcp\"\nbackends = [\"10.77.0.3:7000\"]\n");
    let cfg = config(1, &vs);
    let (running, mut host) = start(&cfg);
    for ip in HOST_IPS {
        host.backend(ip, 8080, 8, BackendBehaviour::Serve);
    }
    host.backend(HOST_IPS[1], 7000, 2, BackendBehaviour::DieAfter(100_000));
    let flaky = host.client(82, 100, 1_000_000, 5);
    let good: Vec<_> = (0..5)
        .map(|i| host.client(80, 1000, 300_000, 200 + i))
        .collect();
    let finished = host.run_until_done(Duration::from_secs(60));
    let states: Vec<_> = host
        .clients
        .iter()
        .map(|c| (c.done, c.reset, c.got.len()))
        .collect();
    assert!(
        finished,
        "{states:?} {}",
        serde_json::to_string(&running.snapshot()).unwrap()
    );
    let f = &host.clients[flaky];
    assert!(f.reset, "client sees a RST, not a clean end");
    assert!(f.got.len() <= 100_000, "got {} bytes", f.got.len());
    for i in good {
        assert!(host.clients[i].verified(), "client {i}");
    }
    assert_eq!(proxy_total(&running, "backend_reset"), 1);
    running.stop();
    running.join().unwrap();
}

#[test]
fn malformed_frames_are_dropped_and_counted_while_traffic_flows() {
    let cfg = config(1, WEB);
    let (running, mut host) = start(&cfg);
    for ip in HOST_IPS {
        host.backend(ip, 8080, 8, BackendBehaviour::Serve);
    }
    let c = host.client(80, 1000, 100_000, 9);
    let mac = |m: [u8; 6]| m.to_vec();
    let eth = |ty: [u8; 2], body: &[u8]| {
        let mut f = mac(APPLIANCE_MAC);
        f.extend(mac(tests::HOST_MAC));
        f.extend(ty);
        f.extend(body);
        f
    };
    let mut ip = vec![
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 77, 0, 2, 10, 77, 0, 1,
    ];
    ip.extend([0u8; 20]);
    let garbage = vec![
        vec![1, 2, 3],                    // runt
        eth([0x08, 0x00], &[0x45, 0, 0]), // truncated IPv4
        eth([0x08, 0x00], &{
            let mut x = ip.clone();
            x[2] = 0xff;
            x
        }), // total length past the end
        eth([0x08, 0x00], &{
            let mut x = ip.clone();
            x[0] = 0x4f;
            x
        }), // header length past the end
        eth([0x08, 0x00], &{
            let mut x = ip.clone();
            x[32] = 0x10;
            x
        }), // TCP data offset < 5
        eth([0x86, 0xdd], &[0u8; 60]),    // IPv6: unsupported
    ];
    for g in &garbage {
        host.inject(g.clone());
    }
    assert!(host.run_until_done(Duration::from_secs(30)));
    assert!(host.clients[c].verified());
    let snap = running.snapshot();
    let st = &snap.cores[0].stack;
    assert_eq!(st["malformed"].as_u64().unwrap(), 5, "{st:?}");
    assert_eq!(st["unsupported"].as_u64().unwrap(), 1, "{st:?}");
    running.stop();
    running.join().unwrap();
    let _ = Ordering::Relaxed;
}
