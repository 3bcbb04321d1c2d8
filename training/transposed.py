"""Make a `continue` Transformer one model heard in several keys (`training.transformer.Transposed`):
the copies to average and the temperature of their logits, chosen on the valid split.

    python -m training transposed continue --data ../shared/data/jsb/Jsb16thSeparated.json \\
        --shifts=-2,-1,0,1,2 --out runs/continue-keys.pt
    python -m export runs/continue-keys.pt livegen/models/continue.onnx

SOURCE is a checkpoint or a contract file read back (`--init`'s). The copies' logits on the
valid split are computed once; each temperature of `TEMPERATURES` is then scored on them, the
shifts together and the unmoved copy alone, and the best of the first is written into the
checkpoint (`calibration`), which the exporter makes into one file. The test split is not read.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np
import torch
from tqdm import tqdm

from training import data as D
from training.transformer import Transposed, mix, tokens_from_voices

TEMPERATURES = tuple(round(0.8 + 0.05 * i, 2) for i in range(17))      # 0.8 .. 1.6


def parse_shifts(text: str) -> list[int]:
    try:
        shifts = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--shifts {text!r}: semitones, comma-separated (e.g. -2,-1,0,1,2)") from None
    if 0 not in shifts:
        raise ValueError(f"--shifts {text!r}: 0 (the tokens' own key) must be one of them")
    return shifts


@torch.no_grad()
def scored_logits(model: Transposed, sequences: list[np.ndarray], progress: bool = True):
    """Every token of these token sequences scored as `training.train.sequence_nll` scores it
    (windows of max_context from BOS, sliding by half): the copies' logits moved back, (N, k, V),
    and the tokens, (N,)."""
    cfg = model.model.cfg
    logits, targets = [], []
    for tokens in tqdm(sequences, desc="valid split", unit="piece", disable=not progress, dynamic_ncols=True):
        for start, end, first in D.scoring_windows(len(tokens), cfg.max_context):
            ids = torch.from_numpy(np.concatenate([[cfg.bos_id], tokens[start:end]])[None])
            mapped, _ = model.mapped(ids[:, :-1])
            logits.append(mapped[0, :, first:].transpose(0, 1))
            targets.append(ids[0, 1 + first:])
    return torch.cat(logits), torch.cat(targets)


def nll(mapped: torch.Tensor, targets: torch.Tensor, temperature: float) -> float:
    """Mean NLL (nats/token) of the copies' mean at `temperature`; mapped (N, k, V)."""
    logp = mix(mapped.transpose(0, 1)[None], temperature)[0]                # (N, V)
    return float(-logp.gather(1, targets[:, None]).mean())


def choose(ckpt: dict, valid: list[np.ndarray], shifts: list[int], progress: bool = True) -> tuple[dict, list]:
    """(the checkpoint with its `calibration`, the table: temperature, the copies' NLL, the
    unmoved copy's NLL), every figure on `valid`."""
    if ckpt.get("model") != "transformer":
        raise ValueError(f"{ckpt.get('model')} weights: only a continue Transformer is heard in several keys")
    from training.train import transformer_of

    model = transformer_of({k: v for k, v in ckpt.items() if k != "calibration"})    # (its own keys, not a file's)
    cfg = model.cfg
    keys = Transposed(model.eval(), shifts).eval()
    sequences = [tokens_from_voices(c, D.PITCH_LOW, cfg.pitch_count, None) for c in valid]
    mapped, targets = scored_logits(keys, sequences, progress)
    alone = mapped[:, [shifts.index(0)]]
    table = [(t, nll(mapped, targets, t), nll(alone, targets, t)) for t in TEMPERATURES]
    best = min(table, key=lambda row: row[1])
    out = {k: v for k, v in ckpt.items() if k != "optimizers"}
    out["calibration"] = {"shifts": shifts, "temperature": best[0], "valid_nll": best[1],
                          "valid_nll_alone": nll(alone, targets, 1.0), "tokens": int(len(targets))}
    return out, table


def main(argv: list[str] | None = None) -> int:
    from training.train import load_start

    p = argparse.ArgumentParser(prog="python -m training transposed", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a continue checkpoint, or a contract file (continue, or a path) read back")
    p.add_argument("--data", required=True, help="the JSB file (Jsb16thSeparated.json) whose valid split chooses")
    p.add_argument("--shifts", default="-2,-1,0,1,2", help="semitones each copy moves the tokens, with 0")
    p.add_argument("--out", required=True, help="the checkpoint to write (export it with python -m export)")
    p.add_argument("--limit", type=int, default=0, help="only the first N valid pieces (a quick check)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        shifts = parse_shifts(args.shifts)
        valid = D.load_source(args.data).valid[: args.limit or None]
        ckpt, table = choose(load_start(args.source), valid, shifts)
    except (D.DataError, ValueError, OSError) as err:
        p.exit(2, f"error: {err}\n")
    print(f"\nvalid split, {ckpt['calibration']['tokens']} tokens: NLL (nats/token) by the logits' temperature\n")
    print(f"| temperature | {len(shifts)} key{'s' if len(shifts) > 1 else ''} ({args.shifts}) | the tokens' own key alone |")
    print("|---|---|---|")
    for t, both, alone in table:
        mark = " **(chosen)**" if t == ckpt["calibration"]["temperature"] else ""
        print(f"| {t:.2f}{mark} | {both:.4f} | {alone:.4f} |")
    torch.save(ckpt, args.out)
    print(json.dumps({"out": args.out, **ckpt["calibration"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
