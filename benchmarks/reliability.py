"""Left alone all night: fuzzed MIDI, malformed control requests, stop events, restarts.

    python benchmarks/reliability.py [--fuzz 100000] [--requests 10000] [--stops 1000]
                                     [--restarts 100] [--only fuzz,requests,stops,restarts]
                                     [--stops-bpm 120] [--stop-events stop,panic,...]
                                     [--ways follow:continue,...] [--period 256] [--realtime]

LGREL_DEBUG=1 prints, for each timed stop event, the time of every note-off heard.

Prints one table per part:
- fuzz: random MIDI byte strings (stray status and data bytes, cut-off SysEx, real-time bytes
  inside messages, every channel) into the live engine in every way of listening, on a
  virtual clock (`livegen.offline`), then a melody: crashes, worker errors, notes left
  sounding after the stop, and whether the melody's phrase was answered.
- requests: malformed requests to a real control socket (ZeroMQ, loopback) in front of the
  engine: answered, "internal error" answers, unanswered, settings changed.
- stops: `livegen run --clock midi` on a JACK dummy server of its own, every way of listening
  in turn (an equal share of the events each), a player that is the clock master and plays a
  melody in every phrase, and a listener (its own process) that tracks every note; random
  events while the voices sound (a MIDI Stop, then Start again; a panic over the control
  socket; a switch to another way and back; the output's connection removed and made again;
  SIGTERM and a restart): notes sounding at the event that never got their own note-off, and
  the time from the event to the last note-off the listener heard for them (p50 / p99 / max).
- restarts: start, play a phrase, hear the answer, SIGTERM: answered and exit status.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from livegen.config import Settings  # noqa: E402
from livegen.models import Model  # noqa: E402
from livegen.offline import VirtualRun  # noqa: E402
from livegen.ports import JACK_DUMMY_PERIOD, jack_dummy_args  # noqa: E402
from tests.virtual import MELODY  # noqa: E402

WAYS = [("loop", "accompany"), ("loop", "edit"), ("respond", "continue"), ("respond", "edit"),
        ("follow", "continue")]
BPM = 120
STEP = 60 / (BPM * 4)
REALTIME = [0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF]


# ---------------------------------------------------------------- fuzzed MIDI (in process)

def fuzz_message(rng: random.Random) -> list[int]:
    kind = rng.randrange(7)
    if kind == 0:                               # any bytes
        return [rng.randrange(256) for _ in range(rng.randint(1, 8))]
    if kind == 1:                               # a channel message, any channel, maybe cut short
        status = rng.choice([0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0]) | rng.randrange(16)
        return [status] + [rng.randrange(128) for _ in range(rng.randint(0, 3))]
    if kind == 2:                               # stray data bytes
        return [rng.randrange(128) for _ in range(rng.randint(1, 4))]
    if kind == 3:                               # a SysEx cut off, or ended by another status
        body = [0xF0] + [rng.randrange(128) for _ in range(rng.randint(0, 12))]
        return body + rng.choice([[], [0xF7], [0x90, 60, 100], [0xF0]])
    if kind == 4:                               # a real-time byte inside a message
        msg = [0x90 | rng.randrange(16), rng.randrange(128), rng.randrange(128)]
        msg.insert(rng.randint(1, 3), rng.choice(REALTIME))
        return msg
    if kind == 5:                               # a note on or off, well formed
        return [rng.choice([0x80, 0x90]) | rng.randrange(16), rng.randrange(128), rng.randrange(128)]
    return [rng.choice([0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF9, 0xFD] + REALTIME)]


def fuzz(count: int, seed: int) -> list[dict]:
    rows = []
    models = {}
    for mode, kind in WAYS:
        model = models.setdefault(kind, Model(kind, "cpu"))
        run = VirtualRun(Settings(model=model.info.path, mode=mode, bpm=BPM, seed=seed).check(), model)
        rng = random.Random(seed)
        t0, dt = run.clock.t + 0.1, 0.002
        for i in range(count):
            run.at(t0 + i * dt, fuzz_message(rng))
        end = t0 + count * dt
        for k in range(16):                      # every key and pedal up, as a player would end
            run.at(end, [0xB0 | k, 64, 0])
            for pitch in range(128):
                run.at(end, [0x80 | k, pitch, 0])
        started = time.perf_counter()
        crashed = ""
        try:
            run.run_until(end + 0.1)
            steps = run.engine.transport.position(end + 0.1)
            phrase = run.engine.steps
            first = (int(steps // phrase) + 1) * phrase       # a melody at the next phrase boundary
            melody_at = run.engine.transport.time_of(first)
            n = len(run.sent)
            for pitch, s, e in MELODY:
                run.at(melody_at + s * STEP, [0x90, pitch, 90])
                run.at(melody_at + e * STEP - 0.01, [0x80, pitch, 0])
            run.run_until(run.engine.transport.time_of(first + 2 * phrase) + 0.05)
            answered = any(m[0] & 0xF0 == 0x90 and m[2] > 0 and t >= melody_at for t, m in run.sent[n:])
            run.engine.stop()
            run.engine.scheduler.pump(run.clock.t)
        except Exception as err:     # a crash is what this counts
            crashed, answered = f"{type(err).__name__}: {err}", False
        on: set = set()
        for _, m in run.sent:
            key = (m[0] & 0x0F, m[1] if len(m) > 1 else 0)
            if m[0] & 0xF0 == 0x90 and m[2] > 0:
                on.add(key)
            elif m[0] & 0xF0 in (0x80, 0x90):
                on.discard(key)
        stats = run.engine.stats
        rows.append({"mode": mode, "model": kind, "strings": count, "crash": crashed or "none",
                     "worker_errors": stats["worker_errors"], "malformed": stats["malformed"],
                     "sounding_after_stop": len(on), "answered_after": answered,
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------- malformed control requests

def bad_request(rng: random.Random, fifo: str) -> bytes:
    def junk(depth=0):
        kind = rng.randrange(7 if depth < 3 else 4)
        if kind == 0:
            return rng.randint(-2**40, 2**40)
        if kind == 1:
            return rng.choice(["", " ", "../../x", "/dev/zero", fifo, "a" * rng.randint(300, 5000), "\u00ff\u2603",
                               "loop", "follow", "continue", "STATUS"])
        if kind == 2:
            return rng.choice([None, True, False, 1e308, -0.0])
        if kind == 3:
            return rng.random() * 1e6
        if kind == 4:
            return [junk(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(["cmd", "key", "value", "model", "mode", "x"]): junk(depth + 1) for _ in range(3)}

    kind = rng.randrange(8)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    if kind == 1:
        return ("[" * rng.randint(1000, 60000)).encode()
    if kind == 2:
        return json.dumps(junk()).encode()
    if kind == 3:                        # a known command with a field it does not take
        return json.dumps({"cmd": rng.choice(["status", "panic", "reload", "learn"]), "bogus": junk()}).encode()
    if kind == 4:                        # set with a bad key or value type
        value = rng.choice([{"a": 1}, [[1]], "hot", -5, 1e12, None])
        key = rng.choice(["temperature", "bpm", "mute", "seed", "volume", 7, None, ["x"]])
        return json.dumps({"cmd": "set", "key": key, "value": value}).encode()
    if kind == 5:                        # a switch to something that is not a model or a mode
        return json.dumps({"cmd": rng.choice(["set", "reload"]), "key": rng.choice(["model", "mode"]),
                           "value": rng.choice(["", " ", "../../x", "/dev/zero", fifo, "a" * 5000, 5, ["x"], None,
                                                "/etc/passwd", "/tmp"])}).encode()
    if kind == 6:
        return b'{"cmd": "status", "x": "' + b"y" * rng.randint(70_000, 200_000) + b'"}'
    return json.dumps({"cmd": rng.choice(["", "STATUS", "dance", "set ", "\u0000"])}).encode()


def requests(count: int, seed: int) -> list[dict]:
    import tempfile

    import zmq

    from livegen.control import ControlServer, request
    from tests.virtual import Rig

    rig = Rig("accompany", bpm=BPM, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "fifo.onnx")
        os.mkfifo(fifo)
        ep = f"ipc://{tmp}/control"
        server = ControlServer(rig.engine, ep)
        server.start()
        before = request(ep, {"cmd": "status"})["status"]
        rng = random.Random(seed)
        ctx = zmq.Context()
        counts = {"sent": 0, "answered": 0, "ok_true": 0, "internal_error": 0, "unanswered": 0}
        sock = None
        started = time.perf_counter()
        for _ in range(count):
            if sock is None:
                sock = ctx.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVTIMEO, 30_000)
                sock.connect(ep)
            sock.send(bad_request(rng, fifo))
            counts["sent"] += 1
            try:
                reply = json.loads(sock.recv())
            except zmq.Again:
                counts["unanswered"] += 1
                sock.close()
                sock = None
                continue
            counts["answered"] += 1
            counts["ok_true"] += reply.get("ok") is True
            counts["internal_error"] += "internal" in str(reply.get("error", ""))
        after = request(ep, {"cmd": "status"})["status"]
        ctx.destroy(linger=0)
        server.close()
    counts["settings_changed"] = int(after["settings"] != before["settings"] or after["model"] != before["model"])
    counts["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(counts), flush=True)
    return [counts]


# ---------------------------------------------------------------- over JACK: stops and restarts

PERIOD = JACK_DUMMY_PERIOD    # jackd's frames per cycle (--period)
REALTIME = False                # --realtime: jackd -R, its clients' process threads SCHED_FIFO


def start_jack() -> subprocess.Popen:
    """A JACK dummy server of our own; its log in proc.log_path."""
    name = f"lgrel-{uuid.uuid4().hex[:6]}"
    os.environ["JACK_DEFAULT_SERVER"] = name
    os.environ["JACK_NO_START_SERVER"] = "1"
    log_path = f"/tmp/{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["jackd", "-n", name, *jack_dummy_args(REALTIME, PERIOD)],
                                stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path
    for _ in range(150):
        if subprocess.run(["jack_lsp"], capture_output=True).returncode == 0:
            time.sleep(1.0)
            return proc
        time.sleep(0.1)
    raise SystemExit("jackd did not start")


def stalls_in(proc, start: int) -> tuple[int, int]:
    """jackd's "not finished" lines (a client that held up the graph) written since byte
    `start` of its log, and the log's size now."""
    with open(proc.log_path, "rb") as f:
        f.seek(start)
        text = f.read()
    return text.count(b"was not finished"), start + len(text)


