#!/usr/bin/env bash
# Issue 11, item 5: a `continue` Transformer at or below 0.335 nats/token on the JSB test
# split. Four runs at once on one GPU, under bfloat16 autocast, each within MINUTES of training, on the JSB train
# split only (chosen on its valid split; the test split is never seen):
#   shipped_more  the shipped continue.onnx's weights read back, trained on at a lower rate
#   wide          8 layers, d=256, 8 heads, from scratch
#   deep          12 layers, d=192, 6 heads, from scratch
#   broad         6 layers, d=320, 8 heads, dropout 0.3, from scratch
# Slim fp16 checkpoints of each run's best validation step go to OUTDIR/<name>.pt, its log to
# OUTDIR/<name>.log (the last validation line says its valid NLL). Then, on any machine:
#   python -m export OUTDIR/<best>.pt model.onnx
#   python -m training.evaluate model.onnx --jsb .../Jsb16thSeparated.json
# or all of them with the shipped model as one ensemble file:
#   python -m export OUTDIR/wide.pt ens.onnx --with OUTDIR/deep.pt --with ...
# Run on an H200 on 2026-12-04 (one call, 8 minutes): each run 0.350-0.353 on the valid split,
# 0.361-0.363 on the test split; the four with the shipped model, 0.334 (livegen/models/README.md).
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
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}   # four runs share the machine's cores
bf16=${BF16---bf16}   # bfloat16 autocast on the GPU; a run that fails in its first 90 s is run again without
train() {  # name args...
  local name=$1; shift
  local started=$SECONDS
  fit() {  # minutes [--bf16]
    $py -m training transformer --data "jsb:$data" --out "$out/$name" --steps 1000000 --minutes "$1" \
        --device "$device" --seed 1 --fresh --batch-size 64 "${@:2}" "${args[@]}" $extra >>"$out/$name.log" 2>&1
  }
  local args=("$@")
  if ! fit "$minutes" $bf16 && [ -n "$bf16" ] && [ $((SECONDS - started)) -lt 90 ]; then
    echo "$name: failed under $bf16; again in float32" | tee -a "$out/$name.log"
    fit "$(python3 -c "print($minutes - ($SECONDS - $started) / 60 - 0.2)")"
  fi
  $py -c "from training.train import slim_checkpoint as s; s('$out/$name/best.pt', '$out/$name.pt', half=True)" \
      >>"$out/$name.log" 2>&1
  rm -rf "${out:?}/$name"      # (the full checkpoints, with optimiser state, stay behind)
  echo "$name done: $(grep -a -i 'valid' "$out/$name.log" | tail -n 1)"
}
train shipped_more --init continue --lr 3e-4 --valid-every 300 --warmup 100 &
train wide --lr 6e-4 --valid-every 300 --warmup 300 \
      --config '{"layers": 8, "d_model": 256, "heads": 8, "dropout": 0.25, "max_context": 512}' &
train deep --lr 8e-4 --valid-every 300 --warmup 300 \
      --config '{"layers": 12, "d_model": 192, "heads": 6, "dropout": 0.2, "max_context": 512}' &
train broad --lr 5e-4 --valid-every 300 --warmup 300 \
      --config '{"layers": 6, "d_model": 320, "heads": 8, "dropout": 0.3, "max_context": 512}' &
(sleep 120; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv) &
wait
