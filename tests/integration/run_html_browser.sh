#!/usr/bin/env bash
# Renders the HTML report in headless Chromium (Debian package: chromium) and checks that the
# charts and tables are laid out with a size; keeps the screenshot in the build tree as an
# artifact. Skipped (77) when Chromium is not installed.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}" "${GK_BINARY_DIR:?}"
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
    echo "skipped: headless Chromium not installed (Debian package: chromium)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
workload="$GK_SOURCE_DIR/tests/support/run_workload.py"
timeout 120 "$GPUKIT" run --interval 0.05 --out "$tmp/a.jsonl" --html "$tmp/run.html" -- \
    python3 "$workload" --burn 0.3 --steps 10 --throughput 100 2>/dev/null
flags=(--headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$tmp/profile")
timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$tmp/run.html" >"$tmp/dom.html" 2>/dev/null
grep -q '<table id="summary">' "$tmp/dom.html" || fail "the summary table did not render"
[ "$(grep -o '<svg ' "$tmp/dom.html" | wc -l)" -ge 5 ] || fail "charts missing from the DOM"
mkdir -p "$GK_BINARY_DIR/tests/artifacts"
shot="$GK_BINARY_DIR/tests/artifacts/run_report.png"
timeout 120 "$browser" "${flags[@]}" --window-size=1100,3000 --screenshot="$shot" \
    "file://$tmp/run.html" >/dev/null 2>&1
[ -s "$shot" ] || fail "no screenshot"
python3 - "$shot" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read(32)
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", data[16:24])
assert w >= 800 and h >= 1000, (w, h)
PY
echo "run_html_browser: ok (screenshot $shot)"
