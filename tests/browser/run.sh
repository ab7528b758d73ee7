#!/usr/bin/env bash
# Browser tests of /chat and /agent: installs what they need on first use (Debian's chromium and a
# CJK font, playwright-core from npm), builds the binary and runs tests/browser/run.mjs.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi wqy; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei >/dev/null
fi
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --silent
(cd ../.. && cargo build -q -p server --locked)
npm test
