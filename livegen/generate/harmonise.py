"""`harmonise` models (contract version 2): follow mode's step harmoniser, one pass a step.

The model reads the step's soprano and the voices of the step before and gives the alto's
distribution, the tenor's for each alto and the bass's for each tenor (`training.chordrnn`).
The voices are drawn in that order with the same rules as the Transformer's step decoding
(`continue_.banned`: nothing above the tune, no parallel fifths or octaves; nothing a
semitone from the player's other hand; the player's bass line taken as the bass), and no
rest while the tune sounds, all from the one pass: nothing needs guessing ahead.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from livegen.generate.continue_ import Harmoniser, Placement, SamplingSettings, banned, sample
from livegen.models import Model


class ChordHarmoniser(Placement):
    """Follow mode with a `harmonise` model. The same calls as `continue_.Harmoniser` in
    follow mode (`step`, `redo`, `speculate`, `stop_guessing`); the state is the GRU's.

    The model was trained on sequences of at most 128 steps from a zero state; so that a
    session can last for ever, once the state holds REFRESH steps it is made again from zero
    over the last KEEP steps (one pass of KEEP steps, a few ms): between steps, in
    `speculate`, which follow mode calls once a step has sounded and nothing waits; failing
    that, before the next step's own pass. The music is the same either way."""

    REFRESH, KEEP = 96, 32
    PAUSE_STEPS = 16      # after a bar of the player's silence the model waits where it is
    STATS = ("steps decoded when played (one pass each): %(unguessed)d; steps sounded again for a late note "
             "or another key of a chord: %(corrected)d")

    def __init__(self, model: Model, settings: SamplingSettings, rng: np.random.Generator, live: bool = False):
        super().__init__(model)
        self.settings, self.live = settings, live
        layers, hidden = model.info.state_shape
        self.zero = np.zeros((layers, 1, hidden), np.float32)
        self.state = self.zero
        self.seed = int(rng.integers(2**63))
        self.count = 0                  # steps harmonised
        self.since_refresh = 0          # steps fed since the state was last made from zero
        self.fed: deque = deque(maxlen=self.KEEP)   # (chord, beat step) of the last steps fed
        self.before: list[int] | None = None        # the last step's soprano, alto, tenor, bass tokens
        self.rest_run = 0
        self.undo: tuple | None = None
        self.last_at: int | None = None
        # (as the Transformer's: none is guessed ahead, every step is decoded when played)
        self.guess_stats = {"hits": 0, "misses": 0, "unguessed": 0, "stopped": 0, "corrected": 0}

    @property
    def paused(self) -> bool:
        return self.live and self.rest_run >= self.PAUSE_STEPS

    def speculate(self, interrupt=lambda: False) -> None:
        """Nothing to guess (a step is one pass): the state is made again here when it is due."""
        if self.since_refresh >= self.REFRESH:
            self._refresh()

    def stop_guessing(self) -> None:
        pass

    def _refresh(self) -> None:
        chords = np.array([[c for c, _ in self.fed]], np.int64)
        beats = np.array([[b for _, b in self.fed]], np.int64)
        self.state = self.model.run({"chord": chords, "beat_step": beats, "state": self.zero})["state_out"]
        self.since_refresh = len(self.fed)

    def step(self, soprano: int | None, urgent: bool = False, undo: bool = False, held: tuple = (),
             at: int | None = None) -> list[int]:
        """Soprano MIDI pitch (None = rest) -> [alto, tenor, bass] MIDI pitches or -1. `at`: the
        grid step (its place in the beat is the model's input; default: steps so far). With
        `undo` the step may be taken back (`redo`); `held`: the player's other notes.
        (`urgent`, for the Transformer's sake, changes nothing here.)"""
        info = self.model.info
        rest = info.pitch_count
        self.undo = self._state() if undo else None
        self.last_at = at
        s_tok = self.soprano_token(soprano)
        if self.paused and s_tok == rest:
            return [-1, -1, -1]
        if self.since_refresh >= self.REFRESH:    # (not done between steps: no time was left)
            self._refresh()
        chord = [s_tok] + (self.before[1:] if self.before else [rest] * 3)
        beat = (self.count if at is None else at) % info.steps_per_beat
        out = self.model.run({"chord": np.array([[chord]], np.int64), "beat_step": np.array([[beat]], np.int64),
                              "state": self.state})
        self.state = out["state_out"]
        self.fed.append((chord, beat))
        self.since_refresh += 1
        hand = self.hand_tokens(s_tok, held)
        no = set(hand[0]) if hand else set()
        if s_tok != rest:
            no.add(rest)    # while the tune sounds the voices sound (a voice that rests goes on resting)
        rng = np.random.default_rng((self.seed, self.count, s_tok))
        voices: list[int] = []
        for k, logits in enumerate((out["alto"][0, 0], out["tenor"][0, 0], out["bass"][0, 0])):
            if k == 2 and hand and hand[1] is not None:
                voices.append(hand[1])      # the player's bass
                continue
            row = logits if k == 0 else logits[voices[-1]]    # the tenor given the alto, the bass given the tenor
            ban = sorted(set(banned([s_tok] + voices, self.before, rest)) | no)
            voices.append(sample(row, self.settings.of(info), rng, rest + 1, ban))
        self.guess_stats["unguessed"] += 1
        self.count += 1
        self.before = [s_tok] + voices
        self.rest_run = self.rest_run + 1 if s_tok == rest else 0
        return [info.pitch_low + t - self.shift if t < rest else -1 for t in voices]

    def _state(self) -> tuple:
        return (self.state, self.since_refresh, deque(self.fed, maxlen=self.KEEP), self.count, self.before,
                self.rest_run, self.shift, self.shift_set)

    def redo(self, soprano: int | None, held: tuple = ()) -> list[int] | None:
        """The last step again with this soprano (a late note for it, or another key of its
        chord); again until the next step. None when the last step cannot be taken back."""
        if self.undo is None:
            return None
        state, self.undo = self.undo, None
        (self.state, self.since_refresh, self.fed, self.count, self.before, self.rest_run, self.shift,
         self.shift_set) = state
        self.guess_stats["corrected"] += 1
        return self.step(soprano, urgent=True, undo=True, held=held, at=self.last_at)


def harmoniser_for(model: Model, settings: SamplingSettings, rng: np.random.Generator, live: bool = False):
    """Follow mode's step harmoniser for this model: one pass a step for a `harmonise` model,
    three (and guesses ahead, live) for a `continue` model."""
    return (ChordHarmoniser if model.info.kind == "harmonise" else Harmoniser)(model, settings, rng, live)
