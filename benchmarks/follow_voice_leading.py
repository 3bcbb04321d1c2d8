"""Follow mode's voice leading against Bach's, on the JSB test chorales played as the soprano.

    python benchmarks/follow_voice_leading.py [--chorales 20] [--steps 128] [--seed 1] [--tunes 20]
                                              [--model continue|harmonise|FILE]

The model (default: both bundled ones, the Transformer and the step harmoniser) harmonises
each chorale's soprano step by step, as follow mode does (`Harmoniser.step` or
`ChordHarmoniser.step`, the same decoding live and in render); prints, for its voices and for
Bach's alto, tenor and bass under the same sopranos: parallel fifths and octaves per move
(a move: both voices of a pair change pitch), voices above the soprano per voice-step,
voice-steps at rest, notes per bar per voice, and the share of the voices' notes in the
chorale's key (Krumhansl-Kessler, from all of Bach's notes; minor keys with both sevenths),
the voice-steps consonant with the soprano (unison, third, fifth, sixth or octave, mod 12: a
fourth, second, seventh or tritone against the melody is not), and the voice-bars at rest
while the melody plays in that bar.

`--tunes N` adds N folk melodies that were never in training (the Essen folk song collection
that music21 ships, `altdeu10.abc` and on; songs with notes off the 16th grid are skipped),
each moved by octaves so that its middle lies near the chorales' soprano, their key from their
own notes. There is no Bach to compare with there: the row is beside the chorales' Bach row.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from livegen.generate.continue_ import SamplingSettings  # noqa: E402
from livegen.generate.harmonise import harmoniser_for  # noqa: E402
from livegen.key import estimate, scale  # noqa: E402
from livegen.models import Model  # noqa: E402
from tests.test_follow import parallel_moves  # noqa: E402
from training.heard import folk_tunes  # noqa: E402

JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


CONSONANT = frozenset({0, 3, 4, 7, 8, 9})


def figures(rows: list[list[int]], pcs: frozenset[int]) -> dict:
    found, moves = parallel_moves(rows)
    sounding = [(r[0], v) for r in rows if r[0] >= 0 for v in r[1:] if v >= 0]
    bars = [rows[k:k + 16] for k in range(0, len(rows), 16)]
    played = [bar for bar in bars if any(r[0] >= 0 for r in bar)]
    voice_steps = [(r[0], v) for r in rows for v in r[1:]]
    sung = [(s, v) for s, v in voice_steps if s >= 0]
    onsets = sum(1 for k in range(1, 4) for a, b in zip([[-1] * 4] + rows, rows) if b[k] >= 0 and b[k] != a[k])
    pitched = [v for _, v in voice_steps if v >= 0]
    return {"parallels": found, "moves": moves,
            "above": sum(v > s for s, v in sung if v >= 0), "rests": sum(v < 0 for _, v in sung), "voice_steps": len(sung),
            "onsets": onsets, "voice_bars": 3 * len(rows) / 16, "in_scale": sum(v % 12 in pcs for v in pitched),
            "pitched": len(pitched), "consonant": sum((s - v) % 12 in CONSONANT for s, v in sounding),
            "sounding": len(sounding), "silent_bars": sum(all(r[k] < 0 for r in bar) for bar in played for k in (1, 2, 3)),
            "played_voice_bars": 3 * len(played),
            "melody_onsets": sum(1 for a, b in zip([[-1]] + rows, rows) if b[0] >= 0 and b[0] != a[0])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chorales", type=int, default=20)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tunes", type=int, default=0, help="folk melodies never in training (music21's corpus)")
    ap.add_argument("--model", action="append", help="continue, harmonise or a file (repeatable; default both)")
    args = ap.parse_args()
    models = [Model(m, "cpu") for m in args.model or ["continue", "harmonise"]]
    chorales = json.loads(JSB.read_text())["test"][:args.chorales]
    sets = [("chorale sopranos", "Bach", [[list(r) for r in c[:args.steps]] for c in chorales])]
    if args.tunes:
        sets.append(("folk tunes", None, folk_tunes(args.tunes, args.steps)))
    totals: dict[str, dict] = {}
    for (set_name, theirs_name, tunes), model in ((s, m) for s in sets for m in models):
        ours_name = f"follow, {Path(model.info.path).stem}, {set_name}"
        for rows in tunes:
            h = harmoniser_for(model, SamplingSettings(), np.random.default_rng(args.seed))
            ours = [[r[0]] + h.step(r[0] if r[0] >= 0 else None, at=at) for at, r in enumerate(rows)]
            weights = np.zeros(12)
            for r in rows:
                for p in r:
                    if p >= 0:
                        weights[p % 12] += 1
            pcs = scale(estimate(weights)[0])       # the key, from all of Bach's notes (or the tune's)
            for name, part in ((ours_name, ours), (theirs_name, rows)):
                if name is not None and (part is ours or model is models[0]):    # (Bach's once)
                    for k, v in figures(part, pcs).items():
                        totals.setdefault(name, {})[k] = totals.setdefault(name, {}).get(k, 0) + v
    print(f"{len(chorales)} JSB test chorales" + (f" and {len(sets[-1][2])} folk tunes" if args.tunes else "")
          + f", first {args.steps} steps, seed {args.seed}")
    print("| voices | parallel 5ths/8ves per move | above the soprano per voice-step | at rest per voice-step "
          "| notes per bar per voice (the melody's) | in the key | consonant with the soprano "
          "| voice-bars silent while it plays |")
    print("|---|---|---|---|---|---|---|---|")
    for name, t in totals.items():
        print(f"| {name} | {t['parallels'] / t['moves']:.4f} ({t['parallels']} of {t['moves']}) | "
              f"{t['above'] / t['voice_steps']:.4f} | {t['rests'] / t['voice_steps']:.4f} | "
              f"{t['onsets'] / t['voice_bars']:.2f} ({3 * t['melody_onsets'] / t['voice_bars']:.2f}) | "
              f"{t['in_scale'] / t['pitched']:.3f} | "
              f"{t['consonant'] / t['sounding']:.3f} | {t['silent_bars']} of {t['played_voice_bars']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