def sounding(messages, upto: float | None = None) -> dict[tuple[int, int], float]:
    """(channel, pitch) -> note-on time of the notes on at `upto`, by their own note-offs."""
    on: dict = {}
    for t, m in messages:
        if upto is not None and t > upto:
            break
        key = (m[0] & 0x0F, m[1] if len(m) > 1 else 0)
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            on[key] = t
        elif m[0] & 0xF0 in (0x80, 0x90):
            on.pop(key, None)
    return on


def why_left(note: tuple[int, int], on_at: float, at: float, heard) -> str:
    """What the second listener (the witness, on the same output) heard of a note the first
    heard start at `on_at` and never end after the event at `at`: its note-off before the
    event (lost at the first listener earlier: not this event's), after it (lost at the first
    listener), or none (the daemon sent none, or its own cycle was lost)."""
    def offs(lo, hi):
        return [t for t, m in heard if lo <= t < hi and m[0] & 0xF0 in (0x80, 0x90) and len(m) > 2
                and (m[0] & 0x0F, m[1]) == note and (m[0] & 0xF0 == 0x80 or m[2] == 0)]
    ons = [t for t, m in heard if m[0] & 0xF0 == 0x90 and len(m) > 2 and m[2] > 0 and (m[0] & 0x0F, m[1]) == note
           and abs(t - on_at) < 0.05]
    if not ons:
        return "witness missed the note-on too"
    if offs(ons[0] + 1e-6, at):
        return "witness heard its note-off before the event"
    if offs(at, float("inf")):
        return "witness heard its note-off after the event"
    told = any(t >= at and m[0] & 0xF0 == 0xB0 and m[0] & 0x0F == note[0] and m[1] == 123 for t, m in heard)
    return "witness heard no note-off either" + (", but the channel's CC 123" if told else ", nor the channel's CC 123")


