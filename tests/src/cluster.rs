//! A cluster of appliances on one box, for the session-store tests: every node in a
//! network namespace of its own with a DPDK (`net_af_packet`) data port on a shared
//! client bridge and a kernel management port on a cluster bridge; the clients and the
//! backend in a hosts namespace on the client bridge; Redis on the cluster bridge. The
//! bridges live in a switch namespace. Everything is removed on drop, processes first
//! (by PID). Needs root.
//!
//! ```text
//!   NAME-h  10.77.0.2 (clients, backend :8080) ─┐
//!   NAME-n1 data 10.77.0.11 (DPDK)  ────────────┤ br-data (NAME-s)
//!   NAME-n2 data 10.77.0.12 (DPDK)  ────────────┤
//!   ...                                         
//!   NAME-n1 mgmt 10.80.0.1 ──┐
//!   NAME-n2 mgmt 10.80.0.2 ──┤ br-mgmt (NAME-s, 10.80.0.100: Redis)
//!   ...                      
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::veth::{binary, repo, require_root, self_signed, sh};

/// Where Redis listens (on the cluster bridge, in the switch namespace).
pub const REDIS: &str = "10.80.0.100:6379";

/// One node's processes and addresses.
pub struct Node {
    pub index: usize,
    pub name: String,
    /// Its data-plane (TLS) address on the client bridge.
    pub data: String,
    /// Its cluster address (management network).
    pub mgmt: String,
    pub config: PathBuf,
    process: Option<Child>,
}

pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    /// Other processes: the backend, Redis.
    others: Vec<(String, Child)>,
    /// Extra TOML for every node's `[session_store]`.
    pub store_extra: String,
    /// Whether the nodes use Redis.
    pub redis: bool,
    /// The cluster's multicast group (`ip:port`) for nodes added from now on.
    pub multicast: Option<String>,
}

