"""Sweep the accompany decoder's settings on a JSB split (valid, never test, for choosing).

    python training/scripts/tune_voice_lead.py [--split valid] [--model accompany] NEAR,PENALTY,WIDEST ...

Prints, per setting, the parallel and range-violation rates of the generated voices beside
the real ones, and the other metrics as a difference from the real voices in percent.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from livegen.generate import accompany as A  # noqa: E402
from livegen.models import Model  # noqa: E402
from training.data import load_jsb  # noqa: E402
from training.evaluate import evaluate_accompany  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("settings", nargs="+", help="NEAR,PENALTY,WIDEST, e.g. 0.1,3,4")
    ap.add_argument("--split", default="valid", choices=["train", "valid"])
    ap.add_argument("--model", default="accompany")
    ap.add_argument("--jsb", default=str(ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"))
    args = ap.parse_args()
    model = Model(args.model, "cpu")
    chorales = load_jsb(args.jsb)[args.split]
    original = A.voice_lead
    print("| near | penalty | widest | parallels (real) | range violations (real) | other metrics vs real | s |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.settings:
        near, penalty, widest = (float(x) for x in spec.split(","))
        A.voice_lead = functools.partial(original, near=near, penalty=penalty, widest=int(widest))
        t = time.perf_counter()
        res = evaluate_accompany(model, chorales)
        real, mine = res["real voices"], res["model"]
        par, rng = "parallel 5ths/8ves per move", "range violations per note"
        other = ", ".join(f"{k} {(mine[k] - real[k]) / real[k] * 100:+.1f}%" for k in real
                          if k not in (par, rng) and real[k])
        print(f"| {near:g} | {penalty:g} | {int(widest)} | {mine[par]:.4f} ({real[par]:.4f}) | "
              f"{mine[rng]:.4f} ({real[rng]:.4f}) | {other} | {time.perf_counter() - t:.0f} |", flush=True)
    A.voice_lead = original
    return 0


if __name__ == "__main__":
    sys.exit(main())
