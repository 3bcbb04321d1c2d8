"""Does the JACK dummy server lose MIDI events between two clients? No livegen here: only
python-rtmidi and jackd (livegen's `jack_dummy_args` makes jackd's arguments).

    python benchmarks/jack_drops.py [--bursts 300] [--burst 9] [--gap-ms 50] [--busy 0 2]
                                    [--period 64 256] [--second 0 1] [--realtime]

Starts `jackd -d dummy` (as the tests do), a python-rtmidi output and a python-rtmidi input
connected to it, and sends bursts of messages in one go (a burst of 9 is what livegen's panic
sends for three voices: three note-offs, then CC 123 and CC 120 on three channels), each burst
numbered in its data bytes so every message lost is known. `--busy N` runs N busy processes
beside it (the test suite's own daemon, player and listener keep a 2-core machine busy).
`--period` sets jackd's frames per cycle; `--realtime` runs it as livegen starts its own where
the user may (`jackd -R -P 70`: the server's and the clients' process threads SCHED_FIFO);
`--second 1` connects a second source to the same input (livegen's sysex guard), which then
makes JACK mix two sources each cycle.
Prints a table: messages sent and lost, bursts with a loss, and jackd's "not finished" lines.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from livegen.ports import jack_dummy_args  # noqa: E402


def spin(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def start_jack(name: str, log_path: str, period: int = 64, settle: float = 1.0, append: bool = False,
               realtime: bool = False) -> subprocess.Popen:
    """A dummy server under `name` (made the clients' default), `settle` s after it first answers."""
    os.environ["JACK_DEFAULT_SERVER"] = name
    os.environ["JACK_NO_START_SERVER"] = "1"
    proc = subprocess.Popen(["jackd", "-n", name, *jack_dummy_args(realtime, period)],
                            stdout=open(log_path, "a" if append else "w"), stderr=subprocess.STDOUT)
    for _ in range(300):
        if subprocess.run(["jack_lsp"], capture_output=True).returncode == 0:
            time.sleep(settle)
            return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("jackd did not start:\n" + open(log_path).read()[-2000:])


def run(bursts: int, burst: int, gap_s: float, busy: int, period: int = 64, second: bool = False,
        realtime: bool = False) -> dict:
    import rtmidi

    name = f"lgdrops-{uuid.uuid4().hex[:6]}"
    log_path = f"/tmp/{name}.log"
    jack = start_jack(name, log_path, period, realtime=realtime)
    helpers = []
    try:
        listener = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "drops-listener", queue_size_limit=8192)
        listener.ignore_types(sysex=False, timing=False, active_sense=False)
        listener.open_virtual_port("in")
        sender = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "drops-sender")
        time.sleep(0.3)
        sender.open_port(sender.get_ports().index("drops-listener:in"), "out")
        guard = None
        if second:      # a second source into the same input, as livegen's sysex guard is
            guard = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "drops-guard")
            guard.open_port(guard.get_ports().index("drops-listener:in"), "guard")
        time.sleep(0.5)
        sender.send_message([0xFE])      # the first message after a connect can be lost
        time.sleep(0.2)
        while listener.get_message():
            pass
        stop_at = time.monotonic() + bursts * gap_s + 30
        helpers = [multiprocessing.Process(target=spin, args=(stop_at,), daemon=True) for _ in range(busy)]
        for h in helpers:
            h.start()
        sent = []
        for b in range(bursts):
            # (burst number in the channel and the value, the message's place in the controller number)
            msgs = [[0xB0 | (b // 128) % 16, k, b % 128] for k in range(burst)]
            for m in msgs:
                sender.send_message(m)
            if guard is not None and b % 10 == 5:
                guard.send_message([0xF7])     # (what the guard sends when an input is quiet)
            sent += [tuple(m) for m in msgs]
            time.sleep(gap_s)
        time.sleep(0.5)
        got = []
        while (msg := listener.get_message()) is not None:
            got.append(tuple(msg[0]))
        sender.close_port()
        sender.delete()
        if guard is not None:
            guard.close_port()
            guard.delete()
        listener.close_port()
        listener.delete()
    finally:
        for h in helpers:
            h.terminate()
        jack.terminate()
        jack.wait(10)
    got = [m for m in got if m != (0xF7,)]
    lost = set(sent) - set(got)
    lost_bursts = len({(m[0] & 0x0F) * 128 + m[2] for m in lost})
    not_finished = sum("not finished" in line for line in open(log_path))
    return {"sent": len(sent), "lost": len(lost), "bursts": bursts, "bursts_with_loss": lost_bursts,
            "not_finished": not_finished}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bursts", type=int, default=300, help="at most 900 (the listener queues 8,192 messages until the end)")
    ap.add_argument("--burst", type=int, default=9)
    ap.add_argument("--gap-ms", type=float, default=50)
    ap.add_argument("--busy", type=int, nargs="*", default=[0, 2])
    ap.add_argument("--period", type=int, nargs="*", default=[64], help="jackd -p: frames per cycle (48 kHz)")
    ap.add_argument("--second", type=int, nargs="*", default=[0],
                    help="1: a second source connected to the input too (livegen's sysex guard), sending F7 now and then")
    ap.add_argument("--realtime", action="store_true", help="jackd -R -P 70, as livegen starts its own where it may")
    args = ap.parse_args()
    print(f"{'period':>6} {'second':>6} {'busy procs':>10} {'burst':>5} {'sent':>6} {'lost':>5} {'loss %':>7} {'bursts w/ loss':>15} "
          f"{'jackd not finished':>19}")
    for period, second, busy in itertools.product(args.period, args.second, args.busy):
        r = run(args.bursts, args.burst, args.gap_ms / 1000, busy, period, bool(second), args.realtime)
        print(f"{period:>6} {second:>6} {busy:>10} {args.burst:>5} {r['sent']:>6} {r['lost']:>5} {100 * r['lost'] / r['sent']:>7.3f} "
              f"{r['bursts_with_loss']:>10} of {r['bursts']:<4d}{r['not_finished']:>19}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
