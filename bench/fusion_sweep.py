#!/usr/bin/env python3
"""Compares hybrid fusion rules offline on the candidates `triage eval retrieval --candidates` wrote
(issue 16: a fusion that keeps the best hit).

Each candidates line holds what hybrid search fuses for one query (k = 10): the BM25 list
([id, score, cosine], best first) and the vector list ([id, cosine], best first), each 50 deep.
Every rule below re-ranks exactly those candidates; `rrf60` reproduces the index's RRF (the check
that this script and the Rust code agree is that its row matches `triage eval retrieval`'s hybrid
row). Rules with parameters are swept on the `val` queries; the parameter that wins there is then
reported on the `test` queries.

Usage:
  python3 bench/fusion_sweep.py data/eval/fusion data/eval/retrieval lcqmc bq banking77 clinc150
"""
import json
import math
import os
import struct
import sys
from collections import defaultdict


def f32(x):
    """Rounds to f32, as the index computes (so ties break as they do there)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def load(cand_path, queries_path):
    """Candidates of the queries in `queries_path` (matched by text)."""
    wanted = set()
    with open(queries_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                wanted.add(json.loads(line)["text"])
    out = []
    with open(cand_path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["text"] in wanted:
                out.append(d)
    return out


def order_key(doc_id):
    """Tie-break like the index: by internal id, i.e. insertion (corpus) order."""
    tail = doc_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else doc_id


class Query:
    """One query's candidates: id -> (bm25 score, bm25 rank, cosine, vector rank)."""

    def __init__(self, d):
        self.relevant = set(d["relevant"])
        self.bm25 = [(i, s) for i, s, _ in d["bm25"]]
        self.vec = [(i, c) for i, c in d["vector"]]
        self.cand = {}
        for r, (i, s, c) in enumerate(d["bm25"], 1):
            self.cand[i] = [s, r, c, None]
        for r, (i, c) in enumerate(d["vector"], 1):
            e = self.cand.setdefault(i, [None, None, c, None])
            e[2] = c if c is not None else e[2]
            e[3] = r

    def rank_of_first_relevant(self, scores):
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], order_key(kv[0])))[:10]
        for r, (i, _) in enumerate(ranked, 1):
            if i in self.relevant:
                return r
        return None


def metrics(ranks):
    n = len(ranks)
    at = lambda k: sum(1 for r in ranks if r is not None and r <= k) / n
    mrr = sum(1.0 / r for r in ranks if r is not None and r <= 10) / n
    return {"r@1": at(1), "r@5": at(5), "r@10": at(10), "mrr": mrr, "n": n}


# ---------------------------------------------------------------- fusion rules


def single(q, which):
    lst = q.bm25 if which == "bm25" else q.vec
    return {i: s for i, s in lst}


def rrf(q, k):
    out = {}
    for i, (s, rb, c, rv) in q.cand.items():
        out[i] = f32((f32(1.0 / f32(k + rb)) if rb else 0.0) + (f32(1.0 / f32(k + rv)) if rv else 0.0))
    return out


def weighted(q, w):
    """The index's `weighted`: w * bm25 / max + (1 - w) * cosine."""
    mx = max((e[0] for e in q.cand.values() if e[0] is not None), default=0.0)
    out = {}
    for i, (s, rb, c, rv) in q.cand.items():
        b = s / mx if s is not None and mx > 0 else 0.0
        out[i] = w * b + (1 - w) * (c or 0.0)
    return out


def minmax(q, w):
    """Relative score fusion: each retriever's scores min-max normalised over its own list;
    the BM25-only candidates keep their cosine (normalised on the vector list's range)."""
    bs = [s for _, s in q.bm25]
    cs = [c for _, c in q.vec if c is not None]
    bmin, bmax = (min(bs), max(bs)) if bs else (0.0, 0.0)
    cmin, cmax = (min(cs), max(cs)) if cs else (0.0, 0.0)
    out = {}
    for i, (s, rb, c, rv) in q.cand.items():
        b = norm(s, bmin, bmax) if s is not None else 0.0
        v = norm(c, cmin, cmax) if c is not None and cs else 0.0
        out[i] = w * b + (1 - w) * v
    return out


def norm(x, lo, hi):
    """x on the range [lo, hi] as 0..1 (clamped); a one-point range gives 1 at or above it."""
    if hi > lo:
        return min(1.0, max(0.0, (x - lo) / (hi - lo)))
    return 1.0 if x >= hi else 0.0


def zscore(q, w):
    """Distribution-based: each list's scores as z-scores; a candidate missing from a list
    gets that list's lowest z."""
    def z(lst):
        xs = [s for _, s in lst if s is not None]
        if len(xs) < 2:
            return {i: 0.0 for i, _ in lst}, 0.0
        m = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs)) or 1.0
        zs = {i: (s - m) / sd for i, s in lst if s is not None}
        return zs, min(zs.values())
    zb, lowb = z(q.bm25)
    zv, lowv = z(q.vec)
    return {i: w * zb.get(i, lowb) + (1 - w) * zv.get(i, lowv) for i in q.cand}


