"""How much a `continue` file's voice figures move with the seed alone: the alto, tenor and
bass it writes step by step under the held-out tunes of a MIDI folder (split as `python -m
training finetune` splits it, `--hold-out tail`), as `training.evaluate` counts them, for
several seeds; mean, lowest and highest per figure, beside the music's own. A before/after
table made with one seed (the fine-tune's card) can be read against this spread.

    python benchmarks/seed_spread.py FOLDER MODEL [MODEL ...] [--seeds 5]

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import logging

import numpy as np

FIGURES = ("notes per bar", "in-scale rate", "parallel 5ths/8ves per move", "range violations per note")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("models", nargs="+", help="bundled names (continue) or .onnx files")
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    logging.disable(logging.INFO)
    from livegen.models import Model
    from training import data as D
    from training.evaluate import continue_voices

    splits = D.load_midi_folder(args.folder, hold_out="tail")
    held = splits.valid + splits.test
    print(f"{len(held)} held-out tails of {args.folder}, seeds 0-{args.seeds - 1}: mean (lowest-highest)")
    print("| model | " + " | ".join(FIGURES) + " |")
    print("|---" * (1 + len(FIGURES)) + "|")
    theirs = None
    for spec in args.models:
        model = Model(spec, "cpu")
        rows = []
        for seed in range(args.seeds):
            ours, theirs = continue_voices(model, held, seed)
            rows.append([ours[k] for k in FIGURES])
        a = np.array(rows)
        print(f"| {spec} | " + " | ".join(f"{m:.4f} ({lo:.4f}-{hi:.4f})" for m, lo, hi in
                                          zip(a.mean(0), a.min(0), a.max(0))) + " |", flush=True)
    print("| (the music's own) | " + " | ".join(f"{theirs[k]:.4f}" for k in FIGURES) + " |")


if __name__ == "__main__":
    main()
