"""What a `continue` model costs live, next to how well it predicts: one token decoded on a
cache of 64 and of 256 tokens (one thread, batch 1, as the daemon decodes), a 2-bar answer
token by token (128 tokens from a 64-token primer), the file's size, and the NLL on the JSB
test split when `--jsb` is given (`training.evaluate`'s own measure).

    python benchmarks/token_cost.py livegen/models/continue.onnx ENSEMBLE.onnx [--jsb JSB.json]
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

from livegen.generate.continue_ import TokenDecoder  # noqa: E402
from livegen.models import Model  # noqa: E402


def one_token_ms(model: Model, cached: int, runs: int, rng: np.random.Generator) -> tuple[float, float]:
    layers, two, heads, head_dim = model.info.past_shape
    past = rng.standard_normal((layers, two, 1, heads, cached, head_dim)).astype(np.float32)
    ids = np.array([[5]], np.int64)
    times = []
    for _ in range(runs + 5):
        t = time.perf_counter()
        model.run({"input_ids": ids, "past": past})
        times.append((time.perf_counter() - t) * 1000)
    times = np.array(times[5:])
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def answer_ms(model: Model, rounds: int, rng: np.random.Generator) -> float:
    """A 2-bar answer: a 16-step primer fed at once, then 128 tokens drawn one by one."""
    times = []
    for _ in range(rounds):
        dec = TokenDecoder(model)
        t = time.perf_counter()
        logits = dec.feed(list(rng.integers(0, model.info.pitch_count, 64)))
        for _ in range(128):
            p = np.exp(logits - logits.max())
            logits = dec.feed([int(rng.choice(len(p), p=p / p.sum()))])
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="continue ONNX files")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--jsb", help="Jsb16thSeparated.json: add the test split's NLL")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    chorales = None
    if args.jsb:
        from training import data as D
        chorales = D.load_jsb(args.jsb)["test"]
    print(f"onnxruntime on the CPU, one thread, batch 1; {os.cpu_count()} cores here\n")
    print("| model | members | MB | 1 token, cache 64: p50 / p99 ms | cache 256: p50 / p99 ms "
          "| 2-bar answer (128 tokens) ms | JSB test NLL |")
    print("|---|---|---|---|---|---|---|")
    for path in args.models:
        model = Model(path, device="cpu", threads=1)
        p64 = one_token_ms(model, 64, args.runs, rng)
        p256 = one_token_ms(model, 256, args.runs, rng)
        answer = answer_ms(model, 5, rng)
        nll = "-"
        if chorales is not None:
            from training.evaluate import continue_nll
            nll = f"{continue_nll(model, chorales)[0]:.4f}"
        members = model.info.meta.get("livegen.ensemble", "1")
        print(f"| {Path(path).name} | {members} | {Path(path).stat().st_size / 1e6:.1f} | {p64[0]:.2f} / {p64[1]:.2f} "
              f"| {p256[0]:.2f} / {p256[1]:.2f} | {answer:.0f} | {nll} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
