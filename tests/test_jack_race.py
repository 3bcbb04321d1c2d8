"""A JACK client of the daemon that the server never runs (issue 13, item 3): libjack's race,
made to happen on a JACK server of the test's own (tests/refnum_race.py says how)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from livegen.ports import JACK_DUMMY_ARGS
from tests.jackmidi import stop_jackd, wait_for

ROOT = Path(__file__).resolve().parent.parent
PLAY = r"""
import sys, time, rtmidi
o = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "lgrace-player")
o.open_port(o.get_ports().index(sys.argv[1]), "out")
time.sleep(0.3)
for pitch in (67, 69, 71, 72):
    o.send_message([0x90, pitch, 90]); time.sleep(0.375); o.send_message([0x80, pitch, 0]); time.sleep(0.125)
o.close_port(); o.delete()
"""


# the daemon opens its input, the connections' client, the input's guard, then its output: the
# output takes the departed client's number when three lower ones are free
@pytest.mark.parametrize("which,before", [("input", 0), ("output", 3)])
def test_a_jack_client_the_server_never_runs_is_found_and_opened_again(which, before, tmp_path, jack_server):
    """The daemon's input (or output) client takes the number of a client of another process
    whose "client removed" notice the daemon's process has not taken in yet: the server then
    triggers it every cycle and it never runs. livegen must notice (its probe goes unheard),
    say so, open it again and play: a melody played after start-up is answered."""
    name = f"lgrace-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    jack_log = tmp_path / "jackd.log"
    jackd = subprocess.Popen(["jackd", "-n", name, *JACK_DUMMY_ARGS], stdout=open(jack_log, "w"),
                             stderr=subprocess.STDOUT, env=env)
    daemon = listener = None
    log = tmp_path / "daemon.log"
    try:
        wait_for(lambda: subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode == 0, 15, "jackd")
        time.sleep(0.5)
        daemon = subprocess.Popen([sys.executable, "-m", "tests.refnum_race", str(before), "--", "-v", "run",
                                   "--client-name", "lgrace", "--mode", "follow", "--model", "continue",
                                   "--bpm", "120"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                                  stderr=open(log, "w"))
        assert daemon.stdout.readline().strip() == "other gone", log.read_text()
        wait_for(lambda: "running;" in log.read_text() or daemon.poll() is not None, 30, "the daemon")
        said = log.read_text()
        assert daemon.poll() is None, said
        listener = subprocess.Popen([sys.executable, "-m", "tests.listen", "lgrace-01:out", "lgrace-listener"],
                                    cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert listener.stdout.readline().strip() == "ready"
        subprocess.run([sys.executable, "-c", PLAY, "lgrace:in"], env=env, check=True, timeout=30)
        time.sleep(1.0)
        listener.stdin.close()
        heard = [json.loads(line)[1] for line in listener.stdout]
        note_ons = [m for m in heard if m[0] & 0xF0 == 0x90 and m[2] > 0]
        said = log.read_text()
        stuck = Counter(re.findall(r"client = (\S+) was not finished, state = Triggered", jack_log.read_text()))
        assert note_ons, f"nothing heard from the daemon:\n{said}\n(jackd: clients triggered and never run: {stuck})"
        # (else the race was not made, and the test would prove nothing)
        assert f"{which} lgrace" in said and "JACK does not run it" in said, said
        # (and start-up's objects are left out of the collector's full passes: test_service.py)
        assert re.search(r"start-up's \d{4,} objects left out of the collector's full passes", said), said
    finally:
        for proc in (listener, daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        stop_jackd(jackd)
