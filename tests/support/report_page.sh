#!/usr/bin/env bash
# The HTML report of a real training run, rendered by headless Chromium (Debian package
# chromium):
#   tests/support/report_page.sh GPUKIT TRAIN OUTDIR [WIDTH HEIGHT]
# trains examples/train (TRAIN, on the host device, over a generated dataset) under
# `gpukit run --html` and leaves in OUTDIR: run.jsonl, report.html, dom.html (the page as
# Chromium parsed it) and report.png (the top of the page in a WIDTH x HEIGHT window, default
# 1000 x 1400). integration_run_html_browser checks these; docs/images/run-report.png is made
# with it (from the build folder, so that the report's header shows short paths):
#   cd build/dev && ../../tests/support/report_page.sh ./gpukit examples/train page &&
#       cp page/report.png ../../docs/images/run-report.png
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: report_page.sh GPUKIT TRAIN OUTDIR [WIDTH HEIGHT]" >&2
    exit 2
fi
gpukit=$1 train=$2 out=$3 width=${4:-1000} height=${5:-1400}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "report_page.sh: chromium is not installed" >&2; exit 1; }
mkdir -p "$out"
data="$out/train.gkr" # as given: the report's header shows the command
page=$(cd "$out" && pwd) # Chromium opens file:// paths
rm -f "$data" "$data.ckpt"
timeout 120 "$train" --device host --data "$data" --dim 32 --generate 60000 --generate-only \
    >/dev/null
# One to three seconds of training on an idle machine: the pool and the loader publish several
# times, the loss falls over three decades, the batch finder's answer stays the same.
timeout 300 "$gpukit" run --interval 0.1 --out "$out/run.jsonl" --html "$out/report.html" -- \
    "$train" --device host --data "$data" --dim 32 --max-batch 1024 --workers 2 --epochs 80 \
    --quiet >"$out/train.out" 2>"$out/report.txt"
flags=(--headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$page/profile")
timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$page/report.html" >"$out/dom.html" \
    2>/dev/null
timeout 120 "$browser" "${flags[@]}" --window-size="$width,$height" \
    --screenshot="$page/report.png" "file://$page/report.html" >/dev/null 2>&1
rm -rf "$page/profile" "$data" "$data.ckpt"
[ -s "$out/report.png" ] || { echo "report_page.sh: Chromium wrote no screenshot" >&2; exit 1; }
