"""Does an open control page cost the music time? The same live session without and with the
page open, alternated, in one run:

    python benchmarks/web_timing.py [--seconds 60] [--rounds 2] [--mode loop]

Each session is `benchmarks/live_timing.py` (a JACK dummy server, the JSB test sopranos played
into `livegen run`, every generated note-on timed against the player's grid); with `--web` it
also reads the page's live stream and asks for its status 4 times a second. Prints the note-on
error and the notes dropped as late of each session, and the ratio of the medians with/without.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def session(seconds: float, mode: str, web: bool) -> dict:
    cmd = [sys.executable, str(HERE / "live_timing.py"), "--seconds", str(seconds), "--idle-seconds", "2",
           "--mode", mode] + (["--web"] if web else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 3 + 120).stdout
    row = re.search(r"\| player's grid \(end to end, 2 JACK hops\) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", out)
    late = re.search(r"\| notes dropped as late \| (-?\d+) \|", out)
    if not row or not late:
        raise SystemExit(f"live_timing.py printed no table:\n{out[-2000:]}")
    return {"notes": int(row.group(1)), "p50": float(row.group(2)), "p99": float(row.group(3)),
            "max": float(row.group(4)), "late": int(late.group(1))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mode", default="loop", choices=["loop", "respond", "follow"])
    args = ap.parse_args()
    if args.mode == "follow":
        raise SystemExit("follow mode prints another table; use loop or respond")
    results = {False: [], True: []}
    for r in range(args.rounds):
        for web in (False, True):
            results[web].append(session(args.seconds, args.mode, web))
            print(f"round {r + 1}, page {'open' if web else 'closed'}: {results[web][-1]}", file=sys.stderr)
    print(f"\ncontrol page and MIDI timing: {args.rounds} x {args.seconds:g} s each way, {args.mode} mode, "
          "alternated in one run")
    print("| page | session | notes | p50 ms | p99 ms | max ms | dropped late |\n|---|---|---|---|---|---|---|")
    for web in (False, True):
        for k, s in enumerate(results[web]):
            print(f"| {'open' if web else 'closed'} | {k + 1} | {s['notes']} | {s['p50']:.2f} | {s['p99']:.2f} | "
                  f"{s['max']:.2f} | {s['late']} |")

    def median(web, key):
        values = sorted(s[key] for s in results[web])
        return values[len(values) // 2]

    print(f"\nopen/closed: p50 {median(True, 'p50') / median(False, 'p50'):.2f}, "
          f"p99 {median(True, 'p99') / median(False, 'p99'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
