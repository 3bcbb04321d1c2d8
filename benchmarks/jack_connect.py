"""How soon after a JACK connection is made does its first message arrive, when the sender
has one waiting in every cycle? The floor under livegen's "a synth plugged back gets its
missed note-offs" (issue 13). No livegen here: python-rtmidi and jackd only.

    python benchmarks/jack_connect.py [--rounds 100] [--period 256]

A sender process sends a controller message every millisecond into its output, which has no
connection; this process connects it to a listener through a JACK client of its own
(`reliability.Patchbay`: `jack_connect`, timed from the call), takes the time of the first
message heard, and disconnects again, `--rounds` times. Prints p50 / p99 / max in ms and the JACK cycle.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.jack_drops import start_jack  # noqa: E402
from benchmarks.reliability import Patchbay  # noqa: E402

SENDER = r"""
import sys, time, rtmidi
o = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, sys.argv[1]); o.open_virtual_port("out")
print("ready", flush=True)
while True:
    o.send_message([0xB0, 20, 1]); time.sleep(0.001)
"""


def run(rounds: int, period: int) -> dict:
    import rtmidi

    server = f"lgconnect-{uuid.uuid4().hex[:6]}"
    jack = start_jack(server, f"/tmp/{server}.log", period)
    heard: list[float] = []
    lock = threading.Lock()
    listener = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "lgc-listener")
    listener.open_virtual_port("in")
    listener.set_callback(lambda event, _: (lock.acquire(), heard.append(time.perf_counter()), lock.release()))
    patchbay = Patchbay()
    sender = subprocess.Popen([sys.executable, "-c", SENDER, "lgc-sender"], stdout=subprocess.PIPE, text=True)
    try:
        assert sender.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        source, dest = "lgc-sender:out", "lgc-listener:in"
        ms = []
        for k in range(rounds):
            time.sleep(0.3)
            with lock:
                heard.clear()
            at, _ = patchbay.connect(source, dest)
            time.sleep(0.1)
            with lock:
                first = [t for t in heard if t >= at]
            if first:
                ms.append((first[0] - at) * 1000)
            patchbay.disconnect(source, dest)
            print(f"\rrounds: {k + 1}/{rounds}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        sender.kill()
        listener.close_port()
        listener.delete()
        jack.terminate()
        jack.wait(10)
    a = np.array(ms)
    return {"period": period, "cycle_ms": round(period / 48, 2), "rounds": rounds, "heard": len(a),
            "p50_ms": round(float(np.percentile(a, 50)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--period", type=int, nargs="+", default=[256])
    args = ap.parse_args()
    rows = [run(args.rounds, p) for p in args.period]
    print("| jackd -p | cycle ms | connections | first message heard | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['period']} | {r['cycle_ms']} | {r['rounds']} | {r['heard']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['max_ms']} |")


if __name__ == "__main__":
    main()
