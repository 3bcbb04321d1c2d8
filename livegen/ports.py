"""MIDI ports through python-rtmidi: backends, port-name matching, virtual ports, a JACK helper.

Name matching is pure (tested without hardware): an exact name wins, else a unique
substring; none or several matches is an error that lists the ports.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Callable

from livegen.errors import PortError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "alsa", "jack", "coremidi", "winmm")
INPUT_QUEUE_LIMIT = 8192


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
        if kind == "in":
            # a deep queue inside rtmidi: the MIDI API's thread fills it without Python
            return rtmidi.MidiIn(_api(backend), name=client_name, queue_size_limit=INPUT_QUEUE_LIMIT)
        return rtmidi.MidiOut(_api(backend), name=client_name)
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


def release(port) -> None:
    """Close an rtmidi port and free its client. On JACK, a client left to the garbage
    collector after close_port() stalled the whole JACK graph for about half a second at exit
    (jackd: "client ... was not finished", 14 of 15 runs; with delete(): 0 of 15), and the
    output's last messages waiting for the next cycle were lost with it."""
    try:
        port.close_port()
    finally:
        port.delete()


class PortWatcher:
    """Lists ports through one pair of long-lived clients."""

    def __init__(self, backend: str, client_name: str):
        self._in = _client("in", backend, f"{client_name}-watch")
        self._out = _client("out", backend, f"{client_name}-watch")

    def inputs(self) -> list[str]:
        return self._in.get_ports()

    def outputs(self) -> list[str]:
        return self._out.get_ports()

    def close(self) -> None:
        self._in.delete()
        self._out.delete()


def libjack_path() -> str:
    """The libjack that rtmidi uses. The python-rtmidi wheel carries a copy of its own
    (python_rtmidi.libs/libjack-*.so): loading the system's libjack beside it puts two JACK
    client libraries, each with its own global state, in one process; the daemon crashed
    (SIGSEGV in a JACK thread) about once in a few hundred runs that way. dlopen of the path
    already loaded hands back that same copy."""
    import ctypes.util
    import importlib

    importlib.import_module("rtmidi")      # (loads its libjack)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if os.path.basename(path).startswith("libjack") and ".so" in path:
                    return path
    except OSError:
        pass
    return ctypes.util.find_library("jack") or "libjack.so.0"


