#!/usr/bin/env python3
"""Carve validation splits out of the training halves that prepare.py wrote, so that
methods (e.g. the encoder adaptation's settings) are chosen without reading the
test split that docs/EVAL.md reports.

  data/eval/<set>-val/train.jsonl   80 % of <set>/train.jsonl, stratified by label
  data/eval/<set>-val/test.jsonl    the other 20 % (CLINC150: plus the 100 `oos_train`
                                    messages, which prepare.py's default training never uses)

Usage: python3 bench/eval/carve_val.py [--data ../shared/data] [--out data/eval] [--seed 29]
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(__file__))
from prepare import stratified_split, write_jsonl  # noqa: E402


def read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="data/eval")
    ap.add_argument("--seed", type=int, default=29)
    a = ap.parse_args()
    for name in ("banking77", "hwu64", "smp2017", "clinc150"):
        rows = [(r["text"], r["label"]) for r in read(f"{a.out}/{name}/train.jsonl")]
        train, test = stratified_split(rows, a.seed)
        if name == "clinc150":
            with open(os.path.join(a.data, "clinc150/train_val.json"), encoding="utf-8") as f:
                test += [(t, l) for t, l in json.load(f)["oos_train"]]
            random.Random(a.seed).shuffle(test)
        write_jsonl(f"{a.out}/{name}-val/train.jsonl", [{"text": t, "label": l} for t, l in train])
        write_jsonl(f"{a.out}/{name}-val/test.jsonl", [{"text": t, "label": l} for t, l in test])


if __name__ == "__main__":
    main()
