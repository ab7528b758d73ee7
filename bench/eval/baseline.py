#!/usr/bin/env python3
"""The issue's baseline on our own splits: plain logistic regression (scikit-learn
defaults, C=1) on the default model's query embeddings.

It reads the vectors the Rust evaluation cached (data/eval/.cache-*.bin, written by
`cargo run --release -p triage --example eval`), so both see identical embeddings.

Usage: bench/.venv/bin/python bench/eval/baseline.py CACHE TRAIN.jsonl TEST.jsonl [--oos-label oos] [--threshold 0.5] [--C 1.0]
(needs numpy and scikit-learn: python3 -m venv bench/.venv && bench/.venv/bin/pip install numpy scikit-learn)
"""

import argparse
import json
import struct

import numpy as np
from sklearn.linear_model import LogisticRegression


def read_cache(path):
    """Returns {(kind, text): vector} from a TEC1 cache file (see triage/src/eval/cache.rs)."""
    data = open(path, "rb").read()
    assert data[:4] == b"TEC1", "not an embedding cache"
    pos = 4
    (n,) = struct.unpack_from("<I", data, pos)
    pos += 4 + n
    (dim,) = struct.unpack_from("<I", data, pos)
    pos += 4
    out = {}
    while pos + 5 <= len(data):
        kind = data[pos]
        (n,) = struct.unpack_from("<I", data, pos + 1)
        pos += 5
        if pos + n + 4 * dim > len(data):
            break
        text = data[pos : pos + n].decode("utf-8", "replace")
        pos += n
        out[(kind, text)] = np.frombuffer(data, dtype="<f4", count=dim, offset=pos)
        pos += 4 * dim
    return out


def load(path, cache):
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    x = np.stack([cache[(0, r["text"])] for r in rows])
    return x, [r["label"] for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cache")
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--oos-label")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--C", type=float, default=1.0)
    a = ap.parse_args()
    cache = read_cache(a.cache)
    xtr, ytr = load(a.train, cache)
    xte, yte = load(a.test, cache)
    clf = LogisticRegression(C=a.C, max_iter=2000)
    clf.fit(xtr, ytr)
    p = clf.predict_proba(xte)
    pred = clf.classes_[p.argmax(1)]
    conf = p.max(1)
    yte = np.array(yte)
    out = {"baseline": f"sklearn LogisticRegression(C={a.C})", "accuracy_no_abstention": float((pred == yte).mean())}
    if a.oos_label:
        o = a.oos_label
        final = np.where((conf < a.threshold) | (pred == o), o, pred)
        ins = yte != o
        out.update(
            accuracy=float((final == yte).mean()),
            in_scope_accuracy=float((final[ins] == yte[ins]).mean()),
            oos_recall=float((final[~ins] == o).mean()),
            oos_precision=float(((final == o) & ~ins).sum() / max(1, (final == o).sum())),
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
