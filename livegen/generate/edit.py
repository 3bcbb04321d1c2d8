"""The edit sampler for AR-CNN (`edit`) models: passes of cell flips drawn from the net.

DeepComposer's procedure is `passes=100, edits_per_pass=1, temperature=1`. Drawing several
cells per pass (without replacement, Gumbel top-k) at a low temperature reaches a better
result in a tenth of the network passes (tuned on the JSB valid split: see the model card).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


TOP_TARGET = 76   # MIDI pitch the top of a phrase is moved near (by octaves) before editing


@dataclass
class EditSettings:
    temperature: float = 0.05
    passes: int = 10
    edits_per_pass: int = 10
    max_remove_share: float = 0.5   # of the notes the roll started with
    max_add: int = 64               # notes (cells) added at most
    keep_player: bool = True        # the cells in `frozen` never change
    no_repeat: bool = False         # True: a cell flipped once stays as it is


def edit_rolls(logits_fn: Callable[[np.ndarray], np.ndarray], rolls: np.ndarray, settings: EditSettings,
               rng: np.random.Generator, frozen: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Edit (B, T, P) 0/1 rolls; `logits_fn` maps (B, 1, T, P) float32 to (B, 1, T, P) logits.

    Returns the edited rolls and the number of network passes used (one pass serves the batch).
    """
    rolls = (np.asarray(rolls) > 0.5).astype(np.float32)
    locked = np.zeros(rolls.shape, bool)
    if frozen is not None and settings.keep_player:
        locked |= np.asarray(frozen, bool)
    touched = locked.copy()
    may_remove = np.floor(settings.max_remove_share * rolls.sum(axis=(1, 2))).astype(int)
    removed = np.zeros(len(rolls), int)
    added = np.zeros(len(rolls), int)
    passes = 0
    for _ in range(settings.passes):
        allowed = ~(touched if settings.no_repeat else locked)
        allowed &= (removed < may_remove)[:, None, None] | (rolls == 0)
        allowed &= (added < settings.max_add)[:, None, None] | (rolls == 1)
        live = np.flatnonzero(allowed.any(axis=(1, 2)))
        if live.size == 0:
            break
        logits = np.asarray(logits_fn(rolls[:, None]), dtype=np.float64).reshape(rolls.shape)
        passes += 1
        flipped_any = False
        for b in live:
            scores = logits[b] / max(settings.temperature, 1e-6)
            if settings.temperature > 0:
                scores = scores + rng.gumbel(size=scores.shape)
            scores[~allowed[b]] = -np.inf
            flips = 0
            for flat in np.argsort(scores, axis=None)[::-1]:
                if flips >= settings.edits_per_pass or not np.isfinite(scores.flat[flat]):
                    break
                t, p = np.unravel_index(flat, scores.shape)
                if rolls[b, t, p] == 1:
                    if removed[b] >= may_remove[b]:
                        continue
                    removed[b] += 1
                else:
                    if added[b] >= settings.max_add:
                        continue
                    added[b] += 1
                rolls[b, t, p] = 1 - rolls[b, t, p]
                touched[b, t, p] = True
                flips += 1
            flipped_any |= flips > 0
        if not flipped_any:
            break
    return rolls, passes


def edit_roll(logits_fn: Callable[[np.ndarray], np.ndarray], roll: np.ndarray, settings: EditSettings,
              rng: np.random.Generator, frozen: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """One (T, P) roll; see edit_rolls."""
    out, passes = edit_rolls(logits_fn, np.asarray(roll)[None], settings, rng,
                             None if frozen is None else np.asarray(frozen)[None])
    return out[0], passes


def beside_the_hands(rolls: np.ndarray, pitch_low: int) -> np.ndarray:
    """(B, T, P) the player's rolls -> the empty cells no note may be added to: a semitone
    (mod 12) from a note the player holds at that step, or under the player's bass (the
    lowest of two or more notes held): the player's hands stay the harmony's frame."""
    out = np.zeros(rolls.shape, bool)
    pcs = (np.arange(rolls.shape[-1]) + pitch_low) % 12
    for b, t in zip(*np.nonzero(rolls.any(axis=-1))):
        held = np.flatnonzero(rolls[b, t])
        near = np.zeros(12, bool)
        near[(pcs[held][:, None] + np.array([1, 11])).ravel() % 12] = True
        out[b, t] = near[pcs]
        if held.size >= 2:
            out[b, t, :held[0]] = True
    return out & (rolls == 0)


def edit_phrase(model, notes, start: int, steps: int, rng: np.random.Generator, settings: EditSettings):
    """The phrase's roll rewritten by an `edit` model, as notes (track 0) in the player's octave."""
    from livegen import roll as R

    info = model.info
    phrase = R.clip_to_window(notes, start, start + steps)
    # the phrase's top note goes near the top of the soprano's range, so the model fills in
    # the harmony under the tune rather than over it
    shift = R.octave_shift([max((n.pitch for n in phrase), default=72)], info.pitch_low, info.pitch_count,
                           TOP_TARGET)
    w = info.window_steps
    count = max(1, -(-steps // w))
    rolls = np.stack([R.notes_to_roll(phrase, start + k * w, w, info.pitch_low, info.pitch_count, shift)
                      for k in range(count)])

    def logits_fn(batch: np.ndarray) -> np.ndarray:
        return model.run({"roll": batch.astype(np.float32)})["logits"]

    frozen = rolls > 0
    if settings.keep_player:
        frozen |= beside_the_hands(rolls, info.pitch_low)
    edited, _ = edit_rolls(logits_fn, rolls, settings, rng, frozen=frozen)
    out = []
    for k in range(count):
        out += R.roll_to_notes(edited[k] > 0, info.pitch_low, start + k * w)
    return R.transpose(R.clip_to_window(out, start, start + steps), -shift)
