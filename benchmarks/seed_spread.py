"""How much a model's figures move with the seed alone, on the held-out part of a MIDI folder
(split as `python -m training finetune` splits it, `--hold-out tail`), as `training.evaluate`
counts them (the fine-tune's card): for `continue`, the alto, tenor and bass it writes step by
step under the held-out tunes; for `accompany`, the voices it writes under them; for `edit`,
F1 of restoring the held-out windows and the statistics of what it wrote. For several seeds:
mean, lowest and highest per figure, beside the music's own. A before/after table made with
one seed (the fine-tune's card) can be read against this spread. The models given must be of
one kind.

    python benchmarks/seed_spread.py FOLDER MODEL [MODEL ...] [--seeds 5]

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import logging

import numpy as np


def figures(model, held: list, seed: int) -> tuple[dict, dict]:
    """(the model's figures, the music's own) with this seed."""
    from training.evaluate import continue_voices, headline

    if model.info.kind == "continue":      # (headline's NLL does not depend on the seed)
        return continue_voices(model, held, seed)
    return headline(model, held, seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("models", nargs="+", help="bundled names (accompany, edit, continue) or .onnx files")
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    logging.disable(logging.INFO)
    from livegen.models import Model
    from training import data as D
    from training.evaluate import HEADLINE

    splits = D.load_midi_folder(args.folder, hold_out="tail")
    held = splits.valid + splits.test
    models = [Model(spec, "cpu") for spec in args.models]
    kinds = {m.info.kind for m in models}
    if len(kinds) != 1:
        raise SystemExit(f"models of one kind, please: {sorted(kinds)}")
    columns = [k for k in HEADLINE[kinds.pop()] if k != "NLL (nats/token)"]
    print(f"{len(held)} held-out tails of {args.folder}, seeds 0-{args.seeds - 1}: mean (lowest-highest)")
    print("| model | " + " | ".join(columns) + " |")
    print("|---" * (1 + len(columns)) + "|")
    theirs = None
    for spec, model in zip(args.models, models):
        rows = []
        for seed in range(args.seeds):
            ours, theirs = figures(model, held, seed)
            rows.append([ours[k] for k in columns])
        a = np.array(rows)
        print(f"| {spec} | " + " | ".join(f"{m:.4f} ({lo:.4f}-{hi:.4f})" for m, lo, hi in
                                          zip(a.mean(0), a.min(0), a.max(0))) + " |", flush=True)
    print("| (the music's own) | " + " | ".join("-" if theirs[k] != theirs[k] else f"{theirs[k]:.4f}"
                                                for k in columns) + " |")


if __name__ == "__main__":
    main()
