#!/usr/bin/env bash
# The demo: the appliance on a DPDK net_af_packet port over a veth, proxying real HTTP
# from curl to a backend, then a short bounded load run. Everything it starts it stops,
# and it deletes the namespaces it made. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

tools/setup.sh
echo "== building (release)"
cargo build --release -q -p appliance -p cli -p tools

. tools/lib.sh
test_net demo
HOSTS=("${H[@]}")
echo "== test network: namespaces $NAME-a (appliance) and $NAME-h (clients, backends), veth $NAME-a0 <-> $NAME-h0"

mkdir -p "$WORK/www"
echo "hello from the backend, through the appliance" > "$WORK/www/index.html"
head -c $((64 << 20)) /dev/urandom > "$WORK/www/big.bin"
for ip in 10.77.0.2 10.77.0.3; do
    "${HOSTS[@]}" python3 tools/www.py "$ip" 8080 "$WORK/www" >"$WORK/backend-$ip.log" 2>&1 &
    PIDS+=($!)
done
# A second site, reached on the same HTTPS port by its own name (SNI).
mkdir -p "$WORK/www-admin"
echo "hello from the admin site, chosen by SNI" > "$WORK/www-admin/index.html"
"${HOSTS[@]}" python3 tools/www.py 10.77.0.3 8081 "$WORK/www-admin" >"$WORK/backend-admin.log" 2>&1 &
PIDS+=($!)

echo "== certificates for appliance.test (ECDSA P-256 and RSA-2048, self-signed)"
for k in "ec -pkeyopt ec_paramgen_curve:P-256" "rsa:2048"; do
    n=${k%%[ :]*}
    openssl req -x509 -newkey $k -nodes -days 30 -subj /CN=appliance.test \
        -addext "subjectAltName=DNS:appliance.test,IP:10.77.0.1" \
        -keyout "$WORK/$n.key" -out "$WORK/$n.pem" 2>/dev/null
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=admin.test \
    -addext "subjectAltName=DNS:admin.test" -keyout "$WORK/admin.key" -out "$WORK/admin.pem" 2>/dev/null
cat "$WORK/ec.pem" "$WORK/rsa.pem" "$WORK/admin.pem" > "$WORK/ca.pem"

# A TLS backend for re-encryption: its own CA, a certificate for api.internal, Python's
# HTTPS server on 10.77.0.3:8443.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=backend-ca \
    -keyout "$WORK/bca.key" -out "$WORK/bca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=api.internal \
    -keyout "$WORK/api.key" -out "$WORK/api.csr" 2>/dev/null
echo "subjectAltName=DNS:api.internal" > "$WORK/api.ext"
openssl x509 -req -in "$WORK/api.csr" -CA "$WORK/bca.pem" -CAkey "$WORK/bca.key" -CAcreateserial \
    -days 30 -extfile "$WORK/api.ext" -out "$WORK/api.pem" 2>/dev/null
"${HOSTS[@]}" python3 tools/www.py 10.77.0.3 8443 "$WORK/www" --tls "$WORK/api.pem" "$WORK/api.key" \
    >"$WORK/backend-tls.log" 2>&1 &
PIDS+=($!)

# A SOCKS5-over-TLS user (the password never leaves this directory; the file holds its
# Argon2id hash).
echo "demo password" > "$WORK/socks-pw"
"$ROOT/target/release/appliancectl" hash-password demo < "$WORK/socks-pw" > "$WORK/socks-users"

CPU=$(($(nproc) - 1))
cat > "$WORK/appliance.toml" <<TOML
[dataplane]
driver = "dpdk"
eal_args = ["--no-huge", "--no-pci", "-m", "256", "--vdev=net_af_packet0,iface=$NAME-a0"]
cores = [$CPU]
address = "10.77.0.1/24"

[control]
socket = "$WORK/control.sock"
stats_interval = "0s"
drain_timeout = "5s"            # SIGTERM: open connections get 5 s, then are reset

[log]
access = "$WORK/access.log"     # one line per finished client connection

[metrics]
listen = "127.0.0.1:9464"       # Prometheus text, in the appliance's namespace

[[vserver]]
name = "web"
listen = "10.77.0.1:80"
mode = "tcp"
backends = ["10.77.0.2:8080", { address = "10.77.0.3:8080", weight = 2 }]
[vserver.health]
check = "http"
path = "/index.html"
interval = "1s"

