"""Chorale data: the canonical JSB split, music21's Bach chorales, a folder of MIDI files.

Every source yields chorales as int16 arrays of shape (steps, 4): one row per 16th note,
columns soprano, alto, tenor, bass, MIDI pitch or -1 for a rest. That is the one shape the
three models are trained from.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PITCH_LOW = 36      # the JSB data's range, 36..81 inclusive
PITCH_COUNT = 46
VOICES = ("soprano", "alto", "tenor", "bass")
REST = -1


class DataError(ValueError):
    """A data source that cannot be read; the message says which file and why."""


@dataclass
class Splits:
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    source: str

    def __getitem__(self, name: str) -> list[np.ndarray]:
        return getattr(self, name)


def load_jsb(path: str | Path) -> Splits:
    """The canonical JSB split from its JSON file (silence is -1)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read JSB JSON ({err})") from err
    missing = {"train", "valid", "test"} - set(raw)
    if missing:
        raise DataError(f"{path}: missing split(s) {sorted(missing)}")
    splits = {}
    for name in ("train", "valid", "test"):
        chorales = []
        for i, steps in enumerate(raw[name]):
            arr = np.asarray(steps, dtype=np.int16)
            if arr.ndim != 2 or arr.shape[1] != 4:
                raise DataError(f"{path}: {name}[{i}] is not a list of 4-voice steps")
            chorales.append(arr)
        splits[name] = chorales
    return Splits(source=f"jsb:{path.name}", **splits)


def stable_split(key: str) -> str:
    """Deterministic 80/10/10 split by a hash of the piece's name."""
    bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def voices_from_notes(notes: list[tuple[int, int, int]], steps: int) -> np.ndarray:
    """Split (start_step, end_step, pitch) notes into 4 voices by pitch order at each step.

    The highest sounding pitch is the soprano, the lowest the bass, the rest fill alto and
    tenor from the top; extra notes in the middle are dropped.
    """
    sounding: list[list[int]] = [[] for _ in range(steps)]
    for start, end, pitch in notes:
        for t in range(max(start, 0), min(end, steps)):
            sounding[t].append(pitch)
    out = np.full((steps, 4), REST, dtype=np.int16)
    for t, pitches in enumerate(sounding):
        ps = sorted(set(pitches), reverse=True)
        if not ps:
            continue
        if len(ps) >= 4:
            ps = ps[:3] + [ps[-1]]
        if len(ps) == 1:
            out[t, 0] = ps[0]
        else:
            out[t, 0] = ps[0]
            out[t, 3] = ps[-1]
            for v, p in zip((1, 2), ps[1:-1]):
                out[t, v] = p
    return out


DRUMS = 9                  # MIDI channel 10, as sent on the wire from 0
DUPLE = {(4, 4), (2, 4), (2, 2), (4, 2), (8, 8)}    # meters whose bars fill the models' 16-step grid
OFF_GRID_LIMIT = 0.2       # more note starts than this share off the 16th grid: triplets or free timing


def _parts(mid, steps_per_beat: int) -> tuple[dict[tuple[int, int], list], int]:
    """(track, channel) -> [(start step, end step, pitch)], drums left out; and how many note
    starts lay off the 16th grid by more than a quarter of a step."""
    ticks_per_step = mid.ticks_per_beat / steps_per_beat
    parts: dict[tuple[int, int], list] = {}
    off_grid = 0
    for number, track in enumerate(mid.tracks):
        now = 0
        open_notes: dict[tuple[int, int], int] = {}
        for msg in track:
            now += msg.time
            if msg.type not in ("note_on", "note_off") or msg.channel == DRUMS:
                continue
            if msg.type == "note_on" and msg.velocity > 0:
                open_notes[(msg.channel, msg.note)] = now
                off_grid += abs(now / ticks_per_step - round(now / ticks_per_step)) > 0.25
            else:
                start = open_notes.pop((msg.channel, msg.note), None)
                if start is not None:
                    s = round(start / ticks_per_step)
                    parts.setdefault((number, msg.channel), []).append(
                        (s, max(round(now / ticks_per_step), s + 1), msg.note))
    return parts, off_grid


def _part_voice(notes: list, steps: int, top: bool) -> np.ndarray:
    """One part as one voice: its top note where it plays two at once (its bottom one for the bass)."""
    col = np.full(steps, REST, np.int16)
    for start, end, pitch in notes:
        span = col[start:end]
        keep = (span == REST) | ((span < pitch) if top else (span > pitch))
        span[keep] = pitch
    return col


