"""What `livegen render` writes for the JSB test sopranos, with every bundled model and mode.

    python benchmarks/render_parity.py OUT_DIR [--chorales 77] [--seed 1] [--compare OTHER_DIR]

Writes each test chorale's soprano line as a MIDI file (a run of the same pitch is one held
note, 120 BPM), renders it through the command line (`livegen render ... --seed N`) in each
way of listening, and prints a table: files written, generated notes, seconds, and with
`--compare` how many files differ byte for byte from another run's (e.g. one made by an
earlier commit: a change that should not change the music must print 0 differing).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from livegen.cli import main as livegen  # noqa: E402

JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"
WAYS = [("loop", "accompany"), ("loop", "edit"), ("respond", "continue"), ("respond", "edit"),
        ("follow", "continue"), ("follow", "harmonise")]


def write_soprano(chorale: list[list[int]], path: Path, tpb: int = 480) -> None:
    import mido

    ticks = tpb // 4
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120))])
    events, start = [], None
    pitches = [row[0] for row in chorale] + [-1]
    for step, pitch in enumerate(pitches):
        if start is not None and pitch != pitches[start]:
            events.append((step * ticks, mido.Message("note_off", note=pitches[start])))
            start = None
        if start is None and pitch >= 0:
            events.append((step * ticks, mido.Message("note_on", note=pitch, velocity=80)))
            start = step
    last = 0
    for t, msg in events:
        track.append(msg.copy(time=t - last))
        last = t
    mid = mido.MidiFile(ticks_per_beat=tpb)
    mid.tracks.append(track)
    mid.save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--chorales", type=int, default=77)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--jsb", type=Path, default=JSB)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)    # (a line per model load otherwise)
    test = json.loads(args.jsb.read_text())["test"][: args.chorales]
    sopranos = args.out / "sopranos"
    sopranos.mkdir(parents=True, exist_ok=True)
    for i, chorale in enumerate(test):
        write_soprano(chorale, sopranos / f"{i:02d}.mid")
    print(f"{'mode':8} {'model':10} {'files':>5} {'notes':>7} {'seconds':>8} {'differing':>9}")
    for mode, model in WAYS:
        folder = args.out / f"{mode}-{model}"
        folder.mkdir(exist_ok=True)
        t, notes, differing = time.perf_counter(), 0, 0
        for i in range(len(test)):
            out = folder / f"{i:02d}.mid"
            said = io.StringIO()
            with contextlib.redirect_stdout(said):
                code = livegen(["render", str(sopranos / f"{i:02d}.mid"), str(out), "--mode", mode,
                                "--model", model, "--seed", str(args.seed)])
            if code != 0:
                raise SystemExit(f"render failed for chorale {i} ({mode} {model})")
            notes += int(said.getvalue().split(": ", 1)[1].split()[0])
            if args.compare is not None:
                other = args.compare / f"{mode}-{model}" / out.name
                differing += not other.exists() or \
                    hashlib.sha256(other.read_bytes()).digest() != hashlib.sha256(out.read_bytes()).digest()
        shown = differing if args.compare is not None else "-"
        print(f"{mode:8} {model:10} {len(test):5d} {notes:7d} {time.perf_counter() - t:8.1f} {shown:>9}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
