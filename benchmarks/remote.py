"""Remote inference round trip over loopback against local inference, per model.

    python benchmarks/remote.py [--phrases 200] [--device cpu|cuda] [--jsb PATH]

Starts `livegen worker` as a subprocess on a free loopback port, then generates the same
2-bar phrases (a JSB test soprano line, fresh seed each) locally and through the worker,
interleaved, and prints p50/p99 of each and of the difference (what the network and the
protocol add). With `--device cuda` the worker runs on the GPU (the local column stays on
the CPU), and phrases whose notes differ between the two are counted, not refused.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livegen.config import Settings  # noqa: E402
from livegen.phrase import generate  # noqa: E402
from livegen.models import Model  # noqa: E402
from livegen.remote import RemoteInference  # noqa: E402
from livegen.roll import Note  # noqa: E402

JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


def phrases(count: int, jsb: Path = JSB) -> list[list[Note]]:
    import json

    out = []
    for chorale in json.loads(jsb.read_text())["test"]:
        sop = [row[0] for row in chorale]
        for start in range(0, len(sop) - 32, 32):
            notes, t = [], start
            while t < start + 32:
                p, s = sop[t], t
                while t < start + 32 and sop[t] == p:
                    t += 1
                if p >= 0:
                    notes.append(Note(p, s - start, t - start, 90))
            out.append(notes)
            if len(out) == count:
                return out
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phrases", type=int, default=200)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--jsb", default=str(JSB))
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    log = open("/tmp/livegen-bench-worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "livegen", "worker", "--bind", address, "--device", args.device,
                               "--model", "accompany", "--model", "edit"], stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        remote = RemoteInference([address])
        end = time.perf_counter() + 60
        while not all(ep.up and len(ep.models) == 2 for ep in remote.endpoints):
            if time.perf_counter() > end or worker.poll() is not None:
                raise SystemExit("the worker did not come up: see /tmp/livegen-bench-worker.log")
            remote.tick()
            time.sleep(0.05)
        tunes = phrases(args.phrases, Path(args.jsb))
        for name in ("accompany", "edit"):
            model = Model(name, "cpu")
            model.warm_up()
            settings = Settings(mode="loop")
            local, far, differ = [], [], 0
            for i, tune in enumerate(tunes):
                t = time.perf_counter()
                mine = generate(model, settings, tune, 0, 32, np.random.default_rng(i))
                local.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                theirs = remote.generate(model, settings, tune, 0, 32, i, deadline=time.perf_counter() + 5)
                far.append((time.perf_counter() - t) * 1000)
                if args.device == "cpu":
                    assert theirs == mine, "the worker played other notes than local inference"
                differ += theirs != mine
            local, far = np.array(local), np.array(far)
            rows.append((name, local, far, differ))
        remote.close()
    finally:
        worker.terminate()
        worker.wait(10)
    print(f"\nremote inference over loopback: {args.phrases} two-bar phrases per model, worker on {args.device}, "
          f"{os.cpu_count()} cores; local on cpu")
    print("| model | local p50 ms | local p99 ms | remote p50 ms | remote p99 ms | added p50 ms | phrases with other notes |")
    print("|---|---|---|---|---|---|---|")
    for name, local, far, differ in rows:
        print(f"| {name} | {np.percentile(local, 50):.2f} | {np.percentile(local, 99):.2f} | "
              f"{np.percentile(far, 50):.2f} | {np.percentile(far, 99):.2f} | "
              f"{np.percentile(far, 50) - np.percentile(local, 50):.2f} | {differ} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
