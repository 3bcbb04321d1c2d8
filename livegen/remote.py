"""Remote inference: `livegen worker` serves the models; `livegen run --inference` asks it.

One request per phrase over DEALER/ROUTER, JSON in one frame:
    {"v": 1, "type": "generate", "id": N, "model": SHA256, "name": "...", "budget_ms": B,
     "start": S, "steps": K, "seed": SEED, "seam": [MIDI pitches] or null, "settings": {...},
     "notes": [[pitch, start, end, velocity, track], ...]}
    -> {"v": 1, "id": N, "ok": true, "notes": [[...], ...], "ms": worker time}
     | {"v": 1, "id": N, "ok": false, "error": "..."}
    {"v": 1, "type": "ping", "id": N} -> {"v": 1, "id": N, "ok": true, "models": [SHA256, ...]}

The model is named by the SHA-256 of its file, so the worker plays exactly the model the
daemon loaded. The worker drops a request whose budget ran out while it waited; the daemon
drops a reply that comes after its deadline and then plays the phrase from its own copy of
the model, with the same seed (so the music is the same either way). A worker that does
not answer is left out until it answers a ping again (every half second).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from livegen.config import Settings
from livegen.control import curve_client, curve_server
from livegen.endpoints import check_endpoint, loopback
from livegen.errors import ConfigError
from livegen.phrase import generate
from livegen.roll import Note

log = logging.getLogger(__name__)

VERSION = 1
# the settings that shape a phrase's notes (see phrase.generate)
GENERATION_KEYS = ("mode", "threshold", "temperature", "top_p", "edit_passes", "edits_per_pass",
                   "edit_temperature", "max_remove", "max_add", "keep_player", "key")
PING_EVERY = 0.5


def notes_to_json(notes: list[Note]) -> list[list[int]]:
    return [[n.pitch, n.start, n.end, n.velocity, n.track] for n in notes]


def notes_from_json(rows) -> list[Note]:
    if not isinstance(rows, list):
        raise ValueError("notes must be a list")
    out = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 5 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                for x in row)):
            raise ValueError(f"a note is [pitch, start, end, velocity, track] integers, not {row!r}")
        pitch, start, end, velocity, track = row
        if not (0 <= pitch < 128 and 0 <= velocity < 128 and end > start and 0 <= track < 16):
            raise ValueError(f"note {row!r} is out of range")
        out.append(Note(pitch, start, end, velocity, track))
    return out


# --------------------------------------------------------------------------- worker

def check_bind(endpoint: str, keys: str) -> None:
    check_endpoint(endpoint, "--bind")
    if not keys and not loopback(endpoint):
        raise ConfigError(f"{endpoint}: binding beyond loopback needs CURVE keys: make them with "
                          "`livegen keys DIR` and pass --keys DIR")


class Worker:
    """A ROUTER socket answering generate requests with local models, one at a time."""

    def __init__(self, endpoint: str, models: list, keys: str = ""):
        import zmq

        check_bind(endpoint, keys)
        self.models = {m.sha256: m for m in models}
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.auth = curve_server(self.ctx, [self.sock], keys) if keys else None
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as err:
            self.close()
            raise ConfigError(f"cannot bind {endpoint}: {err}") from err
        self.stats = {"served": 0, "expired": 0, "errors": 0}

    def serve(self, halt) -> None:
        """Until `halt` (a threading.Event or a livegen.signals.StopFlag) is set."""
        import zmq

        while not halt.is_set():
            if not self.sock.poll(200):
                continue
            batch = []          # everything waiting, with when it was read: old requests are dropped
            while True:
                try:
                    batch.append((time.perf_counter(), self.sock.recv_multipart(zmq.NOBLOCK)))
                except zmq.Again:
                    break
            for received, frames in batch:
                if len(frames) < 2:
                    continue
                try:
                    reply = self.handle(frames[-1], received)
                except Exception as err:     # a request must never take the worker down
                    log.exception("request failed")
                    self.stats["errors"] += 1
                    reply = {"v": VERSION, "ok": False, "error": f"internal error: {err}"}
                if reply is not None:
                    self.sock.send_multipart([frames[0], json.dumps(reply).encode()])

    def handle(self, raw: bytes, received: float) -> dict | None:
        try:
            req = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            self.stats["errors"] += 1
            return {"v": VERSION, "ok": False, "error": f"not JSON: {err}"}
        if not isinstance(req, dict):
            return {"v": VERSION, "ok": False, "error": "a request is a JSON object"}
        rid = req.get("id")
        if req.get("v") != VERSION:
            return {"v": VERSION, "id": rid, "ok": False, "error": f"protocol version {req.get('v')!r}; "
                                                                     f"this worker speaks {VERSION}"}
        if req.get("type") == "ping":
            return {"v": VERSION, "id": rid, "ok": True, "models": sorted(self.models)}
        if req.get("type") != "generate":
            return {"v": VERSION, "id": rid, "ok": False, "error": f"unknown type {req.get('type')!r}"}
        model = self.models.get(req.get("model"))
        if model is None:
            return {"v": VERSION, "id": rid, "ok": False,
                    "error": f"model {req.get('name')!r} ({str(req.get('model'))[:12]}) is not served here"}
        budget = req.get("budget_ms")
        if isinstance(budget, (int, float)) and (time.perf_counter() - received) * 1000 > budget:
            self.stats["expired"] += 1
            return None     # its phrase is already played from the daemon's own model
        try:
            settings = Settings(**{k: v for k, v in req["settings"].items() if k in GENERATION_KEYS}).check()
            notes = notes_from_json(req["notes"])
            start, steps, seed = (int(req[k]) for k in ("start", "steps", "seed"))
            if not 0 < steps <= 4096:
                raise ValueError(f"steps {steps}: use 1..4096")
            seam = req.get("seam")
            if seam is not None and not (isinstance(seam, list) and len(seam) <= 16 and all(
                    isinstance(p, int) and not isinstance(p, bool) and -1 <= p < 128 for p in seam)):
                raise ValueError("seam must be a list of MIDI pitches (or -1)")
        except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as err:
            self.stats["errors"] += 1
            return {"v": VERSION, "id": rid, "ok": False, "error": f"bad request: {err}"}
        t = time.perf_counter()
        out = generate(model, settings, notes, start, steps, np.random.default_rng(seed), seam)
        self.stats["served"] += 1
        return {"v": VERSION, "id": rid, "ok": True, "notes": notes_to_json(out),
                "ms": round((time.perf_counter() - t) * 1000, 3)}

    def close(self) -> None:
        if self.auth:
            self.auth.stop()
        self.ctx.destroy(linger=0)


def serve(bind: str, specs: list[str] | None, device: str, keys: str) -> None:
    """`livegen worker`: load the models, then answer requests until SIGINT or SIGTERM."""
    from livegen.models import BUNDLED, Model
    from livegen.signals import StopFlag, stop_on

    check_bind(bind, keys)          # before loading the models
    models = []
    for spec in specs or list(BUNDLED):
        m = Model(spec, device)
        ms = m.warm_up()
        models.append(m)
        log.info("serving %s (%s) on %s, sha256 %s..., warm-up pass %.1f ms", m.info.path, m.info.kind, m.provider,
                 m.sha256[:12], ms)
    worker = Worker(bind, models, keys)
    halt = StopFlag()
    stop_on(halt)
    log.info("worker listening on %s%s; Ctrl-C stops", bind, " (CURVE)" if keys else "")
    try:
        worker.serve(halt)
    finally:
        log.info("worker stopped: %s", ", ".join(f"{k} {v}" for k, v in worker.stats.items()))
        worker.close()


# --------------------------------------------------------------------------- daemon side

@dataclass
class Endpoint:
    address: str
    sock: object
    up: bool = False
    last_ping: float = 0.0
    models: set = field(default_factory=set)


class RemoteInference:
    """The daemon's side: one DEALER per worker, used from the engine's worker thread only."""

    def __init__(self, endpoints: list[str], keys: str = ""):
        import zmq

        self.ctx = zmq.Context()
        self.endpoints: list[Endpoint] = []
        for address in endpoints:
            if not keys and not loopback(address):
                self.close()
                raise ConfigError(f"--inference {address}: a worker beyond loopback needs CURVE keys (--keys DIR "
                                  "with client.key_secret and the worker's server.key)")
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)        # never queue for a worker that is not connected
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            if keys:
                curve_client(sock, keys)
            try:
                sock.connect(address)
            except zmq.ZMQError as err:
                self.close()
                raise ConfigError(f"--inference {address}: {err}") from err
            self.endpoints.append(Endpoint(address, sock))
        self.next_id = 0
        self.turn = 0
        # round trips of answered requests; a request unanswered by its deadline counts as
        # twice the time it had, so the daemon leaves a slow worker more time next phrase
        self.recent_ms: list[float] = []
        self.last_worker = ""      # the address that answered last
        self.stats = {"remote_phrases": 0, "local_fallbacks": 0, "late_replies": 0, "worker_errors": 0}

    def _send(self, ep: Endpoint, message: dict) -> bool:
        import zmq

        try:
            ep.sock.send(json.dumps(message).encode(), zmq.NOBLOCK)
            return True
        except zmq.Again:          # not connected (IMMEDIATE): the worker is gone
            if ep.up:
                log.warning("inference worker %s is gone; playing locally until it is back", ep.address)
            ep.up = False
            return False

    def _drain(self, ep: Endpoint, want: int | None = None) -> dict | None:
        """Read every reply waiting on `ep`; returns the one with id `want`, if it came."""
        import zmq

        found = None
        while True:
            try:
                reply = json.loads(ep.sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return found
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(reply, dict):
                continue
            if "models" in reply and reply.get("ok"):
                if not ep.up:
                    log.info("inference worker %s is up (%d models)", ep.address, len(reply["models"]))
                ep.up, ep.models = True, set(reply["models"])
            elif want is not None and reply.get("id") == want:
                found = reply
            else:
                self.stats["late_replies"] += 1

    def tick(self) -> None:
        """Ping the workers now and then; call it when idle."""
        now = time.perf_counter()
        for ep in self.endpoints:
            self._drain(ep)
            if now - ep.last_ping >= PING_EVERY:
                ep.last_ping = now
                self.next_id += 1
                self._send(ep, {"v": VERSION, "type": "ping", "id": self.next_id})

    def generate(self, model, settings, notes: list[Note], start: int, steps: int, seed: int,
                 deadline: float, seam: list[int] | None = None) -> list[Note] | None:
        """The phrase's notes from a worker, or None (no worker up, or no answer by `deadline`,
        a perf_counter time): then the caller plays it locally."""
        import zmq

        self.tick()
        ready = [ep for ep in self.endpoints if ep.up and model.sha256 in ep.models]
        if not ready:
            return None
        ep = ready[self.turn % len(ready)]
        self.turn += 1
        self.next_id += 1
        rid = self.next_id
        budget_ms = (deadline - time.perf_counter()) * 1000
        message = {"v": VERSION, "type": "generate", "id": rid, "model": model.sha256, "name": model.info.path,
                   "budget_ms": round(budget_ms, 2), "start": start, "steps": steps, "seed": seed, "seam": seam,
                   "settings": {k: getattr(settings, k) for k in GENERATION_KEYS},
                   "notes": notes_to_json(notes)}
        if budget_ms <= 0 or not self._send(ep, message):
            return None
        sent = time.perf_counter()
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not ep.sock.poll(max(1, int(left * 1000)), zmq.POLLIN):
                if time.perf_counter() >= deadline:
                    log.warning("inference worker %s did not answer in time; this phrase is played locally",
                                ep.address)
                    ep.up = False      # until it answers a ping again
                    self.recent_ms = (self.recent_ms + [min(2 * budget_ms, 2000.0)])[-8:]
                    return None
                continue
            reply = self._drain(ep, want=rid)
            if reply is None:
                continue
            if not reply.get("ok"):
                self.stats["worker_errors"] += 1
                log.warning("inference worker %s: %s", ep.address, reply.get("error"))
                return None
            try:
                out = notes_from_json(reply.get("notes"))
            except ValueError as err:
                self.stats["worker_errors"] += 1
                log.warning("inference worker %s sent bad notes: %s", ep.address, err)
                return None
            self.stats["remote_phrases"] += 1
            self.last_worker = ep.address
            self.recent_ms = (self.recent_ms + [(time.perf_counter() - sent) * 1000])[-8:]
            return out

    def close(self) -> None:
        self.ctx.destroy(linger=0)
