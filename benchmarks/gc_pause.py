"""How long a full pass of Python's garbage collector holds every thread of a live engine, with
start-up's objects in the pass and left out of it (`livegen.session.settle_memory`, gc.freeze).

    python benchmarks/gc_pause.py [--mode follow] [--model continue] [--bars 8] [--passes 20]

Loads the model as the daemon does, plays a melody into the engine on a virtual clock for some
bars (its own objects made as in play), then times `gc.collect()` PASSES times, before and
after `settle_memory`. Prints a table of objects tracked and ms per full pass (p50 / max).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from livegen.config import Settings  # noqa: E402
from livegen.offline import VirtualRun  # noqa: E402
from livegen.session import load_model, settle_memory  # noqa: E402
from tests.virtual import MELODY  # noqa: E402


def passes(count: int) -> np.ndarray:
    ms = []
    for _ in range(count):
        t = time.perf_counter()
        gc.collect()
        ms.append((time.perf_counter() - t) * 1000)
    return np.array(ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="follow")
    ap.add_argument("--model", default="continue")
    ap.add_argument("--bars", type=int, default=8)
    ap.add_argument("--passes", type=int, default=20)
    args = ap.parse_args()
    settings = Settings(model=args.model, mode=args.mode, bpm=120).check()
    run = VirtualRun(settings, load_model(settings))
    step = 60 / (120 * 4)
    t = run.clock.t + 0.1
    for _ in range(max(1, args.bars // 2)):     # (the melody is two bars: (pitch, first step, end step))
        for pitch, first, end in MELODY:
            run.at(t + first * step, [0x90, pitch, 90])
            run.at(t + end * step - 0.001, [0x80, pitch, 0])
        t += 32 * step
    run.run_until(t + 1.0)
    rows = [("start-up's objects in every full pass", len(gc.get_objects()), passes(args.passes))]
    frozen = settle_memory()
    rows.append((f"left out (gc.freeze: {frozen} objects)", len(gc.get_objects()), passes(args.passes)))
    print(f"{args.mode}/{args.model}, {len(run.sent)} messages sent in {args.bars} bars of melody")
    print("| full pass | objects in it | p50 ms | max ms |")
    print("|---|---|---|---|")
    for name, objects, ms in rows:
        print(f"| {name} | {objects:,} | {np.percentile(ms, 50):.2f} | {ms.max():.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
