"""The key of what the player played: the time each pitch class sounded, correlated with the
Krumhansl-Kessler key profiles (Krumhansl, "Cognitive Foundations of Musical Pitch", 1990),
the best of the 24 major and minor keys."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
MIN_NOTES = 8          # fewer notes than this say too little to name a key
# the pitch classes a key allows, from its tonic: major; minor with both sevenths (Bach's
# cadences raise it)
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}
TONICS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


def parse_key(text: str) -> str:
    """"D minor", "f# major", "Bb", "Am" -> its name as livegen writes it ("D minor");
    ValueError saying what a key looks like."""
    words = str(text).strip().split()
    name = words[0] if words else ""
    mode = words[1].lower() if len(words) == 2 else "major"
    if len(words) == 1 and len(name) > 1 and name.endswith("m") and name[:-1].lower()[0] in TONICS:
        name, mode = name[:-1], "minor"
    pc = TONICS.get(name[:1].lower())
    accidentals = name[1:]
    if pc is None or len(words) > 2 or mode not in SCALES or accidentals not in ("", "#", "b"):
        raise ValueError(f"key {text!r}: a tonic and major or minor, e.g. \"D minor\", \"F# major\", \"Bb\"")
    pc = (pc + {"": 0, "#": 1, "b": -1}[accidentals]) % 12
    return f"{NAMES[pc]} {mode}"


@lru_cache(maxsize=64)     # (asked for each note sent with --scale-lock)
def scale(key: str) -> frozenset[int]:
    """The pitch classes of a key ("D minor")."""
    tonic, mode = parse_key(key).split()
    return frozenset((NAMES.index(tonic) + d) % 12 for d in SCALES[mode])


def into_scale(pitch: int, pcs: frozenset[int]) -> int:
    """The pitch, or the nearest in the scale (the one below when both neighbours are)."""
    for d in (0, -1, 1, -2, 2):
        if (pitch + d) % 12 in pcs and 0 <= pitch + d <= 127:
            return pitch + d
    return pitch


def _profiles() -> tuple[np.ndarray, list[str]]:
    """The 24 key profiles, each centred and of unit length (a correlation is then one dot
    product), with their names."""
    rows, names = [], []
    for tonic in range(12):
        for mode, profile in (("major", MAJOR), ("minor", MINOR)):
            p = np.roll(profile, tonic) - profile.mean()
            rows.append(p / np.linalg.norm(p))
            names.append(f"{NAMES[tonic]} {mode}")
    return np.array(rows), names


PROFILES, PROFILE_NAMES = _profiles()


def estimate(weights: np.ndarray) -> tuple[str, float] | None:
    """12 pitch-class weights (C first) -> ("D minor", correlation), or None for silence.
    (About 10 us: follow mode asks at every step.)"""
    w = np.asarray(weights, dtype=np.float64) - np.mean(weights)
    norm = np.linalg.norm(w)
    if norm == 0:
        return None
    r = PROFILES @ (w / norm)
    best = int(np.argmax(r))
    return PROFILE_NAMES[best], float(r[best])


def played_key(monitor, now: float, last_notes: int = 64) -> str | None:
    """The key of the player's last notes in `Engine.monitor` ((n, time, who, message) with
    note-ons and note-offs): each weighted by how long it sounded (until now if still held)."""
    sounding: dict[tuple[int, int], float] = {}
    notes: list[tuple[int, float]] = []
    for _, t, who, msg in list(monitor)[-1024:]:
        if who != "player":
            continue
        key = (msg[0] & 0x0F, msg[1])
        if key in sounding:
            notes.append((msg[1], t - sounding.pop(key)))
        if msg[0] & 0xF0 == 0x90 and msg[2] > 0:
            sounding[key] = t
    notes += [(pitch, now - t) for (_, pitch), t in sounding.items()]
    notes = notes[-last_notes:]
    if len(notes) < MIN_NOTES:
        return None
    weights = np.zeros(12)
    for pitch, seconds in notes:
        weights[pitch % 12] += max(seconds, 0.05)
    found = estimate(weights)
    return found[0] if found else None
