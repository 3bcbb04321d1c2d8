"""Both hands: the generated voices against what the player holds, through `livegen render`.

    python benchmarks/both_hands.py [--chorales 20] [--phrases 4] [--seed 1]
                                    [--ways loop:accompany,loop:edit,respond:continue,respond:edit]

The player plays each JSB test chorale's soprano and bass (a tune in the right hand, a bass
line in the left), the first `--phrases` phrases (32 steps each), each phrase twice in a row
as a player repeating a loop does, into `livegen.render.render` (the live engine on a virtual
clock, what `livegen render` writes). The answer to a phrase's first playing sounds during its
second: that is where the voices are measured against the notes the player holds. Printed
per way of listening, and for Bach's alto and tenor against his own soprano and bass:

- semitone clashes: voice-steps that sound a semitone (mod 12: a minor second, major
  seventh or minor ninth) from a note the player holds at that step, per voice-step sounding
  while the player holds a note;
- under the player's bass: voice-steps sounding below the lowest note the player holds when
  the player holds two or more (a second bass line under the player's), per such voice-step;
- another bass: steps where the lowest generated note lies under the player's bass with
  another pitch class, per step where both sound;
- notes per bar per generated voice.

`tune only` rows: the same, with the decoder hearing only the tune (as before livegen heard
both hands: `accompany.both_hands` answers "nothing else held").
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from livegen.config import Settings  # noqa: E402
from livegen.generate import accompany as A  # noqa: E402
from livegen.models import Model  # noqa: E402
from livegen.render import render  # noqa: E402

JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"
PHRASE = 32
TPB, TICKS = 480, 120           # ticks per beat, per 16th step


def hands_file(rows: list[list[float]], phrases: int, path: Path) -> list[list[int]]:
    """Writes the soprano and bass of `rows`, each phrase twice; returns the played
    (soprano, bass) per step of the file (-1: a rest)."""
    import mido

    played = []
    for k in range(phrases):
        part = [[int(r[0]) if r[0] >= 0 else -1, int(r[3]) if r[3] >= 0 else -1] for r in rows[k * PHRASE:(k + 1) * PHRASE]]
        part += [[-1, -1]] * (PHRASE - len(part))
        played += part + part
    events = []
    for voice in (0, 1):
        t = 0
        while t < len(played):
            p = played[t][voice]
            end = t + 1
            while end < len(played) and played[end][voice] == p and end % PHRASE:
                end += 1
            if p >= 0:
                events += [(t * TICKS, mido.Message("note_on", note=p, velocity=90)),
                           (end * TICKS - 1, mido.Message("note_off", note=p))]
            t = end
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120))])
    last = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        track.append(msg.copy(time=tick - last))
        last = tick
    mid = mido.MidiFile(ticks_per_beat=TPB)
    mid.tracks.append(track)
    mid.save(path)
    return played


def voices_of(path: Path, steps: int) -> list[list[list[int]]]:
    """The generated tracks of a rendered file: per track, the pitches sounding at each step."""
    import mido

    out = []
    for track in mido.MidiFile(path).tracks[1:]:
        grid: list[list[int]] = [[] for _ in range(steps)]
        now, on = 0, {}
        for msg in track:
            now += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                on[msg.note] = now
            elif msg.type in ("note_off", "note_on") and msg.note in on:
                a, b = round(on.pop(msg.note) / TICKS), round(now / TICKS)
                for s in range(a, min(b, steps)):
                    grid[s].append(msg.note)
        out.append(grid)
    return out


def figures(held: list[list[int]], voices: list[list[list[int]]], steps) -> dict:
    """Counts over `steps`: held[s] the player's pitches, voices[k][s] a voice's pitches."""
    f = dict.fromkeys(("voice_steps", "clashes", "under_steps", "under", "both", "other_bass", "onsets"), 0)
    for s in steps:
        mine = held[s]
        sung = [p for v in voices for p in v[s]]
        if mine:
            f["voice_steps"] += len(sung)
            f["clashes"] += sum(any((p - q) % 12 in (1, 11) for q in mine) for p in sung)
        if len(mine) >= 2:
            f["under_steps"] += len(sung)
            f["under"] += sum(p < min(mine) for p in sung)
            if sung:
                f["both"] += 1
                f["other_bass"] += min(sung) < min(mine) and (min(sung) - min(mine)) % 12 != 0
        f["onsets"] += sum(p not in v[s - 1] for v in voices for p in v[s]) if s else 0
    f["voice_bars"] = len(voices) * len(list(steps)) / 16
    return f


def table_row(name: str, t: dict) -> str:
    def share(a, b):
        return f"{t[a] / t[b]:.4f}" if t[b] else "-"
    return (f"| {name} | {share('clashes', 'voice_steps')} ({t['clashes']} of {t['voice_steps']}) | "
            f"{share('under', 'under_steps')} | {share('other_bass', 'both')} | "
            f"{t['onsets'] / t['voice_bars']:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chorales", type=int, default=20)
    ap.add_argument("--phrases", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ways", default="loop:accompany,loop:edit,respond:continue,respond:edit")
    ap.add_argument("--tune-only", action="store_true", help="also the rows with the decoder hearing the tune only")
    args = ap.parse_args()
    import logging
    logging.basicConfig(level=logging.WARNING)
    chorales = json.loads(JSB.read_text())["test"][:args.chorales]
    ways = [tuple(w.split(":")) for w in args.ways.split(",")]
    runs = [(f"{mode}, {kind}", mode, kind, False) for mode, kind in ways]
    if args.tune_only:
        runs += [(f"{mode}, {kind}, tune only", mode, kind, True) for mode, kind in ways if kind == "accompany"]
    totals: dict[str, dict] = {}
    models = {}
    both_hands = A.both_hands
    with tempfile.TemporaryDirectory() as tmp:
        for n, rows in enumerate(chorales):
            src = Path(tmp) / f"in{n}.mid"
            played = hands_file(rows, args.phrases, src)
            held = [[p for p in r if p >= 0] for r in played]
            second = [s for k in range(1, 2 * args.phrases, 2) for s in range(k * PHRASE, (k + 1) * PHRASE)]
            bach = [[[int(r[1])] if r[1] >= 0 else [] for r in rows], [[int(r[2])] if r[2] >= 0 else [] for r in rows]]
            bach_steps = [s for s in range(min(len(rows), args.phrases * PHRASE))]
            add(totals, "Bach's alto and tenor", figures([[int(rows[s][0]), int(rows[s][3])] if min(rows[s][0], rows[s][3]) >= 0
                                                         else [int(p) for p in (rows[s][0], rows[s][3]) if p >= 0]
                                                         for s in range(len(rows))], bach, bach_steps))
            for name, mode, kind, tune_only in runs:
                if kind not in models:
                    models[kind] = Model(kind, "cpu")
                A.both_hands = (lambda notes, start, steps, *rest: ([None] * steps, None)) if tune_only else both_hands
                out = Path(tmp) / f"out{n}.mid"
                render(str(src), str(out), Settings(mode=mode, model=kind, seed=args.seed), models[kind], progress=False)
                add(totals, name, figures(held, voices_of(out, len(played)), second))
            print(f"\rchorale {n + 1}/{len(chorales)}", end="", file=sys.stderr, flush=True)
    A.both_hands = both_hands
    print(file=sys.stderr)
    print(f"{len(chorales)} JSB test chorales, soprano and bass played, first {args.phrases} phrases each twice, "
          f"seed {args.seed}")
    print("| voices | semitone clashes with a held note | under the player's bass | another bass under the player's "
          "| notes per bar per voice |")
    print("|---|---|---|---|---|")
    for name, t in totals.items():
        print(table_row(name, t))
    return 0


def add(totals: dict, name: str, f: dict) -> None:
    row = totals.setdefault(name, {})
    for k, v in f.items():
        row[k] = row.get(k, 0) + v


if __name__ == "__main__":
    sys.exit(main())