def record_says(path: str, note: tuple[int, int], count: int) -> str:
    """Whether the daemon's `--record` file has a note-off for the `count`-th note-on of
    `note` (as the listener counted them) before that key's next note-on."""
    import mido

    try:
        events = [m for m in mido.merge_tracks(mido.MidiFile(path).tracks)
                  if m.type in ("note_on", "note_off") and (m.channel, m.note) == note]
    except (OSError, EOFError, ValueError) as err:
        return f"unreadable ({err})"
    ons = [k for k, m in enumerate(events) if m.type == "note_on" and m.velocity > 0]
    if len(ons) < count:
        return f"only {len(ons)} note-ons of it, the listener heard {count}"
    after = events[ons[count - 1] + 1:ons[count] if count < len(ons) else None]
    return "sent its note-off" if any(m.type == "note_off" or m.velocity == 0 for m in after) else "no note-off sent"


SWITCH_TO = {("loop", "accompany"): ("loop", "edit"), ("loop", "edit"): ("respond", "edit"),
             ("respond", "continue"): ("follow", "continue"), ("respond", "edit"): ("loop", "edit"),
             ("follow", "continue"): ("respond", "continue")}
STOP_EVENTS = ["stop", "panic", "switch", "disconnect", "sigterm"]
# also "unplug": the listener and the witness both disconnected (the output has no connection
# left, as a synth that was its only one), then the listener connected again (timed), then
# the witness (not in the default draw, which the tables above were made with)


