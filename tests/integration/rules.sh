#!/usr/bin/env bash
# The shipped Prometheus rules: promtool checks their syntax and runs their unit tests
# (contrib/prometheus/gpukit-rules.test.yml). Skipped when promtool (Debian package prometheus) is absent.
set -euo pipefail
: "${GK_SOURCE_DIR:?}"
command -v promtool >/dev/null || { echo "promtool not installed: skipping"; exit 77; }
cd "$GK_SOURCE_DIR/contrib/prometheus"
promtool check rules gpukit-rules.yml
promtool test rules gpukit-rules.test.yml