fn run(args: &[&str]) {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ns(name: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec!["ip".to_string(), "netns".into(), "exec".into(), name.into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn run_in(ns_name: &str, args: &[&str]) {
    let v = ns(ns_name, args);
    let r: Vec<&str> = v.iter().map(String::as_str).collect();
    run(&r);
}

impl Cluster {
    /// The switch, the hosts namespace (clients, a backend serving `dir/www`), the
    /// cluster key and certificates; no node yet ([`Cluster::add_node`]).
    pub fn up(tag: &str) -> Cluster {
        require_root();
        let name = format!("{tag}{}", std::process::id() % 1000);
        assert!(name.len() <= 8, "interface names are at most 15 characters");
        let dir = std::env::temp_dir().join(format!("tlsa-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/index.html"), b"hello from the backend\n").unwrap();
        let c = Cluster {
            name,
            dir,
            nodes: Vec::new(),
            others: Vec::new(),
            store_extra: String::new(),
            redis: false,
            multicast: None,
        };
        c.teardown_net();
        let s = c.ns_switch();
        run(&["ip", "netns", "add", &s]);
        run_in(&s, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        run_in(&s, &["ip", "link", "set", "lo", "up"]);
        for br in ["br-data", "br-mgmt"] {
            run_in(&s, &["ip", "link", "add", br, "type", "bridge"]);
            run_in(&s, &["ip", "link", "set", br, "up"]);
        }
        run_in(
            &s,
            &["ip", "addr", "add", "10.80.0.100/24", "dev", "br-mgmt"],
        );
        let h = c.ns_hosts();
        run(&["ip", "netns", "add", &h]);
        run_in(&h, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        run_in(&h, &["ip", "link", "set", "lo", "up"]);
        c.cable(
            &h,
            &format!("{}-h0", c.name),
            "br-data",
            Some("10.77.0.2/24"),
        );
        // Certificates for the TLS vserver, and the cluster key (owner-only).
        self_signed(&c.dir, "ec", "ec", "appliance.test", "DNS:appliance.test");
        let key: Vec<u8> = (0..48u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        let kp = c.dir.join("cluster.key");
        std::fs::write(&kp, key).unwrap();
        std::fs::set_permissions(&kp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        c
    }

    pub fn ns_switch(&self) -> String {
        format!("{}-s", self.name)
    }

    pub fn ns_hosts(&self) -> String {
        format!("{}-h", self.name)
    }

    pub fn ns_node(&self, i: usize) -> String {
        format!("{}-n{i}", self.name)
    }

    /// A veth from namespace `ns_name` (end `ifname`) to bridge `br` in the switch,
    /// offloads off on both ends; with an address on the namespace's end.
    fn cable(&self, ns_name: &str, ifname: &str, br: &str, addr: Option<&str>) {
        let s = self.ns_switch();
        let peer = format!("{ifname}s");
        run(&[
            "ip", "link", "add", ifname, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["ip", "link", "set", ifname, "netns", ns_name]);
        run(&["ip", "link", "set", &peer, "netns", &s]);
        run_in(&s, &["ip", "link", "set", &peer, "master", br]);
        run_in(&s, &["ip", "link", "set", &peer, "up"]);
        if let Some(a) = addr {
            run_in(ns_name, &["ip", "addr", "add", a, "dev", ifname]);
        }
        run_in(ns_name, &["ip", "link", "set", ifname, "up"]);
        for (n, i) in [(ns_name, ifname), (s.as_str(), peer.as_str())] {
            let v = ns(
                n,
                &[
                    "ethtool", "-K", i, "tx", "off", "rx", "off", "tso", "off", "gso", "off",
                    "gro", "off",
                ],
            );
            let r: Vec<&str> = v.iter().map(String::as_str).collect();
            let _ = sh(&r);
        }
    }

    /// A process in namespace `ns_name`, output in `log`.
    pub fn spawn_in(&mut self, ns_name: &str, args: &[&str], log: &str) {
        let f = std::fs::File::create(self.dir.join(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns_name])
            .args(args)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .env("PYTHONUNBUFFERED", "1")
            .spawn()
            .unwrap();
        self.others.push((log.to_string(), child));
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Waits until `log` contains `what` (a process reports it is ready).
    fn wait_log(&self, log: &str, what: &str) {
        let t0 = Instant::now();
        while !self.log(log).contains(what) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{log} never said {what:?}:\n{}",
                self.log(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The backend (Python's HTTP server on 10.77.0.2:8080, serving `dir/www`).
    pub fn start_backend(&mut self) {
        let h = self.ns_hosts();
        let www = self.dir.join("www").display().to_string();
        self.spawn_in(
            &h,
            &[
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                "10.77.0.2",
                "--directory",
                &www,
            ],
            "backend.log",
        );
        self.wait_log("backend.log", "Serving HTTP");
    }

    /// Debian's redis-server on the cluster bridge (no persistence).
    pub fn start_redis(&mut self) {
        let s = self.ns_switch();
        self.spawn_in(
            &s,
            &[
                "redis-server",
                "--bind",
                "10.80.0.100",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            "redis.log",
        );
        self.wait_log("redis.log", "Ready to accept connections");
        self.redis = true;
    }

    /// Sends `signal` (e.g. "STOP", "CONT", "KILL") to the process logging to `log`.
    pub fn signal_other(&self, log: &str, signal: &str) {
        let (_, c) = self
            .others
            .iter()
            .find(|(l, _)| l == log)
            .expect("no such process");
        run(&["kill", &format!("-{signal}"), &c.id().to_string()]);
    }

    /// `redis-cli` in the switch namespace.
    pub fn redis_cli(&self, args: &[&str]) -> Vec<u8> {
        let mut a = vec!["redis-cli", "-h", "10.80.0.100", "-p", "6379"];
        a.extend_from_slice(args);
        let v = ns(&self.ns_switch(), &a);
        let r: Vec<&str> = v.iter().map(String::as_str).collect();
        sh(&r).stdout
    }

    /// Node `i` (1-based): its namespace and cables, then the appliance with `[cluster]`
    /// naming every node in `peers` (1-based indexes) other than itself. Returns once
    /// its control socket answers.
    pub fn add_node(&mut self, i: usize, peers: &[usize]) -> usize {
        let n = self.ns_node(i);
        run(&["ip", "netns", "add", &n]);
        run_in(&n, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        run_in(&n, &["ip", "link", "set", "lo", "up"]);
        let data_if = format!("{}-d{i}", self.name);
        let mgmt_if = format!("{}-m{i}", self.name);
        self.cable(&n, &data_if, "br-data", None);
        let mgmt = format!("10.80.0.{i}");
        self.cable(&n, &mgmt_if, "br-mgmt", Some(&format!("{mgmt}/24")));
        let data = format!("10.77.0.{}", 10 + i);
        let peers: Vec<String> = peers
            .iter()
            .filter(|&&p| p != i)
            .map(|p| format!("\"10.80.0.{p}:7946\""))
            .collect();
        let d = self.dir.display();
        let redis = if self.redis {
            format!("redis = [\"{REDIS}\"]\n")
        } else {
            String::new()
        };
        let cpu = i % 2;
        let multicast = self
            .multicast
            .as_ref()
            .map(|g| format!("multicast = \"{g}\"\n"))
            .unwrap_or_default();
        let cfg = format!(
            r#"
[dataplane]
driver = "dpdk"
eal_args = ["--no-huge", "--no-pci", "-m", "256", "--vdev=net_af_packet0,iface={data_if},qpairs=1"]
cores = [{cpu}]
pin = false
address = "{data}/24"
[control]
socket = "{d}/ctl-{i}.sock"
[log]
access = "{d}/access-{i}.log"
format = "json"
[cluster]
node = "n{i}"
listen = "{mgmt}:7946"
peers = [{peers}]
{multicast}key_file = "{d}/cluster.key"
[session_store]
{redis}{extra}
[[vserver]]
name = "secure"
listen = "{data}:443"
mode = "tls"
backends = ["10.77.0.2:8080"]
[vserver.tls]
certificates = [{{ chain = "{d}/ec.pem", key = "{d}/ec.key" }}]
"#,
            peers = peers.join(", "),
            extra = self.store_extra,
        );
        let config = self.dir.join(format!("node-{i}.toml"));
        std::fs::write(&config, cfg).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("node-{i}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &n])
            .arg(binary("appliance"))
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.nodes.push(Node {
            index: i,
            name: format!("n{i}"),
            data,
            mgmt,
            config,
            process: Some(child),
        });
        let sock = self.sock(i);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if appliance::control::request(&sock, "ping").is_ok() {
                return self.nodes.len() - 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "node {i} did not come up:\n{}",
            self.log(&format!("node-{i}.log"))
        );
    }

    pub fn sock(&self, i: usize) -> PathBuf {
        self.dir.join(format!("ctl-{i}.sock"))
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.index == i)
            .expect("no such node")
    }

    /// The node's `session-store` reply.
    pub fn store(&self, i: usize) -> serde_json::Value {
        appliance::control::request(&self.sock(i), "session-store").unwrap()
    }

    /// SIGKILL node `i` (no drain, no goodbye).
    pub fn kill_node(&mut self, i: usize) {
        let n = self.nodes.iter_mut().find(|n| n.index == i).unwrap();
        if let Some(mut c) = n.process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `within` for `cond`.
    pub fn wait_for(&self, within: Duration, what: &str, mut cond: impl FnMut(&Cluster) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() < within, "not within {within:?}: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `openssl s_client` in the hosts namespace against node `i`; `args` are
    /// extra flags (`-sess_out F`, `-sess_in F`, `-tls1_2`, `-no_ticket`). Returns its
    /// output (stdin is closed, so it quits after the handshake).
    pub fn s_client(&self, i: usize, args: &[&str]) -> String {
        let node = self.node(i);
        let connect = format!("{}:443", node.data);
        let ca = self.dir.join("ec.pem").display().to_string();
        let mut a = vec![
            "openssl",
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "appliance.test",
            "-CAfile",
            &ca,
            "-verify_return_error",
        ];
        a.extend_from_slice(args);
        let v = ns(&self.ns_hosts(), &a);
        let o = Command::new(&v[0])
            .args(&v[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// A file in the cluster's directory.
    pub fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    fn teardown_net(&self) {
        for i in 1..=9 {
            let _ = sh(&["ip", "netns", "del", &self.ns_node(i)]);
        }
        let _ = sh(&["ip", "netns", "del", &self.ns_hosts()]);
        let _ = sh(&["ip", "netns", "del", &self.ns_switch()]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.process.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for (_, c) in &mut self.others {
            // A stopped process must continue to die.
            let _ = sh(&["kill", "-CONT", &c.id().to_string()]);
            let _ = c.kill();
            let _ = c.wait();
        }
        self.teardown_net();
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The repository's root, for scripts run from tests.
pub fn tools() -> PathBuf {
    repo().join("tools")
}

/// Whether `haystack` holds `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The master key of a TLS 1.2 session file written by `s_client -sess_out`.
pub fn master_key(sess_pem: &Path) -> Vec<u8> {
    let o = sh(&[
        "openssl",
        "sess_id",
        "-in",
        sess_pem.to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    let hex = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Master-Key: "))
        .unwrap_or_else(|| panic!("no Master-Key in {text}"));
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}
