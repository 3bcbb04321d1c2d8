"""Export a training checkpoint to an ONNX file that follows the livegen contract: version 1
for accompany, edit and continue; version 2 for harmonise (follow mode's step harmoniser).

The exported graph is checked by `onnx.checker` and run through ONNX Runtime against torch
on fresh random inputs; a difference above the tolerance fails the export. For the
Transformer the token-by-token decode through `past`/`present` must match one full pass.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from training import data as D
from training.arcnn import ARCNN, ARCNNConfig
from training.chordrnn import ChordRNN, ChordRNNConfig
from training.gan import GANConfig, Generator
from training.train import load_checkpoint
from training.transformer import Ensemble, MusicTransformer, Transposed, TransformerConfig

CONTRACT = "1"
TOLERANCE = 1e-4   # largest absolute difference allowed between torch and ONNX Runtime
OPSET = 17


class ExportError(ValueError):
    pass


def build_model(ckpt: dict) -> tuple[nn.Module, dict]:
    """The torch module the ONNX graph is made from, and the contract metadata for it."""
    kind, cfg = ckpt["kind"], ckpt["config"]
    meta = {
        "livegen.contract": CONTRACT,
        "livegen.kind": kind,
        "livegen.steps_per_beat": "4",
        "livegen.beats_per_bar": "4",
        "livegen.pitch_low": str(D.PITCH_LOW),
        "livegen.pitch_count": str(cfg["pitch_count"]),
        "livegen.training_data": ckpt["run"]["data"].split("/")[-1],
        "livegen.version": f"step {ckpt['step']}",
    }
    if kind == "accompany":
        c = GANConfig(**cfg)
        model = Generator(c)
        model.load_state_dict(ckpt["modules"]["generator"])
        meta.update({"livegen.window_steps": str(c.window_steps), "livegen.tracks": "alto,tenor,bass",
                     "livegen.z_dim": str(c.z_dim), "livegen.threshold": "0.3", "livegen.max_polyphony": "1",
                     "livegen.description": "conditional WGAN-GP U-Net: melody in, alto, tenor and bass out"})
    elif kind == "edit":
        c = ARCNNConfig(**cfg)
        model = ARCNN(c)
        model.load_state_dict(ckpt["modules"]["arcnn"])
        meta.update({"livegen.window_steps": str(c.window_steps), "livegen.tracks": "edited",
                     "livegen.description": "AR-CNN U-Net: logits over the next cell of the roll to flip"})
    elif kind == "continue":
        c = TransformerConfig(**cfg)
        model = MusicTransformer(c)
        model.load_state_dict(ckpt["modules"]["transformer"])
        meta.update({"livegen.tracks": "soprano,alto,tenor,bass", "livegen.tokenizer": "satb16-v1",
                     "livegen.vocab_size": str(c.vocab_size), "livegen.bos_id": str(c.bos_id),
                     "livegen.max_context": str(c.max_context),
                     "livegen.description": "decoder-only Transformer with rotary positions and a KV cache"})
        if ckpt.get("calibration"):     # (`python -m training transposed`)
            cal = ckpt["calibration"]
            model = Transposed(model, list(cal["shifts"]), float(cal["temperature"]))
            meta.update({"livegen.transpositions": ",".join(str(s) for s in model.shifts),
                         "livegen.logit_temperature": f"{model.temperature:g}",
                         "livegen.description": f"decoder-only Transformer with rotary positions and a KV cache, "
                                                f"heard in {len(model.shifts)} keys at once (the mean of their "
                                                f"next-token probabilities at temperature {model.temperature:g})"})
    elif kind == "harmonise":
        c = ChordRNNConfig(**cfg)
        model = ChordRNN(c)
        model.load_state_dict(ckpt["modules"]["chordrnn"])
        meta.update({"livegen.contract": "2", "livegen.tracks": "soprano,alto,tenor,bass",
                     "livegen.tokenizer": "satb16-v1", "livegen.vocab_size": str(c.vocab_size),
                     "livegen.description": "GRU step harmoniser: a step's soprano in; its alto, the tenor "
                                            "for each alto, the bass for each tenor out, in one pass"})
    else:
        raise ExportError(f"unknown model kind {kind!r} in checkpoint")
    return model.eval(), meta


class _AccompanyGraph(nn.Module):
    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = gen

    def forward(self, melody, z):
        return self.gen(melody, z)


def example_inputs(model: nn.Module, kind: str, batch: int = 2, t_past: int = 5, t_new: int = 3,
                   seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cfg = model.cfg
    if kind == "accompany":
        melody = np.zeros((batch, cfg.window_steps, cfg.pitch_count), np.float32)
        melody[np.arange(batch)[:, None], np.arange(cfg.window_steps)[None],
               rng.integers(0, cfg.pitch_count, (batch, cfg.window_steps))] = 1.0
        return {"melody": melody, "z": rng.standard_normal((batch, cfg.z_dim)).astype(np.float32)}
    if kind == "edit":
        return {"roll": (rng.random((batch, 1, cfg.window_steps, cfg.pitch_count)) < 0.08).astype(np.float32)}
    if kind == "harmonise":     # (t_past: unused; the state has no length)
        return {"chord": rng.integers(0, cfg.vocab_size, (batch, t_new, 4)).astype(np.int64),
                "beat_step": rng.integers(0, cfg.steps_per_beat, (batch, t_new)).astype(np.int64),
                "state": rng.standard_normal((cfg.layers, batch, cfg.hidden)).astype(np.float32)}
    past = rng.standard_normal((cfg.layers, 2, batch, cfg.heads, t_past, cfg.head_dim)).astype(np.float32)
    return {"input_ids": rng.integers(0, cfg.vocab_size, (batch, t_new)).astype(np.int64), "past": past}


def build_ensemble(ckpts: list[dict]) -> tuple[Ensemble, dict]:
    """One `continue` model from several Transformer checkpoints (`Ensemble`); its metadata
    names the members' steps and `livegen.ensemble` their number."""
    if any(c.get("calibration") for c in ckpts):
        raise ExportError("a Transformer heard in several keys (python -m training transposed) is not an ensemble's "
                          "member: give the checkpoints it was made from")
    built = [build_model(c) for c in ckpts]
    kinds = {meta["livegen.kind"] for _, meta in built}
    if kinds != {"continue"}:
        raise ExportError(f"an ensemble is made of continue checkpoints only, not {', '.join(sorted(kinds))}")
    model = Ensemble([m for m, _ in built]).eval()
    meta = dict(built[0][1])
    meta.update({"livegen.ensemble": str(len(built)), "livegen.max_context": str(model.cfg.max_context),
                 "livegen.version": "ensemble of " + ", ".join(m["livegen.version"] for _, m in built),
                 "livegen.description": f"the mean of {len(built)} decoder-only Transformers' next-token "
                                        "probabilities, their KV caches packed into one"})
    return model, meta


