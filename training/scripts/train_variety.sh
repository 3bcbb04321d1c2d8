#!/usr/bin/env bash
# Fine-tune the accompany GAN so that its noise input matters: the reconstruction term takes
# the best of k noise draws (GANConfig.variety_k), starting from a trained generator (--init;
# the critic starts afresh). Three settings at once on one machine, each within a time budget.
#   training/scripts/train_variety.sh JSB.json INIT.pt OUTDIR [MINUTES] [DEVICE]
# Slim fp16 checkpoints of each run's best validation step go to OUTDIR/<name>.pt.
set -u
data=${1:?path to Jsb16thSeparated.json}
init=${2:?checkpoint to start from, e.g. runs/shipped/gan.pt}
out=${3:?output folder}
minutes=${4:-3}
device=${5:-cuda}
extra=${EXTRA:-}   # e.g. "--batch-size 8" for a quick check on the CPU
mkdir -p "$out"
py=${PYTHON:-python3}
train() {  # name config
  local name=$1 config=$2
  $py -m training gan --data "jsb:$data" --out "$out/$name" --steps 1000000 --minutes "$minutes" \
      --device "$device" --seed 1 --fresh --init "$init" --lr 2e-4 --valid-every 100 --config "$config" \
      $extra >"$out/$name.log" 2>&1
  $py -c "from training.train import slim_checkpoint as s; s('$out/$name/best.pt', '$out/$name.pt', half=True)" \
      >>"$out/$name.log" 2>&1
  echo "$name done: $(grep -a 'valid' "$out/$name.log" | tail -n 1)"
}
train k4 '{"variety_k": 4}' &
train k8 '{"variety_k": 8}' &
train k8adv '{"variety_k": 8, "adv_weight": 0.3}' &
wait