def zscore_cos(q, w):
    """As `zscore`, but a BM25-only candidate's cosine (known for every candidate) is
    standardised on the vector list's mean and deviation instead of taking its lowest z."""
    def stats(xs):
        if len(xs) < 2:
            return 0.0, 1.0
        m = sum(xs) / len(xs)
        return m, math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs)) or 1.0
    mb, sb = stats([s for _, s in q.bm25])
    mv, sv = stats([c for _, c in q.vec if c is not None])
    lowb = min(((s - mb) / sb for _, s in q.bm25), default=0.0)
    out = {}
    for i, (s, rb, c, rv) in q.cand.items():
        b = (s - mb) / sb if s is not None else lowb
        v = (c - mv) / sv if c is not None else 0.0
        out[i] = w * b + (1 - w) * v
    return out


def top_hit(q, k, tb, tv):
    """RRF (k), but a retriever's first hit that leads its second by a margin goes first:
    BM25's when (s1 - s2) / s1 >= tb, else the vectors' when c1 - c2 >= tv."""
    out = rrf(q, k)
    lead = None
    if len(q.bm25) >= 2 and q.bm25[0][1] > 0 and (q.bm25[0][1] - q.bm25[1][1]) / q.bm25[0][1] >= tb:
        lead = q.bm25[0][0]
    elif len(q.vec) >= 2 and q.vec[0][1] - q.vec[1][1] >= tv:
        lead = q.vec[0][0]
    if lead is not None:
        out[lead] = max(out.values()) + 1.0
    return out


def rrf_cos(q, k, lam):
    """RRF plus a share of each candidate's cosine and normalised BM25 (a score-aware tie-break)."""
    base = rrf(q, k)
    mx = max((e[0] for e in q.cand.values() if e[0] is not None), default=0.0)
    return {
        i: base[i] + lam * ((e[2] or 0.0) + (e[0] / mx if e[0] is not None and mx > 0 else 0.0))
        for i, e in q.cand.items()
    }


def agree_first(q, k, w):
    """Weighted score (w, the index's `weighted`) for the first hit; RRF (k) for the rest."""
    ws = weighted(q, w)
    first = max(ws.items(), key=lambda kv: (kv[1], -order_key(kv[0])))[0]
    out = rrf(q, k)
    out[first] = max(out.values()) + 1.0
    return out


def grid(lo, hi, step):
    n = int(round((hi - lo) / step))
    return [round(lo + i * step, 4) for i in range(n + 1)]


RULES = {
    "bm25": (lambda q: single(q, "bm25"), [()]),
    "vector": (lambda q: single(q, "vector"), [()]),
    "rrf": (rrf, [(k,) for k in [0, 1, 2, 5, 10, 20, 30, 60, 100]]),
    "weighted": (weighted, [(w,) for w in grid(0, 1, 0.05)]),
    "minmax": (minmax, [(w,) for w in grid(0, 1, 0.05)]),
    "zscore": (zscore, [(w,) for w in grid(0, 1, 0.05)]),
    "zscore_cos": (zscore_cos, [(w,) for w in grid(0, 1, 0.05)]),
    "top_hit": (top_hit, [(60, tb, tv) for tb in [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 9] for tv in [0.01, 0.02, 0.03, 0.05, 0.08, 9]]),
    "rrf_cos": (rrf_cos, [(60, lam) for lam in [0.001, 0.002, 0.005, 0.01, 0.02, 0.05]]),
    "agree_first": (agree_first, [(60, w) for w in grid(0, 1, 0.05)]),
}


def run(queries, rule, params):
    fn = RULES[rule][0]
    return metrics([q.rank_of_first_relevant(fn(q, *params)) for q in queries])


def main():
    cand_dir, sets_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    data = {}
    for name in names:
        cand = os.path.join(cand_dir, f"{name}.candidates.jsonl")
        data[name] = {
            part: [Query(d) for d in load(cand, os.path.join(sets_dir, name, f"queries.{part}.jsonl"))]
            for part in ("val", "test")
        }
    # Every rule and parameter on every set's val half.
    table = defaultdict(dict)
    for rule, (_, plist) in RULES.items():
        for params in plist:
            for name in names:
                table[(rule, params)][name] = run(data[name]["val"], rule, params)
    # Per rule: the parameter with the best mean recall@1 over the sets on val (ties: recall@10).
    print("## val: best parameter per rule (mean over sets), then every set")
    best = {}
    for rule, (_, plist) in RULES.items():
        def key(p):
            rows = table[(rule, p)]
            return (sum(r["r@1"] for r in rows.values()), sum(r["r@10"] for r in rows.values()))
        best[rule] = max(plist, key=key)
    for rule, p in best.items():
        cells = " | ".join(f"{table[(rule, p)][n]['r@1']:.4f} / {table[(rule, p)][n]['r@10']:.4f}" for n in names)
        print(f"| {rule}{p} | {cells} |")
    print()
    print("## test: each rule with its val parameter (recall@1 / recall@10 / MRR@10)")
    print("| rule | " + " | ".join(names) + " |")
    for rule, p in best.items():
        cells = []
        for n in names:
            m = run(data[n]["test"], rule, p)
            cells.append(f"{m['r@1']:.4f} / {m['r@10']:.4f} / {m['mrr']:.4f}")
        print(f"| {rule}{p} | " + " | ".join(cells) + " |")
    if os.environ.get("SWEEP_ALL"):
        print()
        print("## val: every parameter (recall@1 / recall@10)")
        for (rule, p), rows in table.items():
            cells = " | ".join(f"{rows[n]['r@1']:.4f} / {rows[n]['r@10']:.4f}" for n in names)
            print(f"| {rule}{p} | {cells} |")


if __name__ == "__main__":
    main()
