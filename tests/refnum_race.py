"""A JACK client of livegen's that the server never runs (issue 13, item 3), made to happen:
run as a process of its own on a JACK server of its own (`JACK_DEFAULT_SERVER`), as
`python -m tests.refnum_race N -- livegen arguments...` (the daemon logs to stderr).

libjack keeps one table of its clients' wake-up futexes per process, by the server's client
number, and frees a departed client's entry when one of the process's clients takes in the
server's asynchronous "client removed" notice. Here the daemon's process first opens a client
of its own ("held") whose notification thread is held, as a busy machine may hold it, while a
client of another process ("other") goes; the daemon then opens its clients, and the (N+1)th
takes the departed client's number: N spare clients of the daemon's process, opened before the
other and closed before it goes, leave N lower numbers for the daemon's first N clients. The
hold ends once the daemon's output exists, or after HOLD_S.

Prints "other gone" on stdout when the other client has gone and the daemon starts.
"""
from __future__ import annotations

import ctypes
import subprocess
import sys
import threading
import time

import rtmidi

from livegen.ports import libjack_path

HOLD_S = 6.0
OTHER = r"""
import sys, rtmidi
o = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "lgrace-other"); o.open_virtual_port("out")
print("ready", flush=True); sys.stdin.readline(); o.close_port(); o.delete()
"""


def main() -> int:
    spares, args = int(sys.argv[1]), sys.argv[3:]
    client = args[args.index("--client-name") + 1]
    jack = ctypes.CDLL(libjack_path())
    jack.jack_client_open.restype = ctypes.c_void_p
    jack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    jack.jack_port_by_id.restype = ctypes.c_void_p
    jack.jack_port_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    jack.jack_port_by_name.restype = ctypes.c_void_p
    jack.jack_port_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    jack.jack_port_name.restype = ctypes.c_char_p
    jack.jack_port_name.argtypes = [ctypes.c_void_p]
    jack.jack_activate.argtypes = [ctypes.c_void_p]
    registered = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
    jack.jack_set_port_registration_callback.argtypes = [ctypes.c_void_p, registered, ctypes.c_void_p]
    status = ctypes.c_int(0)
    held = jack.jack_client_open(b"lgrace-held", 1, ctypes.byref(status))
    release = threading.Event()
    names: dict[int, bytes] = {}

    def told(port_id, made, _arg):     # (libjack's notification thread of "held")
        if made:
            port = jack.jack_port_by_id(held, port_id)
            names[port_id] = jack.jack_port_name(port) if port else b""
        elif names.get(port_id, b"").startswith(b"lgrace-other"):
            release.wait(HOLD_S)       # the "client removed" notice that follows waits behind this

    callback = registered(told)
    jack.jack_set_port_registration_callback(held, callback, None)
    assert jack.jack_activate(held) == 0
    opened = []
    for k in range(spares):
        opened.append(rtmidi.MidiIn(rtmidi.API_UNIX_JACK, f"lgrace-spare{k}"))
        opened[-1].open_virtual_port("in")
    other = subprocess.Popen([sys.executable, "-c", OTHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    other.stdout.readline()
    for spare in opened:
        spare.close_port()
        spare.delete()
    time.sleep(0.2)
    other.stdin.write("\n")
    other.stdin.close()
    other.wait(10)
    print("other gone", flush=True)

    def until_output() -> None:
        deadline = time.monotonic() + HOLD_S
        while time.monotonic() < deadline and not jack.jack_port_by_name(held, f"{client}-01:out".encode()):
            time.sleep(0.005)
        release.set()

    threading.Thread(target=until_output, daemon=True).start()
    from livegen.cli import main as livegen

    return livegen(args)


if __name__ == "__main__":
    sys.exit(main())