class JackLinks:
    """The connections of a JACK port, through a JACK client of its own with no process
    callback (it takes no part in the process cycle, so it can never hold up the graph).
    rtmidi has no call for this; libjack is there wherever JACK is."""

    def __init__(self, client_name: str):
        import ctypes

        jack = ctypes.CDLL(libjack_path())
        jack.jack_client_open.restype = ctypes.c_void_p
        jack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        jack.jack_port_by_name.restype = ctypes.c_void_p
        jack.jack_port_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        jack.jack_port_get_all_connections.restype = ctypes.POINTER(ctypes.c_char_p)
        jack.jack_port_get_all_connections.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        jack.jack_get_ports.restype = ctypes.POINTER(ctypes.c_char_p)
        jack.jack_get_ports.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong]
        jack.jack_free.argtypes = [ctypes.c_void_p]
        jack.jack_client_close.argtypes = [ctypes.c_void_p]
        status = ctypes.c_int(0)
        self.lock = threading.Lock()
        self.jack = jack
        self.client = jack.jack_client_open(f"{client_name}-links".encode(), 0x01, ctypes.byref(status))  # JackNoStartServer
        if not self.client:
            raise PortError(f"cannot open a JACK client to watch connections (status {status.value:#x})")
        self.callback = None        # (kept: libjack calls it)
        self.active = False

    def on_change(self, changed: Callable[[str | None, bool], None], port: str) -> bool:
        """`changed(ours, made)` whenever a connection is made (`made`) or removed anywhere on
        the server, `ours` being `port` when the connection is one of that port's (else None),
        called on libjack's notification thread (so it must do no more than wake a thread):
        2-3 ms before the first JACK cycle that carries a new connection (`jack_connect` then a
        message every 0.5 ms, -p 256: p50 2.75, min 1.72 ms over 30), while the connection is
        seen by `connections` only once that cycle has begun: a note-off sent after a look
        that saw it was heard a cycle after the first one. The client is activated for this
        (libjack sends no notification otherwise) and still has no process callback, so it is
        never part of a cycle. False where libjack refuses."""
        import ctypes

        kind = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
        self.jack.jack_set_port_connect_callback.argtypes = [ctypes.c_void_p, kind, ctypes.c_void_p]
        self.jack.jack_activate.argtypes = [ctypes.c_void_p]
        self.jack.jack_deactivate.argtypes = [ctypes.c_void_p]
        self.jack.jack_port_by_id.restype = ctypes.c_void_p
        self.jack.jack_port_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        with self.lock:
            handle = self.jack.jack_port_by_name(self.client, port.encode())

        def told(a, b, connect, arg):     # (a lookup in the client's own copy of the graph)
            ours = handle and handle in (self.jack.jack_port_by_id(self.client, a),
                                         self.jack.jack_port_by_id(self.client, b))
            changed(port if ours else None, bool(connect))

        self.callback = kind(told)
        with self.lock:
            if self.jack.jack_set_port_connect_callback(self.client, self.callback, None) != 0:
                return False
            self.active = self.jack.jack_activate(self.client) == 0
        return self.active

    def connect(self, source: str, destination: str, made: bool = True) -> bool:
        """Connect (`made`) or disconnect two ports by their full names; False where JACK refuses."""
        import ctypes

        call = self.jack.jack_connect if made else self.jack.jack_disconnect
        call.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        with self.lock:
            return call(self.client, source.encode(), destination.encode()) == 0

    def connections(self, port: str) -> list[str] | None:
        """The ports `port` is connected to, or None when there is no such port."""
        with self.lock:     # (the hub's LinkWatch thread and the main thread share the client)
            handle = self.jack.jack_port_by_name(self.client, port.encode())
            if not handle:
                return None
            return self._names(self.jack.jack_port_get_all_connections(self.client, handle))

    def ports(self, sources: bool) -> list[str]:
        """The MIDI ports that send (`sources`: what an input can listen to) or receive, in
        rtmidi's names; read from the server's shared memory, no client made."""
        with self.lock:
            return self._names(self.jack.jack_get_ports(self.client, None, b"8 bit raw midi", 0x2 if sources else 0x1))

    def _names(self, names) -> list[str]:
        import ctypes

        if not names:
            return []
        out, i = [], 0
        while names[i] is not None:
            out.append(names[i].decode(errors="replace"))
            i += 1
        self.jack.jack_free(ctypes.cast(names, ctypes.c_void_p))
        return out

    def deactivate(self) -> None:
        """No more `on_change` calls (before the hub's ports close)."""
        with self.lock:
            if self.active:
                self.jack.jack_deactivate(self.client)
                self.active = False

    def close(self) -> None:
        if self.client:
            self.deactivate()
            self.jack.jack_client_close(self.client)
            self.client = None


