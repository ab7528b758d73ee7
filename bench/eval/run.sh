#!/usr/bin/env bash
# Runs every triage evaluation on the splits bench/eval/prepare.py wrote (data/eval/),
# with the default model, and leaves one JSON report per set in data/eval/results/.
# Vectors are cached per set (data/eval/.cache-*.bin), so a rerun only trains and scores.
#
#   python3 bench/eval/prepare.py && bash bench/eval/run.sh
#
# The deflection verifier is fitted on the fit.jsonl parts of LCQMC, BQ (50 % of the
# paraphrase classes, plus their labelled pairs) and CLINC150-as-FAQ, and evaluated on their test.jsonl (never
# seen); copy data/eval/verifier.json to triage/verifier.json to ship a refitted one.
# (afqmc-fit, AFQMC train + ATEC, is prepared too: fitting on it made LCQMC worse.)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p triage --example eval
E=./target/release/examples/eval
D=data/eval
R=$D/results
mkdir -p "$R"
run() { local name=$1; shift; echo "== $name" >&2; "$E" "$@" > "$R/$name.json" 2> "$R/$name.log"; }

run clinc150 classify --train $D/clinc150/train.jsonl --test $D/clinc150/test.jsonl --oos-label oos --threshold 0.5 --cache $D/.cache-clinc.bin
run clinc150_oostrain classify --train $D/clinc150/train_with_oos.jsonl --test $D/clinc150/test.jsonl --oos-label oos --threshold 0.5 --cache $D/.cache-clinc.bin
run smp2017 classify --train $D/smp2017/train.jsonl --test $D/smp2017/test.jsonl --cache $D/.cache-smp.bin
for s in banking77 hwu64; do
  run $s classify --train $D/$s/train.jsonl --test $D/$s/test.jsonl --cache $D/.cache-$s.bin
done
for s in ict_subtype ict_component; do
  run $s classify --train $D/$s/train.jsonl --test $D/$s/test.jsonl --cache $D/.cache-ict.bin
done
run demo classify --train $D/demo/train.jsonl --test $D/demo/test.jsonl --cache $D/.cache-demo.bin
run demo_passage classify --kind passage --train $D/demo/train.jsonl --test $D/demo/test.jsonl --cache $D/.cache-demo.bin
run fit fit-verifier --sets $D/lcqmc/faq.jsonl:$D/lcqmc/fit.jsonl,$D/bq/faq.jsonl:$D/bq/fit.jsonl,$D/clinc-faq/faq.jsonl:$D/clinc-faq/fit.jsonl --pairs $D/lcqmc/fit_pairs.jsonl,$D/bq/fit_pairs.jsonl --out $D/verifier.json --name "fit halves of LCQMC dev and BQ dev (50% of paraphrase classes, their labelled pairs for the key-unit table) and CLINC150-as-FAQ (half of val + oos_train); disjoint from the evaluation messages; separate weights for Latin-script messages and for articles with several phrasings" --cache $D/.cache-deflect.bin
for s in lcqmc bq clinc-faq; do
  run $s deflect --faq $D/$s/faq.jsonl --test $D/$s/test.jsonl --verifier $D/verifier.json --cache $D/.cache-deflect.bin --work $D/work-$s
done
