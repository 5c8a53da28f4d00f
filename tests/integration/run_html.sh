#!/usr/bin/env bash
# The HTML report is one self-contained, valid HTML5 page (html5lib's strict parser, Debian
# python3-html5lib): every series on an inline SVG chart or in a table of single values, the
# statistics and comparison tables, the advice, print styles, no scripts and no external
# resources.
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

/usr/bin/python3 - "$tmp/a.jsonl" "$tmp/run.html" "$tmp/cmp.html" <<'PY'
import json, sys
from html.parser import HTMLParser
import html5lib

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.ids, self.stack, self.text = [], set(), [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            assert a["id"] not in self.ids, ("duplicate id", a["id"])
            self.ids.add(a["id"])
        for k, v in a.items():
            local = k == "href" and (v or "").startswith("#")  # the contents' links
            if k in ("src", "href") and not local or (v or "").startswith(("http:", "https:")) and k != "xmlns":
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
    html5lib.HTMLParser(strict=True).parse(html)  # raises on any parse error
    p = Page()
    p.feed(html)
    names = [t for t, _ in p.tags]
    assert "script" not in names and "link" not in names and "img" not in names, path
    assert "summary" in p.ids and ("comparison" in p.ids) == with_cmp, (path, p.ids)
    svgs = [a for t, a in p.tags if t == "svg"]
    for a in svgs:
        assert int(a["width"]) > 0 and int(a["height"]) > 0, a
        assert a["role"] == "img" and len(a["aria-labelledby"].split()) == 2, a
    drawn = [a["data-series"] for t, a in p.tags if t == "g" and a.get("class") == "series"]
    # the page's title, and a title and description per chart and a title per line
    assert names.count("title") == 1 + len(svgs) + len(drawn), path
    assert names.count("desc") == len(svgs), path
    assert names.count("polyline") + names.count("circle") >= len(drawn), path
    text = " ".join(p.text)
    for s in series:  # on a chart, or a row of the values table (statistics rows aside)
        assert s in drawn or text.count(s) >= 2, (s, drawn)
    rows = sum(1 for t, _ in p.tags if t == "tr")
    assert rows >= len(series), (rows, len(series))
    assert "@media print" in html and "Advice" in text, path
    if not with_cmp:
        assert "metric-lines-refused" in text, text[:2000]
        # step_time and the throughput move (jitter); batches grows: all three are charts
        for s in ("step_time", "samples_per_second{phase:train}", "batches"):
            assert s in drawn, (s, drawn)
    else:
        assert "regression" in text and "step_time" in text
PY
# Names and text from the program and the machine, hostile ones included (markup, quotes,
# control characters, bytes that are not UTF-8, a label closing the chart's svg): still one
# valid page, with the names shown as text.
printf '%s\n' \
    '{"type":"meta","schema":1,"gpukit":"0.2.0","command":["a\u0007b","<script>x</script>"],"host":"h\u001b[31m\"","start_unix":1,"interval_s":0.5,"cores":1,"memory_total_bytes":1,"gpu":{"enabled":false,"reason":"<b>r</b>"},"devices":[]}' \
    '{"type":"metric","t":1,"name":"m<i>","kind":"g","value":1,"tags":"rank:</svg>"}' \
    '{"type":"metric","t":2,"name":"m<i>","kind":"g","value":2,"tags":"rank:</svg>"}' \
    '{"type":"metric","t":1,"name":"m<i>","kind":"g","value":3,"tags":"rank:2"}' \
    '{"type":"metric","t":2,"name":"m<i>","kind":"g","value":1,"tags":"rank:2"}' \
    '{"type":"alert","t":1,"name":"a&b","labels":"gpu=\"<0>\"","state":"firing","value":1}' \
    >"$tmp/hostile.jsonl"
printf '{"type":"metric","t":3,"name":"bytes\377\376","kind":"g","value":1}\n' >>"$tmp/hostile.jsonl"
"$GPUKIT" report "$tmp/hostile.jsonl" --html "$tmp/hostile.html" 2>/dev/null
/usr/bin/python3 - "$tmp/hostile.html" <<'PY'
import sys
import html5lib
html = open(sys.argv[1], encoding="utf-8", errors="strict").read()
html5lib.HTMLParser(strict=True).parse(html)
for bad in ("<script", "<b>", "<i>", "<0>", "\x07", "\x1b"):
    assert bad not in html, bad
assert html.count("</svg>") == html.count("<svg "), "a label closed a chart"
assert "a\\x07b" in html and "m&lt;i&gt;{rank:&lt;/svg&gt;}" in html
PY
echo "run_html: ok"
