#!/usr/bin/env bash
# The exporter under abuse and off loopback: 1,000 slowloris connections (one header byte every
# 0.5 s) while /metrics must answer within 1 s; a POST with a body gets 405; an address other than
# loopback without credentials warns at start and in gpukit_exporter_insecure; TLS and basic
# authentication from a web configuration file, checked with curl. Bounded: the slow clients
# trickle for a few seconds only.
source "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || { echo "curl not installed: skipping"; exit 77; }
command -v openssl >/dev/null || { echo "openssl not installed: skipping"; exit 77; }
command -v htpasswd >/dev/null || { echo "htpasswd (apache2-utils) not installed: skipping"; exit 77; }
cd "$tmp"
export GK_NVML_LIBRARY=/nonexistent

# serve NAME ARGS...: starts gpukit serve, sets $port and $pid.
serve() {
    local name=$1
    shift
    "$G" serve --interval 0.5 "$@" 2>"$name.err" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 1 200); do grep -q 'serving http' "$name.err" && break; sleep 0.05; done
    port=$(sed -n 's|.*serving https*://[^ ]*:\([0-9]*\)/metrics.*|\1|p' "$name.err")
    [ -n "$port" ] || fail "gpukit serve did not start: $(cat "$name.err")"
}
stop() {
    kill -TERM "$pid"
    wait "$pid" || fail "gpukit serve did not stop cleanly"
}

# 1. Slowloris at 1,000 connections: every probe answered within 1 s.
serve plain --listen 127.0.0.1:0
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)"
python3 - "$port" 1000 4 <<'PY' &
import socket, sys, time
port, n, dur = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    socks.append(s)
msg = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
t0, k = time.time(), 0
while time.time() - t0 < dur:
    for s in socks:
        try:
            s.send(msg[k % len(msg):k % len(msg) + 1])
        except OSError:
            pass
    k += 1
    time.sleep(0.5)
PY
slow=$!
sleep 1.5
for i in 1 2 3; do
    code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "http://127.0.0.1:$port/metrics" || true)
    [ "$code" = 200 ] || fail "probe $i during 1,000 slow connections: HTTP $code (not within 1 s)"
    sleep 0.5
done
wait "$slow"
curl -s --max-time 5 "http://127.0.0.1:$port/metrics" >m.txt
evicted=$(sed -n 's/^gpukit_exporter_connections_closed_total{reason="evicted"} //p' m.txt)
[ "${evicted%.*}" -ge 400 ] || fail "expected the oldest waiting connections to be closed, got $evicted"
ok "/metrics answers within 1 s while 1,000 slowloris connections are open"

# 2. POST with a body: 405 with Allow (the connection used to close without an answer).
code=$(curl -s -o post.txt -D post.h --max-time 5 -w '%{http_code}' -X POST -d hello "http://127.0.0.1:$port/metrics")
[ "$code" = 405 ] || fail "POST with a body: HTTP $code, expected 405"
grep -qi '^Allow: GET, HEAD' post.h || fail "405 without Allow: $(cat post.h)"
ok "POST with a body gets 405"
grep -q '^gpukit_exporter_insecure 0' m.txt || fail "loopback should not be insecure"
refuse plain.err "warning"
stop

# 3. Off loopback without credentials: a warning at start and the gauge from the first scrape.
if serve open --listen 0.0.0.0:0 2>/dev/null; then
    expect open.err "warning: 0.0.0.0 is not a loopback address and no credentials are required"
    curl -s --max-time 5 "http://127.0.0.1:$port/metrics" >open.txt || true
    grep -q '^gpukit_exporter_insecure 1' open.txt ||
        fail "gpukit_exporter_insecure should be 1 on 0.0.0.0 without credentials"
    stop
    ok "serving 0.0.0.0 without credentials warns and says so in gpukit_exporter_insecure"
fi

# 4. TLS and basic authentication (certificates made here, for 127.0.0.1).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key \
    -out server.crt -days 2 -subj "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
hash=$(htpasswd -nbBC 10 "" "s3cret pass" | tr -d ':\n')
cat >web.yml <<YML
# TLS and basic authentication for gpukit serve
tls_server_config:
  cert_file: server.crt
  key_file: server.key
basic_auth_users:
  prometheus: '$hash'
YML
serve tls --listen 0.0.0.0:0 --web-config "$tmp/web.yml"
expect tls.err "serving https://0.0.0.0:$port/metrics (basic authentication)"
refuse tls.err "warning"
url="https://127.0.0.1:$port/metrics"
code=$(curl -s -o /dev/null --max-time 5 --cacert server.crt -w '%{http_code}' "$url")
[ "$code" = 401 ] || fail "no credentials: HTTP $code, expected 401"
code=$(curl -s -o /dev/null --max-time 5 --cacert server.crt -u prometheus:wrong -w '%{http_code}' "$url")
[ "$code" = 401 ] || fail "wrong password: HTTP $code, expected 401"
code=$(curl -s -o /dev/null --max-time 5 --cacert server.crt -u other:'s3cret pass' -w '%{http_code}' "$url")
[ "$code" = 401 ] || fail "unknown user: HTTP $code, expected 401"
curl -s --max-time 5 --cacert server.crt -u 'prometheus:s3cret pass' "$url" >tls.txt
grep -q '^gpukit_exporter_insecure 0' tls.txt || fail "an authenticated scrape failed: $(head -c 300 tls.txt)"
grep -q '^gpukit_exporter_auth_failures_total 3' tls.txt || fail "auth failures not counted"
code=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "http://127.0.0.1:$port/metrics" || true)
[ "$code" != 200 ] || fail "plain HTTP was served on the TLS port"
code=$(curl -s -o /dev/null --max-time 5 --cacert server.crt -u 'prometheus:s3cret pass' \
    -w '%{http_code}' "https://127.0.0.1:$port/healthz")
[ "$code" = 200 ] || fail "/healthz with credentials: HTTP $code"
code=$(curl -s -o /dev/null --max-time 5 --cacert server.crt -w '%{http_code}' "https://127.0.0.1:$port/healthz")
[ "$code" = 401 ] || fail "/healthz without credentials: HTTP $code, expected 401"
curl -s -o /dev/null --max-time 5 --cacert server.crt --tls-max 1.1 "$url" &&
    fail "TLS 1.1 was accepted"
stop
ok "TLS with basic authentication: 401 without or with wrong credentials, 200 with them, TLS 1.2+ only"

# 5. A web configuration file that cannot be used: refused at start, naming the file and line.
printf 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n' >bad.yml
status 2 timeout 20 "$G" serve --listen 127.0.0.1:0 --web-config bad.yml 2>err
expect err "web config bad.yml: line 4: client_auth_type RequireAndVerifyClientCert is not supported"
printf 'basic_auth_users:\n  prometheus: hunter2\n' >plain.yml
status 2 timeout 20 "$G" serve --listen 127.0.0.1:0 --web-config plain.yml 2>err
expect err "line 2: the password of \"prometheus\" is not a bcrypt hash"
printf 'tls_server_config:\n  cert_file: server.key\n  key_file: server.crt\n' >swap.yml
status 2 timeout 20 "$G" serve --listen 127.0.0.1:0 --web-config swap.yml 2>err
expect err "cannot start TLS on 127.0.0.1:0"
ok "unusable web configuration files are refused at start with the reason"
done_cases
