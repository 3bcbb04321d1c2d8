"""How many of respond mode's Transformer answers sing in all four voices.

    python benchmarks/answer_voices.py [--seeds 60]

Answers the live tests' 2-bar melody (ending on a cadence) once per seed, through the
runtime's own `generate`, and prints how many answers leave a voice silent and the fewest
and median notes per answer.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from livegen.config import Settings  # noqa: E402
from livegen.phrase import generate  # noqa: E402
from livegen.models import Model  # noqa: E402
from livegen.roll import Note  # noqa: E402
from tests.virtual import MELODY  # noqa: E402   (the tests' phrase)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=60)
    ap.add_argument("--model", default="continue")
    args = ap.parse_args()
    model = Model(args.model, "cpu")
    notes = [Note(p, s, e) for p, s, e in MELODY]
    counts, short = [], []
    t = time.perf_counter()
    for seed in range(args.seeds):
        answer = generate(model, Settings(mode="respond"), notes, 0, 32, np.random.default_rng(seed))
        counts.append(len(answer))
        if len({n.track for n in answer}) < 4:
            short.append(seed)
    print(f"\nrespond answers to a 2-bar melody, {args.seeds} seeds, model {args.model} "
          f"({time.perf_counter() - t:.0f} s)")
    print("| answers with a voice silent | seeds | fewest notes | median notes |\n|---|---|---|---|")
    print(f"| {len(short)} | {' '.join(map(str, short)) or '-'} | {min(counts)} | {np.median(counts):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