[[vserver]]
name = "secure"
listen = "10.77.0.1:443"
mode = "tls"
backends = ["10.77.0.2:8080", "10.77.0.3:8080"]
[vserver.tls]
certificates = [{ chain = "ec.pem", key = "ec.key" }, { chain = "rsa.pem", key = "rsa.key" }]
alpn = ["http/1.1"]
[vserver.transmit]               # backends speak HTTP: seal a record at each response's end
http = true
psh = false

[[vserver]]
name = "admin"                  # same port: the ClientHello's SNI chooses the vserver
listen = "10.77.0.1:443"
mode = "tls"
backends = ["10.77.0.3:8081"]
[vserver.tls]
certificates = [{ chain = "admin.pem", key = "admin.key" }]
versions = ["1.3"]

[[vserver]]
name = "reenc"                  # TLS in front and behind: re-encrypted towards the backend
listen = "10.77.0.1:8443"
mode = "tls"
backends = ["10.77.0.3:8443"]
[vserver.tls]
certificates = [{ chain = "ec.pem", key = "ec.key" }]
[vserver.backend_tls]
ca = "bca.pem"                  # the backend's chain is verified against this CA,
server_name = "api.internal"    # and its name; sessions to it are resumed

[[vserver]]
name = "socks"                  # SOCKS5 inside TLS: clients name their targets
listen = "10.77.0.1:1080"
mode = "socks5"
[vserver.tls]
certificates = [{ chain = "ec.pem", key = "ec.key" }]
[vserver.socks]
auth = ["password"]
users_file = "socks-users"
allow = ["10.77.0.0/24:8080", "10.77.0.3/32:7"]   # the web servers' port, a UDP echo
TOML
echo "== starting the appliance on CPU $CPU (config: $WORK/appliance.toml)"
ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$WORK/appliance.log" 2>&1 &
PIDS+=($!)
CTL=("$BIN/appliancectl" --socket "$WORK/control.sock")
wait_control "$WORK/control.sock" "$WORK/appliance.log"
"${CTL[@]}" ping
grep -E "DPDK port|vserver|ready" "$WORK/appliance.log" | sed 's/^/   appliance: /'

echo "== ping 10.77.0.1 (answered by the appliance's own stack)"
"${HOSTS[@]}" ping -c 2 -W 2 10.77.0.1 | sed 's/^/   /'

echo "== curl http://10.77.0.1/index.html from $NAME-h"
"${HOSTS[@]}" curl -sS -i --max-time 10 http://10.77.0.1/index.html | sed 's/^/   /'

echo "== 64 MiB download through the appliance, checked byte for byte"
"${HOSTS[@]}" curl -sS --max-time 60 -o "$WORK/got.bin" -w "   %{size_download} bytes in %{time_total}s (%{speed_download} B/s)\n" http://10.77.0.1/big.bin
want=$(sha256sum < "$WORK/www/big.bin"); got=$(sha256sum < "$WORK/got.bin")
if [ "$want" = "$got" ]; then echo "   sha256 matches: ${got%% *}"; else echo "   MISMATCH: $want vs $got"; exit 1; fi

HTTPS=(curl -sS --max-time 60 --cacert "$WORK/ca.pem" --resolve appliance.test:443:10.77.0.1)
for v in "--tlsv1.3" "--tlsv1.2 --tls-max 1.2"; do
    echo "== curl $v https://appliance.test/index.html (TLS terminated by the appliance)"
    "${HOSTS[@]}" "${HTTPS[@]}" $v -i -w "   [%{scheme} verified=%{ssl_verify_result} http=%{http_version}]\n" https://appliance.test/index.html | sed 's/^/   /'
done

echo "== SNI: https://admin.test/ on the same port reaches vserver \"admin\" (its certificate, its backend)"
"${HOSTS[@]}" "${HTTPS[@]}" --resolve admin.test:443:10.77.0.1 -v https://admin.test/index.html 2>&1 \
    | grep -E "SSL connection using|subject:|^hello" | sed 's/^/   /'

echo "== 64 MiB download over HTTPS, checked byte for byte"
"${HOSTS[@]}" "${HTTPS[@]}" -o "$WORK/got-tls.bin" -w "   %{size_download} bytes in %{time_total}s (%{speed_download} B/s)\n" https://appliance.test/big.bin
got=$(sha256sum < "$WORK/got-tls.bin")
if [ "$want" = "$got" ]; then echo "   sha256 matches: ${got%% *}"; else echo "   MISMATCH: $want vs $got"; exit 1; fi

echo "== re-encryption: https://appliance.test:8443/ through vserver \"reenc\" to a TLS backend (5 requests)"
for _ in 1 2 3 4 5; do
    "${HOSTS[@]}" "${HTTPS[@]}" --resolve appliance.test:8443:10.77.0.1 https://appliance.test:8443/index.html
