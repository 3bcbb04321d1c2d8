"""What a player hears, measured through the product's own path: MIDI files played into
`livegen.render.render` (the live engine on a virtual clock, what `livegen render` writes).

- `hands`: each JSB test chorale's soprano and bass played (a tune and a bass line), each
  32-step phrase twice in a row as a player looping it does; the answer to a phrase's first
  playing sounds during its second, and is measured there against the notes held: semitone
  clashes (mod 12) with a held note, voice-steps under the player's bass, steps whose lowest
  generated note is another bass under the player's, notes per bar per voice. Bach's alto
  and tenor against his own soprano and bass are the reference.
- `follow`: the sopranos alone, rendered in follow mode: parallel fifths and octaves per move,
  notes per bar per voice, the voices' notes in the key, voice-steps consonant with the tune,
  voice-bars silent while the tune plays; Bach's own voices under the same sopranos beside
  them; and the cost, the process's CPU time per 16th step (the steps decoded on their note
  and the guesses made ahead between them, as live).

`python -m training.evaluate MODEL --jsb FILE --heard` prints these tables;
`benchmarks/both_hands.py` and the model card carry them.
"""
from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

PHRASE = 32
TPB, TICKS = 480, 120           # ticks per beat, per 16th step
CONSONANT = frozenset({0, 3, 4, 7, 8, 9})     # unison, thirds, fifth, sixths, octave (mod 12)


def write_parts(parts: list[list[int]], path: Path, bpm: float = 120) -> None:
    """A one-track MIDI file of pitch-per-step parts (-1: a rest; the same pitch on the next
    step is held, except across a phrase boundary)."""
    import mido

    events = []
    for part in parts:
        t = 0
        while t < len(part):
            end = t + 1
            while end < len(part) and part[end] == part[t] and end % PHRASE:
                end += 1
            if part[t] >= 0:
                events += [(t * TICKS, mido.Message("note_on", note=part[t], velocity=90)),
                           (end * TICKS - 1, mido.Message("note_off", note=part[t]))]
            t = end
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))])
    last = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        track.append(msg.copy(time=tick - last))
        last = tick
    mid = mido.MidiFile(ticks_per_beat=TPB)
    mid.tracks.append(track)
    mid.save(path)


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


def render_file(model, mode: str, src: Path, out: Path, seed: int) -> float:
    """Render `src` with `model` in `mode`; the CPU seconds it took."""
    from livegen.config import Settings
    from livegen.render import render

    cpu = time.process_time()
    render(str(src), str(out), Settings(mode=mode, model=model.info.path, seed=seed), model, progress=False)
    return time.process_time() - cpu


# ---------------------------------------------------------------------------- both hands

def hands_counts(held: list[list[int]], voices: list[list[list[int]]], steps) -> dict:
    """Counts over `steps`: held[s] the player's pitches, voices[k][s] a voice's pitches."""
    f = dict.fromkeys(("voice_steps", "clashes", "under_steps", "under", "both", "other_bass", "onsets"), 0)
    steps = list(steps)
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
        if s:
            f["onsets"] += sum(p not in v[s - 1] for v in voices for p in v[s])
    f["voice_bars"] = len(voices) * len(steps) / 16
    return f


def add(totals: dict, name: str, counts: dict) -> None:
    row = totals.setdefault(name, {})
    for k, v in counts.items():
        row[k] = row.get(k, 0) + v


