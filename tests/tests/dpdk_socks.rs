//! SOCKS v5 over TLS on the DPDK port (`mode = "socks5"`), with the `tlsocks` client in
//! the hosts' namespace: curl through it fetches a page byte-exact, with nothing
//! readable on the wire between tlsocks and the appliance; the policy's refusal, a
//! wrong password, a client certificate as the identity, unsupported commands and address types, a target that refuses, and
//! garbage get their RFC 1928/1929 answers, and the appliance serves everyone else
//! throughout. Needs root.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tests::veth::*;

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("a number: {v}"))
}

/// A users file with alice (password in `pw`) made by `appliancectl hash-password`.
fn users_file(dir: &Path) {
    let mut c = std::process::Command::new(binary("appliancectl"))
        .arg("hash-password")
        .arg("alice")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    let line = String::from_utf8(o.stdout).unwrap();
    assert!(line.starts_with("alice:$argon2id$"), "{line}");
    assert!(!line.contains("correct horse"));
    std::fs::write(dir.join("socks-users"), format!("# test users\n{line}")).unwrap();
    std::fs::write(dir.join("pw"), "correct horse\n").unwrap();
    std::fs::write(dir.join("wrong-pw"), "incorrect horse\n").unwrap();
}

/// Starts tlsocks in the hosts' namespace on 127.0.0.1:`port` with `password_file`;
/// waits until it listens.
fn tlsocks(net: &mut Net, port: u16, password_file: &str) {
    let pw = net.dir.join(password_file);
    tlsocks_with(
        net,
        port,
        "10.77.0.1:1080",
        &["--user", "alice", "--password-file", pw.to_str().unwrap()],
    );
}

/// tlsocks towards `server` with `auth` (its credential flags); its handle.
fn tlsocks_with(net: &mut Net, port: u16, server: &str, auth: &[&str]) -> usize {
    let dir = net.dir.clone();
    let listen = format!("127.0.0.1:{port}");
    let tlsocks = binary("tlsocks");
    let ca = dir.join("ca.pem");
    let mut args = vec![
        tlsocks.to_str().unwrap(),
        "--server",
        server,
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        "appliance.test",
        "--listen",
        &listen,
    ];
    args.extend_from_slice(auth);
    let c = net.in_hosts(&args);
    let handle = net.spawn(c, &format!("tlsocks-{port}.log"));
    let t0 = Instant::now();
    while !net
        .log(&format!("tlsocks-{port}.log"))
        .contains("SOCKS v5 on")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "tlsocks did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    handle
}

fn curl_socks(net: &Net, port: u16, url: &str, out: &Path) -> std::process::Output {
    let proxy = format!("127.0.0.1:{port}");
    net.in_hosts(&[
        "curl",
        "-sS",
        "--max-time",
        "30",
        "--socks5",
        &proxy,
        "-o",
        out.to_str().unwrap(),
        url,
    ])
    .output()
    .unwrap()
}

/// Raw SOCKS exchanges over Python's ssl, one connection each: prints one line per
/// case with the bytes the appliance answered (hex) or "closed".
const RAW: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
def talk(msgs):
    raw = socket.create_connection(("10.77.0.1", 1080), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="appliance.test")
    got = b""
    for m in msgs:
        s.sendall(m)
        try:
            b = s.recv(100)
        except (ConnectionError, ssl.SSLError):
            b = b""
        if not b:
            return got.hex() + "|closed"
        got += b
    try:
        s.settimeout(12)
        rest = s.recv(100)
    except (ConnectionError, ssl.SSLError, socket.timeout):
        rest = b""
    s.close()
    return got.hex() + ("|closed" if not rest else "|" + rest.hex())