done | sort | uniq -c | sed 's/^/   /'
"${CTL[@]}" show backends | grep -E "^vserver|^reenc" | sed 's/^/   /'

echo "== transmittal conditions: how backend plaintext was sealed into records so far"
"${CTL[@]}" --json stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
p = s["cores"][0]["proxy"]
r, b, g = p["tls_records_out"], p["tls_record_bytes_out"], p["tls_segments_out"]
print(f"   {r} records, {b / max(r, 1):,.0f} plaintext bytes per record, {r / max(g, 1):.2f} records per TCP segment")
print("   sealed at: " + ", ".join(f"{k[8:]} {p[k]}" for k in p if k.startswith("tx_seal_")))
devices = [d["operation"] + " on " + d["device"] for d in s["crypto"]["devices"]]
print("   crypto devices: " + ", ".join(devices[:3]) + ", ...")
'

echo "== load: httpload, 16 concurrent clients, a new TCP connection per request, 3 s (bounded)"
"${HOSTS[@]}" "$BIN/httpload" --target 10.77.0.1:80 --path /index.html --concurrency 16 --duration 3s | sed 's/^/   /'

LG=("$BIN/loadgen" --target 10.77.0.1:443 --sni appliance.test --ca "$WORK/ca.pem" --quiet)
echo "== TLS load: loadgen, full TLS 1.3 handshakes (new connection each, ECDSA P-256, X25519), 16 connections, 4 s (bounded)"
"${HOSTS[@]}" "${LG[@]}" --mode full --tls 1.3 --groups X25519 --concurrency 16 --duration 4s 2>&1 | sed 's/^/   /' &
LOAD=$!
sleep 2.5
echo "== appliancectl stats (sampled over 1 s, during the TLS load)"
"${CTL[@]}" stats | sed 's/^/   /'
wait $LOAD

echo "== TLS resumption: openssl s_client -reconnect (TLS 1.2 ticket; one full handshake, five resumed)"
"${HOSTS[@]}" openssl s_client -connect 10.77.0.1:443 -servername appliance.test -tls1_2 \
    -reconnect -CAfile "$WORK/ca.pem" </dev/null 2>/dev/null | grep -E "^(New|Reused)," | sort | uniq -c | sed 's/^/   /'
for v in 1.3 1.2; do
    echo "== TLS $v resumption load: loadgen --mode resume, 16 connections, 2 s (bounded)"
    "${HOSTS[@]}" "${LG[@]}" --mode resume --tls $v --concurrency 16 --duration 2s 2>&1 | grep -E "ran|handshakes|latency|error" | sed 's/^/   /'
done
echo "== TLS load with loadgen's own engine (our TLS 1.3 client role, verifying), then with its cheapenings (--no-verify --reuse-key-share), 2 s each (bounded): compare 'client cpu'"
"${HOSTS[@]}" "${LG[@]}" --engine own --mode full --concurrency 16 --duration 2s 2>&1 | grep -E "ran|client cpu|error" | sed 's/^/   /'
"${HOSTS[@]}" "${LG[@]}" --engine own --no-verify --reuse-key-share --mode full --concurrency 16 --duration 2s 2>&1 | grep -E "ran|client cpu|error" | sed 's/^/   /'
echo "== HTTPS requests: loadgen --mode request (connect, handshake, GET /index.html, close), 2 s (bounded)"
"${HOSTS[@]}" "${LG[@]}" --mode request --path /index.html --concurrency 16 --duration 2s 2>&1 | grep -E "ran|responses|latency|error" | sed 's/^/   /'

echo "== operating it: appliancectl status, show backends, show certs"
"${CTL[@]}" status | sed 's/^/   /'
"${CTL[@]}" show backends | sed 's/^/   /'
"${CTL[@]}" show certs | grep -E "^vserver|valid" | sed 's/^/   /'
echo "== appliancectl backend drain 10.77.0.3:8080: new connections go to 10.77.0.2 only"
"${CTL[@]}" backend drain 10.77.0.3:8080 | sed 's/^/   /'
"${HOSTS[@]}" "$BIN/httpload" --target 10.77.0.1:80 --path /index.html --concurrency 4 --requests 30 --duration 5s | grep -E "requests|errors" | sed 's/^/   /'
"${CTL[@]}" show backends | sed 's/^/   /'
"${CTL[@]}" backend enable 10.77.0.3:8080 | sed 's/^/   /'
echo "== metrics: a few of the Prometheus series at http://127.0.0.1:9464/metrics"
ip netns exec "$NAME-a" curl -sS --max-time 5 http://127.0.0.1:9464/metrics \
    | grep -E '^appliance_(proxy_tls13_handshakes_total|backend_up|backend_chosen_total)' | sed 's/^/   /'

