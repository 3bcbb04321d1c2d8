"""Pure piano-roll maths: quantise timed notes onto the grid, notes <-> roll, octave fitting.

Nothing here touches ports, threads or clocks: timed notes come in as numbers, rolls are
numpy arrays of shape (steps, pitch_count), and notes go out as plain tuples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TOLERANCE = 1 / 3   # of a step: this early belongs to the next step, this late snaps back


@dataclass(frozen=True)
class Note:
    """A note on the grid: sounds from `start` up to (not including) `end`, in steps."""
    pitch: int
    start: int
    end: int
    velocity: int = 100
    track: int = 0


def quantise(position: float, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """Grid step of an onset at a fractional step position."""
    return int(np.floor(position + tolerance))


def quantise_end(start_step: int, position: float) -> int:
    """Grid step where a note ends (exclusive), at least one step after it starts."""
    return max(start_step + 1, int(np.floor(position + 0.5)))


def notes_to_roll(notes: list[Note], start: int, steps: int, pitch_low: int, pitch_count: int,
                  shift: int = 0) -> np.ndarray:
    """Roll (steps, pitch_count) of the notes sounding in [start, start + steps), moved by `shift`."""
    roll = np.zeros((steps, pitch_count), np.float32)
    for n in notes:
        p = n.pitch + shift - pitch_low
        if not 0 <= p < pitch_count:
            continue
        a, b = max(n.start - start, 0), min(n.end - start, steps)
        if a < b:
            roll[a:b, p] = 1.0
    return roll


def melody_roll(notes: list[Note], start: int, steps: int, pitch_low: int, pitch_count: int,
                shift: int = 0) -> np.ndarray:
    """Like notes_to_roll, but only the highest sounding pitch per step (the tune over chords)."""
    full = notes_to_roll(notes, start, steps, pitch_low, pitch_count, shift)
    out = np.zeros_like(full)
    for t in range(steps):
        on = np.flatnonzero(full[t])
        if on.size:
            out[t, on[-1]] = 1.0
    return out


def tune_and_others(pitches) -> tuple[int | None, tuple[int, ...]]:
    """What sounds at one step: the top pitch (the tune; None when nothing sounds) and the
    player's other pitches, low to high."""
    held = sorted(set(pitches))
    return (held[-1], tuple(held[:-1])) if held else (None, ())


def octave_shift(pitches: list[int], pitch_low: int, pitch_count: int, target: float) -> int:
    """The multiple of 12 that moves these pitches nearest to `target` while keeping most in range."""
    if not pitches:
        return 0
    ps = np.asarray(pitches)
    best, best_key = 0, None
    for shift in range(-48, 49, 12):
        moved = ps + shift
        inside = np.mean((moved >= pitch_low) & (moved < pitch_low + pitch_count))
        key = (-inside, abs(float(np.median(moved)) - target))
        if best_key is None or key < best_key:
            best, best_key = shift, key
    return best


def keep_most_probable(probs: np.ndarray, threshold: float, max_polyphony: int) -> np.ndarray:
    """(tracks, T, P) probabilities -> bool active cells: at most `max_polyphony` per track and step."""
    active = probs >= threshold
    if 0 < max_polyphony < probs.shape[-1]:
        top = np.argpartition(-probs, max_polyphony - 1, axis=-1)[..., :max_polyphony]
        most_probable = np.zeros(probs.shape, bool)
        np.put_along_axis(most_probable, top, True, axis=-1)
        active &= most_probable
    return active


def roll_to_notes(active: np.ndarray, pitch_low: int, start: int = 0, onsets: np.ndarray | None = None,
                  track: int = 0, velocity: int = 100) -> list[Note]:
    """(T, P) active cells -> notes: each run of active steps is one held note, split where `onsets` says."""
    notes = []
    steps, pitches = active.shape
    for p in range(pitches):
        t = 0
        while t < steps:
            if not active[t, p]:
                t += 1
                continue
            s = t
            t += 1
            while t < steps and active[t, p] and not (onsets is not None and onsets[t, p]):
                t += 1
            notes.append(Note(pitch_low + p, start + s, start + t, velocity, track))
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes


def transpose(notes: list[Note], semitones: int) -> list[Note]:
    return [Note(n.pitch + semitones, n.start, n.end, n.velocity, n.track) for n in notes]


def clip_to_window(notes: list[Note], start: int, end: int) -> list[Note]:
    """Notes cut to [start, end); those outside are dropped."""
    out = []
    for n in notes:
        a, b = max(n.start, start), min(n.end, end)
        if a < b:
            out.append(Note(n.pitch, a, b, n.velocity, n.track))
    return out
