#!/usr/bin/env bash
# Issue 16, fusion: measures RRF (the old default) against z-score fusion (the new default) with
# `triage eval retrieval` on the val and test query halves of each retrieval set, and writes the
# candidates each query's fusion sees for bench/fusion_sweep.py. Sets: python3 bench/retrieval_sets.py.
# Usage: bash bench/fusion_eval.sh [triage binary] [sets...]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/triage}
shift || true
sets=${*:-lcqmc bq banking77 clinc150}
out=data/eval/fusion
mkdir -p "$out"
for s in $sets; do
  d=data/eval/retrieval/$s
  for part in val test; do
    "$bin" eval retrieval --corpus "$d/corpus.jsonl" --queries "$d/queries.$part.jsonl" \
      --cache "data/eval/.cache-retrieval-$s.bin" \
      --fusion '{"method":"rrf","k":60}' --fusion '{"method":"zscore","bm25_weight":0.4}' \
      > "$out/$s.$part.txt"
  done
  "$bin" eval retrieval --corpus "$d/corpus.jsonl" --queries "$d/queries.jsonl" --mode hybrid \
    --cache "data/eval/.cache-retrieval-$s.bin" --candidates "$out/$s.candidates.jsonl" > /dev/null
  echo "$s done"
done