class ClockMaster(threading.Thread):
    """The player as the MIDI clock master: Start, 24 ticks a quarter, and the melody in every
    phrase, from this one thread (an rtmidi output is not to be used from two); other threads
    hand it messages with `send`, which returns when they left."""

    def __init__(self, player, bpm: float, phrase_steps: int = 32):
        super().__init__(daemon=True)
        self.player, self.tick_s = player, 60 / (bpm * 24)
        self.cycle = phrase_steps * 6
        self.melody: dict[int, list[list[int]]] = {}
        for pitch, s, e in MELODY:
            self.melody.setdefault(s * 6, []).append([0x90, pitch, 90])
            self.melody.setdefault(e * 6 - 1, []).append([0x80, pitch, 0])
        self.asked: list = []
        self.cond = threading.Condition()
        self.halt = False
        self.tick = 0
        self.playing = True     # (after a Stop only the melody's note-offs, until Start)

    def send(self, msgs: list[list[int]], restart: bool = False) -> float:
        """Send `msgs` now; `restart`: then Start again, the melody from its first step."""
        item = [msgs, restart, None]
        with self.cond:
            self.asked.append(item)
            self.cond.notify()
            while item[2] is None:
                self.cond.wait(0.5)
        return item[2]

    def stop(self) -> None:
        with self.cond:
            self.halt = True
            self.cond.notify()
        self.join(2)

    def run(self) -> None:
        self.player.send([0xFA])
        next_tick = time.perf_counter()
        with self.cond:
            while not self.halt:
                for item in self.asked:
                    for msg in item[0]:
                        self.player.send(msg)
                        self.playing = self.playing and msg != [0xFC]
                    item[2] = time.perf_counter()
                    if item[1]:
                        self.player.send([0xFA])
                        self.tick, next_tick, self.playing = 0, time.perf_counter(), True
                self.asked.clear()
                self.cond.notify_all()
                wait = next_tick - time.perf_counter()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                self.player.send([0xF8])
                for msg in self.melody.get(self.tick % self.cycle, ()):
                    if self.playing or msg[0] == 0x80:
                        self.player.send(msg)
                self.tick += 1
                next_tick += self.tick_s


class Panic:
    """`ctl panic` over a socket connected beforehand: the time of a panic is taken when the
    request leaves (a new client's own set-up, some ms, is not the daemon's)."""

    def __init__(self, endpoint: str):
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 3000)
        self.sock.connect(endpoint)

    def __call__(self) -> float:
        at = time.perf_counter()
        self.sock.send(json.dumps({"cmd": "panic"}).encode())
        answer = json.loads(self.sock.recv())
        assert answer.get("ok"), answer
        return at

    def close(self) -> None:
        self.ctx.destroy(linger=0)


