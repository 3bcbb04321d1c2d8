"""Training loops for the three models: one `Task` per kind, one `fit` loop for all.

The loop owns what every run needs: seeds, device, data-parallel gradient averaging under
torchrun (gloo on CPU, NCCL on GPU), a progress bar, validation, checkpoints that carry
their config and schema version, resume, a loss curve and sample piano rolls as PNGs.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from training import data as D
from training.arcnn import ARCNN, ARCNNConfig, corrupt, edit_loss
from training.chordrnn import ChordRNN, ChordRNNConfig, model_inputs, step_tokens
from training.gan import Critic, GANConfig, Generator, best_of_k_cross_entropy, gradient_penalty, voice_targets
from training.transformer import Ensemble, MusicTransformer, Transposed, TransformerConfig, tokens_from_voices

log = logging.getLogger("training")

CHECKPOINT_SCHEMA = 1
KINDS = {"gan": "accompany", "arcnn": "edit", "transformer": "continue", "chordrnn": "harmonise"}


@dataclass
class RunConfig:
    model: str
    data: str
    out: str
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    valid_every: int = 200
    seed: int = 0
    device: str = "cpu"
    augment: bool = True
    max_chorales: int = 0      # 0 = all; a small number makes a quick test run
    minutes: float = 0.0       # > 0: stop after this much training time; the LR schedule follows it
    init: str = ""             # a checkpoint whose weights start this run (modules of the same names)
    crop_steps: int = 0        # transformer: steps per training crop (0: its whole context)
    hold_out: str = "files"    # a MIDI folder: whole files held out, or each file's last bars ("tail")
    rehearse: str = ""         # a fine-tune: "SHARE:JSB.json", that share of the training steps from the chorales
    bf16: bool = False         # transformer: forward and backward under bfloat16 autocast (a GPU's tensor cores)
    teacher: str = ""          # transformer: "A,B,...": models (checkpoints, contract files) whose mean probabilities it learns
    distill: float = 0.5       # with a teacher: the share of the loss that is the teacher's (KL), the rest the notes' own


# --------------------------------------------------------------------------- tasks

class Task:
    """Holds the modules, optimisers and data of one kind of model."""
    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, run: RunConfig, splits: D.Splits, device: torch.device, rank: int, world: int,
                 model_config: dict | None = None):
        self.run, self.device, self.rank, self.world = run, device, rank, world
        train = splits.train[: run.max_chorales or None]
        self.train = D.augment(train) if run.augment else list(train)
        self.valid = list(splits.valid[: run.max_chorales or None]) or list(train)
        self.rng = np.random.default_rng(run.seed * 1000 + rank)
        self.local_batch = max(run.batch_size // world, 1)

    def opt(self, module: torch.nn.Module, lr: float | None = None, betas=(0.9, 0.99)) -> torch.optim.Optimizer:
        return torch.optim.AdamW(module.parameters(), lr=lr or self.run.lr, betas=betas,
                                 weight_decay=self.run.weight_decay)

    def model_config(self) -> dict:
        return asdict(self.cfg)


class GANTask(Task):
    def __init__(self, *args, model_config=None, **kw):
        super().__init__(*args, **kw)
        self.cfg = GANConfig(**(model_config or {}))
        self.modules = {"generator": Generator(self.cfg).to(self.device), "critic": Critic(self.cfg).to(self.device)}
        self.optimizers = {"generator": self.opt(self.modules["generator"], betas=(0.5, 0.9)),
                           "critic": self.opt(self.modules["critic"], betas=(0.5, 0.9))}
        v = D.windows(self.valid, self.cfg.window_steps, np.random.default_rng(12345), 256)
        self.valid_batch = self.tensors(v)

    def tensors(self, win: np.ndarray):
        rolls = torch.from_numpy(np.stack([D.piano_roll(w) for w in win])).to(self.device)  # (B, 4, T, P)
        melody, real = rolls[:, 0], rolls[:, 1:]
        targets = voice_targets(torch.from_numpy(win[:, :, 1:]).to(self.device), D.PITCH_LOW, self.cfg.pitch_count)
        return melody, real, targets

    def batch(self):
        return self.tensors(D.windows(self.train, self.cfg.window_steps, self.rng, self.local_batch))

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, device=self.device)

    def train_step(self) -> dict[str, float]:
        G, C = self.modules["generator"], self.modules["critic"]
        for _ in range(self.cfg.critic_steps):
            melody, real, _ = self.batch()
            with torch.no_grad():
                fake = G(melody, self.noise(len(melody)))
            wdist = C(melody, real).mean() - C(melody, fake).mean()
            c_loss = -wdist + self.cfg.gp_weight * gradient_penalty(C, melody, real, fake)
            self.optimizers["critic"].zero_grad(set_to_none=True)
            c_loss.backward()
            average_gradients(C, self.world)
            self.optimizers["critic"].step()
        melody, real, targets = self.batch()
        k = max(self.cfg.variety_k, 1)
        melody = melody.repeat(k, 1, 1)                       # k noise draws per melody, draw-major
        logits = G.logits(melody, self.noise(len(melody)))
        recon = best_of_k_cross_entropy(logits, targets, k)
        adv = -C(melody, F.softmax(logits, dim=-1)[..., :-1]).mean()
        g_loss = self.cfg.recon_weight * recon + self.cfg.adv_weight * adv
        self.optimizers["generator"].zero_grad(set_to_none=True)
        g_loss.backward()
        average_gradients(G, self.world)
        self.optimizers["generator"].step()
        return {"loss": recon.item(), "wasserstein": wdist.item(), "critic": c_loss.item()}

    @torch.no_grad()
    def valid_loss(self) -> float:
        G = self.modules["generator"]
        melody, _, targets = self.valid_batch
        k = max(self.cfg.variety_k, 1)
        melody = melody.repeat(k, 1, 1)
        z = torch.randn(len(melody), self.cfg.z_dim, generator=torch.Generator().manual_seed(0)).to(self.device)
        return best_of_k_cross_entropy(G.logits(melody, z), targets, k).item()

    @torch.no_grad()
    def sample_rolls(self) -> dict[str, np.ndarray]:
        G = self.modules["generator"]
        melody, real, _ = (t[:1] for t in self.valid_batch)
        probs = G(melody, self.noise(1))[0]                               # (3, T, P)
        best = probs.argmax(-1, keepdim=True)
        gen = torch.zeros_like(probs).scatter_(-1, best, 1.0) * (probs.max(-1, keepdim=True).values > 0.3)
        return {"real": torch.cat([melody, real[0]]).cpu().numpy(),
                "generated": torch.cat([melody, gen]).cpu().numpy()}


class ARCNNTask(Task):
    def __init__(self, *args, model_config=None, **kw):
        super().__init__(*args, **kw)
        self.cfg = ARCNNConfig(**(model_config or {}))
        self.modules = {"arcnn": ARCNN(self.cfg).to(self.device)}
        self.optimizers = {"arcnn": self.opt(self.modules["arcnn"])}
        g = torch.Generator(device=self.device).manual_seed(12345)
        self.valid_rolls = self.rolls(D.windows(self.valid, self.cfg.window_steps, np.random.default_rng(12345), 256))
        self.valid_corrupt = corrupt(self.valid_rolls, self.cfg, g)

    def rolls(self, win: np.ndarray) -> torch.Tensor:
        rolls = np.stack([D.piano_roll(w).max(axis=0) for w in win])[:, None]        # (B, 1, T, P)
        return torch.from_numpy(rolls).to(self.device)

    def train_step(self) -> dict[str, float]:
        model = self.modules["arcnn"]
        roll = self.rolls(D.windows(self.train, self.cfg.window_steps, self.rng, self.local_batch))
        noisy = corrupt(roll, self.cfg)
        loss = edit_loss(model(noisy), noisy, roll)
        self.optimizers["arcnn"].zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(model, self.world)
        self.optimizers["arcnn"].step()
        return {"loss": loss.item()}

    @torch.no_grad()
    def valid_loss(self) -> float:
        model = self.modules["arcnn"]
        return edit_loss(model(self.valid_corrupt), self.valid_corrupt, self.valid_rolls).item()

    @torch.no_grad()
    def sample_rolls(self) -> dict[str, np.ndarray]:
        from livegen.generate.edit import EditSettings, edit_roll

        model = self.modules["arcnn"]
        original = self.valid_rolls[0, 0].cpu().numpy()
        noisy = self.valid_corrupt[0, 0].cpu().numpy()

        def logits_fn(roll: np.ndarray) -> np.ndarray:
            return model(torch.from_numpy(roll).to(self.device)).cpu().numpy()

        edited, _ = edit_roll(logits_fn, noisy, EditSettings(passes=12, edits_per_pass=8, max_remove_share=1.0,
                                                               max_add=999), np.random.default_rng(0))
        return {"original": original[None], "corrupted": noisy[None], "edited": edited[None]}


class TransformerTask(Task):
    def __init__(self, *args, model_config=None, **kw):
        super().__init__(*args, **kw)
        self.cfg = TransformerConfig(**(model_config or {}))
        self.modules = {"transformer": MusicTransformer(self.cfg).to(self.device)}
        self.teacher = self.load_teacher(self.run.teacher) if self.run.teacher else None
        self.optimizers = {"transformer": self.opt(self.modules["transformer"])}
        self.train_tokens = [self.tokens(c) for c in self.train]
        self.valid_tokens = [self.tokens(c) for c in self.valid]
        self.lengths = np.array([len(t) for t in self.train_tokens], dtype=np.float64)

    def tokens(self, chorale: np.ndarray) -> np.ndarray:
        return tokens_from_voices(chorale, D.PITCH_LOW, self.cfg.pitch_count, None)

    def load_teacher(self, specs: str) -> Ensemble:
        """Distillation: the Transformers (checkpoints, or contract files read back) whose mean
        next-token probabilities the model learns besides the notes, frozen."""
        members = []
        for spec in specs.split(","):
            start = load_start(spec.strip())
            if start["model"] != "transformer":
                raise ValueError(f"--teacher {spec}: {start['model']} weights, not a Transformer's")
            members.append(transformer_of(start))
        teacher = Ensemble(members).to(self.device).eval()
        if teacher.cfg.pitch_count != self.cfg.pitch_count:
            raise ValueError(f"--teacher: {teacher.cfg.pitch_count} pitches, the model {self.cfg.pitch_count}")
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    @property
    def span(self) -> int:
        """Steps per training crop: the whole context, or fewer (`RunConfig.crop_steps`: a
        fine-tune on a CPU takes more, shorter steps in its minutes)."""
        whole = self.cfg.max_context // 4
        return min(self.run.crop_steps or whole, whole)

    def crop(self, tokens: np.ndarray, start_step: int, span: int | None = None) -> np.ndarray:
        """BOS + up to `span` steps' tokens (the context's max_context - 1 at most) from a step
        boundary, padded with -100 (ignored)."""
        n = min((span or self.cfg.max_context // 4) * 4, self.cfg.max_context)
        body = tokens[start_step * 4: start_step * 4 + n]
        out = np.full(n + 1, -100, np.int64)
        out[0] = self.cfg.bos_id
        out[1:1 + len(body)] = body
        return out

    def crop_start(self, steps: int) -> int:
        """The step a training crop of a piece of `steps` steps begins at. A quarter of the
        crops begin the piece (BOS then its first step) where a crop is a good part of it; of
        a long piece in short crops, no more than its share (a quarter of the 2-bar crops from
        quartet movements of 40-300 bars taught their first 2 bars as often as all the rest)."""
        span = self.span
        first = min(0.25, span / max(steps, 1))
        return 0 if self.rng.random() < first else int(self.rng.integers(0, max(steps - span, 0) + 1))

    def train_step(self) -> dict[str, float]:
        model = self.modules["transformer"]
        picks = self.rng.choice(len(self.train_tokens), size=self.local_batch, p=self.lengths / self.lengths.sum())
        rows = []
        for k in picks:
            start = self.crop_start(len(self.train_tokens[k]) // 4)
            rows.append(self.crop(self.train_tokens[k], start, self.span))
        batch = torch.from_numpy(np.stack(rows)).to(self.device)
        inputs = batch[:, :-1].clamp(min=0)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.run.bf16):
            logits, _ = model(inputs)
        logits = logits.float().reshape(-1, logits.shape[-1])
        targets = batch[:, 1:].reshape(-1)
        loss = F.cross_entropy(logits, targets, ignore_index=-100)
        losses = {"loss": loss.item()}
        if self.teacher is not None:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.run.bf16):
                taught, _ = self.teacher(inputs)
            taught = taught.float().reshape(-1, taught.shape[-1])[targets >= 0]
            kl = F.kl_div(F.log_softmax(logits[targets >= 0], dim=-1), taught, log_target=True, reduction="batchmean")
            loss = (1 - self.run.distill) * loss + self.run.distill * kl
            losses["kl"] = kl.item()
        self.optimizers["transformer"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        average_gradients(model, self.world)
        self.optimizers["transformer"].step()
        return losses

    @torch.no_grad()
    def valid_loss(self) -> float:
        return sequence_nll(self.modules["transformer"], self.valid_tokens, self.cfg, self.device)

    @torch.no_grad()
    def sample_rolls(self) -> dict[str, np.ndarray]:
        model = self.modules["transformer"]
        primer = self.crop(self.valid_tokens[0], 0)[: 1 + 16 * 4]
        ids = torch.from_numpy(primer[None]).to(self.device)
        logits, past = model(ids)
        out = list(primer[1:])
        g = torch.Generator(device=self.device).manual_seed(0)
        for _ in range(48 * 4):
            probs = F.softmax(logits[:, -1, : self.cfg.pitch_count + 1], dim=-1)
            nxt = torch.multinomial(probs, 1, generator=g)
            out.append(int(nxt))
            logits, past = model(nxt, past)
        voices = np.array(out).reshape(-1, 4) + D.PITCH_LOW
        voices[np.array(out).reshape(-1, 4) == self.cfg.rest_id] = -1
        return {"primer + continuation": D.piano_roll(voices)}


class ChordRNNTask(Task):
    """Follow mode's step harmoniser (`training.chordrnn`): crops of `crop_steps` steps from
    a zero state, a quarter of them from the piece's first step."""

    def __init__(self, *args, model_config=None, **kw):
        super().__init__(*args, **kw)
        self.cfg = ChordRNNConfig(**(model_config or {}))
        self.modules = {"chordrnn": ChordRNN(self.cfg).to(self.device)}
        self.optimizers = {"chordrnn": self.opt(self.modules["chordrnn"])}
        self.train_tokens = [step_tokens(c, D.PITCH_LOW, self.cfg.pitch_count) for c in self.train]
        self.valid_tokens = [step_tokens(c, D.PITCH_LOW, self.cfg.pitch_count) for c in self.valid]
        self.lengths = np.array([len(t) for t in self.train_tokens], dtype=np.float64)

    def batch(self, pieces: list[np.ndarray], starts: list[int], span: int):
        n = len(pieces)
        chord = np.full((n, span, 4), self.cfg.rest_id, np.int64)
        beat = np.zeros((n, span), np.int64)
        target = np.full((n, span, 3), -100, np.int64)
        for i, (tokens, start) in enumerate(zip(pieces, starts)):
            c, b, t = model_inputs(tokens[: start + span], self.cfg.rest_id, start)
            chord[i, : len(c)], beat[i, : len(b)], target[i, : len(t)] = c, b, t
        return tuple(torch.from_numpy(a).to(self.device) for a in (chord, beat, target))

    def train_step(self) -> dict[str, float]:
        model = self.modules["chordrnn"]
        picks = self.rng.choice(len(self.train_tokens), size=self.local_batch, p=self.lengths / self.lengths.sum())
        span = self.cfg.crop_steps
        starts = [0 if self.rng.random() < 0.25 else int(self.rng.integers(0, max(len(self.train_tokens[k]) - span, 0) + 1))
                  for k in picks]
        loss = model.loss(*self.batch([self.train_tokens[k] for k in picks], starts, span))
        self.optimizers["chordrnn"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        average_gradients(model, self.world)
        self.optimizers["chordrnn"].step()
        return {"loss": loss.item()}

    @torch.no_grad()
    def valid_loss(self) -> float:
        """NLL per voice-step (alto, tenor, bass) over whole valid pieces, each from a zero state."""
        model, total, count = self.modules["chordrnn"], 0.0, 0
        for tokens in self.valid_tokens:
            chord, beat, target = self.batch([tokens], [0], len(tokens))
            n = int((target >= 0).sum())
            total += float(model.loss(chord, beat, target)) * n
            count += n
        return total / max(count, 1)

    @torch.no_grad()
    def sample_rolls(self) -> dict[str, np.ndarray]:
        """The first valid piece's soprano harmonised step by step (most probable chain)."""
        model, rest = self.modules["chordrnn"], self.cfg.rest_id
        tokens = self.valid_tokens[0][:64]
        state = model.empty_state(1, self.device)
        before, out = [rest] * 3, []
        for t, s in enumerate(tokens[:, 0]):
            chord = torch.tensor([[[int(s)] + before]], device=self.device)
            alto, tenor, bass, state = model(chord, torch.tensor([[t % 4]], device=self.device), state)
            a = int(alto[0, 0].argmax())
            te = int(tenor[0, 0, a].argmax())
            b = int(bass[0, 0, te].argmax())
            before = [a, te, b]
            out.append([int(s), a, te, b])
        arr = np.array(out)
        voices = np.where(arr == rest, -1, arr + D.PITCH_LOW)
        return {"soprano harmonised step by step": D.piano_roll(voices)}


def sequence_nll(model: MusicTransformer, sequences: list[np.ndarray], cfg: TransformerConfig,
                 device: torch.device, stride: int | None = None) -> float:
    """Mean NLL in nats per token over whole sequences, scored in sliding windows of max_context.

    Every window starts with BOS at a step boundary; each token is scored once, with at
    least max_context - stride tokens of context once the sequence is longer than a window.
    """
    total, count = 0.0, 0
    model.eval()
    for tokens in sequences:
        for start, end, first in D.scoring_windows(len(tokens), cfg.max_context, stride):
            ids = torch.from_numpy(np.concatenate([[cfg.bos_id], tokens[start:end]])[None]).to(device)
            logits, _ = model(ids[:, :-1])
            logp = F.log_softmax(logits[0].float(), dim=-1)
            targets = ids[0, 1:]
            nll = -logp.gather(1, targets[:, None])[:, 0]
            total += nll[first:].sum().item()
            count += len(nll) - first
    model.train()
    return total / max(count, 1)


TASKS = {"gan": GANTask, "arcnn": ARCNNTask, "transformer": TransformerTask, "chordrnn": ChordRNNTask}


# --------------------------------------------------------------------------- loop helpers

def average_gradients(module: torch.nn.Module, world: int) -> None:
    if world <= 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def progress_of(step: int, elapsed: float, run: RunConfig) -> float:
    """Share of the run done, by steps or by the time budget, whichever is further."""
    done = step / max(run.steps, 1)
    if run.minutes > 0:
        done = max(done, elapsed / (run.minutes * 60))
    return done


def lr_at(step: int, run: RunConfig, progress: float) -> float:
    if step < run.warmup:
        return run.lr * (step + 1) / run.warmup
    return run.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save_checkpoint(path: Path, task: Task, step: int, history: list, best: float) -> None:
    state = {
        "schema": CHECKPOINT_SCHEMA,
        "kind": KINDS[task.run.model],
        "model": task.run.model,
        "config": task.model_config(),
        "run": asdict(task.run),
        "step": step,
        "best_valid": best,
        "history": history,
        "modules": {k: m.state_dict() for k, m in task.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in task.optimizers.items()},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)   # an interrupted save never leaves a broken checkpoint


def transformer_of(ckpt: dict) -> torch.nn.Module:
    """A `continue` checkpoint's Transformer, as its file plays it: heard in the keys of its
    `calibration` where it has one (`training.transformer.Transposed`; the bundled model)."""
    model = MusicTransformer(TransformerConfig(**ckpt["config"]))
    model.load_state_dict({n: t.float() for n, t in ckpt["modules"]["transformer"].items()})
    cal = ckpt.get("calibration")
    return Transposed(model, list(cal["shifts"]), float(cal["temperature"])) if cal else model


def load_start(spec: str) -> dict:
    """The weights a fine-tune starts from: a checkpoint, or a contract ONNX file (a bundled
    model's name, accompany / edit / continue, or a path) read back (`training.from_onnx`)."""
    from livegen.models import BUNDLED

    if spec in BUNDLED or str(spec).endswith(".onnx"):
        from livegen.models import resolve
        from training.from_onnx import checkpoint_from_onnx

        return checkpoint_from_onnx(resolve(spec))
    return load_checkpoint(spec)


def load_checkpoint(path: str | Path) -> dict:
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:    # not a torch file, cut short, or pickled objects weights_only refuses
        raise ValueError(f"{path}: not a livegen checkpoint of schema {CHECKPOINT_SCHEMA} ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("schema") != CHECKPOINT_SCHEMA:
        raise ValueError(f"{path}: not a livegen checkpoint of schema {CHECKPOINT_SCHEMA}")
    return ckpt


def slim_checkpoint(path: str | Path, out: str | Path, half: bool = False) -> None:
    """Weights, config and history only (no optimiser state); fp16 weights with `half`."""
    ckpt = load_checkpoint(path)
    ckpt.pop("optimizers", None)
    if half:
        ckpt["modules"] = {k: {n: (t.half() if t.is_floating_point() else t) for n, t in sd.items()}
                           for k, sd in ckpt["modules"].items()}
    if ckpt["model"] == "gan":   # the critic is not needed to export or evaluate
        ckpt["modules"] = {"generator": ckpt["modules"]["generator"]}
    torch.save(ckpt, out)


def plot_history(history: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    valid = [(h["step"], h["valid"]) for h in history if "valid" in h]
    if train:
        ax.plot(*zip(*train), label="train", alpha=0.6)
    if valid:
        ax.plot(*zip(*valid), "o-", label="valid")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_rolls(rolls: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Each entry (tracks, T, P) drawn as one panel, tracks in different colours."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = np.array([[0.1, 0.1, 0.1], [0.85, 0.2, 0.2], [0.2, 0.5, 0.9], [0.2, 0.7, 0.3]])
    fig, axes = plt.subplots(1, len(rolls), figsize=(4 * len(rolls), 4), squeeze=False)
    for ax, (name, roll) in zip(axes[0], rolls.items()):
        img = np.ones(roll.shape[1:] + (3,))
        for k in range(roll.shape[0]):
            img[roll[k] > 0.5] = colours[k % len(colours)]
        ax.imshow(img.transpose(1, 0, 2), origin="lower", aspect="auto",
                  extent=(0, roll.shape[1], D.PITCH_LOW - 0.5, D.PITCH_LOW + roll.shape[2] - 0.5))
        ax.set_title(name)
        ax.set_xlabel("16th step")
        ax.set_ylabel("MIDI pitch")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- the loop

def fit(run: RunConfig, model_config: dict | None = None, resume: bool = True, show_progress: bool = True) -> dict:
    """Train one model; returns the final record (step, best validation loss, paths)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(run.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(run.seed)
    np.random.seed(run.seed)
    out = Path(run.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = D.load_source(run.data, cache_dir=out / "cache", hold_out=run.hold_out)
    if run.rehearse:
        share, path = run.rehearse.split(":", 1)
        splits.train = splits.train + D.rehearsal(D.load_jsb(path).train, float(share), splits.train, run.seed)
    last = out / "last.pt"
    ckpt = load_checkpoint(last) if resume and last.exists() else None
    start = load_start(run.init) if run.init and not ckpt else None
    if start and start["model"] != run.model:
        raise ValueError(f"--init {run.init} is a {start['model']} checkpoint, not {run.model}")
    # resuming keeps the run's own config; --init takes the architecture of the weights it loads
    cfg = ckpt["config"] if ckpt else {**start["config"], **(model_config or {})} if start else model_config
    task = TASKS[run.model](run, splits, device, rank, world, model_config=cfg)
    step, history, best = 0, [], float("inf")
    if ckpt:
        for k, m in task.modules.items():
            m.load_state_dict(ckpt["modules"][k])
        for k, o in task.optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        step, history, best = ckpt["step"], ckpt["history"], ckpt["best_valid"]
        task.rng = np.random.default_rng(run.seed * 1000 + rank + step)
        torch.manual_seed(run.seed + step)
        if rank == 0:
            log.info("resumed from %s at step %d", last, step)
    elif start:
        for k, weights in start["modules"].items():
            if k in task.modules:
                task.modules[k].load_state_dict({n: t.float() if t.is_floating_point() else t
                                                 for n, t in weights.items()})
        if rank == 0:
            log.info("started from the weights of %s (%s)", run.init, ", ".join(start["modules"]))
        for m in task.modules.values():
            m.eval()
        history.append({"step": 0, "valid": task.valid_loss(), "seconds": 0.0})   # where the fine-tune starts
        log.info("held-out loss before training: %.4f", history[-1]["valid"])
    if world > 1:   # identical start on every rank
        for m in task.modules.values():
            for p in m.parameters():
                dist.broadcast(p.data, 0)
    lead = rank == 0
    if lead:
        (out / "run.json").write_text(json.dumps({"run": asdict(run), "model_config": task.model_config(),
                                                  "world_size": world, "data": splits.source,
                                                  "train_chorales": len(task.train)}, indent=2))
    bar = None
    if lead and show_progress:
        from tqdm import tqdm
        if run.minutes > 0:     # (the bar counts minutes; the steps and the loss beside it)
            bar = tqdm(total=round(run.minutes, 2), initial=round(history[-1].get("seconds", 0.0) / 60, 2)
                       if history else 0, desc=f"{run.model}", unit="min", dynamic_ncols=True,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} min{postfix}")
        else:
            bar = tqdm(total=run.steps, initial=step, desc=f"{run.model}", unit="step", dynamic_ncols=True)
    started = time.time()
    elapsed_before = history[-1].get("seconds", 0.0) if history else 0.0
    for m in task.modules.values():
        m.train()
    while True:
        elapsed = elapsed_before + time.time() - started
        progress = progress_of(step, elapsed, run)
        if world > 1:   # every rank must agree on when to stop
            flag = torch.tensor([progress], dtype=torch.float64)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            progress = float(flag)
        if progress >= 1.0:
            break
        for o in task.optimizers.values():
            for g in o.param_groups:
                g["lr"] = lr_at(step, run, progress)
        losses = task.train_step()
        step += 1
        finishing = progress_of(step, elapsed_before + time.time() - started, run) >= 1.0
        if lead and (step % 10 == 0 or step == 1):
            history.append({"step": step, **losses})
        if bar:
            if run.minutes > 0:
                bar.n = round(min((elapsed_before + time.time() - started) / 60, run.minutes), 2)
                bar.set_postfix(step=step, loss=f"{losses['loss']:.3f}")
            else:
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss']:.3f}")
        if step % run.valid_every == 0 or finishing:
            for m in task.modules.values():
                m.eval()
            valid = task.valid_loss()
            for m in task.modules.values():
                m.train()
            if lead:
                history.append({"step": step, "valid": valid, "seconds": elapsed_before + time.time() - started})
                if valid < best:
                    best = valid
                    save_checkpoint(out / "best.pt", task, step, history, best)
                save_checkpoint(last, task, step, history, best)
                plot_history(history, out / "loss.png", f"{run.model}: loss")
                for m in task.modules.values():
                    m.eval()
                plot_rolls(task.sample_rolls(), out / f"sample-{step:06d}.png", f"{run.model} at step {step}")
                for m in task.modules.values():
                    m.train()
                log.info("step %d valid %.4f (best %.4f)", step, valid, best)
    if bar:
        bar.close()
    if world > 1:
        dist.barrier()
    return {"step": step, "best_valid": best, "out": str(out), "seconds": time.time() - started}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["finetune"]:
        from training.finetune import main as finetune

        return finetune(argv[1:])
    if argv[:1] == ["transposed"]:
        from training.transposed import main as transposed

        return transposed(argv[1:])
    p = argparse.ArgumentParser(prog="python -m training", description="Train a livegen model on chorales.")
    p.add_argument("model", choices=sorted(TASKS), help="gan (accompany), arcnn (edit), transformer (continue) or chordrnn (harmonise: follow mode)")
    p.add_argument("--data", required=True, help="jsb:FILE.json, music21, midi:FOLDER, or a path")
    p.add_argument("--out", required=True, help="folder for checkpoints, curves and samples")
    p.add_argument("--steps", type=int, default=RunConfig.steps)
    p.add_argument("--batch-size", type=int, default=RunConfig.batch_size)
    p.add_argument("--lr", type=float, default=RunConfig.lr)
    p.add_argument("--valid-every", type=int, default=RunConfig.valid_every)
    p.add_argument("--warmup", type=int, default=RunConfig.warmup)
    p.add_argument("--seed", type=int, default=RunConfig.seed)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--no-augment", action="store_true", help="no transposition of the training split")
    p.add_argument("--max-chorales", type=int, default=0, help="use only the first N chorales per split")
    p.add_argument("--config", default=None, help="JSON of model config fields, e.g. '{\"layers\": 4}'")
    p.add_argument("--minutes", type=float, default=0.0, help="stop after this much training time")
    p.add_argument("--fresh", action="store_true", help="ignore OUT/last.pt instead of resuming from it")
    p.add_argument("--bf16", action="store_true", help="transformer: train under bfloat16 autocast (on a GPU)")
    p.add_argument("--teacher", default="", help="transformer: distil from these models, comma-separated "
                   "(checkpoints or contract files): the mean of their next-token probabilities")
    p.add_argument("--distill", type=float, default=RunConfig.distill,
                   help="with --teacher: the share of the loss that is the teacher's (0..1)")
    p.add_argument("--init", default="", help="start from these weights: a checkpoint, a bundled model "
                   "(accompany, edit, continue) or a contract ONNX file, read back; the optimisers start fresh")
    args = p.parse_args(argv)
    if not 0.0 <= args.distill <= 1.0:
        p.error(f"--distill {args.distill}: a share from 0 to 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run = RunConfig(model=args.model, data=args.data, out=args.out, steps=args.steps, batch_size=args.batch_size,
                    lr=args.lr, valid_every=args.valid_every, warmup=args.warmup, seed=args.seed,
                    device=args.device, augment=not args.no_augment, max_chorales=args.max_chorales,
                    minutes=args.minutes, init=args.init, bf16=args.bf16, teacher=args.teacher,
                    distill=args.distill)
    try:
        model_config = json.loads(args.config) if args.config else None
        result = fit(run, model_config, resume=not args.fresh)
    except (D.DataError, ValueError, json.JSONDecodeError) as err:
        p.exit(2, f"error: {err}\n")
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
