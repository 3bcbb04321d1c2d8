"""Follow mode's pull towards the key (`livegen.key_penalty`, `continue_.KeyPull`): the share
of the voices' notes in each chorale's key (Krumhansl-Schmuckler over the whole chorale, as
`training.evaluate` counts it) under the JSB test sopranos, at each penalty, with the key
heard in the player's notes (what livegen does) or in all four voices (the design it
replaced: a first wrong guess then pulls the voices its way and holds).

    python benchmarks/key_pull.py [--model continue] [--chorales 12] [--steps 96] [--penalties 0 1 4]

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

JSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


def in_key(model, tunes, penalty: float, hear_all: bool) -> tuple[float, float]:
    """(share of the voices' notes in the chorale's key, notes per bar per voice)."""
    from livegen.generate.continue_ import Harmoniser, SamplingSettings
    from training.evaluate import estimate_key, voice_figures

    inside = total = 0
    made = []
    for c in tunes:
        h = Harmoniser(model, SamplingSettings(key_penalty=penalty), np.random.default_rng(0))
        pcs = estimate_key(c)
        rows = []
        for s in c[:, 0]:
            voices = h.step(int(s) if s >= 0 else None)
            if hear_all:        # (the step's voices heard too, beside the player's note)
                h.pull.weights /= h.pull.FADE
                h.pull.hear([p for p in voices if p >= 0])
            rows.append([int(s)] + voices)
            inside += sum(p % 12 in pcs for p in voices if p >= 0)
            total += sum(p >= 0 for p in voices)
        made.append(np.array(rows))
    return inside / total, voice_figures(made)["notes per bar"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="continue")
    p.add_argument("--chorales", type=int, default=12)
    p.add_argument("--steps", type=int, default=96)
    p.add_argument("--penalties", type=float, nargs="+", default=[0.0, 1.0, 4.0])
    p.add_argument("--jsb", default=str(JSB))
    args = p.parse_args()
    from livegen.models import Model

    tunes = [np.array(c, np.int16)[:args.steps] for c in json.loads(Path(args.jsb).read_text())["test"][:args.chorales]]
    model = Model(args.model, "cpu")
    print(f"{args.chorales} JSB test sopranos, {args.steps} steps each, {model.info.path}")
    print("| key penalty (nats) | heard in the player's notes: in key, notes per bar | heard in all four voices |")
    print("|---|---|---|")
    for penalty in args.penalties:
        cells = [in_key(model, tunes, penalty, hear_all) for hear_all in (False, True)]
        print(f"| {penalty:g} | " + " | ".join(f"{k:.3f}, {d:.2f}" for k, d in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