class Patchbay:
    """Connections made and removed by a JACK client of this process (a `jack_connect` process
    makes its own client first, which takes 0.1-0.6 s: the moment of the connection would be
    unknown)."""

    def __init__(self):
        import ctypes

        from livegen.ports import JackLinks

        self.links = JackLinks("lgrel-patchbay")
        for name in ("jack_connect", "jack_disconnect"):
            getattr(self.links.jack, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]

    def connect(self, source: str, dest: str) -> tuple[float, float]:
        """The time the request left and the time the server answered (the connection is made
        in between, some ms)."""
        at = time.perf_counter()
        assert self.links.jack.jack_connect(self.links.client, source.encode(), dest.encode()) == 0
        return at, time.perf_counter()

    def disconnect(self, source: str, dest: str) -> None:
        assert self.links.jack.jack_disconnect(self.links.client, source.encode(), dest.encode()) == 0


def since_arrival(ms) -> dict:
    """p50 / p99 / max of the last note-off heard after an event, timed from its arrival rather
    than from its start: a Stop at livegen's input (an ear on the player's port) rather than
    the player's send; a connection made again at the JACK server's answer to the request
    (the call's return: a busy server's request thread took up to 96 ms to make or answer
    it, 2026-12-05) rather than the call."""
    a = np.asarray(ms)
    return {"from_arrival_p50_ms": round(float(np.percentile(a, 50)), 1),
            "from_arrival_p99_ms": round(float(np.percentile(a, 99)), 1),
            "from_arrival_max_ms": round(float(a.max()), 1)}


