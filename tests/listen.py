"""A MIDI listener in a process of its own: `python -m tests.listen SOURCE CLIENT` connects a
JACK input to SOURCE and prints each message as a JSON line [time, [bytes]] (time.perf_counter,
which is CLOCK_MONOTONIC and so the same clock as the test's). Apart from the test process, the
test's own player and threads cannot hold up the JACK thread that hands the messages over."""
from __future__ import annotations

import json
import sys
import time

import rtmidi


def main() -> int:
    source, client = sys.argv[1], sys.argv[2]
    inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, client)
    inp.ignore_types(sysex=False, timing=False, active_sense=False)
    out = sys.stdout

    def arrived(event, _data=None):
        out.write(json.dumps([time.perf_counter(), event[0]]) + "\n")
        out.flush()

    inp.set_callback(arrived)
    inp.open_port(inp.get_ports().index(source), "in")
    out.write("ready\n")
    out.flush()
    sys.stdin.read()          # until the test closes our stdin
    inp.cancel_callback()
    inp.close_port()
    inp.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
