#!/usr/bin/env bash
# The training side on a CUDA card (every recipe's step time, a 200-update Text run), one bounded
# run (DEADLINE s, default 420):
#   1. one optimiser step of every Table 2 recipe through the Lightning module in bf16-mixed
#      (`python -m mega_lra.bench_training --device cuda`): measured steps/s -> GPU hours per
#      recipe (replaces the FLOP projections in README / docs/training.md);
#   2. 200 updates of experiment=lra/mega_chunk/text in bf16-mixed on a stand-in aclImdb of
#      random bytes (the card has no network and the real archive is too big to carry): step
#      time, peak memory and the loss curve, labelled as synthetic data.
# Run from the repository root on the card:  PYTHONPATH=. bash tools/gpu/train_check.sh
# Writes under $OUT (default runs/gpu-train-check): bench_training/, text200/ (a run dir), and
# summary.md (printed last).
set -uo pipefail
OUT=${OUT:-runs/gpu-train-check}
PY=${PYTHON:-python3}
DEADLINE=${DEADLINE:-420}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-.}
mkdir -p "$OUT"
T0=$(date +%s)
left() { echo $((DEADLINE - ($(date +%s) - T0))); }

# 1. every Table 2 recipe's training step (the Transformer at 16K included: the card has room)
timeout --kill-after=10 $(($(left) * 6 / 10)) "$PY" -m mega_lra.bench_training --device cuda \
    --dtype bfloat16 --steps 5 --warmup 2 --skip --out "$OUT/bench_training" \
    --experiments lra/mega/{listops,text,retrieval,image,pathfinder,pathx} \
    lra/mega_chunk/{listops,text,retrieval,image,pathfinder,pathx} \
    lra/transformer/{listops,text,retrieval,image,pathfinder,pathx} \
    speech/mega_sc_raw_base speech/mega_sc_raw_big 2>&1 | tail -40

# 2. 200 updates of the Text recipe on synthetic bytes in the aclImdb layout
DATA=$(mktemp -d /tmp/mega-lra-imdb.XXXXXX)
"$PY" - "$DATA" <<'PYEOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(0)
for split in ("train", "test"):
    for label in ("neg", "pos"):
        folder = os.path.join(root, "aclImdb", split, label)
        os.makedirs(folder)
        for i in range(400):
            text = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(500, 4000)))
            with open(os.path.join(folder, f"{i}_1.txt"), "wb") as fh:
                fh.write(text)
PYEOF
timeout --kill-after=10 $(($(left) - 20)) "$PY" -m mega_lra.train \
    experiment=lra/mega_chunk/text trainer=gpu trainer.max_steps=200 \
    trainer.enable_progress_bar=false logger=csv sched.warmup_steps=50 \
    "paths.data_dir=$DATA" "paths.cache_dir=$DATA/.cache" "hydra.run.dir=$OUT/text200" \
    2>&1 | tail -12

"$PY" - "$OUT" <<'PYEOF' | tee "$OUT/summary.md"
import csv, json, sys, torch
from pathlib import Path
out = Path(sys.argv[1])
print("# GPU training check:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")
md = out / "bench_training" / "bench_training.md"
print(md.read_text() if md.exists() else "bench_training: no result")
run = out / "text200"
res = run / "results.json"
if res.exists():
    r = json.loads(res.read_text())
    print(f"Text 200 steps (synthetic bytes): {r['steps']} steps in {r['train_seconds']:.1f} s "
          f"({r['train_seconds'] / max(r['steps'], 1) * 1000:.0f} ms/step incl. validation)")
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    losses = [(r["step"], r["train/loss"]) for r in rows if r.get("train/loss")]
    print("loss curve (step, loss):", losses[:: max(len(losses) // 20, 1)])
else:
    print("Text 200 steps: no results.json (see the output above)")
PYEOF