def hands(models: dict, ways: list[tuple[str, str]], chorales: list, phrases: int = 4, seed: int = 1,
          tune_only: bool = False, progress=None) -> dict[str, dict]:
    """Counts per row (see the module): `models` kind -> Model; `ways` (mode, kind)."""
    from livegen.generate import accompany as A

    totals: dict[str, dict] = {}
    runs = [(f"{mode}, {kind}", mode, kind, False) for mode, kind in ways]
    if tune_only:     # the decoder hearing the tune only, as before both hands were heard
        runs += [(f"{mode}, {kind}, tune only", mode, kind, True) for mode, kind in ways if kind == "accompany"]
    both_hands = A.both_hands
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n, rows in enumerate(chorales):
                rows = [[int(p) for p in r] for r in rows]
                played = []
                for k in range(phrases):
                    part = [[r[0], r[3]] for r in rows[k * PHRASE:(k + 1) * PHRASE]]
                    part += [[-1, -1]] * (PHRASE - len(part))
                    played += part + part
                src, out = Path(tmp) / "in.mid", Path(tmp) / "out.mid"
                write_parts([[r[0] for r in played], [r[1] for r in played]], src)
                held = [[p for p in r if p >= 0] for r in played]
                second = [s for k in range(1, 2 * phrases, 2) for s in range(k * PHRASE, (k + 1) * PHRASE)]
                span = range(min(len(rows), phrases * PHRASE))
                bach = [[[r[v]] if r[v] >= 0 else [] for r in rows] for v in (1, 2)]
                add(totals, "Bach's alto and tenor", hands_counts([[p for p in (r[0], r[3]) if p >= 0] for r in rows],
                                                                   bach, span))
                for name, mode, kind, only in runs:
                    A.both_hands = (lambda notes, start, steps, *rest: ([None] * steps, None)) if only else both_hands
                    render_file(models[kind], mode, src, out, seed)
                    add(totals, name, hands_counts(held, voices_of(out, len(played)), second))
                if progress:
                    progress(n + 1, len(chorales))
    finally:
        A.both_hands = both_hands
    return totals


