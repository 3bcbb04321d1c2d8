#!/usr/bin/env bash
# On a lent GPU machine (the device tool's `run`), in the repository root. See README.md here.
#
#   bash benchmarks/gpu/device.sh receive   keep the carried .gpu/part-* (one call per part)
#   bash benchmarks/gpu/device.sh bench     join the parts, install, run the CUDA benchmarks
#
# Parts are kept in $STORE (under /tmp, which lives as long as the warm machine). `bench`
# writes its tables to $OUT (or ./gpu-out). DEVICE=cpu runs the same steps without a GPU
# (how the kit itself is tested on a CPU machine).
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
  export PYTHONUNBUFFERED=1
  jsb="$STORE/jsb/Jsb16thSeparated.json"     # (../shared does not travel)
  {
    date -u; nvidia-smi -L 2>&1 | head -2; nproc
    "$PY" -c 'import onnxruntime as o, numpy, sys; print(sys.version.split()[0], "onnxruntime", o.__version__, o.__file__, o.get_available_providers(), "numpy", numpy.__version__)'
    "$PY" -c 'from livegen.models import cuda_usable; print("cuda_usable:", cuda_usable())'
  } 2>&1 | tee "$OUT/env.txt"
  status=0
  run() {   # name, then the command: its table goes to $OUT/name.txt
    local name=$1; shift
    echo "== $name: $*"
    timeout 240 "$@" 2>&1 | tee "$OUT/$name.txt" || { echo "!! $name failed"; status=1; }
  }
  run inference_$DEVICE "$PY" benchmarks/inference.py --device "$DEVICE" --runs 500 --checkpoints "$STORE/checkpoints"
  run inference_cpu_here "$PY" benchmarks/inference.py --device cpu --runs 300 --checkpoints "$STORE/checkpoints"
  run follow_guess_$DEVICE "$PY" benchmarks/follow_guess.py --device "$DEVICE" --jsb "$jsb"
  run remote_$DEVICE "$PY" benchmarks/remote.py --device "$DEVICE" --phrases 200 --jsb "$jsb"
  cp /tmp/livegen-bench-worker.log "$OUT/" 2>/dev/null
  exit $status ;;
*)
  echo "usage: bash benchmarks/gpu/device.sh receive|bench"; exit 2 ;;
esac