pw = b"\x01\x05alice\x0dcorrect horse"
hello = b"\x05\x01\x02"
cases = {
    "socks4": [b"\x04\x01\x00\x50\x0a\x4d\x00\x02\x00"],
    "no-method": [b"\x05\x01\x00"],
    "wrong-password": [hello, b"\x01\x05alice\x03bad"],
    "unknown-user": [hello, b"\x01\x03bob\x0dcorrect horse"],
    "bind": [hello, pw, b"\x05\x02\x00\x01\x0a\x4d\x00\x02\x1f\x90"],
    "domain": [hello, pw, b"\x05\x01\x00\x03\x0bexample.com\x00\x50"],
    "ipv6": [hello, pw, b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x50"],
    "denied": [hello, pw, b"\x05\x01\x00\x01\x0a\x4d\x00\x03\x1f\x90"],
    "refused": [hello, pw, b"\x05\x01\x00\x01\x0a\x4d\x00\x03\x00\x09"],
    "no-route": [hello, pw, b"\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50"],
}
for name, msgs in cases.items():
    print(name, talk(msgs), flush=True)
"#;

#[test]
fn curl_through_tlsocks_and_the_answers_of_rfc_1928_and_1929() {
    let mut net = Net::up("sk");
    write_site(&net.dir, 4 << 20);
    make_certs(&net.dir);
    make_client_certs(&net.dir);
    users_file(&net.dir);
    net.start_backend("10.77.0.2", 8080);
    net.start_backend("10.77.0.3", 8080);
    std::thread::sleep(Duration::from_millis(500));
    let d = net.dir.display();
    let vs = format!(
        r#"
[[vserver]]
name = "socks"
listen = "10.77.0.1:1080"
mode = "socks5"
[vserver.tls]
certificates = [{{ chain = "{d}/ec.pem", key = "{d}/ec.key" }}]
[vserver.socks]
auth = ["password"]
users_file = "{d}/socks-users"
allow = ["10.77.0.2/32", "10.77.0.3/32:9", "192.0.2.0/24"]
deny = ["10.77.0.2/32:22"]

[[vserver]]
name = "socks-cert"
listen = "10.77.0.1:1081"
mode = "socks5"
[vserver.tls]
certificates = [{{ chain = "{d}/ec.pem", key = "{d}/ec.key" }}]
client_auth = "optional"
client_ca = "{d}/cca.pem"
[vserver.socks]
auth = ["certificate"]
allow = ["10.77.0.2/32:8080"]
"#
    );
    net.start_appliance(&[*cpus().last().unwrap()], &vs);
    tlsocks(&mut net, 1080, "pw");

    // A download through the tunnel, byte-exact, with a capture of the tunnel's port.
    let iface = format!("{}-h0", net.name);
    let cap_file = net.dir.join("tunnel.bin");
    let script = repo().join("tests/scripts/payloads.py");
    let mut cap = net
        .in_hosts(&[
            "python3",
            script.to_str().unwrap(),
            &iface,
            "10.77.0.1",
            "1080",
            "6",
            cap_file.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cap.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let out = net.dir.join("big.out");
    let o = curl_socks(&net, 1080, "http://10.77.0.2:8080/big.bin", &out);
    assert!(
        o.status.success(),
        "curl --socks5: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        net.log("tlsocks-1080.log")
    );
    assert_eq!(
        sha_file(&out),
        sha_file(&net.dir.join("www/big.bin")),
        "byte-exact"
    );
    let summary = lines.next().unwrap().unwrap();
    let _ = cap.wait();
    let wire = std::fs::read(&cap_file).unwrap();
    // A Python capture misses segments at this rate: a sample, but a large one.
    assert!(
        wire.len() > 1 << 20,
        "the download crossed the tunnel: {summary}"
    );
    let site = std::fs::read(net.dir.join("www/big.bin")).unwrap();
    for (what, needle) in [
        ("the request", &b"GET /big.bin"[..]),
        ("the response head", &b"HTTP/1.0 200"[..]),
        ("the user name", &b"alice"[..]),
        ("the password", &b"correct horse"[..]),
    ] {
        assert!(
            !wire.windows(needle.len()).any(|w| w == needle),
            "{what} is readable on the wire"
        );
    }
    // No 8 bytes of the body at any offset: every 8-byte window of the body, against
    // the capture read 8 bytes at a time (plaintext anywhere in it would match).
    let body: std::collections::HashSet<u64> = site
        .windows(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .collect();
    let hits = wire
        .chunks_exact(8)
        .filter(|c| body.contains(&u64::from_le_bytes((*c).try_into().unwrap())))
        .count();
    assert_eq!(hits, 0, "pieces of the body are readable on the wire");

    // The policy: a denied target is 0x02, and curl fails.
    let o = curl_socks(&net, 1080, "http://10.77.0.3:8080/index.html", &out);
    assert!(!o.status.success(), "a denied target fails");
    assert!(
        net.log("tlsocks-1080.log")
            .contains("0x02 (not allowed by its policy)"),
        "{}",
        net.log("tlsocks-1080.log")
    );

    // A wrong password: tlsocks says so, curl fails.
    tlsocks(&mut net, 1081, "wrong-pw");
    let o = curl_socks(&net, 1081, "http://10.77.0.2:8080/index.html", &out);
    assert!(!o.status.success());
    assert!(
        net.log("tlsocks-1081.log")
            .contains("authentication failed"),
        "{}",
        net.log("tlsocks-1081.log")
    );

    // A CONNECT relay that sits idle for more than a second gives its two sockets'
    // pages back (`trimmed` counts each socket), then relays byte-exact all the same.
    let ca = net.dir.join("ca.pem");
    let trimmed = |net: &Net| {
        net.stats()["cores"][0]["stack"]["trimmed"]
            .as_u64()
            .unwrap()
    };
    let before = trimmed(&net);
    let idle = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("10.77.0.1", 1080), timeout=10),
                    server_hostname="appliance.test")
def need(n):
    got = b""
    while len(got) < n:
        b = s.recv(n - len(got))
        if not b:
            raise SystemExit("closed")
        got += b
    return got
s.sendall(b"\x05\x01\x02"); assert need(2) == b"\x05\x02"
s.sendall(b"\x01\x05alice\x0dcorrect horse"); assert need(2) == b"\x01\x00"
s.sendall(b"\x05\x01\x00\x01\x0a\x4d\x00\x02\x1f\x90"); assert need(10)[1] == 0
time.sleep(1.6)
s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
parts = []
while True:
    b = s.recv(65536)
    if not b:
        break
    parts.append(b)
print(b"".join(parts).split(b"\r\n\r\n", 1)[1].decode())
"#;
    let o = net
        .in_hosts(&["python3", "-c", idle, ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello through the appliance\n\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        trimmed(&net) >= before + 2,
        "the idle relay gave both sockets' pages back"
    );

    // Raw exchanges.
    let o = net
        .in_hosts(&["python3", "-c", RAW, ca.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let answer = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {text}"))
            .to_string()
    };
    // Reply: VER REP RSV ATYP(1) 0.0.0.0:0, after "0502" (method) and "0100" (auth ok).
    let fail = |code: &str| format!("05020100050{code}0001000000000000|closed");
    for (case, want) in [
        ("socks4", "|closed".to_string()),
        ("no-method", "05ff|closed".to_string()),
        ("wrong-password", "05020101|closed".to_string()),
        ("unknown-user", "05020101|closed".to_string()),
        ("bind", fail("7")),
        ("domain", fail("8")),
        ("ipv6", fail("8")),
        ("denied", fail("2")),
        ("refused", fail("5")),
        ("no-route", fail("3")),
    ] {
        assert_eq!(answer(case), want, "{case}: {text}");
    }

    // The client certificate as the identity (method 0x00 after a verified
    // certificate); without one, that vserver has no method for tlsocks.
    let (cert, key) = (net.dir.join("alice.pem"), net.dir.join("alice.key"));
    tlsocks_with(
        &mut net,
        1082,
        "10.77.0.1:1081",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    let o = curl_socks(&net, 1082, "http://10.77.0.2:8080/index.html", &out);
    assert!(
        o.status.success(),
        "with a client certificate: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        net.log("tlsocks-1082.log")
    );
    let pw = net.dir.join("pw");
    tlsocks_with(
        &mut net,
        1083,
        "10.77.0.1:1081",
        &["--user", "alice", "--password-file", pw.to_str().unwrap()],
    );
    let o = curl_socks(&net, 1083, "http://10.77.0.2:8080/index.html", &out);
    assert!(!o.status.success());
    assert!(
        net.log("tlsocks-1083.log")
            .contains("accepts none of our methods"),
        "{}",
        net.log("tlsocks-1083.log")
    );

    // Everyone else is still served.
    let o = curl_socks(&net, 1080, "http://10.77.0.2:8080/index.html", &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = net.stats();
    let p = &s["cores"][0]["proxy"];
    // The relays above, the idle one included.
    assert_eq!(n(&p["socks_connects"]), 4, "{p}");
    assert_eq!(n(&p["socks_refused_policy"]), 2, "{p}");
    assert_eq!(n(&p["socks_auth_failed"]), 5, "{p}");
    assert_eq!(n(&p["socks_unsupported"]), 3, "{p}");
    assert_eq!(n(&p["socks_target_failed"]), 2, "{p}");
    assert_eq!(n(&p["socks_malformed"]), 1, "{p}");
}

/// A plain RFC 1928 UDP client over Python's ssl (no secure datagrams: Python has no
/// TLS exporter): UDP ASSOCIATE on the vserver at argv[2] (with argv[4] = USER:PASSWORD
/// if given), one datagram to the echo target argv[3]; prints "echo" when it came back
/// whole (header and data), "none" when nothing came.
const PLAIN_UDP: &str = r#"
import socket, ssl, struct, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
host, port = sys.argv[2].split(":")
raw = socket.create_connection((host, int(port)), timeout=10)
s = ctx.wrap_socket(raw, server_hostname="appliance.test")
if len(sys.argv) > 4:
    user, pw = sys.argv[4].encode().split(b":")
    s.sendall(b"\x05\x01\x02")
    assert s.recv(2) == b"\x05\x02"
    s.sendall(bytes([1, len(user)]) + user + bytes([len(pw)]) + pw)
    assert s.recv(2) == b"\x01\x00"
else:
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
s.sendall(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
r = s.recv(10)
assert r[:2] == b"\x05\x00", r.hex()
relay = (socket.inet_ntoa(r[4:8]), struct.unpack("!H", r[8:10])[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((s.getsockname()[0], 0))
u.settimeout(1.5)
t_ip, t_port = sys.argv[3].split(":")
head = b"\x00\x00\x00\x01" + socket.inet_aton(t_ip) + struct.pack("!H", int(t_port))
u.sendto(head + b"plain hello", relay)
try:
    d, _ = u.recvfrom(2048)
    print("echo" if d == head + b"plain hello" else "wrong " + d.hex())
except socket.timeout:
    print("none")
s.close()
"#;

#[test]
fn secure_datagrams_through_tlsocks_udp() {
    let mut net = Net::up("su");
    make_certs(&net.dir);
    users_file(&net.dir);
    let echo = repo().join("tests/scripts/udp_echo.py");
    let c = net.in_hosts(&["python3", echo.to_str().unwrap(), "10.77.0.3", "7"]);
    net.spawn(c, "echo.log");
    let d = net.dir.display();
    let vs = format!(
        r#"
[[vserver]]
name = "socks"
listen = "10.77.0.1:1080"
mode = "socks5"
[vserver.tls]
certificates = [{{ chain = "{d}/ec.pem", key = "{d}/ec.key" }}]
[vserver.socks]
auth = ["password"]
users_file = "{d}/socks-users"
allow = ["10.77.0.3/32:7"]

[[vserver]]
name = "socks-plain"
listen = "10.77.0.1:1081"
mode = "socks5"
[vserver.tls]
certificates = [{{ chain = "{d}/ec.pem", key = "{d}/ec.key" }}]
[vserver.socks]
auth = ["none"]
allow = ["10.77.0.3/32:7"]
plain_udp = true

[log]
access = "{d}/access.log"
"#
    );
    net.start_appliance(&[*cpus().last().unwrap()], &vs);
    let pw = net.dir.join("pw");
    let client = tlsocks_with(
        &mut net,
        1090,
        "10.77.0.1:1080",
        &[
            "--user",
            "alice",
            "--password-file",
            pw.to_str().unwrap(),
            "--udp",
            "127.0.0.1:5300=10.77.0.3:7",
        ],
    );
    let t0 = Instant::now();
    while !net.log("tlsocks-1090.log").contains("association") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no association: {}",
            net.log("tlsocks-1090.log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // 500 datagrams echoed byte-exact, nothing readable on the wire; then forged
    // copies of what the sniffer saw, and 20 more datagrams.
    let script = repo().join("tests/scripts/dgram.py");
    let iface = format!("{}-h0", net.name);
    let o = net
        .in_hosts(&[
            "python3",
            script.to_str().unwrap(),
            &iface,
            "10.77.0.1",
            "5300",
            "500",
            "10.77.0.3:7",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{text}{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        net.log("tlsocks-1090.log")
    );
    let r: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(n(&r["echoed"]), 500, "every datagram back byte-exact: {r}");
    assert_eq!(n(&r["after"]), 20, "served after the forgeries: {r}");
    // A Python capture may miss a frame or two: a sample, but nearly all of them.
    assert!(n(&r["to_relay"]) >= 450, "{r}");
    assert_eq!(r["marker_on_wire"], false, "plaintext on the wire: {r}");
    assert_eq!(n(&r["forged"]["replays"]), 3, "{r}");

    let s = net.stats();
    let p = &s["cores"][0]["proxy"];
    assert_eq!(n(&p["socks_associations"]), 1, "{p}");
    assert_eq!(n(&p["dgram_up"]), 520, "{p}");
    assert_eq!(n(&p["dgram_down"]), 520, "{p}");
    assert_eq!(n(&p["dgram_replayed"]), 3, "{p}");
    assert_eq!(n(&p["dgram_auth_failed"]), 1, "{p}");
    assert_eq!(n(&p["dgram_malformed"]), 2, "truncated, unknown flags: {p}");
    assert_eq!(n(&p["dgram_plain_refused"]), 1, "{p}");
    // The target saw each datagram once: none of the forged ones.
    let echoed = net
        .log("echo.log")
        .lines()
        .filter(|l| !l.starts_with("echoing"))
        .count();
    assert_eq!(echoed, 520, "datagrams that reached the target");

    // The operator's view while the association is open.
    let o = net.ctl(&["show", "socks"]);
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "1 UDP ASSOCIATE",
        "520 client->target",
        "3 replayed",
        "1 failed authentication",
        "1 plain refused",
        "associations open: 1",
        "socks ",
    ] {
        assert!(shown.contains(want), "{want:?} in:\n{shown}");
    }
    let o = net.ctl(&["--json", "show", "socks"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(n(&j["counters"]["dgram_replayed"]), 3, "{j}");
    assert_eq!(
        j["associations_open"][0]["state"], "socks_associated",
        "{j}"
    );
    assert!(n(&j["associations_open"][0]["bytes_in"]) > 0, "{j}");

    // A path that loses 10%, delays a quarter (an HTB class of 2 Mbit/s behind the
    // others: they overtake it) and duplicates 10% of what the client sends to the
    // relay (nftables in the hosts' namespace; this kernel has no netem). What
    // arrives is intact and arrives once; reordered datagrams inside the window are
    // taken; the association survives.
    let dev = format!("{}-h0", net.name);
    let rules = format!(
        r#"table ip impair {{
  chain out {{
    type filter hook output priority 0;
    ip daddr 10.77.0.1 udp sport != 7 udp dport >= 49152 numgen random mod 100 < 10 drop
    ip daddr 10.77.0.1 udp sport != 7 udp dport >= 49152 numgen random mod 100 < 25 meta priority set 1:20
    ip daddr 10.77.0.1 udp sport != 7 udp dport >= 49152 numgen random mod 100 < 10 dup to 10.77.0.1 device "{dev}"
  }}
}}"#
    );
    std::fs::write(net.dir.join("impair.nft"), rules).unwrap();
    let nft = net.dir.join("impair.nft");
    for cmd in [
        vec![
            "tc", "qdisc", "add", "dev", &dev, "root", "handle", "1:", "htb", "default", "10",
        ],
        vec![
            "tc", "class", "add", "dev", &dev, "parent", "1:", "classid", "1:10", "htb", "rate",
            "10gbit",
        ],
        vec![
            "tc", "class", "add", "dev", &dev, "parent", "1:", "classid", "1:20", "htb", "rate",
            "2mbit", "ceil", "2mbit",
        ],
        vec!["nft", "-f", nft.to_str().unwrap()],
    ] {
        let o = net.in_hosts(&cmd).output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let before = net.log("echo.log").lines().count();
    let replayed_before = n(&net.stats()["cores"][0]["proxy"]["dgram_replayed"]);
    let o = net
        .in_hosts(&[
            "python3",
            script.to_str().unwrap(),
            &iface,
            "10.77.0.1",
            "5300",
            "1000",
            "10.77.0.3:7",
            "impaired",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(n(&r["wrong"]), 0, "{r}");
    assert_eq!(n(&r["twice"]), 0, "{r}");
    // About 90% get through; far fewer would mean the window dropped reordered ones.
    assert!(n(&r["echoed"]) > 800, "{r}");
    // The target saw each datagram at most once, and some out of order.
    let order: Vec<u32> = net
        .log("echo.log")
        .lines()
        .skip(before)
        .filter_map(|l| {
            let hex = l.split(' ').nth(1)?;
            let b: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            (b.get(14..17)? == b"-i-")
                .then(|| std::str::from_utf8(b.get(17..22)?).ok()?.parse().ok())?
        })
        .collect();
    let distinct: std::collections::HashSet<_> = order.iter().collect();
    assert_eq!(
        distinct.len(),
        order.len(),
        "a datagram reached the target twice"
    );
    let late = order.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(late > 10, "reordered datagrams were relayed: {late}");
    let replayed = n(&net.stats()["cores"][0]["proxy"]["dgram_replayed"]) - replayed_before;
    assert!(replayed > 20, "duplicates dropped and counted: {replayed}");
    println!("impaired path: {r}; {late} relayed late; {replayed} duplicates dropped");
    for cmd in [
        vec!["nft", "delete", "table", "ip", "impair"],
        vec!["tc", "qdisc", "del", "dev", &dev, "root"],
    ] {
        let o = net.in_hosts(&cmd).output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // Plain RFC 1928 UDP: refused without plain_udp, served with it.
    let ca = net.dir.join("ca.pem");
    let plain = |server: &str, creds: &[&str]| {
        let mut args = vec![
            "python3",
            "-c",
            PLAIN_UDP,
            ca.to_str().unwrap(),
            server,
            "10.77.0.3:7",
        ];
        args.extend_from_slice(creds);
        let o = net.in_hosts(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(plain("10.77.0.1:1081", &[]), "echo");
    assert_eq!(plain("10.77.0.1:1080", &["alice:correct horse"]), "none");
    let s = net.stats();
    let p = &s["cores"][0]["proxy"];
    assert_eq!(n(&p["socks_associations"]), 3, "{p}");
    assert_eq!(n(&p["dgram_plain_refused"]), 2, "{p}");
    assert!(
        !net.log("tlsocks-1090.log").contains("association ended"),
        "{}",
        net.log("tlsocks-1090.log")
    );

    // tlsocks goes away: its association ends with its control connection, and the
    // access log says what it was.
    net.stop(client);
    let t0 = Instant::now();
    let line = loop {
        let log = net.log("access.log");
        if let Some(l) = log.lines().find(|l| {
            l.contains("socks=udp_associate user=alice")
                && l.contains("bytes_in=")
                && !l.contains("bytes_in=0 ")
        }) {
            break l.to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no access line:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(line.contains("vserver=socks "), "{line}");
    let s = net.stats();
    let p = &s["cores"][0]["stack"];
    assert_eq!(
        n(&p["udp_bound"]),
        n(&p["udp_closed"]),
        "every relay port closed: {p}"
    );
}
