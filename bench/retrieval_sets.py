#!/usr/bin/env python3
"""Builds the retrieval evaluation sets of issue 3 from ../shared/data (never committed).

Writes data/eval/retrieval/<set>/{corpus,queries}.jsonl for `triage eval retrieval`:
- bq, lcqmc: queries = sentence1 of positive pairs, corpus = all distinct sentence2 of the split,
  relevant = the sentence2 ids paired positively with that sentence1.
- banking77: corpus = a seeded 80 % of the training utterances, queries = the other 20 %,
  relevant = corpus utterances of the same intent.
- clinc150: corpus = the in-scope `train` utterances, queries = the in-scope `val` utterances,
  relevant = corpus utterances of the same intent.

Each set's queries are also cut (seed 16) into two halves, `queries.val.jsonl` and
`queries.test.jsonl`, over the same corpus: fusion variants are tuned on `val` and reported on
`test` (issue 16).

Usage: python3 bench/retrieval_sets.py [--data ../shared/data]
"""
import argparse
import csv
import json
import os
import random
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARED = os.path.join(ROOT, "..", "shared", "data")
SPLIT_SEED = 16
OUT = os.path.join(ROOT, "data", "eval", "retrieval")


def pairs_tsv(path):
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                yield parts[0], parts[1], parts[2]


def pairs_csv(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            yield row["sentence1"], row["sentence2"], row["label"]


def write(name, corpus, queries):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for cid, text in corpus:
            f.write(json.dumps({"id": cid, "text": text}, ensure_ascii=False) + "\n")
    with open(os.path.join(d, "queries.jsonl"), "w", encoding="utf-8") as f:
        for text, rel in queries:
            f.write(json.dumps({"text": text, "relevant": rel}, ensure_ascii=False) + "\n")
    shuffled = list(queries)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    half = len(shuffled) // 2
    for part, rows in (("val", shuffled[:half]), ("test", shuffled[half:])):
        with open(os.path.join(d, f"queries.{part}.jsonl"), "w", encoding="utf-8") as f:
            for text, rel in rows:
                f.write(json.dumps({"text": text, "relevant": rel}, ensure_ascii=False) + "\n")
    print(f"{name}: corpus {len(corpus)}, queries {len(queries)} (val {half}, test {len(queries) - half})")


def question_matching(name, rows):
    rows = list(rows)
    ids = {}
    for _, s2, _ in rows:
        ids.setdefault(s2, f"{name}-{len(ids)}")
    relevant = defaultdict(list)
    for s1, s2, label in rows:
        if label.strip() == "1" and ids[s2] not in relevant[s1]:
            relevant[s1].append(ids[s2])
    corpus = [(i, t) for t, i in ids.items()]
    write(name, corpus, sorted(relevant.items()))


def banking77(shared):
    with open(os.path.join(shared, "banking77", "train.csv"), encoding="utf-8", newline="") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f)]
    rng = random.Random(77)
    rng.shuffle(rows)
    cut = int(len(rows) * 0.8)
    corpus_rows, query_rows = rows[:cut], rows[cut:]
    corpus = [(f"b77-{i}", t) for i, (t, _) in enumerate(corpus_rows)]
    by_label = defaultdict(list)
    for (cid, _), (_, label) in zip(corpus, corpus_rows):
        by_label[label].append(cid)
    write("banking77", corpus, [(t, by_label[label]) for t, label in query_rows])


def clinc150(shared):
    with open(os.path.join(shared, "clinc150", "train_val.json"), encoding="utf-8") as f:
        data = json.load(f)
    corpus = [(f"c150-{i}", t) for i, (t, _) in enumerate(data["train"])]
    by_label = defaultdict(list)
    for (cid, _), (_, label) in zip(corpus, data["train"]):
        by_label[label].append(cid)
    write("clinc150", corpus, [(t, by_label[label]) for t, label in data["val"]])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=SHARED, help="the shared datasets folder")
    data = ap.parse_args().data
    question_matching("bq", pairs_csv(os.path.join(data, "bq", "dev.csv")))
    question_matching("lcqmc", pairs_tsv(os.path.join(data, "lcqmc", "dev.txt")))
    banking77(data)
    clinc150(data)
