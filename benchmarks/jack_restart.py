"""Why, before b10d87d, about 1 start in 10 played into nothing (issue 13, item 3)? No livegen
here: only python-rtmidi and jackd.

    python benchmarks/jack_restart.py [--rounds 30] [--period 64] [--release close_port delete]

A stand-in for a daemon, started again and again under the same client name as livegen is by
a service manager or a test: a process opens an rtmidi JACK input and output (the output's
client becomes NAME-01, as livegen's does), sends a note every 20 ms for `--life` seconds,
then releases its ports and exits, either as livegen did (`close_port()` only, the client
left to the garbage collector) or as it does since b10d87d (`close_port()` and `delete()`).
The next one starts at once. A listener in this process is connected to each one's output.
Prints a table per way of releasing: rounds, rounds in which nothing was heard, the output
clients' names, and jackd's "not finished" lines.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.jack_drops import start_jack  # noqa: E402

CHILD = r"""
import sys, time, rtmidi
release, name, life = sys.argv[1], sys.argv[2], float(sys.argv[3])
i = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name); i.open_virtual_port("in")
o = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name); o.open_virtual_port("out")
print("ready", flush=True)
sys.stdin.readline()                    # connected
end = time.monotonic() + life
while time.monotonic() < end:
    o.send_message([0x90, 60, 100]); o.send_message([0x80, 60, 0]); time.sleep(0.02)
o.close_port(); i.close_port()
if release == "delete":
    o.delete(); i.delete()
"""


def run(rounds: int, release: str, period: int, life: float) -> dict:
    import rtmidi

    from livegen.ports import JackLinks

    server = f"lgrestart-{uuid.uuid4().hex[:6]}"
    log_path = f"/tmp/{server}.log"
    jack = start_jack(server, log_path, period)
    heard: list[float] = []
    lock = threading.Lock()
    listener = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "lgr-listener")
    listener.open_virtual_port("in")
    listener.set_callback(lambda event, _: (lock.acquire(), heard.append(time.monotonic()), lock.release()))
    links = JackLinks("lgr-patchbay")
    links.jack.jack_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    silent, names = 0, []
    try:
        for k in range(rounds):
            child = subprocess.Popen([sys.executable, "-c", CHILD, release, "lgr", str(life)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
            assert child.stdout.readline().strip() == "ready"
            outs = [p for p in links.ports(sources=True) if re.fullmatch(r"lgr(-\d+)?:out", p)]
            out = sorted(outs, key=lambda p: (len(p), p))[-1]      # the newest client of that name
            names.append(out.split(":")[0])
            links.jack.jack_connect(links.client, out.encode(), b"lgr-listener:in")
            since = time.monotonic()
            child.stdin.write("\n")
            child.stdin.flush()
            child.wait(30)
            with lock:
                silent += not any(t >= since for t in heard)
            print(f"\r{release}: {k + 1}/{rounds}, {silent} silent", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        listener.delete()
        jack.terminate()
        jack.wait(10)
    text = Path(log_path).read_text(errors="replace")
    return {"release": release, "period": period, "rounds": rounds, "silent": silent,
            "clients": ",".join(sorted(set(names))), "not_finished": text.count("was not finished"),
            "triggered": len(re.findall(r"not finished, state = Triggered", text))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--period", type=int, default=64)
    ap.add_argument("--life", type=float, default=0.5)
    ap.add_argument("--release", nargs="+", default=["close_port", "delete"])
    args = ap.parse_args()
    rows = [run(args.rounds, r, args.period, args.life) for r in args.release]
    print("| release | period | rounds | rounds with nothing heard | output clients | jackd 'not finished' | "
          "of them 'state = Triggered' |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['release']} | {r['period']} | {r['rounds']} | {r['silent']} | {r['clients']} | "
              f"{r['not_finished']} | {r['triggered']} |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    sys.exit(main())