class InputPoller(threading.Thread):
    """Hands (time, bytes) of each message of an rtmidi input to `deliver`, from its own thread.

    rtmidi's own queue cannot be drained from another thread: its ring buffer has no
    synchronisation (thestk/rtmidi issue 352), and a pop racing the MIDI API's push corrupted
    it: a segfault now and then under a flood, or when a source port went away. So rtmidi
    calls back on the MIDI API's thread (JACK's process thread), and the callback does
    nothing but append to a deque; this thread takes the messages from there. The time
    between messages is taken by rtmidi on the API's thread, so their times stay right even
    when this thread is late: arrival = anchor + the sum of the deltas, the anchor being the
    earliest that is consistent with every message so far. Nothing is filtered inside rtmidi
    (`ignore_types` all off): rtmidi drops a filtered message's delta too, which would shift
    every later time.
    """

    def __init__(self, port, deliver: Callable[[float, list[int]], None], interval: float = 0.001,
                 guard=None, limit: int = INPUT_QUEUE_LIMIT):
        """`guard`: an output connected to this input (JACK, see `open_guard`); after each
        quiet GUARD_S it sends a lone F7, which ends a sysex that was cut off. rtmidi's JACK
        input otherwise holds back everything after such a sysex until an F7 comes, which
        may be never: livegen would go deaf (`livegen.capture.split` recovers the notes)."""
        super().__init__(name="livegen-input", daemon=True)
        self.port, self.deliver, self.interval, self.guard = port, deliver, interval, guard
        self.halt = threading.Event()
        self.overflows = 0
        self.limit = limit
        self.arrived: deque = deque()
        self.probes: deque = deque()    # messages for the guard to send (`probe`)
        port.set_callback(self._arrive)

    def _arrive(self, event, _data=None) -> None:
        """The MIDI API's thread: keep (bytes, delta) for the poller; nothing else."""
        if len(self.arrived) < self.limit:
            self.arrived.append(event)
        else:
            self.overflows += 1

    GUARD_S = 0.05

    MAX_LAG = 0.05   # a message older than this by its deltas means deltas were lost: re-anchor

    def run(self) -> None:
        anchor, elapsed = None, 0.0
        take, sleep = self.arrived.popleft, time.sleep
        quiet_since = time.perf_counter()
        while not self.halt.is_set():
            try:
                msg = take()
            except IndexError:
                msg = None
            if msg is None:
                if self.probes and self.guard is not None:
                    self._send_guard(self.probes.popleft())
                elif self.guard is not None and time.perf_counter() - quiet_since > self.GUARD_S:
                    self._send_guard()
                    quiet_since = time.perf_counter()
                sleep(self.interval)   # (not halt.wait: a plain sleep costs a third less CPU per wake-up)
                continue
            quiet_since = time.perf_counter()
            data, delta = msg
            elapsed += delta
            now = time.perf_counter()
            # never in the future; and a message dropped (queue full) takes its delta with
            # it, which would leave every later time early
            if anchor is None or anchor + elapsed > now or now - (anchor + elapsed) > self.MAX_LAG:
                anchor = now - elapsed
            self.deliver(anchor + elapsed, data)

    def probe(self, msg: list[int]) -> None:
        """Have the guard send `msg` into this input (from this thread, the guard's only sender)."""
        self.probes.append(msg)

    def _send_guard(self, msg: list[int] = (0xF7,)) -> None:
        try:
            self.guard.send_message(list(msg))
        except Exception as err:   # (the guard is a safety net: never let it stop the input)
            log.warning("input guard failed, left off: %s", err)
            self.guard = None

    def stop(self) -> None:
        """Before the port is closed (rtmidi may crash on a callback left to a closed port)."""
        self.port.cancel_callback()
        self.halt.set()
        if self.is_alive():
            self.join(1.0)
        if self.guard is not None:
            self.guard.close_port()
            self.guard.delete()
            self.guard = None


def open_guard(backend: str, client_name: str, own_input: str):
    """JACK: an output connected to our own input port `own_input` (its full JACK name),
    for InputPoller's guard; None elsewhere (ALSA delivers a cut-off sysex with the next
    message) or when it cannot be made (then it says so)."""
    if backend != "jack":
        return None
    guard = _client("out", backend, f"{client_name}-guard")
    try:
        guard.open_port(guard.get_ports().index(own_input), "sysex-guard")
    except Exception as err:
        guard.delete()
        log.warning("no input guard for %s (%s): a cut-off sysex would hold back that input until an F7 "
                    "comes", own_input, err)
        return None
    return guard


# ---------------------------------------------------------------- JACK helper

def jack_server_running(server: str | None = None) -> bool:
    env = dict(os.environ)
    if server:
        env["JACK_DEFAULT_SERVER"] = server
    if shutil.which("jack_lsp") is None:
        return False
    env["JACK_NO_START_SERVER"] = "1"
    try:
        r = subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise PortError("the JACK server does not answer (jack_lsp gave no answer within 10 s)") from None
    return r.returncode == 0


class JackServerProbe:
    """Is the JACK server still there? Each `alive()` connects to the server's socket and
    hangs up: no JACK client is made (one a second upsets the graph) and jackd logs nothing.
    A server killed leaves its socket file behind, refusing connections."""

    def __init__(self, server: str | None = None):
        name = server or os.environ.get("JACK_DEFAULT_SERVER") or "default"
        self.name = name
        self.path = f"/dev/shm/jack_{name}_{os.getuid()}_0"     # where jackd 1.9 keeps it
        self.usable = os.path.exists(self.path)
        if not self.usable:
            log.info("no socket for JACK server %s at %s: a lost server is not watched for", name, self.path)

    def alive(self) -> bool:
        if not self.usable:
            return True
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(0.5)
        try:
            sock.connect(self.path)
            return True
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:        # (a busy server is slow to accept: not a lost one)
            return True
        finally:
            sock.close()