def stops(count: int, seed: int, bpm: float = BPM, events=STOP_EVENTS, ways=WAYS) -> list[dict]:
    """`count` stop events over every way of listening, an equal share each, in turn."""
    from livegen.control import request
    from tests.jackmidi import Daemon, Listener, Player

    jack = start_jack()
    rng = random.Random(seed)
    latencies: dict[tuple[str, str], list[float]] = {}
    arrived: dict[tuple[str, str], list[float]] = {}    # from the event's arrival (`since_arrival`)
    left: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, str], int] = {}
    control = f"ipc:///tmp/lgrel-{os.getpid()}"
    phrase_s = 32 * 60 / (bpm * 4)
    started = time.perf_counter()
    examples = []
    counted: set = set()     # ((channel, pitch), note-on time) already counted as left sounding
    causes: dict[str, int] = {}     # why_left -> notes

    lives = itertools.count()
    sent_witness: list = []      # (the daemon's --record file, note, its listener's note-on count, what
                                 # the witness said): looked at once the daemon has written the file

    def start(mode: str, model: str):
        record = f"/tmp/lgrel-{os.getpid()}-{next(lives)}.mid"     # what the daemon sent: a third witness
        d = Daemon("lgrel", "--model", model, "--mode", mode, "--clock", "midi", "--control", control,
                   "--late-ms", "40", "--record", record)
        d.record = record
        player, listener = Player(d.in_port, "lgrel-player"), Listener(d.out_port, "lgrel-listener")
        witness = Listener(d.out_port, "lgrel-witness")     # a second ear on the same output
        # an ear on the player's port hears each message in the JACK cycle livegen's input does:
        # a Stop is timed from there too (the JACK hop into livegen left out)
        inlet = Listener("lgrel-player:out", "lgrel-inlet")
        master = ClockMaster(player, bpm)
        master.start()
        return d, player, (listener, witness, inlet), master, Panic(control)

    def close(d, player, ears, master, panic) -> None:
        panic.close()
        master.stop()
        d.stop()
        for ear in ears:
            ear.close()
        player.close()
        player.out.delete()

    patchbay = Patchbay()
    share = [count // len(ways) + (k < count % len(ways)) for k in range(len(ways))]
    done = 0
    try:
        try:      # (Ctrl-C or `timeout -s INT`: the table of what was done so far)
            for (mode, model), n in zip(ways, share):
                rig = start(mode, model)
                time.sleep(2 * phrase_s)            # the first phrase played and its answer sounding
                for _ in range(n):
                    d, player, (listener, witness, inlet), master, panic = rig
                    kind = rng.choice(events)
                    key = (f"{mode}, {model}", kind)
                    counts[key] = counts.get(key, 0) + 1
                    time.sleep(rng.uniform(0.2, 0.8))
                    # (a note left on at an earlier event is not counted again at this one)
                    before = {k: t for k, t in sounding(listener.messages()).items() if (k, t) not in counted}
                    at = time.perf_counter()   # (the event itself; the silence is timed from here)
                    came = None                # (when it arrived: `since_arrival`)
                    if kind == "stop":
                        at = master.send([[0xFC]])
                    elif kind == "panic":
                        at = panic()
                    elif kind == "switch":     # to another way and back, each at a phrase boundary
                        other = SWITCH_TO[(mode, model)]
                        request(control, {"cmd": "set", "key": "mode", "value": other[0], "model": other[1]})
                        time.sleep(phrase_s + 0.3)
                        request(control, {"cmd": "set", "key": "mode", "value": mode, "model": model})
                        time.sleep(phrase_s + 0.3)
                    elif kind == "disconnect":  # the synth misses what is sent: timed from its return
                        patchbay.disconnect(d.out_port, "lgrel-listener:in")
                        time.sleep(0.4)
                        at, came = patchbay.connect(d.out_port, "lgrel-listener:in")
                    elif kind == "unplug":      # no connection left at all, then the listener back
                        patchbay.disconnect(d.out_port, "lgrel-listener:in")
                        patchbay.disconnect(d.out_port, "lgrel-witness:in")
                        time.sleep(0.4)
                        at, came = patchbay.connect(d.out_port, "lgrel-listener:in")
                        time.sleep(0.05)
                        patchbay.connect(d.out_port, "lgrel-witness:in")
                    else:
                        d.proc.send_signal(signal.SIGTERM)
                        d.proc.wait(10)
                    # (a connection made again took up to 627 ms to get its note-offs: 2026-12-03)
                    time.sleep(1.0 if kind in ("disconnect", "unplug") else 0.6)
                    msgs = listener.messages()
                    heard = witness.messages()
                    ends, unended = [], []
                    for note in before:
                        offs = [t for t, m in msgs if t >= at and m[0] & 0xF0 in (0x80, 0x90) and
                                (m[0] & 0x0F, m[1]) == note and (m[0] & 0xF0 == 0x80 or m[2] == 0)]
                        if offs:
                            ends.append(offs[0] - at)
                        else:
                            unended.append(note)
                            counted.add((note, before[note]))
                            why = why_left(note, before[note], at, heard)
                            causes[why] = causes.get(why, 0) + 1
                            ons = sum(1 for t, m in msgs if t <= before[note] and m[0] & 0xF0 == 0x90
                                      and m[2] > 0 and (m[0] & 0x0F, m[1]) == note)
                            sent_witness.append((d.record, note, ons, why))
                    if ends and kind != "switch":    # (a switch ends the voices at its boundary, by design)
                        latencies.setdefault(key, []).append(max(ends) * 1000)
                        if kind == "stop":
                            came = next((t for t, m in inlet.messages() if t >= at - 0.001 and m == [0xFC]), None)
                        if came is not None:
                            arrived.setdefault(key, []).append((max(ends) + at - came) * 1000)
                        if os.environ.get("LGREL_DEBUG"):     # each note-off heard, ms
                            print(kind, [round(e * 1000, 1) for e in sorted(ends)], file=sys.stderr)
                    left[key] = left.get(key, 0) + len(unended)
                    if unended and len(examples) < 10:
                        examples.append(f"{key} at {at - started:.1f} s: " + ", ".join(
                            f"{n} on {at - before[n]:.2f} s before, {why_left(n, before[n], at, heard)}"
                            for n in sorted(unended)))
                    if kind == "stop":
                        master.send([], restart=True)
                        time.sleep(phrase_s)         # a phrase played again, its answer to come
                    if kind == "sigterm":
                        close(*rig)
                        rig = start(mode, model)
                        time.sleep(phrase_s + 0.5)   # (the melody's first phrase; its answer begins)
                    done += 1
                    print(f"\rstops: {done}/{count} ({mode}, {model}: {kind})      ", end="", file=sys.stderr,
                          flush=True)
                close(*rig)
        except KeyboardInterrupt:
            print(f"\nstops: interrupted after {done} events", file=sys.stderr)
            close(*rig)
        print(file=sys.stderr)
    finally:
        jack.terminate()
        jack.wait(10)
    rows = []
    for key in sorted(counts):
        row = {"way": key[0], "event": key[1], "events": counts[key], "left_sounding": left.get(key, 0)}
        if latencies.get(key):
            a = np.array(latencies[key])
            row |= {"timed": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
                    "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}
        if arrived.get(key):
            row |= since_arrival(arrived[key])
        rows.append(row)
    for kind in events:                           # each kind over every way
        a = np.concatenate([latencies.get(key, []) for key in counts if key[1] == kind] or [[]])
        row = {"way": "all", "event": kind, "events": sum(c for key, c in counts.items() if key[1] == kind),
               "left_sounding": sum(n for key, n in left.items() if key[1] == kind)}
        if len(a):
            row |= {"timed": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
                    "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}
        came = [v for key, v in arrived.items() if key[1] == kind]
        if came:
            row |= since_arrival(np.concatenate(came))
        rows.append(row)
    rows.append({"way": "all", "event": "all", "events": sum(counts.values()), "left_sounding": sum(left.values()),
                 "seconds": round(time.perf_counter() - started, 1)})
    for r in rows:
        print(json.dumps(r), flush=True)
    print(json.dumps({"left_sounding_by_witness": causes}), flush=True)
    for record, note, count, why in sent_witness:
        print(f"left sounding: {note}, {why}; the daemon's record: {record_says(record, note, count)}", flush=True)
    for line in examples:
        print("left sounding:", line, flush=True)
    return rows


def restarts(count: int, seed: int) -> list[dict]:
    from tests.jackmidi import Daemon, Listener, Player

    jack = start_jack()
    heard, codes, started = 0, [], time.perf_counter()
    idle_stalls, exit_stalls, exits_with_stall = 0, 0, 0
    try:
        for i in range(count):
            d = Daemon("lgrestart", "--model", "continue", "--mode", "follow", "--bpm", str(BPM))
            player, listener = Player(d.in_port, "lgrestart-player"), Listener(d.out_port, "lgrestart-listener")
            t0 = time.perf_counter() + 0.05
            for pitch, s, e in MELODY[:3]:
                player.at(t0 + s * STEP, [0x90, pitch, 90])
                player.at(t0 + e * STEP - 0.01, [0x80, pitch, 0])
            time.sleep(0.3)
            heard += bool(listener.note_ons())
            _, mark = stalls_in(jack, 0)
            time.sleep(1.0)                             # an idle second, for comparison
            idle, mark = stalls_in(jack, mark)
            codes.append(d.stop())
            time.sleep(1.0)                             # the exit and the second after it
            stalled, _ = stalls_in(jack, mark)
            idle_stalls += idle
            exit_stalls += stalled
            exits_with_stall += stalled > 0
            listener.close()
            player.close()
            print(f"\rrestarts: {i + 1}/{count}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        jack.terminate()
        jack.wait(10)
    row = {"restarts": count, "heard": heard, "exit_0": codes.count(0),
           "jackd_not_finished_lines_in_an_idle_second": idle_stalls,
           "in_the_second_of_each_exit": exit_stalls, "exits_with_any": exits_with_stall,
           "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(row), flush=True)
    return [row]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fuzz", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--stops", type=int, default=1000)
    ap.add_argument("--restarts", type=int, default=100)
    ap.add_argument("--only", default="fuzz,requests,stops,restarts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stops-bpm", type=float, default=BPM, help="the tempo of the stops part's MIDI clock")
    ap.add_argument("--stop-events", default=",".join(STOP_EVENTS), help="the kinds of stop event to draw from")
    ap.add_argument("--ways", default="", help="e.g. follow:continue,loop:edit (default: every way)")
    ap.add_argument("--period", type=int, default=int(PERIOD), help="JACK's frames per cycle (stops, restarts)")
    ap.add_argument("--realtime", action="store_true",
                    help="a realtime JACK server (jackd -R -P 70: the server's and every client's process thread "
                         "SCHED_FIFO, as on a studio machine; needs the right to it) for stops and restarts")
    args = ap.parse_args()
    globals()["PERIOD"], globals()["REALTIME"] = args.period, args.realtime
    import logging
    logging.basicConfig(level=logging.CRITICAL)      # (the fuzz makes the engine log a lot)
    parts = args.only.split(",")
    if "fuzz" in parts:
        fuzz(args.fuzz, args.seed)
    if "requests" in parts:
        requests(args.requests, args.seed)
    if "stops" in parts:
        ways = [tuple(w.split(":")) for w in args.ways.split(",")] if args.ways else WAYS
        stops(args.stops, args.seed, args.stops_bpm, args.stop_events.split(","), ways)
    if "restarts" in parts:
        restarts(args.restarts, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
