"""Both hands: the generated voices against what the player holds, through `livegen render`.

    python benchmarks/both_hands.py [--chorales 20] [--phrases 4] [--seed 1] [--tune-only]
                                    [--ways loop:accompany,loop:edit,respond:continue,respond:edit]

The player plays each JSB test chorale's soprano and bass, each 32-step phrase twice in a row
(a loop); the answer to a phrase's first playing sounds during its second and is measured
there against the notes the player holds (`training.heard`, where each figure is defined).
`--tune-only` adds the rows with accompany's decoder hearing the tune only (as before livegen
heard both hands).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from livegen.models import Model  # noqa: E402
from training import heard  # noqa: E402

JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chorales", type=int, default=20)
    ap.add_argument("--phrases", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ways", default="loop:accompany,loop:edit,respond:continue,respond:edit")
    ap.add_argument("--tune-only", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    chorales = json.loads(JSB.read_text())["test"][:args.chorales]
    ways = [tuple(w.split(":")) for w in args.ways.split(",")]
    models = {kind: Model(kind, "cpu") for _, kind in ways}

    def progress(done, count):
        print(f"\rchorale {done}/{count}", end="", file=sys.stderr, flush=True)
    totals = heard.hands(models, ways, chorales, args.phrases, args.seed, args.tune_only, progress)
    print(file=sys.stderr)
    print(f"{len(chorales)} JSB test chorales, soprano and bass played, first {args.phrases} phrases each twice, "
          f"seed {args.seed}")
    print(heard.hands_table(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
