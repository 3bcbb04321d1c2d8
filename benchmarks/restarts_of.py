"""Restarts of any livegen checkout (an older commit, say) under today's JACK harness:
start the daemon (follow mode, bundled Transformer) on a JACK dummy server of its own, play
three notes, listen 1.2 s, SIGTERM; again and again under the same client name.

    git worktree add /tmp/old 183a0a2
    python benchmarks/restarts_of.py /tmp/old [--rounds 150] [--period 64] [--fresh-server]

`--fresh-server` starts a new dummy server (same name) for every round, and the daemon as soon
as `jack_lsp` answers on it, as a tester with a private server per experiment does.

For a round in which nothing was heard it keeps the daemon's log and `jack_lsp -c` (the
connections at that moment) in /tmp. Prints the rounds with nothing heard, those in which livegen found a
JACK client of its own not run and opened it again (its log: "JACK does not run it"), jackd's
"state = Triggered" lines and the clients named in jackd's "not finished" lines.
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
from benchmarks.jack_drops import start_jack  # noqa: E402
from tests.jackmidi import Daemon, Listener, Player  # noqa: E402

STEP = 60 / 120 / 4


def stop(jack: subprocess.Popen) -> None:
    jack.terminate()
    jack.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkout", help="the livegen checkout the daemon runs (its PYTHONPATH)")
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--period", type=int, default=64)
    ap.add_argument("--fresh-server", action="store_true", help="a new JACK server for every round")
    args = ap.parse_args()
    name = f"lgold-{uuid.uuid4().hex[:6]}"
    log = f"/tmp/{name}.log"
    jack = start_jack(name, log, args.period, settle=0.0 if args.fresh_server else 2.0)
    silent, reopened = [], []
    try:
        for i in range(args.rounds):
            if args.fresh_server and i:
                stop(jack)
                jack = start_jack(name, log, args.period, settle=0.0, append=True)
            env = os.environ.copy()
            env["PYTHONPATH"] = str(Path(args.checkout).resolve())
            env["PYTHONSAFEPATH"] = "1"     # (else `python -m livegen` takes the livegen of the current folder)
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
            said = d.output()
            if "JACK does not run it" in said:      # (livegen's own check found a client it opened again)
                reopened.append(i)
            if quiet:
                Path(f"/tmp/{name}-silent-{i}.log").write_text(said)
            listener.close()
            player.close()
            player.out.delete()
            time.sleep(0.3)
            print(f"\r{i + 1}/{args.rounds}, nothing heard in {len(silent)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        stop(jack)
    text = Path(log).read_text(errors="replace")
    late = sorted(set(re.findall(r"client = (\S+) was not finished", text)))
    print(f"rounds {args.rounds}, nothing heard in {silent}, a client opened again by livegen in {reopened}, "
          f"'state = Triggered' lines "
          f"{text.count('state = Triggered')}, clients not finished {late}, jackd log {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
