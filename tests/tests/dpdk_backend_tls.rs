//! TLS towards backends (`[vserver.backend_tls]`) on the DPDK port: a real nginx with
//! `ssl` on its listen behind the appliance, curl in front. What the client sends is
//! encrypted again on the backend leg, byte-exact both ways; sessions to the backend
//! are resumed; a backend whose certificate is from another CA or for another name
//! gets no request, and the client gets a 502. Needs root.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use tests::veth::*;

/// A backend CA (`bca.pem`) and three server certificates: `api` (for api.internal,
/// from the CA), `wrongname` (for wrong.internal, from the CA) and `otherca` (for
/// api.internal, self-signed: another CA).
fn make_backend_pki(dir: &Path) {
    let run = |args: &[&str]| openssl_in(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-days", "30", "-subj", "/CN=backend-ca"];
    a.extend_from_slice(&ec);
    a.extend_from_slice(&["-keyout", "bca.key", "-out", "bca.pem"]);
    run(&a);
    for (leaf, name) in [("api", "api.internal"), ("wrongname", "wrong.internal")] {
        let mut a = vec!["req", "-subj"];
        let subj = format!("/CN={name}");
        a.push(&subj);
        a.extend_from_slice(&ec);
        let (key, csr, pem, ext) = (
            format!("{leaf}.key"),
            format!("{leaf}.csr"),
            format!("{leaf}.pem"),
            format!("{leaf}.ext"),
        );
        a.extend_from_slice(&["-keyout", &key, "-out", &csr]);
        run(&a);
        std::fs::write(dir.join(&ext), format!("subjectAltName=DNS:{name}\n")).unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "bca.pem",
            "-CAkey",
            "bca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
    }
    self_signed(dir, "otherca", "ec", "api.internal", "DNS:api.internal");
}

/// nginx in the hosts' namespace serving `www/` over TLS 1.3 on `ip:port` with
/// `cert`, logging each request's TLS version, suite, `$ssl_session_reused` and
/// client certificate subject to `nginx-{cert}.access`; with `client_ca`, a client
/// certificate from it is required (`ssl_verify_client on`).
fn start_tls_nginx(
    net: &mut Net,
    ip: &str,
    port: u16,
    cert: &str,
    protocol: &str,
    client_ca: Option<&str>,
) -> usize {
    let d = net.dir.display();
    let verify = client_ca
        .map(|ca| format!("ssl_verify_client on;\n    ssl_client_certificate {d}/{ca};\n    "))
        .unwrap_or_default();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx-{cert}.pid;\nerror_log {d}/nginx-{cert}.error info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  log_format tls '$ssl_protocol $ssl_cipher $ssl_session_reused $request $status $body_bytes_sent $ssl_client_s_dn';\n\
         access_log {d}/nginx-{cert}.access tls;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
         fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
         server {{\n    listen {ip}:{port} ssl;\n    ssl_certificate {d}/{cert}.pem;\n    \
         ssl_certificate_key {d}/{cert}.key;\n    ssl_protocols {protocol};\n    {verify}\
         root {d}/www;\n  }}\n}}\n"
    );
    let path = net.dir.join(format!("nginx-{cert}.conf"));
    std::fs::write(&path, conf).unwrap();
    let c = net.in_hosts(&["nginx", "-c", path.to_str().unwrap()]);
    net.spawn(c, &format!("nginx-{cert}.log"))
}

/// curl for `https://appliance.test:{port}{path}` through the appliance, trusting
/// `ca.pem`, TLS 1.3 with ChaCha20 in front; the body to `out`.
fn fetch(net: &Net, port: u16, path: &str, out: &Path) -> Output {
    let ca = net.dir.join("ca.pem");
    let resolve = format!("appliance.test:{port}:10.77.0.1");
    let url = format!("https://appliance.test:{port}{path}");
    net.in_hosts(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        "--tlsv1.3",
        "--tls13-ciphers",
        "TLS_CHACHA20_POLY1305_SHA256",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        "-w",
        "%{http_code}",
        "-o",
        out.to_str().unwrap(),
        &url,
    ])
    .output()
    .unwrap()
}

