#!/usr/bin/env bash
# Issue 11, item 5: a `continue` Transformer at or below 0.335 nats/token on the JSB test
# split. Three runs at once on one GPU, each within MINUTES of training, on the JSB train
# split only (chosen on its valid split; the test split is never seen):
#   shipped_more  the shipped continue.onnx's weights read back, trained on at a lower rate
#   wide          8 layers, d=256, 8 heads, from scratch
#   deep          12 layers, d=192, 6 heads, from scratch
# Slim fp16 checkpoints of each run's best validation step go to OUTDIR/<name>.pt, its log to
# OUTDIR/<name>.log (the last validation line says its valid NLL). Then, on any machine:
#   python -m export OUTDIR/<best>.pt model.onnx
#   python -m training.evaluate model.onnx --jsb .../Jsb16thSeparated.json
#
#   training/scripts/train_continue.sh JSB.json OUTDIR [MINUTES] [DEVICE]
# On a lent GPU machine (../shared does not travel: carry a copy of the JSON, never commit it):
#   cp ../shared/data/jsb/Jsb16thSeparated.json .gpu/jsb.json
#   run(command="bash training/scripts/train_continue.sh .gpu/jsb.json $OUT 8 cuda",
#       carry=[".gpu/jsb.json"], timeout_s=600)
set -u
data=${1:?path to Jsb16thSeparated.json}
out=${2:?output folder}
minutes=${3:-8}
device=${4:-cuda}
extra=${EXTRA:-}   # e.g. "--max-chorales 4" for a quick check on the CPU
mkdir -p "$out"
py=${PYTHON:-python3}
train() {  # name args...
  local name=$1; shift
  $py -m training transformer --data "jsb:$data" --out "$out/$name" --steps 1000000 --minutes "$minutes" \
      --device "$device" --seed 1 --fresh --batch-size 64 "$@" $extra >"$out/$name.log" 2>&1
  $py -c "from training.train import slim_checkpoint as s; s('$out/$name/best.pt', '$out/$name.pt', half=True)" \
      >>"$out/$name.log" 2>&1
  rm -rf "${out:?}/$name"      # (the full checkpoints, with optimiser state, stay behind)
  echo "$name done: $(grep -a -i 'valid' "$out/$name.log" | tail -n 1)"
}
train shipped_more --init continue --lr 3e-4 --valid-every 250 --warmup 100 &
train wide --lr 6e-4 --valid-every 250 --warmup 300 \
      --config '{"layers": 8, "d_model": 256, "heads": 8, "dropout": 0.25, "max_context": 512}' &
train deep --lr 8e-4 --valid-every 250 --warmup 300 \
      --config '{"layers": 12, "d_model": 192, "heads": 6, "dropout": 0.2, "max_context": 512}' &
wait
