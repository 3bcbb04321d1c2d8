"""`continue` models (satb16-v1 tokens, KV cache): answer a phrase, or harmonise step by step.

Every grid step is four tokens, soprano, alto, tenor, bass; a token is `pitch - pitch_low`
or `pitch_count` for a rest. The same pitch on consecutive steps is one held note.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livegen import roll as R
from livegen.generate.accompany import MELODY_TARGET
from livegen.models import Model


@dataclass
class SamplingSettings:
    temperature: float = 0.9
    top_p: float = 0.95


def sample(logits: np.ndarray, settings: SamplingSettings, rng: np.random.Generator, allowed: int) -> int:
    """One token id from the first `allowed` logits, with temperature and nucleus (top-p)."""
    z = np.asarray(logits[:allowed], dtype=np.float64)
    if settings.temperature <= 0:
        return int(np.argmax(z))
    z = (z - z.max()) / settings.temperature
    p = np.exp(z)
    p /= p.sum()
    order = np.argsort(-p)
    keep = order[: int(np.searchsorted(np.cumsum(p[order]), settings.top_p) + 1)]
    q = p[keep] / p[keep].sum()
    return int(keep[rng.choice(len(keep), p=q)])


class TokenDecoder:
    """KV-cached decoding. The context slides: when it is full, it restarts from BOS and the
    most recent steps (one pass), so a session can last for ever."""

    def __init__(self, model: Model, keep_steps: int = 64, max_tokens: int | None = None):
        self.model, self.info = model, model.info
        layers, two, heads, head_dim = self.info.past_shape
        self.empty = np.zeros((layers, two, 1, heads, 0, head_dim), np.float32)
        self.keep_steps = keep_steps
        # each pass copies the whole cache: a shorter context is a faster step
        self.max_tokens = min(max_tokens or self.info.max_context, self.info.max_context)
        self.reset()

    @property
    def cached(self) -> int:
        return self.past.shape[4]

    def reset(self) -> None:
        self.past = self.empty
        self.tokens: list[int] = []          # every token fed since BOS, BOS excluded
        self.logits: np.ndarray | None = None

    def feed(self, ids: list[int]) -> np.ndarray:
        """Feed tokens; returns the logits after the last one."""
        if not self.tokens and self.past.shape[4] == 0 and self.info.bos_id is not None:
            ids = [self.info.bos_id] + list(ids)
            body = ids[1:]
        else:
            body = list(ids)
        if self.past.shape[4] + len(ids) > self.max_tokens:
            return self.slide(body)
        out = self.model.run({"input_ids": np.asarray([ids], np.int64), "past": self.past})
        self.past = out["present"]
        self.tokens += body
        self.logits = out["logits"][0, -1]
        return self.logits

    def slide(self, body: list[int]) -> np.ndarray:
        history = self.tokens + body
        done = len(history) - len(history) % 4         # keep whole steps, then the partial one
        start = max(0, done - self.keep_steps * 4)
        recent = history[start:]
        self.past, self.tokens = self.empty, []
        return self.feed(recent)


class Harmoniser:
    """Follow mode: the player's note is the soprano of each step; alto, tenor and bass are
    decoded for that same step from the cache."""

    # follow mode must answer within a few ms: 24 steps of context at most, 12 kept on a slide
    FOLLOW_TOKENS, FOLLOW_KEEP = 96, 12

    def __init__(self, model: Model, settings: SamplingSettings, rng: np.random.Generator, live: bool = False):
        self.model, self.settings, self.rng = model, settings, rng
        self.dec = TokenDecoder(model, self.FOLLOW_KEEP, self.FOLLOW_TOKENS) if live else TokenDecoder(model)
        self.live = live
        self.pending_bass: int | None = None
        self.shift = 0
        self.shift_set = False

    def step(self, soprano: int | None, urgent: bool = False) -> list[int]:
        """Soprano MIDI pitch (None = rest) -> [alto, tenor, bass] MIDI pitches or -1.

        When not `urgent` (no player note waits on it) and the context is nearly full, the
        slide is done now, so that it never falls on a step a player is waiting for."""
        info = self.model.info
        if self.live and not urgent and self.dec.cached + 12 > self.dec.max_tokens:
            self.dec.slide([])
        rest = info.pitch_count
        if soprano is not None and not self.shift_set:
            self.shift = R.octave_shift([soprano], info.pitch_low, info.pitch_count, MELODY_TARGET)
            self.shift_set = True
        s_tok = rest
        if soprano is not None and 0 <= soprano + self.shift - info.pitch_low < rest:
            s_tok = soprano + self.shift - info.pitch_low
        ids = ([self.pending_bass] if self.pending_bass is not None else []) + [s_tok]
        logits = self.dec.feed(ids)
        out = []
        for k in range(3):
            tok = sample(logits, self.settings, self.rng, rest + 1)
            out.append(tok)
            if k < 2:
                logits = self.dec.feed([tok])
        self.pending_bass = out[2]   # fed with the next step's soprano: one pass fewer per step
        return [info.pitch_low + t - self.shift if t < rest else -1 for t in out]

    def answer(self, steps: int):
        """Continue what was harmonised for `steps` steps, all four voices; yields
        (step offset, 4 MIDI pitches or -1) as each step is decoded."""
        info = self.model.info
        rest = info.pitch_count
        logits = self.dec.feed([self.pending_bass]) if self.pending_bass is not None else self.dec.logits
        self.pending_bass = None
        if logits is None:
            logits = self.dec.feed([rest, rest, rest, rest])
        for s in range(steps):
            step = []
            for _ in range(4):
                tok = sample(logits, self.settings, self.rng, rest + 1)
                step.append(tok)
                logits = self.dec.feed([tok])
            yield s, [info.pitch_low + t - self.shift if t < rest else -1 for t in step]
