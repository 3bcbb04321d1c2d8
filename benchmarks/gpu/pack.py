"""Pack what the CUDA benchmarks need on a lent GPU machine into parts that fit one call each.

    python benchmarks/gpu/pack.py [--python 3.12] [--ort 1.31.1] [--out .gpu]

The device machine's image has CUDA 13, cuDNN 9 and torch, but only the CPU build of ONNX
Runtime, and it cannot download anything. `onnxruntime-gpu` is a 255 MB wheel, while one
call carries 64 MiB with the working tree (38 MiB of it the three shipped models). So:
the wheels (onnxruntime-gpu, pyzmq for the worker), the training checkpoints of the shipped
models (the torch column) and the JSB data (the remote benchmark's phrases) go into one
xz tarball, cut into parts that fit beside the tree; `.gpu/` is ignored by git.

Then, on the warm machine, one call per part (see benchmarks/gpu/README.md):

    carry [".gpu/MANIFEST", ".gpu/part-00"]   command: bash benchmarks/gpu/device.sh receive
    ... one per part ...
    carry [".gpu/MANIFEST"]                    command: bash benchmarks/gpu/device.sh bench

Needs pip (downloads from PyPI) and xz; takes about 3 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"
CHECKPOINTS = ("gan.pt", "arcnn.pt", "transformer_b.pt")   # the shipped models' (benchmarks/inference.py)
# The live benchmark (benchmarks/live_timing.py) needs a JACK server there: this machine's jackd,
# jack_lsp, the dummy driver and the libraries they need beyond the C and C++ runtimes, which
# are newer on the device's image
JACK_PROGRAMS = ("jackd", "jack_lsp")
JACK_DRIVER = Path("/usr/lib/x86_64-linux-gnu/jack/jack_dummy.so")
SYSTEM_LIBS = ("linux-vdso", "ld-linux", "libc.so", "libm.so", "libstdc++", "libgcc_s", "libpthread", "libdl.so",
               "librt.so")
CALL_MIB = 64          # what one call carries, the tree included
MARGIN_MIB = 1.5


def tree_bytes() -> int:
    """What travels on every call: tracked files and untracked ones that git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def download(spec: str, python: str, into: Path) -> Path:
    before = set(into.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--implementation", "cp",
                    *[a for n in (17, 27, 28) for a in ("--platform", f"manylinux_2_{n}_x86_64")],
                    "-d", str(into), spec], check=True)
    new = set(into.glob("*.whl")) - before
    name = spec.split("=")[0].replace("-", "_").lower()
    return next(iter(new), None) or next(w for w in into.glob("*.whl") if w.name.lower().startswith(name))


def libraries(*files: Path) -> set[Path]:
    """The shared libraries that `files` load, beyond the C and C++ runtimes (by ldd)."""
    found = set()
    for f in files:
        for line in subprocess.run(["ldd", str(f)], check=True, capture_output=True, text=True).stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > 2 and parts[2].startswith("/") and not parts[0].startswith(SYSTEM_LIBS):
                found.add(Path(parts[2]))
    return found


