//! The TLS vserver over the in-memory wire, against the independent smoltcp host:
//! behaviour that needs no real TLS client (timers, hostile byte streams).

use std::time::Duration;

use appliance::config::Config;
use appliance::runtime::{self, Running};
use dataplane::memory;
use dataplane::PortQueue;
use tests::veth::self_signed;
use tests::{BackendBehaviour, Host, APPLIANCE_MAC, HOST_IPS};

fn start(text: &str) -> (Running, Host) {
    let cfg = Config::parse(text, "test.toml").unwrap();
    let (port, peer) = memory::wire(cfg.dataplane.cores.len(), APPLIANCE_MAC, 1500);
    let info = port.info().clone();
    let queues: Vec<Box<dyn PortQueue>> = port
        .into_queues()
        .into_iter()
        .map(|q| Box::new(q) as Box<dyn PortQueue>)
        .collect();
    let running = runtime::start(
        &cfg,
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

/// RFC 8446 leaves the handshake's duration to the server; ours is
/// `[vserver.tls] handshake_timeout`. A client that sends part of a ClientHello and
/// then nothing must be cut when that time is up, even when nothing else happens on
/// the core: no other connection, and no TCP timer due before it (the keep-alive of
/// a 120 s idle timeout is 30 s away).
#[test]
fn a_client_stalled_mid_handshake_is_cut_at_handshake_timeout_with_no_other_traffic() {
    let dir = std::env::temp_dir().join(format!("tlsa-memtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    self_signed(&dir, "ec", "ec", "appliance.test", "DNS:appliance.test");
    let d = dir.display();
    let text = format!(
        r#"
[dataplane]
driver = "memory"
cores = [0]
address = "10.77.0.1/24"
pin = false
[tcp]
idle_timeout = "120s"
[[vserver]]
name = "tls"
listen = "10.77.0.1:443"
mode = "tls"
backends = ["10.77.0.2:8080"]
[vserver.tls]
certificates = [{{ chain = "{d}/ec.pem", key = "{d}/ec.key" }}]
handshake_timeout = "2500ms"
"#
    );
    let (running, mut host) = start(&text);
    host.backend(HOST_IPS[0], 8080, 4, BackendBehaviour::Serve);
    // A handshake record header announcing 200 bytes, and the first 2 of them.
    let stalled = host.raw_client(443, vec![0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00]);
    // Still open well before the deadline (2.5 s: not a multiple of a second, where
    // other TCP timers of this connection happen to fall)...
    assert!(!host.run_until_done(Duration::from_secs(2)));
    // ...and cut after it, long before any TCP timer would have served it.
    assert!(
        host.run_until_done(Duration::from_secs(10)),
        "the stalled client was not cut within 12 s of a 2.5 s handshake_timeout"
    );
    let c = &host.clients[stalled];
    // The engine gives up without an alert (there is no peer error to name) and
    // closes: a FIN, not a reset, and nothing else.
    assert!(c.fin_seen && !c.reset, "closed with a FIN, not reset");
    assert!(c.got.is_empty(), "got {:?}", c.got);
    assert_eq!(proxy_total(&running, "tls_local_error"), 1);
    running.stop();
    running.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
