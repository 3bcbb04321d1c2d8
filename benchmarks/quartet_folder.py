"""A folder of "your own music" for the fine-tuning benchmark: string quartet movements from
music21's corpus written out as MIDI files (nothing downloaded).

    python benchmarks/quartet_folder.py OUT_DIR

Haydn op. 1 no. 1 and op. 74 no. 1, Mozart K. 80, 155, 156, 458, Beethoven op. 18 no. 1: every
movement, one file each (`python -m training finetune` then skips, with the reason, those in
other meters or off the 16th grid).
"""
from __future__ import annotations

import sys
from pathlib import Path

WORKS = ["haydn/opus1no1", "haydn/opus74no1", "mozart/k80", "mozart/k155", "mozart/k156", "mozart/k458",
         "beethoven/opus18no1"]


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    from music21 import corpus

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for work in WORKS:
        for path in corpus.getWork(work):
            name = f"{work.replace('/', '-')}-{Path(path).stem}.mid"
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