def add_jack(tar: tarfile.TarFile) -> None:
    """jack/bin: wrappers that run jack/real's programs on jack/lib, with the dummy driver in jack/drivers;
    jack/pylib: libasound, which python-rtmidi loads (it brings its own libjack)."""
    programs = [Path(p) for p in map(shutil.which, JACK_PROGRAMS) if p]
    if len(programs) < len(JACK_PROGRAMS) or not JACK_DRIVER.exists():
        print("note: no jackd here (apt-get install jackd2): the live benchmark will not run there")
        return
    for prog in programs:
        tar.add(prog.resolve(), f"jack/real/{prog.name}")
        wrapper = (f'#!/bin/sh\nd=$(dirname "$(readlink -f "$0")")/..\n'
                   f'LD_LIBRARY_PATH="$d/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" JACK_DRIVER_DIR="$d/drivers" '
                   f'exec "$d/real/{prog.name}" "$@"\n').encode()
        info = tarfile.TarInfo(f"jack/bin/{prog.name}")
        info.size, info.mode = len(wrapper), 0o755
        tar.addfile(info, io.BytesIO(wrapper))
    tar.add(JACK_DRIVER, f"jack/drivers/{JACK_DRIVER.name}")
    for lib in libraries(*programs, JACK_DRIVER):
        tar.add(lib.resolve(), f"jack/lib/{lib.name}")
    asound = [line.split("=>")[1].strip() for line in subprocess.run(
        ["ldconfig", "-p"], check=True, capture_output=True, text=True).stdout.splitlines()
        if line.strip().startswith("libasound.so.2 ") and "x86-64" in line]
    if asound:
        tar.add(Path(asound[0]).resolve(), "jack/pylib/libasound.so.2")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default="3.12", help="the device image's Python (KINDS.md: 3.12.3)")
    ap.add_argument("--ort", default="1.31.1", help="onnxruntime-gpu version (CUDA 13 builds)")
    ap.add_argument("--pyzmq", default="27.1.0")
    ap.add_argument("--mido", default="1.3.3")
    ap.add_argument("--rtmidi", default="1.5.8", help="python-rtmidi (brings its own libjack)")
    ap.add_argument("--out", default=str(ROOT / ".gpu"))
    ap.add_argument("--checkpoints", default=str(ROOT / "runs" / "shipped"))
    args = ap.parse_args()
    out = Path(args.out)
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*"):
        old.unlink()
    missing = [c for c in CHECKPOINTS if not (Path(args.checkpoints) / c).exists()]
    if missing:
        print(f"note: {args.checkpoints} lacks {', '.join(missing)}: the torch column will be empty for those")
    picked = [download(f"onnxruntime-gpu=={args.ort}", args.python, wheels),
              download(f"pyzmq=={args.pyzmq}", args.python, wheels),
              download(f"mido=={args.mido}", args.python, wheels),
              download(f"python-rtmidi=={args.rtmidi}", args.python, wheels)]

    raw = out / "payload.tar"
    with tarfile.open(raw, "w") as tar:
        for wheel in picked:     # a wheel is a zip of the package's files as they lie in site-packages
            with zipfile.ZipFile(wheel) as z:
                for item in z.infolist():
                    if item.is_dir():
                        continue
                    info = tarfile.TarInfo(f"site/{item.filename}")
                    data = z.read(item)
                    info.size, info.mode = len(data), 0o755 if item.filename.endswith(".so") or ".so." in item.filename else 0o644
                    tar.addfile(info, io.BytesIO(data))
        for c in CHECKPOINTS:
            if (Path(args.checkpoints) / c).exists():
                tar.add(Path(args.checkpoints) / c, f"checkpoints/{c}")
        if JSB.exists():
            tar.add(JSB, "jsb/Jsb16thSeparated.json")
        add_jack(tar)
    print(f"compressing {raw.stat().st_size / 2**20:.0f} MiB with xz (a few minutes on 2 cores) ...", flush=True)
    subprocess.run(["xz", "-9", "-T0", "-f", str(raw)], check=True)
    packed = out / "payload.tar.xz"

    free = CALL_MIB - tree_bytes() / 2**20 - MARGIN_MIB
    if free < 4:
        raise SystemExit(f"the working tree leaves only {free:.1f} MiB per call: not worth it")
    part = int(free * 2**20)
    digest = hashlib.sha256(packed.read_bytes()).hexdigest()
    parts = []
    with packed.open("rb") as f:
        while chunk := f.read(part):
            name = f"part-{len(parts):02d}"
            (out / name).write_bytes(chunk)
            parts.append({"name": name, "sha256": hashlib.sha256(chunk).hexdigest(), "bytes": len(chunk)})
    manifest = {"sha256": digest, "bytes": packed.stat().st_size, "parts": parts,
                "wheels": [w.name for w in picked], "python": args.python}
    (out / "MANIFEST").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(wheels)
    print(f"{packed.stat().st_size / 2**20:.1f} MiB in {len(parts)} parts of at most {part / 2**20:.1f} MiB "
          f"(the tree takes {tree_bytes() / 2**20:.1f} MiB of each call's {CALL_MIB}); {out}/MANIFEST")
    return 0


if __name__ == "__main__":
    sys.exit(main())
