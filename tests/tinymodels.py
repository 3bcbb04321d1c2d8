"""Small ONNX files that follow the livegen contract and whose output is known exactly.

`shift_accompany`: track k sounds the melody moved down by shifts[k] semitones, so a wrong
pitch, channel or step in the engine shows up as a wrong note.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WINDOW, PITCH_LOW, PITCH_COUNT = 32, 36, 46


def _const(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def save(graph: onnx.GraphProto, path: Path, meta: dict[str, str]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in meta.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def accompany_meta(tracks: list[str], **extra) -> dict[str, str]:
    meta = {"livegen.contract": "1", "livegen.kind": "accompany", "livegen.steps_per_beat": "4",
            "livegen.beats_per_bar": "4", "livegen.window_steps": str(WINDOW), "livegen.pitch_low": str(PITCH_LOW),
            "livegen.pitch_count": str(PITCH_COUNT), "livegen.tracks": ",".join(tracks),
            "livegen.threshold": "0.5", "livegen.max_polyphony": "1", "livegen.z_dim": "4"}
    meta.update(extra)
    return meta


def shift_accompany(path: Path, shifts=(3, 12, 24), onsets_every: int = 0, meta: dict | None = None) -> Path:
    """probs[:, k, t, p] = melody[:, t, p + shifts[k]]; with `onsets_every`, an onset_probs
    output that marks a new onset every N steps wherever the track sounds."""
    nodes, inits, parts = [], [_const("axes_p", [2]), _const("axes_1", [1]), _const("end_p", [PITCH_COUNT])], []
    for k, s in enumerate(shifts):
        inits += [_const(f"start{k}", [s]), _const(f"pads{k}", [0, 0, 0, 0, 0, s])]
        nodes += [helper.make_node("Slice", ["melody", f"start{k}", "end_p", "axes_p"], [f"sl{k}"]),
                  helper.make_node("Pad", [f"sl{k}", f"pads{k}"], [f"pd{k}"]),
                  helper.make_node("Unsqueeze", [f"pd{k}", "axes_1"], [f"tr{k}"])]
        parts.append(f"tr{k}")
    nodes.append(helper.make_node("Concat", parts, ["probs"], axis=1))
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", len(shifts), WINDOW, PITCH_COUNT])]
    if onsets_every:
        mask = np.zeros((1, 1, WINDOW, 1), np.float32)
        mask[0, 0, ::onsets_every, 0] = 1.0
        inits.append(numpy_helper.from_array(mask, "onset_mask"))
        nodes.append(helper.make_node("Mul", ["probs", "onset_mask"], ["onset_probs"]))
        outputs.append(helper.make_tensor_value_info("onset_probs", TensorProto.FLOAT,
                                                     ["B", len(shifts), WINDOW, PITCH_COUNT]))
    graph = helper.make_graph(
        nodes, "shift_accompany",
        [helper.make_tensor_value_info("melody", TensorProto.FLOAT, ["B", WINDOW, PITCH_COUNT]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["B", 4])],
        outputs, initializer=inits)
    names = ["alto", "tenor", "bass", "extra1", "extra2"][: len(shifts)]
    return save(graph, path, meta if meta is not None else accompany_meta(names))


def edit_identity(path: Path) -> Path:
    """An `edit` model whose logits are the roll itself (it prefers to remove notes)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["roll"], ["logits"])], "edit_identity",
        [helper.make_tensor_value_info("roll", TensorProto.FLOAT, ["B", 1, WINDOW, PITCH_COUNT])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 1, WINDOW, PITCH_COUNT])])
    meta = {"livegen.contract": "1", "livegen.kind": "edit", "livegen.steps_per_beat": "4",
            "livegen.beats_per_bar": "4", "livegen.window_steps": str(WINDOW), "livegen.pitch_low": str(PITCH_LOW),
            "livegen.pitch_count": str(PITCH_COUNT), "livegen.tracks": "edited"}
    return save(graph, path, meta)