echo "== the status page: http://127.0.0.1:9464/ (one self-contained page; here its JSON, abridged)"
ip netns exec "$NAME-a" curl -sS --max-time 5 http://127.0.0.1:9464/status.json \
    | python3 -c 'import json,sys; j=json.load(sys.stdin); [print("   ", b["vserver"], b["address"], b["state"]) for b in j["backends"]]'

echo "== SOCKS5 over TLS: tlsocks in $NAME-h as a local SOCKS proxy, curl --socks5 through it"
"${HOSTS[@]}" "$BIN/dgramload" echo --listen 10.77.0.3:7 --seconds 120 2>/dev/null &
PIDS+=($!)
"${HOSTS[@]}" "$BIN/tlsocks" --server 10.77.0.1:1080 --ca "$WORK/ec.pem" --name appliance.test \
    --user demo --password-file "$WORK/socks-pw" --listen 127.0.0.1:1080 \
    --udp 127.0.0.1:5300=10.77.0.3:7 >"$WORK/tlsocks.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do grep -q "SOCKS v5 on" "$WORK/tlsocks.log" && break; sleep 0.1; done
"${HOSTS[@]}" curl -sS --max-time 10 --socks5 127.0.0.1:1080 http://10.77.0.2:8080/index.html | sed 's/^/   /'
echo "   a target the policy does not allow (port 8081):"
"${HOSTS[@]}" curl -sS --max-time 10 --socks5 127.0.0.1:1080 http://10.77.0.3:8081/index.html 2>&1 | sed 's/^/   /' || true
grep 'answered' "$WORK/tlsocks.log" | tail -n 1 | sed 's/^/   /'
echo "   UDP through tlsocks --udp 127.0.0.1:5300=10.77.0.3:7 (secure datagrams to the relay):"
for _ in $(seq 50); do grep -q "association" "$WORK/tlsocks.log" && break; sleep 0.1; done
"${HOSTS[@]}" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
for i in range(3):
    s.sendto(b"hello %d over secure datagrams" % i, ("127.0.0.1", 5300))
    print("   echo:", s.recvfrom(2048)[0].decode())'
"${CTL[@]}" show socks | sed 's/^/   /'
kill "${PIDS[-1]}" "${PIDS[-2]}"; wait "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
PIDS=("${PIDS[@]:0:${#PIDS[@]}-2}")

echo "== reload: a new certificate for appliance.test, swapped in while a 64 MiB HTTPS download runs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=appliance.test \
    -addext "subjectAltName=DNS:appliance.test,IP:10.77.0.1" -keyout "$WORK/ec2.key" -out "$WORK/ec2.pem" 2>/dev/null
"${HOSTS[@]}" "${HTTPS[@]}" --limit-rate 20M -o "$WORK/got-reload.bin" https://appliance.test/big.bin &
DL=$!
sleep 1
echo "   appliancectl show sessions (during the download):"
"${CTL[@]}" show sessions | sed 's/^/   /'
sed -i 's/chain = "ec.pem", key = "ec.key"/chain = "ec2.pem", key = "ec2.key"/' "$WORK/appliance.toml"
"${CTL[@]}" reload | sed 's/^/   /'
echo "   a new connection trusting only the new certificate:"
"${HOSTS[@]}" curl -sS --max-time 10 --cacert "$WORK/ec2.pem" --resolve appliance.test:443:10.77.0.1 \
    -o /dev/null -w "   HTTP %{http_code}, verified against ec2.pem\n" https://appliance.test/index.html
wait $DL
got=$(sha256sum < "$WORK/got-reload.bin")
if [ "$want" = "$got" ]; then echo "   the download that started before the reload: SHA-256 matches"; else echo "   SHA-256 MISMATCH across the reload"; exit 1; fi
echo "== the access log, last three lines ($WORK/access.log)"
tail -n 3 "$WORK/access.log" | sed 's/^/   /'

echo "== stopping the appliance (SIGTERM: ports close, open connections drain)"
kill -TERM "${PIDS[-1]}"; wait "${PIDS[-1]}" || true
unset 'PIDS[-1]'
grep -E "stopping|drained|drain ended|stopped" "$WORK/appliance.log" | sed 's/^/   appliance: /'
echo "== demo done"
