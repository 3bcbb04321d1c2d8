#!/usr/bin/env bash
# Train the models livegen ships, all at once on one machine, each within a time budget.
#   training/scripts/train_shipped.sh JSB.json OUTDIR [MINUTES] [DEVICE]
# Every model trains on the canonical JSB train split only (validation on its valid split),
# so numbers measured on the 77 test chorales are honest. Slim fp16 checkpoints of the best
# validation step are written to OUTDIR/<name>.pt for export.
set -u
data=${1:?path to Jsb16thSeparated.json}
out=${2:?output folder}
minutes=${3:-6}
device=${4:-cuda}
extra=${EXTRA:-}   # e.g. "--max-chorales 4" for a quick check on the CPU
mkdir -p "$out"
py=${PYTHON:-python3}
train() {  # name model args...
  local name=$1 model=$2; shift 2
  $py -m training "$model" --data "jsb:$data" --out "$out/$name" --steps 1000000 --minutes "$minutes" \
      --device "$device" --seed 1 --fresh "$@" $extra >"$out/$name.log" 2>&1
  $py -c "from training.train import slim_checkpoint as s; s('$out/$name/best.pt', '$out/$name.pt', half=True)" \
      >>"$out/$name.log" 2>&1
  echo "$name done: $(tail -n 2 "$out/$name.log" | head -n 1)"
}
train gan gan --batch-size 64 --lr 2e-4 --valid-every 200 &
train arcnn arcnn --batch-size 64 --lr 1e-3 --valid-every 200 &
train transformer transformer --batch-size 64 --lr 6e-4 --valid-every 250 --warmup 300 \
      --config '{"layers": 6, "d_model": 256, "heads": 8, "dropout": 0.25, "max_context": 512}' &
train transformer_b transformer --batch-size 64 --lr 1e-3 --valid-every 250 --warmup 300 \
      --config '{"layers": 8, "d_model": 192, "heads": 6, "dropout": 0.2, "max_context": 512}' &
wait
