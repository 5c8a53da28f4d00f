#!/usr/bin/env bash
# A real Prometheus (Debian package prometheus) scrapes `gpukit serve` over TLS with basic
# authentication, configured as docs/monitor.md shows: certificates made here with openssl, the
# password hashed with htpasswd. The target must be up and a gpukit series queryable; a second
# job with a wrong password must be down with 401. Skipped when a tool is missing; every wait
# is bounded.
set -euo pipefail
: "${GPUKIT:?GPUKIT must name the gpukit binary}"
for t in prometheus curl python3 openssl htpasswd; do
    command -v "$t" >/dev/null || { echo "$t not installed: skipping"; exit 77; }
done
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cd "$tmp"

# The exporter's side: a certificate for 127.0.0.1, a bcrypt hash, the web configuration file.
openssl req -x509 -newkey rsa:2048 -nodes -keyout gpukit.key -out gpukit.crt -days 2 \
    -subj "/CN=gpukit test" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
echo "correct horse" >password
hash=$(htpasswd -nbBC 10 "" "$(cat password)" | tr -d ':\n')
cat >web.yml <<EOF2
tls_server_config:
  cert_file: gpukit.crt
  key_file: gpukit.key
basic_auth_users:
  prometheus: $hash
EOF2
GK_NVML_LIBRARY=/nonexistent.so "$GPUKIT" serve --listen 127.0.0.1:0 --interval 0.5 \
    --web-config web.yml 2>serve.err &
pids+=($!)
for _ in $(seq 1 200); do grep -q 'serving https' serve.err && break; sleep 0.05; done
port=$(sed -n 's|.*serving https://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' serve.err)
[ -n "$port" ] || fail "gpukit serve did not start: $(cat serve.err)"

# Prometheus's side: scheme https, the certificate as CA, basic_auth with a password file.
echo "wrong horse" >wrong
cat >prometheus.yml <<EOF2
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: gpukit
    scheme: https
    tls_config:
      ca_file: $tmp/gpukit.crt
    basic_auth:
      username: prometheus
      password_file: $tmp/password
    static_configs:
      - targets: ['127.0.0.1:$port']
  - job_name: intruder
    scheme: https
    tls_config:
      ca_file: $tmp/gpukit.crt
    basic_auth:
      username: prometheus
      password_file: $tmp/wrong
    static_configs:
      - targets: ['127.0.0.1:$port']
EOF2
pport=$(free_port)
prometheus --config.file=prometheus.yml --storage.tsdb.path=data \
    --web.listen-address="127.0.0.1:$pport" >prom.log 2>&1 &
pids+=($!)
api="http://127.0.0.1:$pport/api/v1"

targets=""
for _ in $(seq 1 150); do
    targets=$(curl -s --max-time 2 "$api/targets" || true)
    python3 -c '
import json,sys
t={x["labels"]["job"]:x for x in json.loads(sys.argv[1])["data"]["activeTargets"]}
sys.exit(0 if t["gpukit"]["health"]=="up" and t["intruder"]["health"]=="down" else 1)' "$targets" 2>/dev/null && break
    sleep 0.2
done
python3 -c '
import json,sys
t={x["labels"]["job"]:x for x in json.loads(sys.argv[1])["data"]["activeTargets"]}
g,i=t["gpukit"],t["intruder"]
assert g["health"]=="up" and g["scrapeUrl"].startswith("https://"), g
assert i["health"]=="down" and "401" in i["lastError"], i' "$targets" ||
    fail "targets: $targets"
n=0
for _ in $(seq 1 50); do
    n=$(curl -s --max-time 2 "$api/query?query=gpukit_exporter_insecure%7Bjob%3D%22gpukit%22%7D" |
        grep -o '"value":\[[0-9.]*,"0"\]' | wc -l || true)
    [ "$n" -ge 1 ] && break
    sleep 0.2
done
[ "$n" -ge 1 ] || fail "gpukit_exporter_insecure not queryable through the TLS scrape"
echo "prometheus_tls.sh: scraped over TLS with basic authentication; a wrong password gets 401"