def export(ckpt_path: str | Path | list, out_path: str | Path, tolerance: float = TOLERANCE) -> dict:
    """One checkpoint, or a list of `continue` checkpoints made into one ensemble model."""
    if isinstance(ckpt_path, (list, tuple)):
        model, meta = build_ensemble([load_checkpoint(p) for p in ckpt_path])
    else:
        model, meta = build_model(load_checkpoint(ckpt_path))
    kind = meta["livegen.kind"]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(model, kind)
    torch_inputs = tuple(torch.from_numpy(v) for v in inputs.values())
    if kind == "accompany":
        graph, outputs = _AccompanyGraph(model), ["probs"]
        dynamic = {"melody": {0: "batch"}, "z": {0: "batch"}, "probs": {0: "batch"}}
    elif kind == "edit":
        graph, outputs = model, ["logits"]
        dynamic = {"roll": {0: "batch"}, "logits": {0: "batch"}}
    elif kind == "harmonise":
        graph, outputs = model, ["alto", "tenor", "bass", "state_out"]
        dynamic = {"chord": {0: "batch", 1: "steps"}, "beat_step": {0: "batch", 1: "steps"}, "state": {1: "batch"},
                   "alto": {0: "batch", 1: "steps"}, "tenor": {0: "batch", 1: "steps"},
                   "bass": {0: "batch", 1: "steps"}, "state_out": {1: "batch"}}
    else:
        graph, outputs = model, ["logits", "present"]
        dynamic = {"input_ids": {0: "batch", 1: "new_tokens"}, "past": {2: "batch", 4: "past_tokens"},
                   "logits": {0: "batch", 1: "new_tokens"}, "present": {2: "batch", 4: "total_tokens"}}
    with torch.no_grad():
        torch.onnx.export(graph, torch_inputs, str(out_path), input_names=list(inputs), output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(out_path))
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out_path))
    report = {"file": str(out_path), "kind": kind, "bytes": out_path.stat().st_size,
              "max_abs_diff": parity(graph, out_path, kind, model)}
    if kind == "continue":
        report["cache_max_abs_diff"] = cache_parity(out_path, model)
    if kind == "harmonise":
        report["state_max_abs_diff"] = state_parity(out_path, model)
    worst = max(v for k, v in report.items() if k.endswith("diff"))
    if worst > tolerance:
        raise ExportError(f"{out_path}: ONNX Runtime differs from torch by {worst:.2e} > {tolerance:.0e}")
    return report


