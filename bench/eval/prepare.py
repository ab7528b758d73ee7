#!/usr/bin/env python3
"""Turn ../shared/data sets into seeded evaluation splits for `triage eval`.

Writes JSONL files under data/eval/ (git-ignored; the data is never committed):

  classify sets  <name>/train.jsonl, <name>/test.jsonl      lines {"text", "label"}
  deflect sets   <name>/faq.jsonl, <name>/test.jsonl        faq {"id","question","answer"},
                                                             test {"text","faq_ids":[...]} ([] = out of scope)

Classification splits are stratified 80/20 by label with a fixed seed unless the
dataset ships its own train/test split (CLINC150 val, SMP-ECDT 2017 develop).

Deflection sets follow issue 4: the bank is the split's distinct sentence2;
in-scope queries are sentence1 of positive pairs; out-of-scope queries are
sentence1 with no paraphrase in the bank (look-alikes whose meaning is not in
the bank). Right answers are taken transitively over positive pairs (see
deflect_set). Half of the LCQMC/BQ paraphrase classes go to fit.jsonl, their
labelled pairs to fit_pairs.jsonl (for fitting the verifier), never into
test.jsonl; `afqmc-fit` (AFQMC train + ATEC, one
pool) is fit-only.

Usage: python3 bench/eval/prepare.py [--data ../shared/data] [--out data/eval] [--seed 13]
"""

import argparse
import csv
import json
import os
import random
from collections import defaultdict


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"  {path}: {len(rows)} lines")


