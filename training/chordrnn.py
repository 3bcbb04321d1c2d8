"""A step harmoniser for follow mode: a GRU that gives a step's alto, tenor and bass in one pass.

Follow mode harmonises every 16th as it is played. The Transformer (`continue`) needs three
passes one after another for a step (alto, then tenor, then bass, each token fed back);
this model reads a whole step at once and answers the whole step:

- in: for each step t, the chord `[soprano_t, alto_(t-1), tenor_(t-1), bass_(t-1)]` (the
  player's note now, the voices it sounded a step before; satb16-v1 tokens: pitch -
  pitch_low, or pitch_count for a rest), the step's place in its beat, and the GRU state;
- out: the alto's logits; the tenor's for each alto (a table, one row per alto token); the
  bass's for each tenor; and the next state.

The voices are a chain, alto -> tenor -> bass, so one pass gives every conditional the
runtime samples from: after it has drawn the alto (with its own rules: no parallels, no
clash with the player's other hand) it reads the tenor's row for that alto, and so on. The
state is a few kB and fixed, so there is no context to slide.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ChordRNNConfig:
    pitch_count: int = 46
    embed: int = 128
    hidden: int = 256
    layers: int = 2
    head: int = 128            # width of the tenor's and the bass's conditional heads
    steps_per_beat: int = 4
    crop_steps: int = 128      # training sequences: this many steps from a zero state
    dropout: float = 0.1

    @property
    def vocab_size(self) -> int:     # pitches + rest
        return self.pitch_count + 1

    @property
    def rest_id(self) -> int:
        return self.pitch_count


class ChordRNN(nn.Module):
    def __init__(self, cfg: ChordRNNConfig):
        super().__init__()
        self.cfg = cfg
        v = cfg.vocab_size
        self.voices = nn.Embedding(4 * v, cfg.embed)          # one table, the voice's rows apart
        self.beat = nn.Embedding(cfg.steps_per_beat, cfg.embed)
        self.gru = nn.GRU(cfg.embed, cfg.hidden, cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.alto = nn.Linear(cfg.hidden, v)
        self.tenor_in = nn.Linear(cfg.hidden, cfg.head)
        self.given_alto = nn.Embedding(v, cfg.head)
        self.tenor = nn.Linear(cfg.head, v)
        self.bass_in = nn.Linear(cfg.hidden, cfg.head)
        self.given_tenor = nn.Embedding(v, cfg.head)
        self.bass = nn.Linear(cfg.head, v)

    def empty_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=device)

    def run(self, chord: torch.Tensor, beat_step: torch.Tensor, state: torch.Tensor):
        """chord [B, T, 4] int64, beat_step [B, T] int64, state [layers, B, hidden] ->
        (h [B, T, hidden], next state)."""
        offsets = torch.arange(4, device=chord.device) * self.cfg.vocab_size
        x = self.voices(chord + offsets).sum(dim=2) + self.beat(beat_step)
        h, state = self.gru(self.drop(x), state)
        return self.drop(h), state

    def forward(self, chord: torch.Tensor, beat_step: torch.Tensor, state: torch.Tensor):
        """The exported graph: alto [B, T, V]; tenor [B, T, V (alto), V]; bass [B, T, V (tenor), V];
        next state."""
        h, state = self.run(chord, beat_step, state)
        tenor = self.tenor(F.relu(self.tenor_in(h).unsqueeze(2) + self.given_alto.weight))
        bass = self.bass(F.relu(self.bass_in(h).unsqueeze(2) + self.given_tenor.weight))
        return self.alto(h), tenor, bass, state

    def loss(self, chord: torch.Tensor, beat_step: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per voice-step of the true alto, tenor (given the true alto) and
        bass (given the true tenor); target [B, T, 3], -100 where not scored."""
        h, _ = self.run(chord, beat_step, self.empty_state(chord.shape[0], chord.device))
        alto, tenor, bass = target.unbind(-1)
        logits = [self.alto(h),
                  self.tenor(F.relu(self.tenor_in(h) + self.given_alto(alto.clamp(min=0)))),
                  self.bass(F.relu(self.bass_in(h) + self.given_tenor(tenor.clamp(min=0))))]
        v = self.cfg.vocab_size
        return sum(F.cross_entropy(z.reshape(-1, v), t.reshape(-1), ignore_index=-100, reduction="sum")
                   for z, t in zip(logits, (alto, tenor, bass))) / (target >= 0).sum().clamp(min=1)


def step_tokens(voices: np.ndarray, pitch_low: int, pitch_count: int) -> np.ndarray:
    """(steps, 4) MIDI pitches or -1 -> (steps, 4) satb16-v1 tokens."""
    out = np.where(voices >= 0, voices.astype(np.int64) - pitch_low, pitch_count)
    out[(out < 0) | (out > pitch_count)] = pitch_count
    return out


def model_inputs(tokens: np.ndarray, rest: int, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs and targets for steps start.. of one piece's tokens: the chord (soprano now,
    the other voices a step before; rests before the first step), each step's place in its
    beat (steps_per_beat 4), and the alto, tenor and bass to predict."""
    chord = tokens.copy()
    chord[1:, 1:] = tokens[:-1, 1:]
    chord[0, 1:] = rest
    beat = np.arange(len(tokens)) % 4
    return chord[start:], beat[start:], tokens[start:, 1:]
