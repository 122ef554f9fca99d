//! The DPDK-on-a-veth test rig: network namespaces made by `tools/netns.sh`, the
//! `appliance` daemon on the appliance side, clients and backends on the hosts' side,
//! and everything stopped and removed on drop. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub struct Net {
    pub name: String,
    pub dir: PathBuf,
    children: Vec<Option<Child>>,
    /// Lines added to the appliance's `[control]` table.
    pub control_extra: String,
    /// Further lines of the `[dataplane]` table.
    pub dataplane_extra: String,
    /// Further arguments of the af_packet vdev (`,name=value...`).
    pub vdev_extra: String,
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` first (tools/test.sh does)",
        p.display()
    );
    p
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc_geteuid() };
    assert_eq!(
        uid, 0,
        "this test creates network namespaces and needs root (CI runs as root)"
    );
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]))
}

impl Net {
    pub fn up(tag: &str) -> Net {
        Self::up_with(tag, None)
    }

    /// A test network whose veth ends have `mtu` (jumbo frames), with the appliance set
    /// up for it: `mtu` in `[dataplane]` and an af_packet ring frame that holds a frame.
    pub fn up_mtu(tag: &str, mtu: u16) -> Net {
        let mut net = Self::up_with(tag, Some(mtu));
        net.dataplane_extra = format!("mtu = {mtu}\n");
        net.vdev_extra = ",framesz=10240,blocksz=40960".into();
        net
    }

    fn up_with(tag: &str, mtu: Option<u16>) -> Net {
        require_root();
        let name = format!("{tag}{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("tlsa-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Command::new(repo().join("tools/netns.sh"));
        c.args(["up", &name]);
        if let Some(m) = mtu {
            c.env("NETNS_MTU", m.to_string());
        }
        let out = c.output().expect("tools/netns.sh runs");
        assert!(
            out.status.success(),
            "netns.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Net {
            name,
            dir,
            children: Vec::new(),
            control_extra: String::new(),
            dataplane_extra: String::new(),
            vdev_extra: String::new(),
        }
    }

    pub fn in_hosts(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-h", self.name)])
            .args(args);
        c
    }

    /// Starts `c` with its output in `log`; returns its handle for [`Net::stop`].
    pub fn spawn(&mut self, mut c: Command, log: &str) -> usize {
        let f = std::fs::File::create(self.dir.join(log)).unwrap();
        let child = c
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(Some(child));
        self.children.len() - 1
    }

    /// Sends `signal` (e.g. "TERM") to a process [`Net::spawn`] started.
    pub fn signal(&self, handle: usize, signal: &str) {
        let c = self.children[handle]
            .as_ref()
            .expect("process already stopped");
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{signal}");
    }

    /// Waits at most `limit` for a process [`Net::spawn`] started to exit.
    pub fn wait_exit(
        &mut self,
        handle: usize,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            let c = self.children[handle].as_mut()?;
            if let Ok(Some(st)) = c.try_wait() {
                self.children[handle] = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Kills a process [`Net::spawn`] started (SIGKILL: a crash, not a clean stop).
    pub fn stop(&mut self, handle: usize) {
        if let Some(mut c) = self.children.get_mut(handle).and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A Python HTTP server on `ip:port` in the hosts' namespace, serving `www/`.
    pub fn start_backend(&mut self, ip: &str, port: u16) -> usize {
        self.start_backend_at(ip, port, &self.dir.join("www"))
    }

    /// [`Net::start_backend`] serving the directory `root`.
    pub fn start_backend_at(&mut self, ip: &str, port: u16, root: &Path) -> usize {
        let c = {
            let mut c = self.in_hosts(&[
                "python3",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                ip,
            ]);
            c.arg("--directory").arg(root);
            // Unbuffered, so "Serving HTTP" (printed once it listens) reaches the log.
            c.env("PYTHONUNBUFFERED", "1");
            c
        };
        let log = format!("backend-{ip}-{port}.log");
        let h = self.spawn(c, &log);
        // A slow start (a busy machine) must not look like a refusing backend to the
        // first clients: wait until it listens.
        let t0 = std::time::Instant::now();
        while !self.log(&log).contains("Serving HTTP") {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "backend {ip}:{port} did not start listening:\n{}",
                self.log(&log)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        h
    }

    /// Starts the appliance with vserver "web" and `extra_vservers` (any further
    /// TOML after it); returns its handle.
    pub fn start_appliance(&mut self, cores: &[usize], extra_vservers: &str) -> usize {
        self.start_appliance_env(cores, extra_vservers, &[])
    }

    /// [`Net::start_appliance`] with these environment variables set for the daemon.
    pub fn start_appliance_env(
        &mut self,
        cores: &[usize],
        extra_vservers: &str,
        env: &[(&str, &str)],
    ) -> usize {
        let cores_s: Vec<String> = cores.iter().map(|c| c.to_string()).collect();
        let cfg = format!(
            r#"
[dataplane]
driver = "dpdk"
eal_args = ["--no-huge", "--no-pci", "-m", "256", "--vdev=net_af_packet0,iface={}-a0,qpairs={}{}"]
cores = [{}]
address = "10.77.0.1/24"
{}
[control]
socket = "{}/ctl.sock"
{}
[[vserver]]
name = "web"
listen = "10.77.0.1:80"
mode = "tcp"
backends = ["10.77.0.2:8080", "10.77.0.3:8080"]
{extra_vservers}
"#,
            self.name,
            cores.len(),
            self.vdev_extra,
            cores_s.join(", "),
            self.dataplane_extra,
            self.dir.display(),
            self.control_extra
        );
        let path = self.dir.join("appliance.toml");
        std::fs::write(&path, cfg).unwrap();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-a", self.name)])
            .arg(binary("appliance"))
            .arg("--config")
            .arg(&path);
        c.env("APPLIANCE_LOCK_DIR", self.dir.join("locks"));
        c.envs(env.iter().copied());
        let handle = self.spawn(c, "appliance.log");
        let sock = self.dir.join("ctl.sock");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if appliance::control::request(&sock, "ping").is_ok() {
                return handle;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("appliance did not come up:\n{}", self.log("appliance.log"));
    }

    /// `appliancectl ARGS` against this appliance's control socket.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary("appliancectl"))
            .arg("--socket")
            .arg(self.dir.join("ctl.sock"))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn stats(&self) -> serde_json::Value {
        appliance::control::request(&self.dir.join("ctl.sock"), "stats").unwrap()
    }

    pub fn curl(&self, url: &str, out: &Path) -> std::process::Output {
        self.in_hosts(&[
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-o",
            out.to_str().unwrap(),
            url,
        ])
        .output()
        .unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev().filter_map(Option::as_mut) {
            // SIGINT first: the appliance stops cleanly on it.
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh(&[
            repo().join("tools/netns.sh").to_str().unwrap(),
            "down",
            &self.name,
        ]);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

pub fn sha_file(p: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

pub fn write_site(dir: &Path, big: usize) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello through the appliance\n").unwrap();
    let mut x: u64 = 0x1234_5678;
    let data: Vec<u8> = (0..big)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(www.join("big.bin"), data).unwrap();
}

pub fn cpus() -> Vec<usize> {
    dataplane::cores::current_affinity().unwrap()
}

/// A self-signed certificate `{file}.pem` with key `{file}.key` for `san`, made with
/// the openssl CLI; `alg` is "rsa:2048" or "ec" (P-256).
pub fn self_signed(dir: &Path, file: &str, alg: &str, cn: &str, san: &str) {
    let mut c = Command::new("openssl");
    c.args(["req", "-x509", "-newkey", alg]);
    if alg == "ec" {
        c.args(["-pkeyopt", "ec_paramgen_curve:P-256"]);
    }
    let o = c
        .args(["-nodes", "-days", "30", "-subj", &format!("/CN={cn}")])
        .args(["-addext", &format!("subjectAltName={san}")])
        .arg("-keyout")
        .arg(dir.join(format!("{file}.key")))
        .arg("-out")
        .arg(dir.join(format!("{file}.pem")))
        .output()
        .expect("openssl CLI (tools/setup.sh installs it)");
    assert!(
        o.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Self-signed certificates for appliance.test (RSA-2048 and ECDSA P-256) made with
/// the openssl CLI, and `ca.pem` trusting both.
pub fn make_certs(dir: &Path) {
    let san = "DNS:appliance.test,IP:10.77.0.1";
    self_signed(dir, "rsa", "rsa:2048", "appliance.test", san);
    self_signed(dir, "ec", "ec", "appliance.test", san);
    let mut ca = std::fs::read(dir.join("rsa.pem")).unwrap();
    ca.extend(std::fs::read(dir.join("ec.pem")).unwrap());
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
}

/// A `[[vserver]]` with mode "tls": `name` on 10.77.0.1:`port` towards `backends`, with
/// the certificate and key `{file}.pem` / `{file}.key` in `dir` for each of `certs`,
/// then `more`: further lines of `[vserver.tls]`, or tables such as
/// `[vserver.transmit]`.
pub fn tls_vserver(
    dir: &Path,
    name: &str,
    port: u16,
    backends: &[&str],
    certs: &[&str],
    more: &str,
) -> String {
    let d = dir.display();
    let backends: Vec<String> = backends.iter().map(|b| format!("{b:?}")).collect();
    let certs: Vec<String> = certs
        .iter()
        .map(|f| format!("{{ chain = \"{d}/{f}.pem\", key = \"{d}/{f}.key\" }}"))
        .collect();
    format!(
        "\n[[vserver]]\nname = \"{name}\"\nlisten = \"10.77.0.1:{port}\"\nmode = \"tls\"\n\
         backends = [{}]\n[vserver.tls]\ncertificates = [{}]\n{more}\n",
        backends.join(", "),
        certs.join(", ")
    )
}

/// Runs the openssl CLI in `dir` with `args`; it must succeed. Its standard output.
pub fn openssl_in(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI (tools/setup.sh installs it)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A client CA (`cca.pem`, `cca.key`) and a client certificate it signed for CN=alice
/// (`alice.pem`, `alice.key`), made with the openssl CLI in `dir`.
pub fn make_client_certs(dir: &Path) {
    let run = |args: &[&str]| openssl_in(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-days", "30", "-subj", "/CN=clients-ca"];
    a.extend_from_slice(&ec);
    a.extend_from_slice(&["-keyout", "cca.key", "-out", "cca.pem"]);
    run(&a);
    let mut a = vec!["req", "-subj", "/CN=alice"];
    a.extend_from_slice(&ec);
    a.extend_from_slice(&["-keyout", "alice.key", "-out", "alice.csr"]);
    run(&a);
    run(&[
        "x509",
        "-req",
        "-in",
        "alice.csr",
        "-CA",
        "cca.pem",
        "-CAkey",
        "cca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-out",
        "alice.pem",
    ]);
}

/// An OCSP setup made with the openssl CLI in `dir`: a CA (`ocsp-ca.pem`), a leaf for
/// appliance.test it signed with its chain (`ocsp-leaf-chain.pem`, leaf then CA) and
/// key (`ocsp-leaf.key`), and a "good" response for the leaf from `openssl ocsp`
/// (`ocsp-leaf.ocsp`, valid for a day).
pub fn make_ocsp_pki(dir: &Path) {
    let run = |args: &[&str]| openssl_in(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-days", "30", "-subj", "/CN=ocsp-test-ca"];
    a.extend_from_slice(&ec);
    a.extend_from_slice(&["-keyout", "ocsp-ca.key", "-out", "ocsp-ca.pem"]);
    run(&a);
    let mut a = vec!["req", "-subj", "/CN=appliance.test"];
    a.extend_from_slice(&ec);
    a.extend_from_slice(&["-keyout", "ocsp-leaf.key", "-out", "ocsp-leaf.csr"]);
    run(&a);
    std::fs::write(
        dir.join("ocsp-san.ext"),
        "subjectAltName=DNS:appliance.test\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "ocsp-leaf.csr",
        "-CA",
        "ocsp-ca.pem",
        "-CAkey",
        "ocsp-ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "ocsp-san.ext",
        "-out",
        "ocsp-leaf.pem",
    ]);
    let serial = run(&["x509", "-in", "ocsp-leaf.pem", "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=");
    std::fs::write(
        dir.join("ocsp-index.txt"),
        format!("V\t300101000000Z\t\t{serial}\tunknown\t/CN=appliance.test\n"),
    )
    .unwrap();
    run(&[
        "ocsp",
        "-index",
        "ocsp-index.txt",
        "-rsigner",
        "ocsp-ca.pem",
        "-rkey",
        "ocsp-ca.key",
        "-CA",
        "ocsp-ca.pem",
        "-issuer",
        "ocsp-ca.pem",
        "-cert",
        "ocsp-leaf.pem",
        "-ndays",
        "1",
        "-respout",
        "ocsp-leaf.ocsp",
    ]);
    let mut chain = std::fs::read(dir.join("ocsp-leaf.pem")).unwrap();
    chain.extend(std::fs::read(dir.join("ocsp-ca.pem")).unwrap());
    std::fs::write(dir.join("ocsp-leaf-chain.pem"), chain).unwrap();
}
