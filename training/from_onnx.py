"""Torch weights read back from a contract ONNX file, so that a fine-tune can start from a
bundled model (`--init continue`) or any exported one (`--init FILE.onnx`) although the
training checkpoints are not shipped.

The exporter keeps most parameters under their own names; a Linear's weight becomes an
anonymous MatMul constant (transposed), and a GroupNorm's weight and bias anonymous Mul and
Add constants (shaped for broadcasting): those are found through the name of the node that
uses them, which names the module (`scope_of`). The architecture comes
from the contract metadata and the weights' shapes. Nothing is trusted: the module built from
the weights is run against the ONNX file through ONNX Runtime on random inputs, and a
difference over the export's own tolerance is an error. A GAN's critic is not in the file (the
runtime never needs it): a fine-tune of `accompany` starts its critic afresh.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from training.arcnn import ARCNN, ARCNNConfig
from training.gan import GANConfig, Generator
from training.train import CHECKPOINT_SCHEMA, KINDS
from training.transformer import MusicTransformer, Transposed, TransformerConfig

MODEL_OF_KIND = {kind: model for model, kind in KINDS.items()}
MODULE_OF_KIND = {"accompany": "generator", "edit": "arcnn", "continue": "transformer"}


class ReadBackError(ValueError):
    pass


def _unet_shape(names: dict[str, np.ndarray], prefix: str) -> dict:
    """width and levels of a U-Net from its encoder's convolutions."""
    downs = sorted({int(m.group(1)) for n in names if (m := re.fullmatch(re.escape(prefix) + r"down\.(\d+)\.0\.weight", n))})
    if not downs:
        raise ReadBackError(f"no U-Net weights ({prefix}down.N.0.weight) in the file")
    return {"width": int(names[f"{prefix}down.0.0.weight"].shape[0]), "levels": len(downs) - 1}


def initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def build(proto: onnx.ModelProto, named: dict[str, np.ndarray]) -> tuple[str, torch.nn.Module, dict]:
    """(kind, an untrained module of the file's architecture, its config); `named`: its initializers."""
    meta = {p.key: p.value for p in proto.metadata_props}
    kind = meta.get("livegen.kind")
    if kind not in MODEL_OF_KIND:
        raise ReadBackError(f"not a livegen contract model (livegen.kind {kind!r})")
    if "livegen.ensemble" in meta:
        raise ReadBackError(f"an ensemble of {meta['livegen.ensemble']} Transformers: fine-tune from one of "
                            "their checkpoints (python -m training transformer --init runs/NAME/best.pt)")
    if kind == "harmonise":   # (its GRU's weights are fused into ONNX's own layout in the file)
        raise ReadBackError("a harmonise model's weights are not read back from ONNX: start from its checkpoint "
                            "(python -m training chordrnn --init runs/NAME/best.pt)")
    pitch_count = int(meta["livegen.pitch_count"])
    if kind == "continue":
        past = next(i for i in proto.graph.input if i.name == "past").type.tensor_type.shape.dim
        prefix = "model." if "livegen.transpositions" in meta else ""
        layers = len({n.split(".")[-3] for n in named if re.fullmatch(re.escape(prefix) + r"blocks\.\d+\.ln1\.weight", n)})
        copies = len(transpositions(meta)[0]) if prefix else 1
        cfg = {"pitch_count": pitch_count, "layers": layers, "heads": int(past[3].dim_value) // copies,
               "d_model": int(named[prefix + "tok.weight"].shape[1]), "max_context": int(meta["livegen.max_context"])}
        return kind, MusicTransformer(TransformerConfig(**cfg)), cfg
    window = int(meta["livegen.window_steps"])
    if kind == "edit":
        cfg = {"pitch_count": pitch_count, "window_steps": window, **_unet_shape(named, "unet.")}
        return kind, ARCNN(ARCNNConfig(**cfg)), cfg
    cfg = {"pitch_count": pitch_count, "window_steps": window, "z_dim": int(meta["livegen.z_dim"]),
           "tracks": len(meta["livegen.tracks"].split(",")), "width": _unet_shape(named, "gen.unet.")["width"]}
    return kind, Generator(GANConfig(**cfg)), cfg


