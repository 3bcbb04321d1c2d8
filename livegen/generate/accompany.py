"""`accompany` models: the player's phrase becomes the melody, the model adds the other voices."""
from __future__ import annotations

import numpy as np

from livegen import roll as R
from livegen.models import Model

MELODY_TARGET = 70.0   # median soprano pitch the Bach-trained models expect; other models are moved alike


def melody_windows(notes: list[R.Note], start: int, steps: int, window: int, pitch_low: int,
                   pitch_count: int, shift: int) -> np.ndarray:
    """(windows, window, pitch_count) melody rolls covering [start, start + steps)."""
    count = max(1, -(-steps // window))
    return np.stack([R.melody_roll(notes, start + k * window, window, pitch_low, pitch_count, shift)
                     for k in range(count)])


def decode(probs: np.ndarray, threshold: float, max_polyphony: int, pitch_low: int, start: int,
           onset_probs: np.ndarray | None = None) -> list[R.Note]:
    """(tracks, T, P) probabilities -> notes, track index kept in Note.track."""
    active = R.keep_most_probable(probs, threshold, max_polyphony)
    notes = []
    for k in range(probs.shape[0]):
        onsets = None if onset_probs is None else (onset_probs[k] >= threshold) & active[k]
        notes += R.roll_to_notes(active[k], pitch_low, start, onsets, track=k)
    return notes


def accompany(model: Model, notes: list[R.Note], start: int, steps: int, rng: np.random.Generator,
              threshold: float | None = None) -> list[R.Note]:
    """Generated tracks for the player's notes in [start, start + steps), in the player's octave.

    The phrase is moved by whole octaves into the model's pitch window and the result moved
    back, so a melody played low still gets voices under it.
    """
    info = model.info
    phrase = R.clip_to_window(notes, start, start + steps)
    shift = R.octave_shift([n.pitch for n in phrase], info.pitch_low, info.pitch_count, MELODY_TARGET)
    melody = melody_windows(phrase, start, steps, info.window_steps, info.pitch_low, info.pitch_count, shift)
    feeds = {"melody": melody}
    if info.z_dim:
        feeds["z"] = rng.standard_normal((len(melody), info.z_dim)).astype(np.float32)
    out = model.run(feeds)
    cut = info.threshold if threshold is None else threshold
    result = []
    for k in range(len(melody)):
        onsets = out["onset_probs"][k] if "onset_probs" in out else None
        result += decode(out["probs"][k], cut, info.max_polyphony, info.pitch_low, start + k * info.window_steps,
                         onsets)
    return R.transpose(R.clip_to_window(result, start, start + steps), -shift)
