//! loadgen against real servers on loopback: `openssl s_server -www` (whose status page
//! counts the handshakes it finished and the sessions it resumed) and a Python HTTPS
//! keep-alive server (which counts requests). Each mode must complete and agree with
//! the server's own counts; failures must come back as errors of the right kind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

/// A temporary directory with a self-signed ECDSA certificate for `localhost`.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(tag: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("loadgen-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .expect("the openssl CLI runs");
        assert!(ok.success(), "openssl req made a certificate");
        Certs { dir }
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed (by its PID, through `Child`) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on (for the refused-connection case only: a server that must
/// listen takes port 0 and says which port it got, see `s_server`).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, server: &mut Server) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "the server exited before listening"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server on {port} never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `openssl s_server -www` with extra flags, on a port the kernel chose for it (read
/// back from its `ACCEPT host:port` line), so two tests never race for one port.
fn s_server(certs: &Certs, extra: &[&str]) -> (Server, u16) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("openssl")
        .arg("s_server")
        .args(["-accept", "127.0.0.1:0", "-www"])
        .arg("-cert")
        .arg(certs.cert())
        .arg("-key")
        .arg(certs.key())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut s = Server(child);
    let mut port = None;
    let mut line = String::new();
    while port.is_none() {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "s_server exited before it listened");
        port = line
            .strip_prefix("ACCEPT ")
            .and_then(|a| a.trim().rsplit(':').next())
            .and_then(|p| p.parse().ok());
    }
    // Keep its per-connection output flowing so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let port = port.unwrap();
    wait_listening(port, &mut s);
    (s, port)
}

/// Runs loadgen with `--json`; returns its exit code and report.
fn loadgen(args: &[&str]) -> (i32, Value) {
    let out = Command::new(LOADGEN)
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("loadgen runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "loadgen {args:?} printed no JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("report field {k} missing: {v}"))
}

/// s_server's own counters, from its `-www` status page (fetched over TLS with the
/// openssl CLI; that fetch is itself one more finished handshake).
fn s_server_counts(port: u16, ca: &Path) -> (u64, u64) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-quiet",
        ])
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    let count = |what: &str| -> u64 {
        page.lines()
            .find(|l| l.trim_end().ends_with(what))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no {what:?} in the status page:\n{page}\ns_client: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    };
    (
        count("server accepts that finished"),
        count("session cache hits"),
    )
}

#[test]
fn every_handshake_mode_agrees_with_s_server_counts() {
    let certs = Certs::new("modes");
    let (_server, port) = s_server(&certs, &[]);
    let target = format!("localhost:{port}");
    let ca = certs.cert();
    let ca = ca.to_str().unwrap();
    let base = [
        "--target",
        &target,
        "--ca",
        ca,
        "--concurrency",
        "4",
        "--duration",
        "60s",
    ];
    // (extra flags, expected version, resumption expected)
    let cases: &[(&[&str], &str, bool)] = &[
        (
            &["--mode", "full", "--tls", "1.3", "--count", "40"],
            "TLSv1.3",
            false,
        ),
        (
            &["--mode", "full", "--tls", "1.2", "--count", "40"],
            "TLSv1.2",
            false,
        ),
        (
            &["--mode", "resume", "--tls", "1.3", "--count", "40"],
            "TLSv1.3",
            true,
        ),
        (
            &["--mode", "resume", "--resume", "id", "--count", "40"],
            "TLSv1.2",
            true,
        ),
        (
            &["--mode", "resume", "--resume", "ticket", "--count", "40"],
            "TLSv1.2",
            true,
        ),
        (
            &["--mode", "request", "--count", "20", "--threads", "2"],
            "TLSv1.3",
            false,
        ),
        // The engine's own client role: verified, then with each cheapening.
        (
            &["--engine", "own", "--mode", "full", "--count", "40"],
            "TLSv1.3",
            false,
        ),
        (
            &[
                "--engine",
                "own",
                "--no-verify",
                "--reuse-key-share",
                "--count",
                "40",
            ],
            "TLSv1.3",
            false,
        ),
        (
            &["--engine", "own", "--mode", "resume", "--count", "40"],
            "TLSv1.3",
            true,
        ),
        (
            &[
                "--engine",
                "own",
                "--mode",
                "resume",
                "--reuse-ticket",
                "--count",
                "40",
            ],
            "TLSv1.3",
            true,
        ),
        (
            &[
                "--engine",
                "own",
                "--mode",
                "request",
                "--count",
                "20",
                "--threads",
                "2",
            ],
            "TLSv1.3",
            false,
        ),
    ];
    let (mut finished, _) = s_server_counts(port, certs.cert().as_path());
    for (extra, version, resumes) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let (code, r) = loadgen(&args);
        assert_eq!(code, 0, "{extra:?}: {r}");
        let count: u64 = extra[extra.iter().position(|a| *a == "--count").unwrap() + 1]
            .parse()
            .unwrap();
        assert_eq!(
            n(&r, "ok"),
            count,
            "{extra:?}: every operation succeeded: {r}"
        );
        assert_eq!(n(&r, "error_count"), 0, "{extra:?}: {r}");
        assert_eq!(n(&r, "handshakes"), count, "{extra:?}: {r}");
        assert_eq!(n(&r["versions"], version), count, "{extra:?}: {r}");
        let hist = &r["latency_us"];
        assert_eq!(n(hist, "samples"), count);
        assert!(
            n(hist, "p50") > 0 && n(hist, "p50") <= n(hist, "max"),
            "{r}"
        );
        if *resumes {
            // Each of the 4 connections of the first round has no session yet.
            assert!(n(&r, "resumed") >= count - 4, "{extra:?}: {r}");
            assert_eq!(n(&r, "not_resumed"), 0, "{extra:?}: {r}");
        } else {
            assert_eq!(n(&r, "resumed"), 0, "{extra:?}: {r}");
        }
        if extra.contains(&"request") {
            assert_eq!(n(&r, "responses"), count);
            // s_server -www answers HTTP/1.0 and closes: the page ends at EOF.
            assert!(n(&r, "bytes_in") > count * 100, "{r}");
        }
        // The server finished exactly as many handshakes (plus the status fetch).
        let (now, _) = s_server_counts(port, certs.cert().as_path());
        assert_eq!(now - finished, count + 1, "{extra:?}: s_server's count");
        finished = now;
    }
}