def stratified_split(rows, seed, test_share=0.2):
    """rows: list of (text, label). Returns (train, test), stratified per label."""
    by_label = defaultdict(list)
    for r in rows:
        by_label[r[1]].append(r)
    rng = random.Random(seed)
    train, test = [], []
    for label in sorted(by_label):
        items = by_label[label]
        rng.shuffle(items)
        n_test = int(round(len(items) * test_share)) if len(items) >= 2 else 0
        test += items[:n_test]
        train += items[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def as_jsonl(rows):
    return [{"text": t, "label": l} for t, l in rows]


def dedupe(rows):
    seen, out = set(), []
    for t, l in rows:
        t = t.strip().lstrip("\ufeff")
        if t and (t, l) not in seen:
            seen.add((t, l))
            out.append((t, l))
    return out


def banking77(data, out, seed):
    with open(os.path.join(data, "banking77/train.csv"), encoding="utf-8") as f:
        rows = dedupe((r["text"], r["category"]) for r in csv.DictReader(f))
    train, test = stratified_split(rows, seed)
    write_jsonl(f"{out}/banking77/train.jsonl", as_jsonl(train))
    write_jsonl(f"{out}/banking77/test.jsonl", as_jsonl(test))


def hwu64(data, out, seed):
    with open(os.path.join(data, "hwu64/kfold1_trainset.csv"), encoding="utf-8") as f:
        rows = dedupe((r["text"], r["label"]) for r in csv.DictReader(f))
    train, test = stratified_split(rows, seed)
    write_jsonl(f"{out}/hwu64/train.jsonl", as_jsonl(train))
    write_jsonl(f"{out}/hwu64/test.jsonl", as_jsonl(test))


def clinc150(data, out, seed):
    with open(os.path.join(data, "clinc150/train_val.json"), encoding="utf-8") as f:
        d = json.load(f)
    train = [(t, l) for t, l in d["train"]]
    test = [(t, l) for t, l in d["val"]] + [(t, l) for t, l in d["oos_val"]]
    random.Random(seed).shuffle(test)
    write_jsonl(f"{out}/clinc150/train.jsonl", as_jsonl(train))
    write_jsonl(f"{out}/clinc150/test.jsonl", as_jsonl(test))
    # Variant with the 100 out-of-scope training examples as their own class.
    write_jsonl(f"{out}/clinc150/train_with_oos.jsonl", as_jsonl(train + [(t, l) for t, l in d["oos_train"]]))


def smp2017(data, out, seed):
    def read_dir(sub, prefix):
        rows = []
        folder = os.path.join(data, "smp_ecdt", sub)
        for name in sorted(os.listdir(folder)):
            label = name[len(prefix):].rsplit(".", 1)[0]
            with open(os.path.join(folder, name), encoding="utf-8-sig") as f:
                rows += [(line.strip(), label) for line in f if line.strip()]
        return dedupe(rows)

    train = read_dir("smp2017_train", "train_")
    test = read_dir("smp2017_develop", "develop_")
    random.Random(seed).shuffle(train)
    write_jsonl(f"{out}/smp2017/train.jsonl", as_jsonl(train))
    write_jsonl(f"{out}/smp2017/test.jsonl", as_jsonl(test))


def ict_fault(data, out, seed):
    rows = []
    for name in ("train.csv", "dev.csv"):
        with open(os.path.join(data, "ict_fault", name), encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    for target, key in (("ict_subtype", "异常类型细项"), ("ict_component", "故障组件")):
        pairs = dedupe((r["问题现象"], r[key]) for r in rows if r.get("问题现象") and r.get(key))
        train, test = stratified_split(pairs, seed)
        write_jsonl(f"{out}/{target}/train.jsonl", as_jsonl(train))
        write_jsonl(f"{out}/{target}/test.jsonl", as_jsonl(test))


def read_pairs(path, fmt):
    with open(path, encoding="utf-8-sig") as f:
        if fmt == "csv":
            for r in csv.DictReader(f):
                yield r["sentence1"].strip(), r["sentence2"].strip(), int(r["label"])
        elif fmt == "tsv3":
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) == 3:
                    yield p[0].strip(), p[1].strip(), int(p[2])
        elif fmt == "tsv4":
            for line in f:
                p = line.rstrip("\n").lstrip("\ufeff").split("\t")
                if len(p) == 4:
                    yield p[1].strip().lstrip("\ufeff"), p[2].strip(), int(p[3])


def deflect_set(name, pairs, out, seed, fit_share=0.0):
    """Bank = distinct sentence2. Right answers for a query are the bank entries in its
    paraphrase class: the connected component of positive pairs (so an entry that only
    ever appears paired with another paraphrase of the query still counts). Queries whose
    exact text is in the bank are dropped (trivial). With `fit_share`, whole paraphrase
    classes are held out into fit.jsonl for fitting the verifier, disjoint from test.jsonl."""
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    bank, queries = {}, set()
    for s1, s2, label in pairs:
        if not s1 or not s2 or s1 == s2:
            continue
        if s2 not in bank:
            bank[s2] = f"q{len(bank):05d}"
        queries.add(s1)
        find(s1), find(s2)
        if label == 1:
            parent[find(s1)] = find(s2)
    members = defaultdict(list)
    for text, fid in bank.items():
        members[find(text)].append(fid)
    rows = []
    for q in sorted(queries):
        if q in bank:
            continue
        root = find(q)
        rows.append((root, {"text": q, "faq_ids": sorted(members.get(root, []))}))
    roots = sorted({r for r, _ in rows})
    rng = random.Random(seed)
    rng.shuffle(roots)
    fit_roots = set(roots[: int(len(roots) * fit_share)])
    test = [q for r, q in rows if r not in fit_roots]
    fit = [q for r, q in rows if r in fit_roots]
    rng.shuffle(test)
    rng.shuffle(fit)
    faq = [{"id": i, "question": q, "answer": f"[answer to] {q}"} for q, i in bank.items()]
    write_jsonl(f"{out}/{name}/faq.jsonl", faq)
    write_jsonl(f"{out}/{name}/test.jsonl", test)
    if fit:
        write_jsonl(f"{out}/{name}/fit.jsonl", fit)
        # The labelled pairs of the fit messages teach the verifier's key-unit table.
        fit_texts = {q["text"] for q in fit}
        write_jsonl(
            f"{out}/{name}/fit_pairs.jsonl",
            [{"a": s1, "b": s2, "same": label == 1} for s1, s2, label in pairs if s1 in fit_texts and s1 != s2],
        )
    for part, qs in (("test", test), ("fit", fit)):
        if qs:
            n_oos = sum(1 for q in qs if not q["faq_ids"])
            print(f"    {name} {part}: bank {len(faq)}, queries {len(qs)} (out of scope {n_oos})")


def clinc_faq(data, out, seed, per_article=5, held_out_intents=30):
    """An FAQ bank shaped like a support knowledge base (one article per intent, its
    question and alternative phrasings taken from CLINC150 train), English, with two
    kinds of out-of-scope messages: CLINC's own `oos` and look-alikes (val utterances of
    intents left out of the bank). Val and OOS messages are split in halves: fit.jsonl
    (for the verifier) and test.jsonl; oos_train goes to fit, oos_val to test."""
    with open(os.path.join(data, "clinc150/train_val.json"), encoding="utf-8") as f:
        d = json.load(f)
    rng = random.Random(seed)
    by_intent = defaultdict(list)
    for t, l in d["train"]:
        by_intent[l].append(t)
    intents = sorted(by_intent)
    rng.shuffle(intents)
    left_out = set(intents[:held_out_intents])
    faq = []
    for l in sorted(by_intent):
        if l in left_out:
            continue
        texts = by_intent[l][:]
        rng.shuffle(texts)
        faq.append({"id": l, "question": texts[0], "answer": f"[answer for {l}]", "alt_questions": texts[1:per_article]})
    val = [(t, l) for t, l in d["val"]]
    rng.shuffle(val)
    half = len(val) // 2
    def case(t, l):
        return {"text": t, "faq_ids": [] if l in left_out else [l]}
    fit = [case(t, l) for t, l in val[:half]] + [{"text": t, "faq_ids": []} for t, _ in d["oos_train"]]
    test = [case(t, l) for t, l in val[half:]] + [{"text": t, "faq_ids": []} for t, _ in d["oos_val"]]
    rng.shuffle(fit)
    rng.shuffle(test)
    write_jsonl(f"{out}/clinc-faq/faq.jsonl", faq)
    write_jsonl(f"{out}/clinc-faq/fit.jsonl", fit)
    write_jsonl(f"{out}/clinc-faq/test.jsonl", test)
    for part, qs in (("test", test), ("fit", fit)):
        n_oos = sum(1 for q in qs if not q["faq_ids"])
        print(f"    clinc-faq {part}: bank {len(faq)} articles, queries {len(qs)} (out of scope {n_oos})")


def demo_pack(root, out, seed):
    """The demo pack's labelled tickets (fixtures/demo-pack, written for this project):
    text = title + newline + body, label = category, stratified 80/20."""
    path = os.path.join(root, "fixtures", "demo-pack", "tickets.jsonl")
    if not os.path.exists(path):
        return
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    pairs = []
    for r in rows:
        text = "\n".join(p for p in (r.get("title", "").strip(), r.get("body", "").strip()) if p)
        if text and r.get("category"):
            pairs.append((text, r["category"]))
    train, test = stratified_split(pairs, seed)
    write_jsonl(f"{out}/demo/train.jsonl", as_jsonl(train))
    write_jsonl(f"{out}/demo/test.jsonl", as_jsonl(test))


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(root, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(root, "data", "eval"))
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--fit-pairs", type=int, default=12000, help="AFQMC pairs used to fit the verifier")
    a = ap.parse_args()
    banking77(a.data, a.out, a.seed)
    hwu64(a.data, a.out, a.seed)
    clinc150(a.data, a.out, a.seed)
    smp2017(a.data, a.out, a.seed)
    ict_fault(a.data, a.out, a.seed)
    demo_pack(root, a.out, a.seed)
    deflect_set("lcqmc", list(read_pairs(os.path.join(a.data, "lcqmc/dev.txt"), "tsv3")), a.out, a.seed, 0.5)
    deflect_set("bq", list(read_pairs(os.path.join(a.data, "bq/dev.csv"), "csv")), a.out, a.seed, 0.5)
    clinc_faq(a.data, a.out, a.seed)
    pool = list(read_pairs(os.path.join(a.data, "afqmc/train.txt"), "tsv3"))
    pool += list(read_pairs(os.path.join(a.data, "afqmc/atec_train.csv"), "tsv4"))
    rng = random.Random(a.seed)
    rng.shuffle(pool)
    deflect_set("afqmc-fit", pool[: a.fit_pairs], a.out, a.seed)


if __name__ == "__main__":
    main()