def transpositions(meta: dict) -> tuple[list[int], float]:
    """A file made by `python -m training transposed`: its shifts and its logits' temperature."""
    try:
        return ([int(s) for s in meta["livegen.transpositions"].split(",")],
                float(meta.get("livegen.logit_temperature", "1")))
    except ValueError:
        raise ReadBackError(f"livegen.transpositions {meta['livegen.transpositions']!r}: not semitones, "
                            "comma-separated") from None


def scope_of(node_name: str) -> str:
    """The module a node of the exported graph belongs to: "/unet/down.0/down.0.1/Mul" ->
    "unet.down.0.1", "/blocks.0/mlp/mlp.0/MatMul" -> "blocks.0.mlp.0" (each level of the
    name is the module's name within the last module that ran, so a level that extends the one
    before replaces it)."""
    parts: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


PARAMETER_OF_OP = {"MatMul": "weight", "Gemm": "weight", "Mul": "weight", "Add": "bias"}


def weights(proto: onnx.ModelProto, named: dict[str, np.ndarray], module: torch.nn.Module,
            prefix: str = "") -> dict[str, torch.Tensor]:
    """The module's state dict filled from the file's initializers `named` (see the module docstring)."""
    state = module.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        value = named.get(prefix + name)
        if value is not None and tuple(value.shape) == tuple(tensor.shape):
            out[name] = torch.from_numpy(value.copy())
    for node in proto.graph.node:
        if node.op_type not in PARAMETER_OF_OP:
            continue
        name = f"{scope_of(node.name)}.{PARAMETER_OF_OP[node.op_type]}"
        name = name[len(prefix):] if prefix and name.startswith(prefix) else name
        if name not in state:     # (a module used through a method, not called, names no level)
            ends = [k for k in state if k.endswith("." + name)]
            name = ends[0] if len(ends) == 1 else name
        if name not in state or name in out:
            continue
        want = tuple(state[name].shape)
        for inp in node.input:
            value = named.get(inp)
            if value is None:
                continue
            if node.op_type in ("MatMul", "Gemm") and value.ndim == 2 and value.T.shape == want:
                out[name] = torch.from_numpy(value.T.copy())
            elif node.op_type in ("Mul", "Add") and value.size == int(np.prod(want)):
                out[name] = torch.from_numpy(value.reshape(want).copy())
    missing = [f"{n} {tuple(state[n].shape)}" for n in state if n not in out]
    if missing:
        raise ReadBackError(f"no weights in the file for {', '.join(missing[:5])}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return out


def checkpoint_from_onnx(path: str | Path, tolerance: float = 1e-4) -> dict:
    """A checkpoint (as `training.train.load_checkpoint` gives) read back from a contract ONNX
    file; checked against the file through ONNX Runtime. A Transformer heard in several keys
    (`training.transformer.Transposed`) gives its one set of weights, and its shifts and
    temperature as the checkpoint's `calibration` (the exporter makes the same file of it; a
    fine-tune takes the weights only)."""
    from export.onnx_export import parity, _AccompanyGraph

    path = Path(path)
    try:
        proto = onnx.load(str(path))
    except Exception as err:
        raise ReadBackError(f"{path}: not an ONNX file ({err})") from None
    named = initializers(proto)
    kind, module, cfg = build(proto, named)
    meta = {p.key: p.value for p in proto.metadata_props}
    keys = transpositions(meta) if "livegen.transpositions" in meta else None
    prefix = "gen." if kind == "accompany" else "model." if keys else ""
    module.load_state_dict(weights(proto, named, module, prefix))
    module.eval()
    graph = _AccompanyGraph(module) if kind == "accompany" else Transposed(module, *keys).eval() if keys else module
    diff = parity(graph, path, kind, graph if keys else module)
    if diff > tolerance:
        raise ReadBackError(f"{path}: the weights read back differ from the file by {diff:.2e} > {tolerance:.0e}")
    model = MODEL_OF_KIND[kind]
    step = re.fullmatch(r"step (\d+)", meta.get("livegen.version", ""))     # (the training step it was exported at)
    return {"schema": CHECKPOINT_SCHEMA, "kind": kind, "model": model, "config": cfg,
            "step": int(step.group(1)) if step else 0, "best_valid": float("inf"),
            "history": [], "run": {"data": meta.get("livegen.training_data", "")},
            "modules": {MODULE_OF_KIND[kind]: module.state_dict()}, "read_back": {"file": str(path), "max_abs_diff": diff},
            **({"calibration": {"shifts": keys[0], "temperature": keys[1]}} if keys else {})}
