#!/usr/bin/env bash
# Renders the HTML report of a real run of examples/train in headless Chromium (Debian package:
# chromium) and checks what a reader sees: the advice before the charts, the parts of the run
# under their headings in order, the loss on a log scale, a pool's bytes in use and reserved on
# one chart, the batch finder's answer in a table of values, no chart for a series that holds
# one value, and a screenshot with the charts drawn. Keeps the screenshot in the build tree as
# an artifact. Skipped (77) when Chromium is not installed or the examples are not built.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}" "${GK_BINARY_DIR:?}"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    echo "skipped: headless Chromium not installed (Debian package: chromium)"
    exit 77
fi
train="$GK_BINARY_DIR/examples/train"
[ -x "$train" ] || { echo "skipped: examples not built (GK_EXAMPLES=OFF)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
bash "$GK_SOURCE_DIR/tests/support/report_page.sh" "$GPUKIT" "$train" "$tmp" ||
    { cat "$tmp/report.txt" 2>/dev/null; fail "report_page.sh failed"; }
mkdir -p "$GK_BINARY_DIR/tests/artifacts"
shot="$GK_BINARY_DIR/tests/artifacts/run_report.png"
cp "$tmp/report.png" "$shot"

python3 - "$tmp/run.jsonl" "$tmp/dom.html" "$shot" <<'PY'
import json, struct, sys, zlib
from html.parser import HTMLParser

# The series of the recording, and which of them hold one value (as gpukit report reads it:
# every value equal, or a counter that never grows after its first increment).
values = {}
kinds = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["type"] == "sample":
        for k, v in r["v"].items():
            if v is not None:
                values.setdefault(k, []).append(v)
                kinds[k] = "sample"
    elif r["type"] == "metric":
        name = r["name"] + ("{%s}" % r["tags"] if r.get("tags") else "")
        values.setdefault(name, []).append(r["value"])
        kinds[name] = r["kind"]
def single(name):
    v = values[name]
    return all(x == 0 for x in v[1:]) if kinds[name] == "c" else min(v) == max(v)

class Page(HTMLParser):
    """The parts of the page a reader meets, in order."""
    def __init__(self):
        super().__init__()
        self.order = []      # ("h2", text) and ("figure", attrs) in page order
        self.figures = []    # {"attrs", "series": [...], "caption": text}
        self.values = {}     # table id -> {series: value}
        self.tables = set()
        self.stack, self.fig, self.row, self.table, self.h2 = [], None, None, None, None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self.h2 = ""
        elif tag == "figure":
            self.fig = {"attrs": a, "series": [], "caption": ""}
            self.figures.append(self.fig)
            self.order.append(("figure", a))
        elif tag == "g" and a.get("class") == "series" and self.fig is not None:
            self.fig["series"].append(a["data-series"])
        elif tag == "table":
            self.table = a.get("id")
            self.tables.add(self.table)
            if "values" in (a.get("class") or ""):
                self.values[self.table] = {}
        elif tag == "tr":
            self.row = []
        elif tag == "td" and self.row is not None:
            self.row.append("")
        self.stack.append(tag)
    def handle_endtag(self, tag):
        if tag == "h2":
            self.order.append(("h2", self.h2.strip()))
            self.h2 = None
        elif tag == "figure":
            self.fig = None
        elif tag == "tr":
            if self.row and self.table in self.values:
                self.values[self.table][self.row[0]] = self.row[1]
            self.row = None
        elif tag == "table":
            self.table = None
        if self.stack:
            self.stack.pop()
    def handle_data(self, d):
        if self.h2 is not None:
            self.h2 += d
        if self.fig is not None and "figcaption" in self.stack:
            self.fig["caption"] += d
        if self.row is not None and self.row and self.stack[-1] == "td":
            self.row[-1] += d

p = Page()
p.feed(open(sys.argv[2]).read())
assert "summary" in p.tables, "the statistics table did not render"
heads = [t for k, t in p.order if k == "h2"]
parts = ["GPU", "Host and process tree", "Pool memory", "Loader", "Batch finder",
         "The program's series"]
seen = [h for h in heads if h in parts]
assert seen == sorted(seen, key=parts.index), ("parts out of order", heads)
for want in parts[1:]:  # no GPU on a machine without one; the rest are all in this run
    assert want in seen, (want, heads)
first_chart = next(i for i, (k, _) in enumerate(p.order) if k == "figure")
assert p.order.index(("h2", "Advice")) < first_chart, ("advice after the charts", heads)
assert heads.index("Statistics") > heads.index("The program's series"), heads

def figure_of(name):
    return [f for f in p.figures if name in f["series"]]
loss = figure_of("train_loss")
assert len(loss) == 1 and loss[0]["attrs"]["data-scale"] == "log", loss
assert "log scale" in loss[0]["caption"], loss[0]["caption"]
pool = figure_of("gpukit_alloc_in_use_bytes{device:host,pool:default}")
assert len(pool) == 1 and pool[0]["series"] == [
    "gpukit_alloc_in_use_bytes{device:host,pool:default}",
    "gpukit_alloc_reserved_bytes{device:host,pool:default}"], pool
batch = p.values.get("values-batch", {})
assert batch.get("gpukit_batch_size{device:host}") == "1024", batch

# Every series is drawn once or listed once; a series that holds one value is listed, or drawn
# beside one that moves (a pool's reserved bytes against its bytes in use), never charted alone.
drawn = [s for f in p.figures for s in f["series"]]
listed = [s for t in p.values.values() for s in t]
assert sorted(drawn + listed) == sorted(values), (sorted(drawn + listed), sorted(values))
for f in p.figures:
    assert not all(single(s) for s in f["series"]), ("a chart of single values", f)
for s in values:
    assert single(s) or s in drawn, (s, values[s][:5])
    assert not single(s) or s in listed or s.startswith("gpukit_alloc_"), (s, values[s][:5])
assert any(n.startswith("gpukit_batch_") for n in listed)

# The screenshot: a PNG of the window, with chart lines (the first line colour) in it.
data = open(sys.argv[3], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
assert w >= 800 and h >= 1000 and depth == 8 and ctype in (2, 6), (w, h, depth, ctype)
idat, pos = b"", 8
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    if kind == b"IDAT":
        idat += data[pos + 8:pos + 8 + n]
    pos += 12 + n
raw, bpp = zlib.decompress(idat), 3 if ctype == 2 else 4
stride, prev, blue = w * bpp, bytearray(w * bpp), 0
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        r, g, bl = line[x], line[x + 1], line[x + 2]
        blue += abs(r - 0x2f) < 24 and abs(g - 0x6d) < 24 and abs(bl - 0xb5) < 24
    prev = line
assert blue > 200, ("no chart line in the screenshot", blue)
PY
echo "run_html_browser: ok (screenshot $shot)"
