#!/usr/bin/env python3
"""Prints the Markdown result tables of docs/EVAL.md from data/eval/results/*.json and retrieval.txt."""
import json
import os

R = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "eval", "results")


def load(name):
    path = os.path.join(R, name + ".json")
    if not os.path.exists(path):
        return None
    lines = [l for l in open(path, encoding="utf-8").read().splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


print("| set | train / test | accuracy | macro-F1 | linear only | kNN only | coverage @ thr | accuracy @ thr |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for name in ["banking77", "hwu64", "smp2017", "clinc150", "clinc150_oostrain", "ict_subtype", "ict_component"]:
    d = load(name)
    if not d:
        continue
    print(f"| {name} | {d['train_examples']} / {d['test_examples']} | {pct(d['accuracy'])} | {pct(d['macro_f1'])} | "
          f"{pct(d.get('linear_only_accuracy'))} | {pct(d.get('knn_only_accuracy'))} | "
          f"{pct(d['coverage'])} @ {d['threshold']} | {pct(d['accuracy_at_threshold'])} |")
print()
print("| set | in-scope accuracy | oos recall | oos precision |")
print("|---|---:|---:|---:|")
for name in ["clinc150", "clinc150_oostrain"]:
    d = load(name)
    if d:
        print(f"| {name} | {pct(d['in_scope_accuracy'])} | {pct(d['oos_recall'])} | {pct(d['oos_precision'])} |")
print()
print("| set | bank / messages (in / oos) | answer thr | answer rate | answer precision | oos handoff recall | clarify rate | right article among clarify candidates |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for name in ["lcqmc", "bq"]:
    d = load(name)
    if not d:
        continue
    rows = [dict(d, answer_threshold=d["answer_threshold"])] + d.get("at_thresholds", [])
    for r in sorted(rows, key=lambda r: r["answer_threshold"]):
        print(f"| {name} | {d['faq_entries']} / {d['test_messages']} ({d['in_scope']} / {d['out_of_scope']}) | {r['answer_threshold']} | "
              f"{pct(r['answer_rate'])} | {pct(r['answer_precision'])} | {pct(r['oos_handoff_recall'])} | "
              f"{pct(r.get('clarify_rate'))} | {pct(r.get('clarify_hit_rate'))} |")
print()
path = os.path.join(R, "retrieval.txt")
if os.path.exists(path):
    print("| set | mode | recall@1 | recall@5 | recall@10 | MRR@10 | n |")
    print("|---|---|---:|---:|---:|---:|---:|")
    current = None
    for line in open(path, encoding="utf-8"):
        if line.startswith("== "):
            current = line[3:].strip()
        elif line.startswith("{"):
            d = json.loads(line)
            print(f"| {current} | {d['mode']} | {pct(d['recall@1'])} | {pct(d['recall@5'])} | {pct(d['recall@10'])} | {100 * d['mrr@10']:.1f} | {d['n']} |")