def parity(graph: nn.Module, path: Path, kind: str, model: nn.Module) -> float:
    """Largest |torch - ORT| on fresh random inputs (other sizes than the export used)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed, (batch, t_past, t_new) in enumerate([(1, 0, 7), (3, 11, 1), (2, 4, 5)], start=1):
        inputs = example_inputs(model, kind, batch, t_past, t_new, seed=seed)
        with torch.no_grad():
            ref = graph(*(torch.from_numpy(v) for v in inputs.values()))
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run(None, inputs)
        for r, g in zip(ref, got):
            worst = max(worst, float(np.abs(r.numpy() - g).max()))
    return worst


def cache_parity(path: Path, model: MusicTransformer) -> float:
    """Decoding token by token through past/present must give the full pass's logits."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cfg = model.cfg
    ids = np.random.default_rng(7).integers(0, cfg.vocab_size, (1, 24)).astype(np.int64)
    ids[0, 0] = cfg.bos_id
    empty = np.zeros((cfg.layers, 2, 1, cfg.heads, 0, cfg.head_dim), np.float32)
    full, _ = sess.run(None, {"input_ids": ids, "past": empty})
    past, steps = empty, []
    for t in range(ids.shape[1]):
        logits, past = sess.run(None, {"input_ids": ids[:, t:t + 1], "past": past})
        steps.append(logits[:, 0])
    return float(np.abs(full[0] - np.stack(steps, axis=1)[0]).max())


def state_parity(path: Path, model: ChordRNN) -> float:
    """Step by step through state/state_out must give one pass over all the steps."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = example_inputs(model, "harmonise", 1, 0, 24, seed=7)
    inputs["state"][:] = 0.0
    full = sess.run(None, inputs)
    state, worst = inputs["state"], 0.0
    for t in range(24):
        got = sess.run(None, {"chord": inputs["chord"][:, t:t + 1], "beat_step": inputs["beat_step"][:, t:t + 1],
                              "state": state})
        state = got[3]
        for whole, one in zip(full[:3], got[:3]):
            worst = max(worst, float(np.abs(whole[:, t:t + 1] - one).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export", description="Export a livegen checkpoint to ONNX.")
    p.add_argument("checkpoint", help="a .pt written by `python -m training` (best.pt or last.pt)")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--with", dest="more", action="append", default=[], metavar="CHECKPOINT",
                   help="continue only: another Transformer checkpoint; the file is then their ensemble "
                        "(the mean of their next-token probabilities), as many times as there are members")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest torch/ORT difference allowed")
    args = p.parse_args(argv)
    try:
        report = export([args.checkpoint, *args.more] if args.more else args.checkpoint, args.out, args.tolerance)
    except (ExportError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0
