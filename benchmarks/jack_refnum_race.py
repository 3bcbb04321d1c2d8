"""What made a JACK client of livegen's never run (issue 13, item 3), with python-rtmidi,
libjack and jackd only: no livegen.

    python benchmarks/jack_refnum_race.py [--rounds 5] [--period 256]

libjack keeps one table of wake-up futexes per process, by the server's client number, shared
by the process's clients; a departed client's entry is freed when one of them takes in the
server's asynchronous "client removed" notice. Each round, on a new dummy server: a process
opens a client ("held") whose notification thread is kept busy (a port-registration callback
that waits, as a busy machine may keep it) while a client of another process goes; the process
then opens an rtmidi output, which takes the departed client's number. A listener in a third
process is connected to it and 40 messages are sent. With the hold, the output finds the entry
"already connected" to the departed client's futex and waits on it for ever (jackd: "was not
finished, state = Triggered"); without it, nothing happens. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import collections
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
from livegen.ports import libjack_path  # noqa: E402

OTHER = r"""
import sys, rtmidi
o = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "race-other"); o.open_virtual_port("out")
print("ready", flush=True); sys.stdin.readline(); o.close_port(); o.delete()
"""
LISTENER = r"""
import sys, rtmidi
i = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "race-listener"); i.open_virtual_port("in")
n = []
i.set_callback(lambda e, _: n.append(e))
print("ready", flush=True); sys.stdin.readline(); print(len(n), flush=True); i.close_port(); i.delete()
"""
ROUND = r"""
import ctypes, subprocess, sys, threading, time, rtmidi
hold = sys.argv[1] == "hold"
jack = ctypes.CDLL(sys.argv[2])
jack.jack_client_open.restype = ctypes.c_void_p
jack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
jack.jack_activate.argtypes = [ctypes.c_void_p]
Reg = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
jack.jack_set_port_registration_callback.argtypes = [ctypes.c_void_p, Reg, ctypes.c_void_p]
gate = threading.Event()
def told(port, made, arg):
    if not made and hold:
        gate.wait(3.0)
callback = Reg(told)
held = jack.jack_client_open(b"race-held", 1, ctypes.byref(ctypes.c_int(0)))
jack.jack_set_port_registration_callback(held, callback, None)
jack.jack_activate(held)
other = subprocess.Popen([sys.executable, "-c", sys.argv[3]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
other.stdout.readline(); other.stdin.write("\n"); other.stdin.close(); other.wait()
time.sleep(0.1)
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "race-out"); out.open_virtual_port("out")
gate.set()
print("open", flush=True); sys.stdin.readline()
for _ in range(20):
    out.send_message([0x90, 60, 100]); out.send_message([0x80, 60, 0]); time.sleep(0.01)
time.sleep(0.3)
out.close_port(); out.delete()
"""


def one(hold: bool, period: int) -> tuple[int, collections.Counter]:
    """Messages the listener heard of 40, and jackd's clients "not finished, state = Triggered"."""
    server = f"lgrace-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": server, "JACK_NO_START_SERVER": "1"}
    log = Path(f"/tmp/{server}.log")
    jackd = subprocess.Popen(["jackd", "-n", server, "--no-realtime", "-d", "dummy", "-r", "48000", "-p",
                              str(period)], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"jackd did not start: {log}")
            time.sleep(0.05)
        listener = subprocess.Popen([sys.executable, "-c", LISTENER], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, env=env)
        listener.stdout.readline()
        proc = subprocess.Popen([sys.executable, "-c", ROUND, "hold" if hold else "free", libjack_path(), OTHER],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        proc.stdout.readline()
        subprocess.run(["jack_connect", "race-out:out", "race-listener:in"], env=env, check=True)
        time.sleep(0.1)
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(20)
        listener.stdin.write("\n")
        listener.stdin.flush()
        heard = int(listener.stdout.readline())
        listener.wait(10)
    finally:
        jackd.terminate()
        jackd.wait(10)
    stuck = collections.Counter(re.findall(r"client = (\S+) was not finished, state = Triggered", log.read_text()))
    log.unlink()
    return heard, stuck


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--period", type=int, default=256)
    args = ap.parse_args()
    print("| notification thread | rounds | rounds with nothing heard | jackd: race-out triggered, never run (lines) |")
    print("|---|---|---|---|")
    for hold in (False, True):
        silent, lines = 0, 0
        for _ in range(args.rounds):
            heard, stuck = one(hold, args.period)
            silent += heard == 0
            lines += stuck["race-out"]
        print(f"| {'held while the other client goes' if hold else 'free'} | {args.rounds} | {silent} | {lines} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