fn proxy(net: &Net, key: &str) -> u64 {
    net.stats()["cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["proxy"][key].as_u64().unwrap_or(0))
        .sum()
}

/// The access log's lines as maps of their `key=value` fields.
fn access_lines(net: &Net) -> Vec<HashMap<String, String>> {
    net.log("access.log")
        .lines()
        .map(|l| {
            l.split(' ')
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn re_encryption_to_nginx_resumes_and_refuses_bad_certificates() {
    let mut net = Net::up("btl");
    write_site(&net.dir, 64 << 20);
    make_certs(&net.dir);
    make_backend_pki(&net.dir);
    make_client_certs(&net.dir);
    // The good backend speaks TLS 1.2 only and requires the appliance's client
    // certificate (alice, from cca); the bad ones speak TLS 1.3.
    start_tls_nginx(
        &mut net,
        "10.77.0.2",
        8443,
        "api",
        "TLSv1.2",
        Some("cca.pem"),
    );
    start_tls_nginx(&mut net, "10.77.0.3", 8443, "otherca", "TLSv1.3", None);
    start_tls_nginx(&mut net, "10.77.0.3", 8444, "wrongname", "TLSv1.3", None);
    std::thread::sleep(Duration::from_millis(700));
    let d = net.dir.display();
    let backend_tls = format!(
        "[vserver.backend_tls]\nca = \"{d}/bca.pem\"\nserver_name = \"api.internal\"\n\
         certificate = {{ chain = \"{d}/alice.pem\", key = \"{d}/alice.key\" }}\n"
    );
    // One crypto worker: the backend leg's handshake steps go to the pool as jobs.
    let mut extra = format!("\n[crypto]\nworkers = 1\n[log]\naccess = \"{d}/access.log\"\n");
    // "otherca" is HTTP-aware (a 502 on failure), "wrongname" is not (a close).
    for (name, port, backend, more) in [
        ("reenc", 443, "10.77.0.2:8443", ""),
        (
            "otherca",
            444,
            "10.77.0.3:8443",
            "[vserver.transmit]\nhttp = true",
        ),
        ("wrongname", 445, "10.77.0.3:8444", ""),
    ] {
        extra += &tls_vserver(&net.dir, name, port, &[backend], &["ec"], more);
        extra += &backend_tls;
        if name == "reenc" {
            // TLS 1.2 only towards the good backend: no key share is made for the
            // ClientHello (the full handshake makes its ECDHE key, resumptions none).
            extra += "versions = [\"1.2\"]\n";
        }
    }
    let cpu = *cpus().last().unwrap();
    net.start_appliance(&[cpu], &extra);

    // 64 MiB through both legs, byte-exact: TLS 1.3 ChaCha20 in front, TLS 1.2
    // AES-GCM behind.
    let out = net.dir.join("big.out");
    let o = fetch(&net, 443, "/big.bin", &out);
    assert!(
        o.status.success() && o.stdout == b"200",
        "{o:?}\n{}",
        net.log("appliance.log")
    );
    assert_eq!(
        sha_file(&out),
        sha_file(&net.dir.join("www/big.bin")),
        "the download through the re-encrypting vserver is not byte-exact"
    );
    // nginx saw TLS 1.2 from the appliance, and its client certificate.
    let first = net.log("nginx-api.access");
    assert!(
        first.starts_with(
            "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256 . GET /big.bin HTTP/1.1 200 67108864 CN=alice\n"
        ),
        "{first}"
    );

    // Session reuse: after the first connection, at least 95% resumed.
    let small = net.dir.join("small.out");
    for i in 0..40 {
        let o = fetch(&net, 443, "/index.html", &small);
        assert!(
            o.status.success() && o.stdout == b"200",
            "request {i}: {o:?}"
        );
        assert_eq!(
            std::fs::read(&small).unwrap(),
            b"hello through the appliance\n"
        );
    }
    let lines: Vec<String> = net
        .log("nginx-api.access")
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 40, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.ends_with(" 200 28 CN=alice")),
        "{lines:?}"
    );
    let reused = lines
        .iter()
        .filter(|l| l.split(' ').nth(2) == Some("r"))
        .count();
    eprintln!("backend sessions resumed: {reused}/40");
    assert!(reused * 100 >= 95 * 40, "{reused}/40 resumed: {lines:?}");
    assert_eq!(
        proxy(&net, "backend_tls_full") + proxy(&net, "backend_tls_resumed"),
        41
    );
    assert_eq!(proxy(&net, "backend_tls_resumed") as usize, reused);

    // Another CA, another name: no request reaches them, the client gets a 502.
    let o = fetch(&net, 444, "/index.html", &small);
    assert_eq!(o.stdout, b"502", "{o:?}");
    let body = std::fs::read_to_string(&small).unwrap();
    assert!(body.contains("TLS handshake failed"), "{body}");
    // Not HTTP-aware: a close (close_notify, FIN) before any byte of a response.
    let _ = std::fs::remove_file(&small);
    let o = fetch(&net, 445, "/index.html", &small);
    assert_eq!(o.status.code(), Some(52), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Empty reply"),
        "{o:?}"
    );
    assert_eq!(net.log("nginx-api.access").lines().count(), 41);
    for cert in ["otherca", "wrongname"] {
        let log = net.log(&format!("nginx-{cert}.access"));
        assert!(
            log.is_empty(),
            "a request reached the {cert} backend: {log}"
        );
    }
    assert_eq!(proxy(&net, "backend_tls_failed"), 2);
    // The backend handshakes ran on the pool: a key share and the client role's steps
    // per connection (two for a TLS 1.2 full handshake, one resumed).
    let jobs = net.stats()["crypto"]["workers"][0]["jobs"]
        .as_u64()
        .unwrap_or(0);
    assert!(jobs >= 41 * 2, "{jobs} jobs on the pool: {}", net.stats());
    // Both legs' records went to the record jobs (the pool is there, so record offload
    // is on): the backend leg's too, batched with the client legs'.
    assert!(proxy(&net, "record_job_backend") > 64, "{}", net.stats());
    assert!(proxy(&net, "record_job_conns") > proxy(&net, "record_job_backend"));
    let log = net.log("appliance.log");
    assert!(
        log.contains("vserver otherca: backend 10.77.0.3:8443: TLS failed: peer certificate: self-signed certificate"),
        "the failures are not logged:\n{log}"
    );
    assert!(
        log.contains("vserver wrongname: backend 10.77.0.3:8444: TLS failed: peer certificate: "),
        "the failures are not logged:\n{log}"
    );

    // The operator's view: show backends and the access log.
    let o = net.ctl(&["show", "backends", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = j.as_array().unwrap();
    let good = rows
        .iter()
        .find(|r| r["vserver"] == "reenc")
        .unwrap_or_else(|| panic!("{j}"));
    assert_eq!(good["tls"]["version"], "TLSv1.2", "{good}");
    assert_eq!(
        good["tls"]["suite"], "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "{good}"
    );
    assert_eq!(good["tls"]["resumed"].as_u64().unwrap() as usize, reused);
    let bad = rows.iter().find(|r| r["vserver"] == "otherca").unwrap();
    assert_eq!(bad["tls"]["failed"], 1, "{bad}");
    let t0 = Instant::now();
    let lines = loop {
        let l = access_lines(&net);
        if l.len() >= 43 || t0.elapsed() > Duration::from_secs(5) {
            break l;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let resumed_lines = lines
        .iter()
        .filter(|l| l.get("backend_resumed").map(String::as_str) == Some("yes"))
        .count();
    assert_eq!(resumed_lines, reused);
    assert!(lines
        .iter()
        .any(|l| l.get("backend_tls").map(String::as_str)
            == Some("TLSv1.2/TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")));
    let failed: Vec<_> = lines
        .iter()
        .filter(|l| l.get("close").map(String::as_str) == Some("backend_tls_failed"))
        .collect();
    assert_eq!(failed.len(), 2, "{lines:?}");
    assert!(failed.iter().all(|l| l["backend_tls"] == "-"));

    // A keep-alive pair that goes quiet for more than a second after a response gives
    // back the pages of both its sockets' buffers (and frees its engines' empty
    // buffers); its next request on the same connection is served as before.
    let trimmed = |net: &Net| -> u64 {
        net.stats()["cores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["stack"]["trimmed"].as_u64().unwrap_or(0))
            .sum()
    };
    let before = trimmed(&net);
    let py = format!(
        r#"
import hashlib, socket, ssl, time
ctx = ssl.create_default_context(cafile="{ca}")
def get(s, path):
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: appliance.test\r\n\r\n")
    data = bytearray()
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        if not b:
            raise SystemExit("closed in the header: %r" % bytes(data[:300]))
        data += b
    head, body = bytes(data).split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    h, got = hashlib.sha256(body), len(body)
    while got < n:
        b = s.recv(min(1 << 20, n - got))
        if not b:
            raise SystemExit("closed after %d of %d body bytes" % (got, n))
        h.update(b)
        got += len(b)
    return h.hexdigest()
with socket.create_connection(("10.77.0.1", 443), timeout=30) as raw:
    with ctx.wrap_socket(raw, server_hostname="appliance.test") as s:
        print(get(s, b"/big.bin"))
        time.sleep(1.6)
        print(get(s, b"/index.html"))
"#,
        ca = net.dir.join("ca.pem").display()
    );
    let o = net.in_hosts(&["python3", "-c", &py]).output().unwrap();
    let hex = |p: &str| -> String {
        sha_file(&net.dir.join(p))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let got = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        [hex("www/big.bin"), hex("www/index.html")],
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        trimmed(&net) >= before + 2,
        "the quiet keep-alive pair gave back both sockets' pages: {} -> {}",
        before,
        trimmed(&net)
    );
}

#[test]
fn health_checks_and_tls_origination() {
    let mut net = Net::up("bhc");
    write_site(&net.dir, 1024);
    make_certs(&net.dir);
    make_backend_pki(&net.dir);
    start_tls_nginx(&mut net, "10.77.0.2", 8443, "api", "TLSv1.3", None);
    start_tls_nginx(&mut net, "10.77.0.3", 8443, "otherca", "TLSv1.2", None);
    std::thread::sleep(Duration::from_millis(700));
    let d = net.dir.display();
    let mut extra = String::new();
    // An http check through TLS to the good backend, a tcp check (the handshake alone)
    // to the one with a certificate from another CA.
    for (name, port, backend, check) in [
        (
            "good",
            443,
            "10.77.0.2:8443",
            "check = \"http\"\npath = \"/index.html\"",
        ),
        ("bad", 444, "10.77.0.3:8443", "check = \"tcp\""),
    ] {
        extra += &tls_vserver(&net.dir, name, port, &[backend], &["ec"], "");
        extra += &format!(
            "[vserver.backend_tls]\nca = \"{d}/bca.pem\"\nserver_name = \"api.internal\"\n\
             [vserver.health]\n{check}\ninterval = \"300ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 1\n"
        );
    }
    // TLS origination: a tcp vserver whose plaintext clients reach the TLS backend.
    extra += &format!(
        "\n[[vserver]]\nname = \"origin\"\nlisten = \"10.77.0.1:8000\"\nmode = \"tcp\"\n\
         backends = [\"10.77.0.2:8443\"]\n[vserver.backend_tls]\nca = \"{d}/bca.pem\"\n\
         server_name = \"api.internal\"\n"
    );
    let cpu = *cpus().last().unwrap();
    net.start_appliance(&[cpu], &extra);
    for i in 0..3 {
        let out = net.dir.join("origin.out");
        let o = net.curl("http://10.77.0.1:8000/index.html", &out);
        assert!(o.status.success(), "request {i}: {o:?}");
        assert_eq!(
            std::fs::read(&out).unwrap(),
            b"hello through the appliance\n"
        );
    }
    let origin: Vec<String> = net
        .log("nginx-api.access")
        .lines()
        .filter(|l| l.contains("HTTP/1.1"))
        .map(str::to_string)
        .collect();
    assert_eq!(origin.len(), 3, "{origin:?}");
    assert!(
        origin.iter().all(|l| l.starts_with("TLSv1.3 ")),
        "{origin:?}"
    );
    // After the first, the backend sessions resumed.
    assert!(
        origin[1..].iter().all(|l| l.split(' ').nth(2) == Some("r")),
        "{origin:?}"
    );
    let t0 = Instant::now();
    let (good, bad) = loop {
        let o = net.ctl(&["show", "backends", "--json"]);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let row = |v: &str| {
            j.as_array()
                .unwrap()
                .iter()
                .find(|r| r["vserver"] == v)
                .unwrap()
                .clone()
        };
        let (good, bad) = (row("good"), row("bad"));
        let passed = good["checks_passed"].as_u64().unwrap_or(0) >= 3;
        let failed = bad["checks_failed"].as_u64().unwrap_or(0) >= 3;
        if passed && failed {
            break (good, bad);
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "{good}\n{bad}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(good["state"], "up", "{good}");
    assert_eq!(good["last_check"], "passed", "{good}");
    assert_eq!(bad["state"], "down", "{bad}");
    eprintln!("the bad backend's last check: {}", bad["last_check"]);
    assert!(
        bad["last_check"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS failed (") && c != "TLS failed (unknown)"),
        "{bad}"
    );
    // The good backend saw the checks' requests, over TLS 1.3.
    let log = net.log("nginx-api.access");
    assert!(
        log.lines()
            .any(|l| l.starts_with("TLSv1.3 ") && l.contains("GET /index.html HTTP/1.0 200")),
        "{log}"
    );
    // The bad one never got a request.
    assert!(net.log("nginx-otherca.access").is_empty());
}
