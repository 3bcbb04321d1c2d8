"""What a follow-mode step costs: with the Transformer (`continue`), a step decoded when its
note comes (three passes), one `speculate` (the next step decoded for the 24 likeliest
sopranos) and a step answered from it; with the step harmoniser (`harmonise`), a step (one
pass); on a JSB test soprano line, one thread, both models in one run.

    python benchmarks/follow_guess.py [--steps 200] [--device cpu|cuda] [--jsb PATH] [--harmonise MODEL]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livegen.generate.continue_ import Harmoniser, SamplingSettings  # noqa: E402
from livegen.generate.harmonise import ChordHarmoniser  # noqa: E402
from livegen.models import Model  # noqa: E402

JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--jsb", default=str(JSB))
    ap.add_argument("--harmonise", default="harmonise", help="the harmonise model (default: the bundled one)")
    ap.add_argument("--continue", dest="cont", default="continue", help="the continue model (default: the bundled one)")
    args = ap.parse_args()
    line = [row[0] if row[0] >= 0 else None for ch in json.loads(Path(args.jsb).read_text())["test"] for row in ch]
    line = line[: args.steps]
    model = Model(args.cont, args.device)
    rows = {}
    for guessing in (False, True):
        h = Harmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(1), live=True)
        guess, step = [], []
        if guessing:
            h.speculate()
        for s in line:
            t = time.perf_counter()
            h.step(s, urgent=guessing)
            step.append((time.perf_counter() - t) * 1000)
            if guessing:
                t = time.perf_counter()
                h.speculate()
                guess.append((time.perf_counter() - t) * 1000)
        rows[guessing] = (np.array(step), np.array(guess), dict(h.guess_stats))
    print(f"\nfollow mode, {len(line)} steps of JSB test sopranos, one thread, {model.provider}")
    print("| | p50 ms | p99 ms |\n|---|---|---|")
    step, _, _ = rows[False]
    print(f"| a step decoded when its note comes (3 passes) | {np.percentile(step, 50):.2f} | {np.percentile(step, 99):.2f} |")
    step, guess, stats = rows[True]
    print(f"| a step answered from the guesses | {np.percentile(step, 50):.2f} | {np.percentile(step, 99):.2f} |")
    print(f"| the guesses for one step (between notes) | {np.percentile(guess, 50):.2f} | {np.percentile(guess, 99):.2f} |")
    print(f"\nguess stats: {stats}")
    chords = Model(args.harmonise, args.device)
    h = ChordHarmoniser(chords, SamplingSettings(0.9, 0.95), np.random.default_rng(1), live=True)
    step = []
    for at, s in enumerate(line):
        t = time.perf_counter()
        h.step(s, urgent=True, at=at)
        step.append((time.perf_counter() - t) * 1000)
    step = np.array(step)
    print(f"\n| {chords.info.path} ({chords.provider}) | p50 ms | p99 ms | max ms |\n|---|---|---|---|")
    print(f"| a step decoded when its note comes (1 pass, no guesses) | {np.percentile(step, 50):.2f} | "
          f"{np.percentile(step, 99):.2f} | {step.max():.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
