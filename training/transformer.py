"""Decoder-only Transformer for `continue`, over `satb16-v1` tokens, with a KV cache.

A sequence is BOS, then for each 16th step soprano, alto, tenor, bass, each a pitch index
(pitch - pitch_low) or `pitch_count` for a rest. Positions use rotary embeddings (relative,
so a cache can slide) plus a learned voice embedding (which of S, A, T, B a token is).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


@dataclass
class TransformerConfig:
    pitch_count: int = 46
    layers: int = 6
    heads: int = 8
    d_model: int = 256
    dropout: float = 0.2
    max_context: int = 512    # tokens

    @property
    def vocab_size(self) -> int:     # pitches + rest + BOS
        return self.pitch_count + 2

    @property
    def rest_id(self) -> int:
        return self.pitch_count

    @property
    def bos_id(self) -> int:
        return self.pitch_count + 1

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


def rotary_tables(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, D/2) of the rotary angles for these positions; made once per forward."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]           # (T, D/2)
    return angles.cos(), angles.sin()


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of x (B, H, T, D) by the angles of their positions."""
    if x.dtype != cos.dtype:     # under autocast: rotate in float32, hand back q and k as v's dtype
        return rotary(x.float(), cos, sin).to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return rotated.flatten(-2)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rot, past_kv, mask, copies: int = 1):
        """x (B, T, C); past_kv (2, B, H, T_past, D) -> x, present (2, B, H, T_past + T, D).
        With `copies` (`Transposed`), x is (B * copies, T, C), a row's copies one after another,
        and the caches are (2, B, copies * H, ...): the copies' heads side by side, so attention
        runs on the cache as it is passed in."""
        b, t, c = x.shape
        h, d = self.cfg.heads, self.cfg.head_dim
        # unflatten/flatten with constant sizes only: no shape arithmetic in the exported graph
        q, k, v = self.qkv(self.ln1(x)).unflatten(-1, (3, h, d)).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        q = rotary(q, *rot)
        k = rotary(k, *rot)
        if copies > 1:      # (B * copies, H, T, D) -> (B, copies * H, T, D): the same memory
            q, k, v = (z.unflatten(0, (-1, copies)).flatten(1, 2) for z in (q, k, v))
        k = torch.cat([past_kv[0], k], dim=2)                            # (B, H, T_past + T, D)
        v = torch.cat([past_kv[1], v], dim=2)
        if torch.onnx.is_in_onnx_export():
            # plain ops, so the graph runs on any ONNX Runtime
            att = (q @ k.transpose(-2, -1)) * (d ** -0.5)                # (B, H, T, T_past + T)
            att = att.masked_fill(~mask, float("-inf"))
            y = F.softmax(att, dim=-1) @ v                               # (B, H, T, D)
        else:
            # fused kernel in training: never materialises the (T, T) attention per head
            p = self.cfg.dropout if self.training else 0.0
            causal = k.shape[2] == t
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if causal else mask,
                                               dropout_p=p, is_causal=causal)
        if copies > 1:
            y = y.unflatten(1, (-1, h)).flatten(0, 1)
        y = y.transpose(1, 2).flatten(2)                                 # (B, T, C)
        x = x + self.drop(self.proj(y))
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, torch.stack([k, v])


class MusicTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.voice = nn.Embedding(4, cfg.d_model)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def empty_past(self, batch: int, device=None) -> torch.Tensor:
        c = self.cfg
        return torch.zeros(c.layers, 2, batch, c.heads, 0, c.head_dim, device=device)

    def forward(self, input_ids: torch.Tensor, past: torch.Tensor | None = None, copies: int = 1):
        """input_ids (B, T_new); past (L, 2, B, H, T_past, D) -> logits (B, T_new, V), present.
        `copies`: see `Block.forward` (input_ids (B * copies, T_new), past (L, 2, B, copies * H, ...))."""
        b, t = input_ids.shape
        if past is None:
            past = self.empty_past(b, input_ids.device)
        t_past = past.shape[4]
        positions = torch.arange(t, device=input_ids.device) + t_past
        # position 0 is BOS; after it S, A, T, B repeat
        voice = torch.remainder(positions - 1, 4)
        x = self.drop(self.tok(input_ids) + self.voice(voice)[None])
        key_pos = torch.arange(t + t_past, device=input_ids.device)
        mask = key_pos[None, :] <= positions[:, None]                   # (T, T_past + T)
        rot = rotary_tables(positions, self.cfg.head_dim)
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, rot, past[i], mask, copies)
            presents.append(present)
        logits = self.head(self.ln_f(x))
        return logits, torch.stack(presents)