# The dummy driver's settings: 256 frames at 48 kHz, a cycle every 5.3 ms. With 64 frames (1.33 ms)
# and no real-time scheduling, a busy 2-core machine misses cycles all the time (jackd logged 284
# "client ... was not finished" lines and lost 2 of 900 bursts of MIDI in 30 s beside two busy
# processes; with 256 frames: 3 lines, nothing lost: `benchmarks/jack_drops.py --period 64 256`).
JACK_DUMMY_ARGS = ["--no-realtime", "-d", "dummy", "-r", "48000", "-p", "256"]
JACK_DUMMY_PERIOD = int(JACK_DUMMY_ARGS[-1])
# With realtime scheduling the server's and every client's process thread run before any
# other thread: a model's inference on the same cores no longer holds up a cycle. Without it,
# a MIDI Stop's note-offs waited up to 13 ms after livegen had sent them (JACK cycles of 2.67
# ms, the continue model decoding); with it, at most 5.4 ms from the Stop's arrival over 1,000
# stop events: `benchmarks/reliability.py --realtime`, benchmarks/README.md.
JACK_REALTIME_ARGS = ["-R", "-P", "70"]
# Realtime, the server livegen starts runs 128 frames a cycle (2.67 ms): beside two busy processes
# it lost none of 900 bursts of MIDI and logged no "not finished" line (64 frames: 8 lines;
# without realtime, 128 frames: 42 lines; `benchmarks/jack_drops.py --period 128 --realtime`),
# and over 1,000 stop events every kind of stop was heard within 10 ms at p99 (at 256 frames two
# cycles are already 10.7 ms): `benchmarks/reliability.py --period 128 --realtime`.
JACK_REALTIME_PERIOD = 128


def jack_dummy_args(realtime: bool = False, period: int | None = None) -> list[str]:
    """jackd's arguments after `-n NAME`: JACK_DUMMY_ARGS, realtime or not, at `period` frames
    (JACK_REALTIME_PERIOD realtime, else JACK_DUMMY_ARGS')."""
    period = period or (JACK_REALTIME_PERIOD if realtime else JACK_DUMMY_PERIOD)
    args = JACK_DUMMY_ARGS[:-1] + [str(period)]
    return JACK_REALTIME_ARGS + [a for a in args if a != "--no-realtime"] if realtime else args


def may_realtime() -> bool:
    """Whether this process may ask for realtime scheduling: root, or an RLIMIT_RTPRIO above 0
    (the limit the jackd2 package gives the audio group)."""
    try:
        import resource

        return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] != 0
    except (ImportError, AttributeError, OSError, ValueError):     # (not a Unix with realtime limits)
        return False


def start_jack_dummy(server: str | None = None, wait_s: float = 10.0, realtime: bool | None = None) -> subprocess.Popen:
    """Start `jackd -d dummy` (no sound hardware needed) and wait until it answers; with
    realtime scheduling where this process may ask for it (`realtime` None) and jackd takes it,
    else without."""
    if shutil.which("jackd") is None:
        raise PortError("no ALSA sequencer and no jackd here: install jackd2 (apt-get install jackd2)")
    if realtime is None:
        realtime = may_realtime()
    if realtime:
        try:
            proc = _start_jackd(server, True, wait_s)
        except PortError as err:
            log.warning("jackd with realtime scheduling did not start (%s): starting it without", err)
        else:
            if proc.realtime:
                return proc
            # (jackd goes on without it where refused, as in a container without CAP_SYS_NICE:
            # then with the cycles that suit a server without it)
            log.warning("jackd was refused realtime scheduling: starting it again without")
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return _start_jackd(server, False, wait_s)


def runs_realtime(pid: int) -> bool:
    """Whether a thread of this process is scheduled realtime (SCHED_FIFO or SCHED_RR)."""
    try:
        return any(os.sched_getscheduler(int(tid)) in (os.SCHED_FIFO, os.SCHED_RR)
                   for tid in os.listdir(f"/proc/{pid}/task"))
    except (AttributeError, OSError):     # (a thread that ended meanwhile; no /proc)
        return False


def _start_jackd(server: str | None, realtime: bool, wait_s: float) -> subprocess.Popen:
    """jackd -d dummy, answering; `.realtime` (asked for and granted) and `.period` (frames) set."""
    args = jack_dummy_args(realtime)
    cmd = ["jackd"] + (["-n", server] if server else []) + args
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PortError(f"jackd exited at once (code {proc.returncode}); is another server of that name running?")
        if jack_server_running(server):
            proc.realtime, proc.period = realtime and runs_realtime(proc.pid), int(args[-1])
            return proc
        time.sleep(0.1)
    proc.terminate()
    raise PortError("jackd did not come up within 10 s")
