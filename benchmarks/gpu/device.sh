#!/usr/bin/env bash
# On a lent GPU machine (the device tool's `run`), in the repository root. See README.md here.
#
#   bash benchmarks/gpu/device.sh receive   keep the carried .gpu/part-* (one call per part)
#   bash benchmarks/gpu/device.sh bench     join the parts, install, run the CUDA benchmarks
#
# Parts are kept in $STORE (under /tmp, which lives as long as the warm machine). `bench`
# writes its tables to $OUT (or ./gpu-out). DEVICE=cpu runs the same steps without a GPU
# (how the kit itself is tested on a CPU machine). TABLES picks some of "inference follow remote
# live" (default all); LIVE_SECONDS is each live run's length (default 30).
set -uo pipefail
STORE=${STORE:-/tmp/livegen-gpu}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$STORE" "$OUT"

check_parts() {   # prints which parts are here and which are missing; fails if any is
  "$PY" - "$STORE" .gpu/MANIFEST <<'EOF'
import hashlib, json, sys
from pathlib import Path
store, manifest = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
have, missing = [], []
for p in manifest["parts"]:
    f = store / p["name"]
    ok = f.exists() and hashlib.sha256(f.read_bytes()).hexdigest() == p["sha256"]
    (have if ok else missing).append(p["name"])
print(f"parts here: {len(have)} of {len(manifest['parts'])}; missing: {' '.join(missing) or 'none'}")
sys.exit(1 if missing else 0)
EOF
}

case "${1:-}" in
receive)
  [ -f .gpu/MANIFEST ] || { echo "carry .gpu/MANIFEST with each part"; exit 2; }
  for p in .gpu/part-*; do [ -f "$p" ] && cp "$p" "$STORE/"; done
  check_parts
  exit 0 ;;
bench)
  [ -f .gpu/MANIFEST ] || { echo "carry .gpu/MANIFEST"; exit 2; }
  for p in .gpu/part-*; do [ -f "$p" ] && cp "$p" "$STORE/"; done
  check_parts || exit 3
  if [ ! -d "$STORE/site/onnxruntime" ]; then
    names=$("$PY" -c 'import json; print(" ".join(p["name"] for p in json.load(open(".gpu/MANIFEST"))["parts"]))')
    (cd "$STORE" && cat $names | xz -d -T0 | tar -x) || { echo "could not unpack the parts"; exit 4; }
  fi
  export PYTHONPATH="$STORE/site${PYTHONPATH:+:$PYTHONPATH}"
  # CUDA 13 and cuDNN 9 come as pip packages with the image's torch: let the loader find them
  libs=$("$PY" - <<'EOF'
import glob, os, site
dirs = set()
for base in site.getsitepackages():
    for lib in glob.glob(os.path.join(base, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
EOF
)
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # the JACK server and libasound carried from the packing machine (pack.py), for the live runs
  if [ -d "$STORE/jack/bin" ]; then
    export PATH="$STORE/jack/bin:$PATH" LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$STORE/jack/pylib"
  fi
  export PYTHONUNBUFFERED=1
  jsb="$STORE/jsb/Jsb16thSeparated.json"     # (../shared does not travel)
  {
    date -u; nvidia-smi -L 2>&1 | head -2; nproc
    "$PY" -c 'import onnxruntime as o, numpy, sys; print(sys.version.split()[0], "onnxruntime", o.__version__, o.__file__, o.get_available_providers(), "numpy", numpy.__version__)'
    "$PY" -c 'from livegen.models import cuda_usable; print("cuda_usable:", cuda_usable())'
    "$PY" -c 'import rtmidi, importlib.metadata as m; print("python-rtmidi", m.version("python-rtmidi"), rtmidi.__file__, "mido", m.version("mido"))'
    command -v jackd && jackd --version | head -1
  } 2>&1 | tee "$OUT/env.txt"
  status=0
  run() {   # name, then the command: its table goes to $OUT/name.txt
    local name=$1; shift
    echo "== $name: $*"
    timeout 240 "$@" 2>&1 | tee "$OUT/$name.txt" || { echo "!! $name failed"; status=1; }
  }
  want() { [[ " ${TABLES:-inference follow remote live} " == *" $1 "* ]]; }
  want inference && run inference_$DEVICE "$PY" benchmarks/inference.py --device "$DEVICE" --runs 500 --checkpoints "$STORE/checkpoints"
  want inference && run inference_cpu_here "$PY" benchmarks/inference.py --device cpu --runs 300 --checkpoints "$STORE/checkpoints"
  want follow && run follow_guess_$DEVICE "$PY" benchmarks/follow_guess.py --device "$DEVICE" --jsb "$jsb"
  want remote && run remote_$DEVICE "$PY" benchmarks/remote.py --device "$DEVICE" --phrases 200 --jsb "$jsb"
  cp /tmp/livegen-bench-worker.log "$OUT/" 2>/dev/null
  want follow && run follow_guess_cpu_here "$PY" benchmarks/follow_guess.py --device cpu --jsb "$jsb"
  # live over JACK (dummy driver): one table per mode and model, all in one file
  want live || exit $status
  live=(--seconds "${LIVE_SECONDS:-30}" --idle-seconds 3 --device "$DEVICE" --jsb "$jsb")
  {
    for mm in "loop accompany" "loop edit" "respond continue" "respond edit" "follow continue"; do
      set -- $mm
      echo "== live_timing --mode $1 --model $2 ${live[*]}"
      timeout 120 "$PY" benchmarks/live_timing.py --mode "$1" --model "$2" "${live[@]}" 2>&1 \
        || { echo "!! live $1 $2 failed: the rest not run"; break; }
    done
  } | tee "$OUT/live_$DEVICE.txt"
  grep -q '^!!' "$OUT/live_$DEVICE.txt" && status=1
  exit $status ;;
*)
  echo "usage: bash benchmarks/gpu/device.sh receive|bench"; exit 2 ;;
esac