def read_midi(path: str | Path, steps_per_beat: int = 4) -> tuple[np.ndarray, str]:
    """A MIDI file as (steps, 4) voices on the 16th grid, and how they were made; DataError
    (the reason) for a file that is skipped.

    Four or more parts (tracks or channels with notes; drums, channel 10, are left out): the
    highest part by its mean pitch is the soprano, the lowest the bass, the two highest of
    the others the alto and tenor; a part that plays two notes at once gives its top one (the
    bass its bottom one). Fewer parts (a piano, melody and accompaniment in one track): at
    each 16th the highest note sounding is the soprano, the lowest the bass, the next ones
    down from the top the alto and tenor (`voices_from_notes`). Meters other than 4/4, 2/4,
    2/2 are skipped (the models play bars of 16 sixteenths), as are files whose notes mostly
    lie off the 16th grid (triplets, free timing); tempo changes do not matter on the grid."""
    import mido

    path = Path(path)
    try:
        mid = mido.MidiFile(path)
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise DataError(f"not a readable MIDI file ({err})") from err
    meters = {(m.numerator, m.denominator) for t in mid.tracks for m in t if m.type == "time_signature"}
    if meters - DUPLE:
        odd = ", ".join(f"{a}/{b}" for a, b in sorted(meters - DUPLE))
        raise DataError(f"in {odd}: the models play 4/4 (16 sixteenths a bar)")
    parts, off_grid = _parts(mid, steps_per_beat)
    notes = [n for part in parts.values() for n in part]
    if not notes:
        raise DataError("no notes outside the drums")
    if off_grid > OFF_GRID_LIMIT * len(notes):
        raise DataError(f"{off_grid} of {len(notes)} notes start off the 16th grid (triplets or free timing)")
    steps = max(e for _, e, _ in notes)
    if len(parts) >= 4:
        ranked = sorted(parts.values(), key=lambda part: -np.mean([p for _, _, p in part]))
        chosen = [ranked[0], ranked[1], ranked[2], ranked[-1]]
        arr = np.stack([_part_voice(part, steps, top=v < 3) for v, part in enumerate(chosen)], axis=1)
        how = f"{len(parts)} parts: the highest, two inner and the lowest as soprano, alto, tenor, bass"
    else:
        arr = voices_from_notes(notes, steps)
        how = f"{len(parts)} part{'s' if len(parts) > 1 else ''}: split by pitch at each 16th (top = melody)"
    return arr, how


def load_midi_file(path: str | Path, steps_per_beat: int = 4) -> np.ndarray:
    """A MIDI file as (steps, 4) voices on the 16th grid (see `read_midi`)."""
    try:
        return read_midi(path, steps_per_beat)[0]
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


# `hold_out="tail"`: the last part of every file is held out, at least TAIL_BARS bars and
# TAIL_SHARE of the file (files shorter than 3 * TAIL_BARS are trained on whole)
TAIL_BARS, TAIL_SHARE = 4, 0.15


def load_midi_folder(folder: str | Path, summary: list[str] | None = None, hold_out: str = "files") -> Splits:
    """Every .mid/.midi file under a folder; a line per file in `summary` (used: its bars and
    how its voices were made; or skipped: why).

    `hold_out`: "files" splits the files by a hash of their names (80/10/10): the held-out
    music was never heard, but a dozen files leave one or two, which may be unlike the rest
    (a folder of quartets held out its one Beethoven movement, denser and more chromatic
    than the others). "tail" holds out the last bars of every file (`TAIL_BARS`,
    `TAIL_SHARE`) as the validation part (no test part): the held-out part is like the
    folder as a whole, at the price that a theme heard in a file's first bars may come
    back in its held-out last ones."""
    if hold_out not in ("files", "tail"):
        raise DataError(f"hold_out: 'files' or 'tail', not {hold_out!r}")
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    if not files:
        raise DataError(f"{folder}: no .mid files found")
    splits: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    lines = []
    for f in files:
        name = str(f.relative_to(folder))
        try:
            arr, how = read_midi(f)
        except DataError as err:
            lines.append(f"skipped {name}: {err}")
            continue
        arr, moved = fit_range(arr)
        bars = len(arr) // 16
        if hold_out == "tail":
            tail = max(TAIL_BARS, round(TAIL_SHARE * bars)) if bars >= 3 * TAIL_BARS else 0
            cut = (bars - tail) * 16 if tail else len(arr)
            splits["train"].append(arr[:cut])
            if tail:
                splits["valid"].append(arr[cut:])
            split = f"bars 1-{bars - tail} trained on, {bars - tail + 1}-{bars} held out" if tail else \
                "trained on whole: too short to hold bars out"
        else:
            split = stable_split(f.name)
            splits[split].append(arr)
        lines.append(f"used    {name}: {len(arr) / 16:.0f} bars, {how}{'; ' + moved if moved else ''} ({split})")
    if not any(splits.values()):
        raise DataError(f"{folder}: none of the {len(files)} MIDI files can be used:\n  " + "\n  ".join(lines))
    # A small folder may hash everything into one or two splits: a file is moved so that the
    # held-out loss is measured on music not trained on, where there are two files or more
    if not splits["train"]:
        splits["train"] = [splits["valid"].pop()] if splits["valid"] else [splits["test"].pop()]
        lines.append("(a held-out file is trained on instead, as no other file was left to train on)")
    if not splits["valid"]:
        if splits["test"]:
            splits["valid"] = [splits["test"].pop()]
        elif len(splits["train"]) > 1:
            splits["valid"] = [splits["train"].pop()]
            lines.append("(the last file used is held out whole instead, as nothing else was held out)")
        else:
            lines.append("(one usable file, too short to hold bars out, so the held-out loss is "
                         "measured on the music trained on)")
            splits["valid"] = splits["train"][:1]
    for line in lines:
        log.info("%s", line)
    if summary is not None:
        summary.extend(lines)
    return Splits(source=f"midi:{folder}", **splits)