#[test]
fn session_id_resumptions_are_the_servers_cache_hits() {
    let certs = Certs::new("hits");
    let (_server, port) = s_server(&certs, &[]);
    let target = format!("localhost:{port}");
    let ca = certs.cert();
    let (_, hits0) = s_server_counts(port, &ca);
    let (code, r) = loadgen(&[
        "--target",
        &target,
        "--ca",
        ca.to_str().unwrap(),
        "--mode",
        "resume",
        "--resume",
        "id",
        "--count",
        "30",
        "--concurrency",
        "2",
    ]);
    assert_eq!(code, 0, "{r}");
    let (_, hits) = s_server_counts(port, &ca);
    assert!(n(&r, "resumed") >= 28, "{r}");
    assert_eq!(
        hits - hits0,
        n(&r, "resumed"),
        "s_server's session cache hits: {r}"
    );
}

#[test]
fn bulk_keepalive_requests_agree_with_the_servers_count() {
    let certs = Certs::new("bulk");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/tls_http_server.py");
    // Port 0: the kernel chooses and the server says which (no race with other tests).
    let mut child = Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", "0"])
        .arg(certs.cert())
        .arg(certs.key())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let port: u16 = {
        use std::io::{BufRead, BufReader};
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the test server did not say its port: {line:?}"))
    };
    let mut server = Server(child);
    wait_listening(port, &mut server);
    let target = format!("localhost:{port}");
    let ca = certs.cert();
    let ca = ca.to_str().unwrap();
    let stats = || -> Value {
        let (_, r) = loadgen(&[
            "--target", &target, "--ca", ca, "--mode", "request", "--path", "/stats", "--count",
            "1",
        ]);
        assert_eq!(n(&r, "ok"), 1, "{r}");
        r
    };
    let _ = stats();
    let (code, r) = loadgen(&[
        "--target",
        &target,
        "--ca",
        ca,
        "--mode",
        "bulk",
        "--path",
        "/bytes/20000",
        "--count",
        "120",
        "--concurrency",
        "3",
        "--duration",
        "60s",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(n(&r, "ok"), 120, "{r}");
    assert_eq!(n(&r, "responses"), 120);
    // Keep-alive: one handshake per connection, not per request.
    assert_eq!(n(&r, "handshakes"), 3, "{r}");
    assert!(n(&r, "bytes_in") >= 120 * 20_000, "{r}");
    // The server's view, read over a fresh connection.
    let out = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            ca,
            &format!("https://localhost:{port}/stats"),
        ])
        .output()
        .expect("curl runs");
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the stats JSON");
    assert_eq!(n(&seen, "requests"), 120, "server saw {seen}");
    assert_eq!(n(&seen, "bytes"), 120 * 20_000);

    // The server closing after each response (Connection: close) is followed, not an error.
    let (code, r) = loadgen(&[
        "--target",
        &target,
        "--ca",
        ca,
        "--mode",
        "bulk",
        "--path",
        "/close/100",
        "--count",
        "20",
        "--concurrency",
        "2",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (n(&r, "ok"), n(&r, "handshakes"), n(&r, "reconnects")),
        (20, 20, 0),
        "{r}"
    );

    // An error status is an error of its kind, with the status in the example.
    let (code, r) = loadgen(&[
        "--target",
        &target,
        "--ca",
        ca,
        "--mode",
        "request",
        "--path",
        "/status/503",
        "--count",
        "5",
    ]);
    assert_eq!(code, 1, "no operation succeeded: {r}");
    assert_eq!(n(&r["errors"], "http_status"), 5, "{r}");
    assert_eq!(r["error_examples"]["http_status"], "status 503");
}

#[test]
fn failures_are_reported_by_kind_not_crashes() {
    let certs = Certs::new("errors");
    let ca = certs.cert();
    let ca = ca.to_str().unwrap();

    // Nothing listening: connect_refused for every operation.
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let (code, r) = loadgen(&["--target", &target, "--count", "6", "--concurrency", "2"]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(n(&r["errors"], "connect_refused"), 6, "{r}");
    assert_eq!(n(&r, "ok"), 0);

    let (_server, port) = s_server(&certs, &["-tls1_2"]);
    let target = format!("localhost:{port}");
    // TLS 1.3 only against a TLS 1.2-only server: the server's protocol_version alert.
    let (code, r) = loadgen(&[
        "--target", &target, "--ca", ca, "--tls", "1.3", "--count", "4",
    ]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(n(&r["errors"], "alert"), 4, "{r}");
    let ex = r["error_examples"]["alert"].as_str().unwrap();
    assert!(ex.contains("protocol version"), "{ex}");
    // Without the CA: the certificate does not verify.
    let (_, r) = loadgen(&["--target", &target, "--count", "3"]);
    assert_eq!(n(&r["errors"], "verify"), 3, "{r}");
    // A name the certificate does not have.
    let (_, r) = loadgen(&[
        "--target",
        &target,
        "--ca",
        ca,
        "--sni",
        "other.test",
        "--count",
        "2",
    ]);
    assert_eq!(n(&r["errors"], "verify"), 2, "{r}");
    // Mixed in one run with successes: --no-verify makes them all succeed again.
    let (code, r) = loadgen(&["--target", &target, "--no-verify", "--count", "3"]);
    assert_eq!((code, n(&r, "ok")), (0, 3), "{r}");
    // The own engine speaks TLS 1.3 only: the same server's alert.
    let (code, r) = loadgen(&["--target", &target, "--engine", "own", "--count", "2"]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(n(&r["errors"], "alert"), 2, "{r}");

    // The own engine's verification failures, against a TLS 1.3 server.
    let (_server13, port) = s_server(&certs, &[]);
    let target = format!("localhost:{port}");
    let (_, r) = loadgen(&["--target", &target, "--engine", "own", "--count", "3"]);
    assert_eq!(n(&r["errors"], "verify"), 3, "no CA: {r}");
    let (_, r) = loadgen(&[
        "--target",
        &target,
        "--engine",
        "own",
        "--ca",
        ca,
        "--sni",
        "other.test",
        "--count",
        "2",
    ]);
    assert_eq!(n(&r["errors"], "verify"), 2, "wrong name: {r}");
    assert_eq!(r["engine"], "own");

    // A bad command line: exit 2 and the flag named, no report.
    for (args, flag) in [
        (vec!["--target", "nocolon"], "--target"),
        (vec!["--target", "localhost:1", "--mode", "fast"], "--mode"),
        (
            vec!["--target", "localhost:1", "--ciphersuites", "NOPE"],
            "--ciphersuites",
        ),
        (
            vec!["--target", "localhost:1", "--ca", "/nonexistent.pem"],
            "--ca",
        ),
        (
            vec![
                "--target",
                "localhost:1",
                "--engine",
                "own",
                "--groups",
                "ffdhe2048",
            ],
            "--groups",
        ),
        (
            vec![
                "--target",
                "localhost:1",
                "--engine",
                "own",
                "--ca",
                "/nonexistent.pem",
            ],
            "--ca",
        ),
    ] {
        let out = Command::new(LOADGEN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn open_loop_runs_the_scheduled_operations() {
    let certs = Certs::new("open");
    let (_server, port) = s_server(&certs, &[]);
    let target = format!("localhost:{port}");
    let ca = certs.cert();
    let plot = certs.dir.join("latency.svg");
    let (code, r) = loadgen(&[
        "--target",
        &target,
        "--ca",
        ca.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        "--rate",
        "400",
        "--count",
        "40",
        "--concurrency",
        "8",
        "--threads",
        "2",
        "--duration",
        "60s",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["loop"], "open");
    assert_eq!(n(&r, "ok") + n(&r, "error_count"), 40, "{r}");
    assert_eq!(n(&r, "unstarted"), 0, "{r}");
    // Each thread's 20 arrivals come 5 ms apart (200/s each): the schedule spans at
    // least 95 ms. (A lower bound from the schedule, not a speed claim.)
    assert!(r["seconds"].as_f64().unwrap() >= 0.095, "{r}");
    // --plot: an SVG percentile plot whose curve has a point per distinct latency
    // (at least the start and one), titled with the run.
    let svg = std::fs::read_to_string(&plot).expect("--plot wrote its file");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert!(svg.contains("open loop at 400/s"), "{svg}");
    let points = svg
        .split("points=\"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .expect("a polyline");
    assert!(points.split(' ').count() >= 2, "{points}");
}