class Ensemble(nn.Module):
    """Several Transformers over the same tokens, as one model of the same contract: the mean
    of their next-token probabilities (given as log-probabilities, which the runtime's softmax
    takes as logits) and their caches packed into one `past` (their layers one after another,
    heads and head_dim padded with zeros to the widest member's). Each member sees only its own
    slice, so the padding is never read."""

    def __init__(self, members: list[MusicTransformer]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        first = members[0].cfg
        for m in members[1:]:
            if m.cfg.pitch_count != first.pitch_count:
                raise ValueError(f"the members' pitch counts differ ({m.cfg.pitch_count} and {first.pitch_count})")
        self.members = nn.ModuleList(members)
        heads = max(m.cfg.heads for m in members)
        head_dim = max(m.cfg.head_dim for m in members)
        self.cfg = TransformerConfig(pitch_count=first.pitch_count, layers=sum(m.cfg.layers for m in members),
                                     heads=heads, d_model=heads * head_dim, dropout=0.0,
                                     max_context=min(m.cfg.max_context for m in members))

    def empty_past(self, batch: int, device=None) -> torch.Tensor:
        c = self.cfg
        return torch.zeros(c.layers, 2, batch, c.heads, 0, c.head_dim, device=device)

    def forward(self, input_ids: torch.Tensor, past: torch.Tensor | None = None):
        if past is None:
            past = self.empty_past(input_ids.shape[0], input_ids.device)
        logps, presents, at = [], [], 0
        for m in self.members:
            c = m.cfg
            logits, present = m(input_ids, past[at:at + c.layers, :, :, :c.heads, :, :c.head_dim])
            logps.append(F.log_softmax(logits, dim=-1))
            presents.append(F.pad(present, (0, self.cfg.head_dim - c.head_dim, 0, 0, 0, self.cfg.heads - c.heads)))
            at += c.layers
        mean = torch.logsumexp(torch.stack(logps), dim=0) - math.log(len(self.members))
        return mean, torch.cat(presents)


def tokens_from_voices(voices: np.ndarray, pitch_low: int, pitch_count: int, bos_id: int | None) -> np.ndarray:
    """(steps, 4) pitches or -1 -> flat int64 tokens, S A T B per step, BOS first when given."""
    ids = voices.astype(np.int64) - pitch_low
    ids[(voices < 0) | (ids < 0) | (ids >= pitch_count)] = pitch_count
    flat = ids.reshape(-1)
    return np.concatenate([[bos_id], flat]) if bos_id is not None else flat


class Transposed(nn.Module):
    """One Transformer heard in several keys at once, as one model of the same contract: the
    tokens moved by each of `shifts` semitones (a pitch moved out of the window folded back
    by an octave), the next-token log-probabilities of each copy moved back to the tokens'
    own key (a pitch a copy cannot name gets nothing from it), divided by `temperature` and
    averaged as probabilities. The copies run as one batch; `past`/`present` hold their caches
    side by side on the heads axis (`Block.forward`'s `copies`), so the runtime's batch axis
    stays its own and a cache is never copied to be rearranged.

    A Transformer trained on transposed chorales is nearly, not exactly, the same model in
    every key, and its errors differ from key to key: the mean is a cheap ensemble of one set
    of weights. `temperature` (> 1 where the model is overconfident) is chosen on the valid
    split (`python -m training transposed`, `training.transposed`)."""

    def __init__(self, model: MusicTransformer, shifts: list[int], temperature: float = 1.0):
        super().__init__()
        if not shifts or len(set(shifts)) != len(shifts) or any(abs(s) > 11 for s in shifts):
            raise ValueError(f"transpositions {shifts}: distinct shifts of less than an octave, at least one")
        if not temperature > 0:
            raise ValueError(f"temperature {temperature}: above 0")
        self.model, self.shifts, self.temperature = model, list(shifts), float(temperature)
        base, k, p = model.cfg, len(shifts), model.cfg.pitch_count
        self.cfg = TransformerConfig(pitch_count=p, layers=base.layers, heads=k * base.heads,
                                     d_model=k * base.d_model, dropout=0.0, max_context=base.max_context)
        vocab = torch.arange(base.vocab_size)
        moved, back, fill = [], [], []
        for s in shifts:
            m = torch.where(vocab < p, vocab + s, vocab)
            m = torch.where((vocab < p) & (m < 0), m + 12, m)
            m = torch.where((vocab < p) & (m >= p), m - 12, m)
            moved.append(m)
            b = torch.where(vocab < p, vocab + s, vocab)
            outside = (vocab < p) & ((b < 0) | (b >= p))
            picks = F.one_hot(torch.where(outside, torch.zeros_like(b), b), base.vocab_size).float()  # (V, V)
            back.append((picks * ~outside[:, None]).T)       # column t: the copy's logit for token t
            fill.append(torch.where(outside, torch.tensor(-1e9), torch.tensor(0.0)))
        self.register_buffer("moved", torch.stack(moved), persistent=False)     # (k, V): a token in each copy's key
        self.register_buffer("back", torch.stack(back), persistent=False)       # (k, V, V): where a copy names a token
        self.register_buffer("fill", torch.stack(fill), persistent=False)       # (k, V): -1e9 where it cannot

    def empty_past(self, batch: int, device=None) -> torch.Tensor:
        c = self.cfg
        return torch.zeros(c.layers, 2, batch, c.heads, 0, c.head_dim, device=device)

    def mapped(self, input_ids: torch.Tensor, past: torch.Tensor | None = None):
        """Each copy's logits moved back to the tokens' own key, (B, k, T, V), and `present`."""
        k = len(self.shifts)
        if past is None:
            past = self.empty_past(input_ids.shape[0], input_ids.device)
        ids = self.moved[:, input_ids].transpose(0, 1).flatten(0, 1)                  # (B * k, T), row-major
        logits, present = self.model(ids, past, copies=k)
        logits = logits.unflatten(0, (-1, k))                                          # (B, k, T, V)
        # each copy's logits moved back by a matrix of ones and zeros: no shapes to compute in the graph
        return logits @ self.back[None] + self.fill[None, :, None, :], present

    def forward(self, input_ids: torch.Tensor, past: torch.Tensor | None = None):
        mapped, present = self.mapped(input_ids, past)
        return mix(mapped, self.temperature), present


def mix(mapped: torch.Tensor, temperature: float) -> torch.Tensor:
    """(..., k, T, V) logits of k copies -> (..., T, V) the log of their mean probabilities at `temperature`."""
    logp = F.log_softmax(mapped / temperature, dim=-1)
    return torch.logsumexp(logp, dim=-3) - math.log(mapped.shape[-3])
