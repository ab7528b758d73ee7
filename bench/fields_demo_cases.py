#!/usr/bin/env python3
"""Turns the demo pack's labelled tickets into `triage eval fields` cases (a second field set,
labelled by the pack's authors rather than the extractor's).

Expected fields: every labelled field (but `product`) whose value occurs in the ticket's text
(title, newline, body), at its first occurrence. `product` labels are not expected (they carry
no span); the case id carries the label as `T-000123:washer` so that the products the extractor
names can be checked against it: they show up among a case's `wrong` fields.

Usage: python3 bench/fields_demo_cases.py > data/eval/fields_demo.jsonl
       triage eval fields --cases data/eval/fields_demo.jsonl --pack fixtures/demo-pack
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

for line in open(os.path.join(ROOT, "fixtures", "demo-pack", "tickets.jsonl"), encoding="utf-8"):
    t = json.loads(line)
    text = t["title"] + "\n" + t["body"]
    fields = []
    for name, value in t.get("fields", {}).items():
        at = text.find(value)
        if name != "product" and at >= 0:
            fields.append({"name": name, "value": value, "span": [at, at + len(value)]})
    case = {"id": f"{t['id']}:{t.get('fields', {}).get('product', '')}", "text": text, "fields": fields}
    sys.stdout.write(json.dumps(case, ensure_ascii=False) + "\n")
