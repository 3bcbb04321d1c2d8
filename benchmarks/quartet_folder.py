"""A folder of "your own music" for the fine-tuning benchmark: string quartet movements from
music21's corpus written out as MIDI files (nothing downloaded).

    python benchmarks/quartet_folder.py OUT_DIR [--agnus]

Haydn op. 1 no. 1 and op. 74 no. 1, Mozart K. 80, 155, 156, 458, Beethoven op. 18 no. 1: every
movement, one file each (`python -m training finetune` then skips, with the reason, those in
other meters or off the 16th grid).

`--agnus`: instead, music far from the chorales' density: the first 12 Agnus Dei settings by
Palestrina in music21's corpus (by file name) that are in four parts and 4/2 throughout:
slow Renaissance polyphony in half and whole notes.
"""
from __future__ import annotations

import sys
from pathlib import Path

WORKS = ["haydn/opus1no1", "haydn/opus74no1", "mozart/k80", "mozart/k155", "mozart/k156", "mozart/k458",
         "beethoven/opus18no1"]


def agnus(count: int = 12):
    """(name, path) of the first `count` four-part Agnus Dei settings in 4/2 by Palestrina."""
    from music21 import corpus, meter

    found = 0
    for path in sorted(corpus.getComposer("palestrina"), key=str):
        if not Path(path).name.startswith("Agnus"):
            continue
        score = corpus.parse(path)
        meters = {t.ratioString for t in score.recurse().getElementsByClass(meter.TimeSignature)}
        if len(score.parts) == 4 and meters == {"4/2"}:
            yield f"palestrina-{Path(path).stem}.mid", path
            found += 1
            if found == count:
                return


def quartets():
    """(name, path) of every movement of WORKS."""
    from music21 import corpus

    for work in WORKS:
        for path in corpus.getWork(work):
            yield f"{work.replace('/', '-')}-{Path(path).stem}.mid", path


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--agnus"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    from music21 import corpus

    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, path in (agnus() if "--agnus" in sys.argv else quartets()):
        if (out / name).exists():      # (a movement in two formats: the first)
            continue
        try:
            corpus.parse(path).write("midi", fp=str(out / name))
        except Exception as err:     # (a movement music21 cannot write: said, and the rest go on)
            print(f"skipped {name}: {err}", file=sys.stderr)
            continue
        written += 1
        print(f"wrote {out / name}", file=sys.stderr)
    print(f"{written} files in {out}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
