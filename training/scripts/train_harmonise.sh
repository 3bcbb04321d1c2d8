#!/usr/bin/env bash
# Train and export follow mode's step harmoniser (`harmonise.onnx`), on the CPU of a laptop.
#   training/scripts/train_harmonise.sh JSB.json OUTDIR [MINUTES] [DEVICE]
# The canonical JSB train split only (selection on its valid split); the 77 test chorales
# are never seen. The bundled file came from this script on a 2-core CPU: 2,000 steps (the
# first of the two limits; the learning rate follows whichever comes first) took 26 minutes.
set -eu
data=${1:?path to Jsb16thSeparated.json}
out=${2:?output folder}
minutes=${3:-40}
device=${4:-cpu}
py=${PYTHON:-python3}
$py -m training chordrnn --data "jsb:$data" --out "$out" --steps 2000 --minutes "$minutes" --lr 2e-3 --valid-every 250 \
    --seed 1 --device "$device" --fresh
$py -m export "$out/best.pt" "$out/harmonise.onnx"
