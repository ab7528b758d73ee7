#!/usr/bin/env bash
# Fuzzes the live service against its own OpenAPI document with schemathesis
# (property-based: requests generated from the document, positive and
# negative, every check): no 5xx, every answer documented and shaped as
# documented, every schema-valid request accepted, every invalid one refused.
#
# Starts `target/debug/triage serve` (built if absent) on a free loopback port
# with the demo pack, a fresh data directory in a temporary folder and one
# admin key, waits for /readyz (the real default model: fetched into the model
# cache on first use, as `cargo test` does), then runs schemathesis from a
# virtual environment under target/ that this script creates. Fails on any
# failure, or when the run is over its time budget.
#
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 10)
#   SCHEMATHESIS_SEED          random seed (default fixed, so runs repeat)
#   SCHEMATHESIS_BUDGET_S      time budget of the run in seconds (default 480)
#   TRIAGE_BIN                 the binary to serve (default target/debug/triage)
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
examples=${SCHEMATHESIS_MAX_EXAMPLES:-10}
seed=${SCHEMATHESIS_SEED:-20261204}
budget=${SCHEMATHESIS_BUDGET_S:-480}
venv=target/schemathesis-venv

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi

bin=${TRIAGE_BIN:-target/debug/triage}
if [ ! -x "$bin" ]; then
  cargo build --locked -p server --bin triage
fi

work=$(mktemp -d)
key="st-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
"$bin" serve --addr 127.0.0.1:0 --data-dir "$work/data" --pack fixtures/demo-pack \
  --api-key "$key=:admin" >"$work/stdout" 2>"$work/stderr" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$venv/bin/python" - "$work/stdout" "$pid" <<'PY'
import os, re, sys, time, urllib.request
out, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 600
url = None
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("schemathesis.sh: the server exited before it was ready")
    if url is None:
        m = re.search(r"^triage: listening on (\S+)", open(out).read(), re.M)
        url = m and m.group(1)
    if url:
        try:
            if urllib.request.urlopen(url + "/readyz", timeout=5).status == 200:
                open(out + ".url", "w").write(url)
                sys.exit(0)
        except Exception:
            pass
    time.sleep(0.5)
sys.exit("schemathesis.sh: the server was not ready within 600 s")
PY
url=$(cat "$work/stdout.url")

echo "[schemathesis] $version against $url: --max-examples $examples --seed $seed (budget ${budget}s)"
start=$(date +%s)
status=0
# From the temporary folder: schemathesis keeps a crash cache in its working directory.
# Answers must come within the service's own request timeout (30 s; then 504).
root=$(pwd)
(cd "$work" && timeout "$budget" "$root/$venv/bin/schemathesis" \
  --config-file "$root/scripts/schemathesis.toml" run "$url/v1/openapi.json" \
  --checks all --max-examples "$examples" --seed "$seed" --generation-database none \
  --request-timeout 45 --max-response-time 30 --no-color --report-dir "$work/report" \
  -H "Authorization: Bearer $key") || status=$?
echo "[schemathesis] finished in $(( $(date +%s) - start ))s with status $status"
if [ "$status" -eq 124 ]; then
  echo "[schemathesis] over the time budget of ${budget}s" >&2
fi
if [ "$status" -ne 0 ]; then
  echo "[schemathesis] server log (last 40 lines):" >&2
  tail -n 40 "$work/stderr" >&2 || true
fi
exit "$status"
