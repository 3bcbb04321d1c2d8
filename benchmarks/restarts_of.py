"""Restarts of any livegen checkout (an older commit, say) under today's JACK harness:
start the daemon (follow mode, bundled Transformer) on a JACK dummy server of its own, play
three notes, listen 1.2 s, SIGTERM; again and again under the same client name.

    git worktree add /tmp/old 183a0a2
    python benchmarks/restarts_of.py /tmp/old [--rounds 150] [--period 64]

For a round in which nothing was heard it keeps the daemon's log and `jack_lsp -c` (the
connections at that moment) in /tmp. Prints the rounds with nothing heard, jackd's "state =
Triggered" lines and the clients named in jackd's "not finished" lines.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.jackmidi import Daemon, Listener, Player  # noqa: E402

STEP = 60 / 120 / 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkout", help="the livegen checkout the daemon runs (its PYTHONPATH)")
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--period", type=int, default=64)
    args = ap.parse_args()
    name = f"lgold-{uuid.uuid4().hex[:6]}"
    os.environ["JACK_DEFAULT_SERVER"] = name
    log = f"/tmp/{name}.log"
    jack = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p",
                             str(args.period)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    time.sleep(2)
    env = os.environ.copy()
    env["PYTHONPATH"] = str(Path(args.checkout).resolve())
    silent = []
    try:
        for i in range(args.rounds):
            d = Daemon("lgold", "--model", "continue", "--mode", "follow", "--bpm", "120", env=env)
            player, listener = Player(d.in_port, "lgold-player"), Listener(d.out_port, "lgold-listener")
            t0 = time.perf_counter() + 0.05
            for k, pitch in enumerate([67, 69, 71]):
                player.at(t0 + 4 * k * STEP, [0x90, pitch, 90])
                player.at(t0 + (4 * k + 3) * STEP, [0x80, pitch, 0])
            time.sleep(1.2)
            quiet = not listener.note_ons()
            if quiet:
                silent.append(i)
                with open(f"/tmp/{name}-silent-{i}.lsp", "w") as f:
                    subprocess.run(["jack_lsp", "-c"], stdout=f, stderr=subprocess.STDOUT)
            d.stop()
            if quiet:
                Path(f"/tmp/{name}-silent-{i}.log").write_text(d.output())
            listener.close()
            player.close()
            player.out.delete()
            time.sleep(0.3)
            print(f"\r{i + 1}/{args.rounds}, nothing heard in {len(silent)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        jack.terminate()
        jack.wait(10)
    text = Path(log).read_text(errors="replace")
    late = sorted(set(re.findall(r"client = (\S+) was not finished", text)))
    print(f"rounds {args.rounds}, nothing heard in {silent}, 'state = Triggered' lines "
          f"{text.count('state = Triggered')}, clients not finished {late}, jackd log {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
