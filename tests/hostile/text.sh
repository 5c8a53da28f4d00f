#!/usr/bin/env bash
# Text that reaches a terminal has its control characters escaped (text reports, data inspect,
# messages), and extreme values in a recording are left out and counted as overflow instead of
# turning statistics into "-", durations into 300 digits and percentages into "inf%".
source "$(dirname "$0")/lib.sh"
cd "$tmp"
# No raw ESC or BEL byte in a file.
no_controls() {
    if LC_ALL=C grep -q "$(printf '[\033\007]')" "$1"; then
        cat -v "$1" | head -20
        fail "$1 has raw control characters"
    fi
}

python3 - <<'PY'
import json
E = "\x1b]0;pwned\x07\x1b[31m"
lines = [{"type": "meta", "schema": 1, "gpukit": "0.1.0", "command": ["train" + E, "--x"],
          "host": "box" + E, "start_unix": 1.7e9, "start": "2026-01-01T00:00:00Z",
          "interval_s": 0.5, "cores": 2, "memory_total_bytes": 8e9,
          "gpu": {"enabled": False, "reason": "no" + E}, "devices": []}]
for i in range(20):
    lines.append({"type": "sample", "t": 0.5 * i + 0.5,
                  "v": {"host.cpu_ratio": 0.5, "evil" + E: 1.0, "tiny": 1e-300 * (i % 3)}})
    lines.append({"type": "metric", "t": 0.5 * i + 0.6, "name": "loss", "kind": "c",
                  "value": 1.7e308 if i % 2 == 0 else -1.7e308})
    lines.append({"type": "metric", "t": 0.5 * i + 0.6, "name": "step" + E, "kind": "ms",
                  "value": 12.5, "tags": "k:" + E})
lines.append({"type": "metric", "t": 1e300, "name": "late", "kind": "g", "value": 1})
lines.append({"type": "alert", "t": 3, "name": "hot" + E, "labels": "gpu=\"0\"" + E,
              "state": "firing" + E, "value": 1e308})
lines.append({"type": "end", "t": 10, "exit_status": 0, "exit_code": 0, "signal": 0,
              "duration_s": -1e308, "samples": 20, "overruns": 0, "metric_lines": 40,
              "metric_malformed": 0, "metric_dropped": 0, "cpu_seconds": 1e308,
              "max_rss_bytes": -1e308})
open("evil.jsonl", "w").write("\n".join(json.dumps(l) for l in lines) + "\n")
PY

"$G" report evil.jsonl >report.txt 2>&1
no_controls report.txt
expect report.txt "gpukit report: 'train\\\\e]0;pwned\\\\x07\\\\e\\[31m' --x"
expect report.txt 'host box\\e'
expect report.txt '^evil\\e'
expect report.txt 'hot\\e]0;pwned'
ok "escape bytes in the command, host, series and alert names are escaped in the text report"
expect report.txt "exit status 0 after 10.00 s"
expect report.txt "duration_s -1e+308 is out of range (overflow)"
expect report.txt "^loss  *0  *overflow"
expect report.txt "overflow: 20 values beyond +-1e+18 left out"
expect report.txt "line 62: t 1e+300 s is out of range (skipped)"
refuse report.txt "inf"
refuse report.txt "nan"
awk 'length($0) > 400 { exit 1 }' report.txt || fail "a line of more than 400 characters (a 300-digit number?)"
ok "extreme values are counted as overflow, never shown as inf, nan or 300 digits"
"$G" report --json evil.jsonl >report.json
python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
loss=[s for s in d["series"] if s["name"]=="loss"][0]
assert loss["overflow"]==20 and loss["count"]==0, loss
assert d["duration_s"]==10, d["duration_s"]' report.json
ok "the JSON report carries the overflow count"

# A baseline whose medians are tiny: changes and noise stay finite.
"$G" report evil.jsonl --baseline evil.jsonl >cmp.txt 2>&1
refuse cmp.txt "inf%"
refuse cmp.txt "nan%"
no_controls cmp.txt
ok "comparisons of tiny values never print inf%"

# data inspect: an element type with escape bytes (written into a record file's header).
head -c 64 /dev/urandom >ok.bin
"$G" data pack --record-size 4 ok.bin evil.gkr >/dev/null
printf '\033[2J\033]0;x\007' | dd of=evil.gkr bs=1 seek=40 conv=notrunc status=none
"$G" data inspect evil.gkr >inspect.txt 2>&1 || true
no_controls inspect.txt
ok "data inspect escapes the element type"
"$G" data inspect --json evil.gkr >inspect.json 2>&1 || true
no_controls inspect.json
ok "data inspect --json escapes it too"

# Messages quote names given by the user: escaped as well.
status 1 "$G" report "$(printf 'missing\033[31m.jsonl')" 2>err
no_controls err
expect err 'missing\\e\[31m.jsonl'
ok "error messages escape the names they quote"
done_cases