def fit_range(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """(the voices moved into the model's pitch window, what was done): the whole piece by
    the octaves that leave the fewest notes outside it, then each note still outside by
    octaves to its nearest inside. The voices move together, so the soprano stays on top:
    moving each voice by itself put a quartet's first violin (up to A6) an octave under the
    second, and the models learned voices that cross all the time."""
    high = PITCH_LOW + PITCH_COUNT - 1
    sounding = arr >= 0
    if not sounding.any():
        return arr.copy(), ""

    def outside(shift: int) -> int:
        moved = arr[sounding].astype(np.int32) + shift
        return int(((moved < PITCH_LOW) | (moved > high)).sum())

    shift = min((12 * k for k in range(-3, 4)), key=lambda s: (outside(s), abs(s)))
    out = arr.astype(np.int32)
    out[sounding] += shift
    low_side, high_side = sounding & (out < PITCH_LOW), sounding & (out > high)
    folded = int(low_side.sum() + high_side.sum())
    out[low_side] += 12 * ((PITCH_LOW - out[low_side] + 11) // 12)
    out[high_side] -= 12 * ((out[high_side] - high + 11) // 12)
    done = [f"moved {shift // 12:+d} octave{'s' if abs(shift) > 12 else ''}"] if shift else []
    if folded:
        done.append(f"{folded} of {int(sounding.sum())} voice-steps folded into {PITCH_LOW}-{high} by octaves")
    return out.astype(np.int16), ", ".join(done)


def _music21_chorale(score) -> np.ndarray | None:
    """A music21 score as (steps, 4), or None when it is not four-part SATB."""
    parts = list(score.parts)
    if len(parts) != 4:
        return None
    columns = []
    for part in parts:
        notes = []
        for n in part.flatten().notes:
            if n.isChord:
                return None
            start = round(float(n.offset) * 4)
            end = round(float(n.offset + n.quarterLength) * 4)
            notes.append((start, max(end, start + 1), n.pitch.midi))
        columns.append(notes)
    steps = max((e for col in columns for _, e, _ in col), default=0)
    if steps == 0:
        return None
    arr = np.full((steps, 4), REST, dtype=np.int16)
    for v, col in enumerate(columns):
        for s, e, p in col:
            arr[s:e, v] = p
    if not all((arr[:, v] >= 0).any() for v in range(4)):
        return None
    return fit_range(arr)[0]


def load_music21(cache_dir: str | Path | None = None, exclude_sopranos: list[np.ndarray] | None = None,
                 limit: int | None = None) -> Splits:
    """The Bach chorales inside music21, SATB only, split by file name, parsed once into a cache.

    `exclude_sopranos` drops chorales whose soprano line matches one of these (e.g. the
    canonical JSB test split), so that measurements on that split stay honest.
    """
    from music21 import corpus

    cache = Path(cache_dir) / "music21-bach.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache) as z:
            names = [str(n) for n in z["names"]]
            flat, offsets = z["steps"], z["offsets"]
        chorales = {n: flat[offsets[i]:offsets[i + 1]] for i, n in enumerate(names)}
    else:
        chorales, skipped = {}, 0
        paths = sorted(corpus.getComposer("bach"), key=str)
        if limit:
            paths = paths[:limit]
        for p in paths:
            arr = _music21_chorale(corpus.parse(p))
            if arr is None:
                skipped += 1
                continue
            chorales[Path(p).name] = arr
        log.info("music21: %d SATB chorales, %d skipped (not four single-note parts)", len(chorales), skipped)
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            names = list(chorales)
            offsets = np.cumsum([0] + [len(chorales[n]) for n in names])
            np.savez(cache, names=np.array(names), offsets=offsets,
                     steps=np.concatenate([chorales[n] for n in names]) if names else np.zeros((0, 4), np.int16))
    excluded = set()
    if exclude_sopranos:
        keys = {soprano_key(s) for s in exclude_sopranos}
        excluded = {n for n, arr in chorales.items() if soprano_key(arr) in keys}
    splits: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    for name, arr in chorales.items():
        if name not in excluded:
            splits[stable_split(name)].append(arr)
    return Splits(source="music21:bach", **splits)


def soprano_key(arr: np.ndarray) -> tuple[int, ...]:
    """The soprano's pitch sequence with repeats merged and transposed to start at 0."""
    line = [int(p) for p in arr[:, 0] if p >= 0]
    merged = [p for i, p in enumerate(line) if i == 0 or p != line[i - 1]]
    return tuple(p - merged[0] for p in merged[:24]) if merged else ()


def transpositions(arr: np.ndarray) -> list[np.ndarray]:
    """Every transposition (within +-6 semitones) that keeps all voices in the pitch window."""
    sounding = arr[arr >= 0]
    if sounding.size == 0:
        return [arr]
    lo, hi = int(sounding.min()), int(sounding.max())
    out = []
    for shift in range(-6, 6):
        if lo + shift >= PITCH_LOW and hi + shift < PITCH_LOW + PITCH_COUNT:
            moved = arr.copy()
            moved[arr >= 0] += shift
            out.append(moved)
    return out


def rehearsal(chorales: list[np.ndarray], share: float, music: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Chorales (drawn in a seeded order) to train on beside `music`, so that they make up
    about `share` of the steps: a fine-tune that rehearses what the model knew."""
    if not 0 <= share < 1:
        raise DataError(f"rehearse: a share from 0 to under 1, not {share}")
    want = share / (1 - share) * sum(len(m) for m in music)
    out, have = [], 0
    for k in np.random.default_rng(seed).permutation(len(chorales)):
        if have >= want:
            break
        out.append(chorales[k])
        have += len(chorales[k])
    return out


def augment(chorales: list[np.ndarray]) -> list[np.ndarray]:
    return [t for c in chorales for t in transpositions(c)]


def load_source(spec: str, cache_dir: str | Path | None = None, hold_out: str = "files") -> Splits:
    """`jsb:PATH`, `music21`, `midi:FOLDER`, or a bare path (a .json is JSB, a folder is MIDI);
    `hold_out` for a MIDI folder (`load_midi_folder`)."""
    if spec == "music21":
        return load_music21(cache_dir)
    if spec.startswith("jsb:"):
        return load_jsb(spec[4:])
    if spec.startswith("midi:"):
        return load_midi_folder(spec[5:], hold_out=hold_out)
    p = Path(spec)
    if p.suffix == ".json":
        return load_jsb(p)
    if p.is_dir():
        return load_midi_folder(p, hold_out=hold_out)
    raise DataError(f"{spec}: not a data source (use jsb:FILE.json, music21 or midi:FOLDER)")


def scoring_windows(length: int, max_context: int, stride: int | None = None):
    """How a sequence of `length` tokens is scored by a model of `max_context` (BOS + the
    rest): (start, end, first) per window, its tokens [start, end) fed after BOS and the
    predictions from `first` on (the ones not scored by an earlier window) counted. Windows
    slide by `stride` tokens (half a context, whole steps, by default), so each token is scored
    once, with at least max_context - stride tokens before it once the sequence is longer."""
    n = max_context - 1
    stride = stride or (n // 2 // 4) * 4
    scored_to, start = 0, 0
    while True:
        end = min(start + n, length)
        yield start, end, scored_to - start
        scored_to = end
        if scored_to >= length:
            return
        start += stride


def piano_roll(voices: np.ndarray) -> np.ndarray:
    """(steps, V) pitches -> (V, steps, PITCH_COUNT) float32 one-hot roll."""
    steps, nv = voices.shape
    roll = np.zeros((nv, steps, PITCH_COUNT), np.float32)
    t, v = np.nonzero(voices >= 0)
    roll[v, t, voices[t, v] - PITCH_LOW] = 1.0
    return roll


def windows(chorales: list[np.ndarray], window: int, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` random windows of `window` steps, (count, window, 4); short chorales are padded with rests."""
    out = np.full((count, window, 4), REST, np.int16)
    lengths = np.array([len(c) for c in chorales])
    picks = rng.choice(len(chorales), size=count, p=lengths / lengths.sum())
    for i, k in enumerate(picks):
        c = chorales[k]
        start = rng.integers(0, max(len(c) - window, 0) + 1)
        piece = c[start:start + window]
        out[i, :len(piece)] = piece
    return out
