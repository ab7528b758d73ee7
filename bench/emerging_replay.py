#!/usr/bin/env python3
"""Builds the ticket history `triage eval emerging` replays: a steady background with planted bursts.

    python3 bench/emerging_replay.py --banking77 ../shared/data/banking77/train.csv \
        --pack fixtures/demo-pack --bursts fixtures/insights/bursts.jsonl --seed 1 --out target/replay-1.jsonl

Background (every day, Poisson counts, weekends at 60 %):
  * 65 of BANKING77's 77 intents as topics (English), each at its own rate (log-normal, median 1/day);
  * the demo pack's 24 leaf categories as topics (Chinese and English tickets), 0.6/day each.
Planted bursts (each starts on a known day and lasts ten days, 4, 6, 8, 8, 6, 5, 4, 3, 2, 2 a day on average):
  * new faults written for this project, each phrased many ways in Chinese and English
    (`fixtures/insights/bursts.jsonl`);
  * the 12 BANKING77 intents kept out of the background, as new topics;
  * two background intents that surge to four times their rate for a week ("a known problem spreads").
Half of the bursts of each kind are for tuning, half are held out (`split`); which is fixed below, the
seed only moves days and draws. Output: one ticket a line (`id`, `text`, `created_at`, `topic`, `burst`,
`split`, `kind`), and `<out>.meta.json` with every burst's name, kind, split and start day.

BANKING77 (CC BY 4.0, Casanueva et al. 2020) is read from the shared data directory, never copied here.
"""
import argparse
import csv
import datetime
import json
import math
import random
from collections import defaultdict

DAYS = 126  # 18 weeks: 4 weeks of baseline and a week of window before the first day evaluated
START = datetime.datetime(2026, 3, 2)  # a Monday
PROFILE = [4, 6, 8, 8, 6, 5, 4, 3, 2, 2]
SURGE = 4.0
WRITTEN_TUNE = ["vacuum_firmware", "app_certificate", "icemaker_leak"]
WRITTEN_TEST = ["washer_e35", "earbuds_case", "heater_bang"]


def poisson(rng, lam):
    # Knuth's method is fine for the small means used here.
    l, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= l:
            return k
        k += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--banking77", required=True)
    ap.add_argument("--pack", required=True)
    ap.add_argument("--bursts", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = random.Random(a.seed)

    intents = defaultdict(list)
    with open(a.banking77, newline="") as f:
        for row in csv.DictReader(f):
            intents[row["category"]].append(row["text"])
    names = sorted(intents)
    # Which intents are held out of the background is fixed (seed 77), so every replay plants the same ones.
    fixed = random.Random(77)
    held = fixed.sample(names, 12)
    held_tune, held_test = held[:6], held[6:]
    background = [n for n in names if n not in held]
    surge_tune, surge_test = fixed.sample(background, 2)

    pools = {"b77:" + n: intents[n] for n in background}
    rates = {k: math.exp(rng.gauss(0.0, 0.7)) for k in pools}
    pack = defaultdict(list)
    with open(a.pack + "/tickets.jsonl") as f:
        for line in f:
            t = json.loads(line)
            text = "\n".join(x.strip() for x in (t["title"], t["body"]) if x.strip())
            pack["demo:" + t["category"]].append(text)
    for k, v in pack.items():
        pools[k] = v
        rates[k] = 0.6

    written = defaultdict(list)
    with open(a.bursts) as f:
        for line in f:
            b = json.loads(line)
            written[b["burst"]].append(b["text"])

    bursts = []
    for name in WRITTEN_TUNE + WRITTEN_TEST:
        bursts.append({"name": "written:" + name, "kind": "new", "split": "tune" if name in WRITTEN_TUNE else "test",
                       "pool": written[name]})
    for n in held:
        bursts.append({"name": "b77:" + n, "kind": "new", "split": "tune" if n in held_tune else "test",
                       "pool": intents[n]})
    for n, split in ((surge_tune, "tune"), (surge_test, "test")):
        bursts.append({"name": "b77:" + n, "kind": "surge", "split": split, "pool": intents[n]})
    # Starts spread over the evaluated days (35 .. DAYS-11), shuffled, at least 4 days apart.
    first, last = 36, DAYS - len(PROFILE)
    step = (last - first) / len(bursts)
    starts = [int(first + i * step) for i in range(len(bursts))]
    rng.shuffle(starts)
    for b, s in zip(bursts, starts):
        b["start"] = s

    rows = []
    n = 0
    for day in range(DAYS):
        date = START + datetime.timedelta(days=day)
        weekend = date.weekday() >= 5
        todo = []
        for topic, lam in rates.items():
            lam = lam * (0.6 if weekend else 1.0)
            for b in bursts:
                if b["kind"] == "surge" and b["name"] == topic and b["start"] <= day < b["start"] + 7:
                    lam *= SURGE
            for _ in range(poisson(rng, lam)):
                surge = next((b for b in bursts if b["kind"] == "surge" and b["name"] == topic
                              and b["start"] <= day < b["start"] + 7), None)
                todo.append((topic, rng.choice(pools[topic]), surge))
        for b in bursts:
            if b["kind"] == "new" and b["start"] <= day < b["start"] + len(PROFILE):
                for _ in range(poisson(rng, PROFILE[day - b["start"]])):
                    todo.append((b["name"], rng.choice(b["pool"]), b))
        for topic, text, b in todo:
            n += 1
            at = date + datetime.timedelta(seconds=rng.randrange(86400))
            rows.append({"id": f"R-{n:06d}", "text": text, "created_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "topic": topic, "burst": b["name"] if b else None, "split": b["split"] if b else None,
                         "kind": b["kind"] if b else "background"})
    rows.sort(key=lambda r: r["created_at"])
    with open(a.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    meta = {"start": START.strftime("%Y-%m-%dT%H:%M:%SZ"), "days": DAYS, "seed": a.seed, "bursts": [
        {k: b[k] for k in ("name", "kind", "split", "start")} for b in bursts]}
    with open(a.out + ".meta.json", "w") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
    per_day = len(rows) / DAYS
    print(f"{len(rows)} tickets over {DAYS} days ({per_day:.0f}/day), {len(bursts)} bursts -> {a.out}")


if __name__ == "__main__":
    main()
