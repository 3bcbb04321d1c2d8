"""Inference time of each shipped model: ONNX Runtime against torch eager, same inputs, same run.

    python benchmarks/inference.py [--runs 200] [--checkpoints runs/shipped]

Needs the training extra (torch). The torch models are rebuilt from the training
checkpoints (`--checkpoints`, the slim .pt files of the shipped models) or, where there are
none (a fresh clone), from the weights read back from the bundled ONNX files
(`training.from_onnx`); without torch the table has the ONNX Runtime column only. One thread each, batch 1, inputs as used live:
a 2-bar window (accompany, edit) and one new token on a cache of 64 (continue).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livegen.models import Model  # noqa: E402

SHIPPED = {"accompany": "gan.pt", "edit": "arcnn.pt", "continue": "transformer_b.pt"}


def feeds_for(model: Model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    i = model.info
    if i.kind == "accompany":
        melody = np.zeros((1, i.window_steps, i.pitch_count), np.float32)
        melody[0, np.arange(i.window_steps), rng.integers(20, 40, i.window_steps)] = 1
        return {"melody": melody, "z": rng.standard_normal((1, i.z_dim)).astype(np.float32)}
    if i.kind == "edit":
        return {"roll": (rng.random((1, 1, i.window_steps, i.pitch_count)) < 0.08).astype(np.float32)}
    layers, two, heads, head_dim = i.past_shape
    return {"input_ids": rng.integers(0, i.vocab_size, (1, 1)).astype(np.int64),
            "past": rng.standard_normal((layers, two, 1, heads, 64, head_dim)).astype(np.float32)}


def timed(fn, runs: int) -> np.ndarray:
    for _ in range(10):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return np.array(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--checkpoints", default=str(ROOT / "runs" / "shipped"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    try:
        import torch
        from export.onnx_export import build_model
        from training.train import load_checkpoint, load_start
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    rows = []
    for kind, ckpt_name in SHIPPED.items():
        model = Model(kind, device=args.device, threads=1)
        feeds = feeds_for(model, rng)
        ort_ms = timed(lambda: model.run(feeds), args.runs)
        torch_ms = None
        ckpt = Path(args.checkpoints) / ckpt_name
        if torch is not None:
            net, _ = build_model(load_checkpoint(ckpt) if ckpt.exists() else load_start(kind))
            net = net.float().to(args.device).eval()
            sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

            def step():   # inputs from the host and the outputs back, as ORT's run does
                with torch.no_grad():
                    out = net(*[torch.from_numpy(v).to(args.device) for v in feeds.values()])
                for o in (out if isinstance(out, tuple) else (out,)):
                    o.cpu()
                sync()

            torch_ms = timed(step, args.runs)
        rows.append((kind, model.provider, ort_ms, torch_ms))
    print(f"\ninference, batch 1, one thread, {args.runs} runs ({os.cpu_count()} cores)")
    print("| model | provider | ORT p50 ms | ORT p99 ms | torch p50 ms | torch p99 ms | torch/ORT (p50) |")
    print("|---|---|---|---|---|---|---|")
    for kind, prov, o, t in rows:
        tc = f"{np.percentile(t, 50):.2f} | {np.percentile(t, 99):.2f} | {np.percentile(t, 50) / np.percentile(o, 50):.2f}" \
            if t is not None else "- | - | -"
        print(f"| {kind} | {prov} | {np.percentile(o, 50):.2f} | {np.percentile(o, 99):.2f} | {tc} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
