"""How a `continue` file's voices move as its sampling changes: notes per bar and in-scale
rate (and parallels, range) of the alto, tenor and bass it writes step by step under the
tunes of a MIDI folder, at each (temperature, top-p[, key penalty]), beside the music's own.

    python benchmarks/sampling_frontier.py MODEL.onnx FOLDER [T,P[,K] ...]

K: nats a pitch outside the key heard costs (`livegen.key_penalty`); 0 unless given.

The folder is split as `python -m training finetune` splits it (`--hold-out tail`): the
trained bars (3 windows of 128 steps per file: what the fine-tune's calibration sees) and
the held-out last bars. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import logging

import numpy as np

SETTINGS = ["0.8,0.9", "0.9,0.95", "1.0,0.9", "1.0,0.95", "1.0,1.0", "1.1,1.0", "1.2,0.9", "1.2,1.0",
            "1.3,0.9", "1.4,0.9", "1.5,0.85", "1.6,0.9", "1.8,0.85"]
KEYS = ("notes per bar", "in-scale rate", "parallel 5ths/8ves per move", "range violations per note")


def windows(pieces: list, count: int = 3, steps: int = 128) -> list:
    out = []
    for c in pieces:
        for s in np.linspace(0, max(len(c) - steps, 0), count).astype(int):
            out.append(c[s:s + steps])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("folder")
    p.add_argument("settings", nargs="*", default=SETTINGS, help="temperature,top-p[,key penalty]")
    args = p.parse_args()
    logging.disable(logging.INFO)
    from livegen.generate.continue_ import Harmoniser, SamplingSettings
    from livegen.models import Model
    from training import data as D
    from training.evaluate import voice_figures

    splits = D.load_midi_folder(args.folder, hold_out="tail")
    sets = {"trained bars": windows(splits.train), "held-out bars": splits.valid}
    model = Model(args.model, "cpu")
    print("| temperature, top-p, key penalty | " + " | ".join(f"{name}: {k}" for name in sets for k in KEYS[:2]) + " |")
    print("|---" * (1 + 2 * len(sets)) + "|")

    def row(label: str, figures: list[dict]) -> None:
        print(f"| {label} | " + " | ".join(f"{f[k]:.3f}" if k != "notes per bar" else f"{f[k]:.2f}"
                                            for f in figures for k in KEYS[:2]) + " |", flush=True)

    row("(the music's own)", [voice_figures(pieces) for pieces in sets.values()])
    for setting in args.settings:
        t, top_p, *k = (float(x) for x in setting.split(","))
        penalty = k[0] if k else 0.0
        figures = []
        for pieces in sets.values():
            rng = np.random.default_rng(0)
            made = []
            for c in pieces:
                h = Harmoniser(model, SamplingSettings(t, top_p, penalty), rng)
                made.append(np.array([[s] + h.step(int(s) if s >= 0 else None) for s in c[:, 0]]))
            figures.append(voice_figures(made))
        row(f"{t:g}, {top_p:g}, {penalty:g}", figures)


if __name__ == "__main__":
    main()