def hands_table(totals: dict[str, dict]) -> str:
    def share(t, a, b):
        return f"{t[a] / t[b]:.4f}" if t[b] else "-"
    lines = ["| voices | semitone clashes with a held note | under the player's bass | another bass under the "
             "player's | notes per bar per voice |", "|---|---|---|---|---|"]
    for name, t in totals.items():
        lines.append(f"| {name} | {share(t, 'clashes', 'voice_steps')} ({t['clashes']} of {t['voice_steps']}) | "
                     f"{share(t, 'under', 'under_steps')} | {share(t, 'other_bass', 'both')} | "
                     f"{t['onsets'] / t['voice_bars']:.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- follow

def key_of(rows: list[list[int]]) -> frozenset[int]:
    from livegen.key import estimate, scale

    weights = np.zeros(12)
    for r in rows:
        for p in r:
            if p >= 0:
                weights[p % 12] += 1
    return scale(estimate(weights)[0])


def follow_counts(rows: list[list[int]], pcs: frozenset[int]) -> dict:
    """(soprano, alto, tenor, bass) rows, -1 a rest -> counts: parallels and moves, onsets,
    voice-bars, notes in the key, voice-steps consonant with the soprano, silent voice-bars."""
    f = dict.fromkeys(("parallels", "moves", "onsets", "in_key", "pitched", "consonant", "sounding",
                       "silent_bars", "played_voice_bars", "melody_onsets"), 0)
    for a, b in zip(rows, rows[1:]):
        for i, j in itertools.combinations(range(4), 2):
            if min(a[i], a[j], b[i], b[j]) < 0 or a[i] == b[i] or a[j] == b[j]:
                continue
            f["moves"] += 1
            interval = (a[i] - a[j]) % 12
            f["parallels"] += interval in (0, 7) and (b[i] - b[j]) % 12 == interval and (b[i] > a[i]) == (b[j] > a[j])
    for before, r in zip([[-1] * 4] + rows, rows):
        f["onsets"] += sum(r[k] >= 0 and r[k] != before[k] for k in (1, 2, 3))
        f["melody_onsets"] += r[0] >= 0 and r[0] != before[0]
        voices = [v for v in r[1:] if v >= 0]
        f["pitched"] += len(voices)
        f["in_key"] += sum(v % 12 in pcs for v in voices)
        if r[0] >= 0:
            f["sounding"] += len(voices)
            f["consonant"] += sum((r[0] - v) % 12 in CONSONANT for v in voices)
    for k in range(0, len(rows), 16):
        bar = rows[k:k + 16]
        if any(r[0] >= 0 for r in bar):
            f["played_voice_bars"] += 3
            f["silent_bars"] += sum(all(r[v] < 0 for r in bar) for v in (1, 2, 3))
    f["voice_bars"] = 3 * len(rows) / 16
    return f


def follow(model, tunes: dict[str, list[list[list[int]]]], seed: int = 1, progress=None) -> dict[str, dict]:
    """`tunes`: name -> list of (s, a, t, b) rows per tune (a, t, b -1 where there is no
    reference). Each tune's soprano rendered in follow mode; a row per name, and a `Bach`
    row for the tunes that carry voices."""
    totals: dict[str, dict] = {}
    done, count = 0, sum(len(v) for v in tunes.values())
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows_list in tunes.items():
            for rows in rows_list:
                rows = [[int(p) for p in r] for r in rows]
                src, out = Path(tmp) / "in.mid", Path(tmp) / "out.mid"
                write_parts([[r[0] for r in rows]], src)
                cpu = render_file(model, "follow", src, out, seed)
                voices = voices_of(out, len(rows))
                ours = [[r[0]] + [max(v[s]) if v[s] else -1 for v in voices[:3]] for s, r in enumerate(rows)]
                pcs = key_of(rows if any(r[1] >= 0 for r in rows) else [[r[0]] for r in rows])
                add(totals, f"follow, {name}", follow_counts(ours, pcs) | {"cpu_s": cpu, "steps": len(rows)})
                if any(r[1] >= 0 for r in rows):
                    add(totals, f"Bach, {name}", follow_counts(rows, pcs))
                done += 1
                if progress:
                    progress(done, count)
    return totals


def follow_table(totals: dict[str, dict]) -> str:
    lines = ["| voices | parallel 5ths/8ves per move | notes per bar per voice (the tune's) | in the key "
             "| consonant with the tune | voice-bars silent while it plays | CPU ms per 16th step |",
             "|---|---|---|---|---|---|---|"]
    for name, t in totals.items():
        cost = f"{1000 * t['cpu_s'] / t['steps']:.1f}" if t.get("steps") else "-"
        lines.append(f"| {name} | {t['parallels'] / max(t['moves'], 1):.4f} ({t['parallels']} of {t['moves']}) | "
                     f"{t['onsets'] / t['voice_bars']:.2f} ({3 * t['melody_onsets'] / t['voice_bars']:.2f}) | "
                     f"{t['in_key'] / max(t['pitched'], 1):.3f} | {t['consonant'] / max(t['sounding'], 1):.3f} | "
                     f"{t['silent_bars']} of {t['played_voice_bars']} | {cost} |")
    return "\n".join(lines)


def folk_tunes(count: int, steps: int) -> list[list[list[int]]]:
    """`count` melodies of the Essen collection in music21's corpus (never in training) as
    (s, -1, -1, -1) rows on the 16th grid, at most `steps` long, moved by octaves near the
    chorales' soprano (~C5); songs with notes off the grid or chords are skipped."""
    from music21 import corpus

    tunes: list[list[list[int]]] = []
    for path in corpus.getComposer("essenFolksong"):
        for score in corpus.parse(path).scores:
            rows, ok = [], True
            for n in score.flatten().notesAndRests:
                start, length = float(n.offset) * 4, float(n.quarterLength) * 4
                if start != int(start) or length != int(length) or n.isChord:
                    ok = False
                    break
                rows.extend([[-1 if n.isRest else n.pitch.midi, -1, -1, -1]] * int(length))
            pitched = [r[0] for r in rows if r[0] >= 0]
            if not ok or len(pitched) < 8:
                continue
            shift = 12 * round((72 - float(np.mean(pitched))) / 12)
            tunes.append([[r[0] + shift if r[0] >= 0 else -1, -1, -1, -1] for r in rows[:steps]])
            if len(tunes) == count:
                return tunes
    return tunes
