#!/usr/bin/env bash
# The HTML report is one self-contained page: a chart per series (inline SVG), the summary and
# comparison tables, the advice, print styles, no scripts and no external resources.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
workload="$GK_SOURCE_DIR/tests/support/run_workload.py"

timeout 120 "$GPUKIT" run --interval 0.05 --out "$tmp/a.jsonl" --html "$tmp/run.html" -- \
    python3 "$workload" --burn 0.3 --steps 10 --throughput 100 --malformed 1 2>/dev/null
timeout 120 "$GPUKIT" run --interval 0.05 --out "$tmp/b.jsonl" -- \
    python3 "$workload" --burn 0.3 --steps 10 --step-ms 30 --throughput 50 2>/dev/null
"$GPUKIT" report "$tmp/b.jsonl" --baseline "$tmp/a.jsonl" --html "$tmp/cmp.html"

python3 - "$tmp/a.jsonl" "$tmp/run.html" "$tmp/cmp.html" <<'PY'
import json, sys
from html.parser import HTMLParser

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.ids, self.stack, self.text = [], set(), [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.add(a["id"])
        for k, v in a.items():
            if k in ("src", "href") or (v or "").startswith(("http:", "https:")) and k != "xmlns":
                raise AssertionError("external reference %s=%s" % (k, v))
    def handle_data(self, d):
        self.text.append(d)

series = set()
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["type"] == "sample":
        series.update(k for k, v in r["v"].items() if v is not None)
    elif r["type"] == "metric":
        series.add(r["name"] + ("{%s}" % r["tags"] if r.get("tags") else ""))

for path, with_cmp in ((sys.argv[2], False), (sys.argv[3], True)):
    html = open(path).read()
    p = Page()
    p.feed(html)
    names = [t for t, _ in p.tags]
    assert "script" not in names and "link" not in names and "img" not in names, path
    assert "summary" in p.ids and ("comparison" in p.ids) == with_cmp, (path, p.ids)
    svgs = [a for t, a in p.tags if t == "svg"]
    assert len(svgs) >= len(series) - 1, (len(svgs), sorted(series))
    for a in svgs:
        assert int(a["width"]) > 0 and int(a["height"]) > 0, a
    assert names.count("polyline") + names.count("circle") >= len(svgs), path
    rows = sum(1 for t, _ in p.tags if t == "tr")
    assert rows >= len(series), (rows, len(series))
    text = " ".join(p.text)
    assert "@media print" in html and "Advice" in text, path
    if not with_cmp:
        assert "metric-lines-refused" in text, text[:2000]
    else:
        assert "regression" in text and "step_time" in text
PY
echo "run_html: ok"
