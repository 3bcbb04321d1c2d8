"""The edit sampler for AR-CNN (`edit`) models: passes of single-cell flips drawn from the net.

DeepComposer's procedure is `passes=100, edits_per_pass=1`. Drawing several cells per pass
(without replacement, Gumbel top-k) and never flipping a cell twice reaches the same result
in far fewer network passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class EditSettings:
    temperature: float = 1.0
    passes: int = 10
    edits_per_pass: int = 8
    max_remove_share: float = 0.5   # of the notes the roll started with
    max_add: int = 64               # notes (cells) added at most
    keep_player: bool = True        # the cells in `frozen` never change


def edit_roll(logits_fn: Callable[[np.ndarray], np.ndarray], roll: np.ndarray, settings: EditSettings,
              rng: np.random.Generator, frozen: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Edit a (T, P) 0/1 roll; `logits_fn` maps (1, 1, T, P) float32 to (1, 1, T, P) logits.

    Returns the edited roll and the number of network passes used.
    """
    roll = (np.asarray(roll) > 0.5).astype(np.float32)
    original = roll.copy()
    touched = np.zeros(roll.shape, bool)
    if frozen is not None and settings.keep_player:
        touched |= frozen.astype(bool)
    may_remove = int(np.floor(settings.max_remove_share * original.sum()))
    removed = added = 0
    passes = 0
    for _ in range(settings.passes):
        allowed = ~touched
        if removed >= may_remove:
            allowed &= roll == 0
        if added >= settings.max_add:
            allowed &= roll == 1
        if not allowed.any():
            break
        logits = np.asarray(logits_fn(roll[None, None]), dtype=np.float64).reshape(roll.shape)
        passes += 1
        scores = logits / max(settings.temperature, 1e-6)
        if settings.temperature > 0:
            scores = scores + rng.gumbel(size=scores.shape)
        scores[~allowed] = -np.inf
        order = np.argsort(scores, axis=None)[::-1]
        flips = 0
        for flat in order:
            if flips >= settings.edits_per_pass or not np.isfinite(scores.flat[flat]):
                break
            t, p = np.unravel_index(flat, roll.shape)
            if roll[t, p] == 1:
                if removed >= may_remove:
                    continue
                removed += 1
            else:
                if added >= settings.max_add:
                    continue
                added += 1
            roll[t, p] = 1 - roll[t, p]
            touched[t, p] = True
            flips += 1
        if flips == 0:
            break
    return roll, passes
