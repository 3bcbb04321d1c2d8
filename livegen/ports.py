"""MIDI ports through python-rtmidi: backends, port-name matching, virtual ports, a JACK helper.

Name matching is pure (tested without hardware): an exact name wins, else a unique
substring; none or several matches is an error that lists the ports.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time

from livegen.errors import PortError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "alsa", "jack", "coremidi", "winmm")


def match_port(names: list[str], wanted: str, direction: str = "port") -> int:
    """Index of the port called `wanted`, or of the one port whose name contains it."""
    if wanted in names:
        return names.index(wanted)
    hits = [i for i, n in enumerate(names) if wanted.lower() in n.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = "\n  ".join(names) if names else "(none)"
    if not hits:
        raise PortError(f"no MIDI {direction} matches {wanted!r}; available:\n  {listing}")
    many = "\n  ".join(names[i] for i in hits)
    raise PortError(f"{len(hits)} MIDI {direction}s match {wanted!r}; be more specific:\n  {many}")


def alsa_sequencer_present() -> bool:
    return os.path.exists("/dev/snd/seq")


def pick_backend(name: str) -> str:
    """The backend to use for `name`; `auto` looks at the platform and what runs here."""
    if name not in BACKENDS:
        raise PortError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    if sys.platform == "darwin":
        return "coremidi"
    if sys.platform.startswith("win"):
        return "winmm"
    if alsa_sequencer_present():
        return "alsa"
    return "jack"


def _api(backend: str) -> int:
    import rtmidi

    api = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
           "coremidi": rtmidi.API_MACOSX_CORE, "winmm": rtmidi.API_WINDOWS_MM}[backend]
    if api not in rtmidi.get_compiled_api():
        raise PortError(f"this python-rtmidi build has no {backend} support")
    return api


def _client(kind: str, backend: str, client_name: str):
    import rtmidi

    try:
        cls = rtmidi.MidiIn if kind == "in" else rtmidi.MidiOut
        return cls(_api(backend), name=client_name)
    except (rtmidi.SystemError, rtmidi.RtMidiError) as err:
        hint = " (is a JACK server running? `jackd -d dummy` starts one)" if backend == "jack" else ""
        raise PortError(f"cannot open the {backend} MIDI backend: {err}{hint}") from err


def list_ports(backend: str) -> tuple[list[str], list[str]]:
    backend = pick_backend(backend)
    midi_in = _client("in", backend, "livegen-list")
    midi_out = _client("out", backend, "livegen-list")
    try:
        return midi_in.get_ports(), midi_out.get_ports()
    finally:
        midi_in.delete()
        midi_out.delete()


def open_port(kind: str, backend: str, spec: str, client_name: str, port_name: str | None = None):
    """Open an input ('in') or output ('out'): `virtual`, or an existing port by name.

    Returns (rtmidi object, the name users see for it).
    """
    backend = pick_backend(backend)
    port = _client(kind, backend, client_name)
    port_name = port_name or kind
    if spec == "virtual":
        if backend == "winmm":
            port.delete()
            raise PortError("Windows has no virtual MIDI ports: install a loopback driver (loopMIDI) "
                            "and give its port name instead")
        try:
            port.open_virtual_port(port_name)
        except Exception as err:
            port.delete()
            raise PortError(f"cannot create virtual {kind}put port: {err}") from err
        return port, f"{client_name}:{port_name}"
    names = port.get_ports()
    try:
        index = match_port(names, spec, "input" if kind == "in" else "output")
        port.open_port(index, port_name)
    except PortError:
        port.delete()
        raise
    except Exception as err:
        port.delete()
        raise PortError(f"cannot open {names[index]!r}: {err}") from err
    return port, names[index]


class watcher:
    """Lists ports through one pair of long-lived clients."""

    def __init__(self, backend: str, client_name: str):
        self._in = _client("in", backend, f"{client_name}-watch")
        self._out = _client("out", backend, f"{client_name}-watch")

    def inputs(self) -> list[str]:
        return self._in.get_ports()

    def outputs(self) -> list[str]:
        return self._out.get_ports()


# ---------------------------------------------------------------- JACK helper

def jack_server_running(server: str | None = None) -> bool:
    env = dict(os.environ)
    if server:
        env["JACK_DEFAULT_SERVER"] = server
    if shutil.which("jack_lsp") is None:
        return False
    env["JACK_NO_START_SERVER"] = "1"
    r = subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=10)
    return r.returncode == 0


def start_jack_dummy(server: str | None = None, wait_s: float = 10.0) -> subprocess.Popen:
    """Start `jackd -d dummy` (no sound hardware needed) and wait until it answers."""
    if shutil.which("jackd") is None:
        raise PortError("no ALSA sequencer and no jackd here: install jackd2 (apt-get install jackd2)")
    cmd = ["jackd"] + (["-n", server] if server else []) + ["--no-realtime", "-d", "dummy", "-r", "48000", "-p", "64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PortError(f"jackd exited at once (code {proc.returncode}); is another server of that name running?")
        if jack_server_running(server):
            return proc
        time.sleep(0.1)
    proc.terminate()
    raise PortError("jackd did not come up within 10 s")
