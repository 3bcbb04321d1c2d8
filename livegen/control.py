"""Live control: settings that may change while the music plays, from a ZeroMQ socket or MIDI CCs.

Requests are JSON objects on a REP socket: {"cmd": "status"}, {"cmd": "set", "key": K,
"value": V} (K = model or mode takes effect at the next phrase), {"cmd": "reload"} (the model
file again, at the next phrase), {"cmd": "panic"}, {"cmd": "learn", "key": K} (the next CC
moved controls K).
Each gets a JSON answer, {"ok": true, ...} or {"ok": false, "error": "..."}; a bad request
changes nothing. A PUB socket sends one telemetry message per phrase. Sockets bind to
loopback unless CURVE keys are given (`livegen keys DIR`); then only clients whose public
keys are in DIR/authorized may talk.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from livegen.config import CC_TARGETS, MODES, cc_target
from livegen.endpoints import check_endpoint, loopback
from livegen.errors import ConfigError

log = logging.getLogger(__name__)


def make_keys(folder: str | Path) -> dict[str, Path]:
    """A server and a client keypair in FOLDER, the client's public key allowed in FOLDER/authorized."""
    import zmq.auth

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "authorized").mkdir(exist_ok=True)
    server_public, _ = zmq.auth.create_certificates(folder, "server")
    client_public, _ = zmq.auth.create_certificates(folder, "client")
    allowed = folder / "authorized" / "client.key"
    allowed.write_bytes(Path(client_public).read_bytes())
    return {"server": Path(server_public), "client": Path(client_public), "authorized": allowed}


def curve_server(ctx, sockets, folder: str | Path):
    """Make `sockets` CURVE servers with FOLDER's server key, allowing only the public keys
    in FOLDER/authorized; returns the authenticator (stop it when done)."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    folder = Path(folder)
    secret = folder / "server.key_secret"
    if not secret.exists() or not (folder / "authorized").is_dir():
        raise ConfigError(f"{folder}: no server.key_secret or authorized/ folder (make them with `livegen keys`)")
    public, private = zmq.auth.load_certificate(secret)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(folder / "authorized"))
    for sock in filter(None, sockets):
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = private, public, True
    return auth


def curve_client(sock, folder: str | Path) -> None:
    """Make `sock` a CURVE client with FOLDER's client keypair, trusting FOLDER's server key."""
    import zmq.auth

    folder = Path(folder)
    for name in ("client.key_secret", "server.key"):
        if not (folder / name).exists():
            raise ConfigError(f"{folder}: no {name} (make the keys with `livegen keys`)")
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(folder / "client.key_secret")
    sock.curve_serverkey, _ = zmq.auth.load_certificate(folder / "server.key")


MAX_REQUEST = 64 * 1024         # bytes of JSON a request may take (answered with an error above)
MAX_FRAME = 1024 * 1024         # above this ZeroMQ drops the frame and the peer, unread
LOAD_TIMEOUT_S = 20.0           # a model switch that takes longer is abandoned
FIELDS = {"status": set(), "panic": set(), "set": {"key", "value", "model", "mode"}, "reload": {"model", "mode"},
          "learn": {"key"}, "preset": {"name"}, "save-preset": {"name"}}


class RequestError(ConfigError):
    """A control request that is not well formed."""


def parse_request(raw: bytes) -> dict:
    """A request checked at the edge: JSON, an object with a known "cmd", only that command's
    fields, flat values of the right type; RequestError says what is wrong."""
    if len(raw) > MAX_REQUEST:
        raise RequestError(f"request too large: {len(raw)} bytes, at most {MAX_REQUEST}")
    try:
        req = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(f"not JSON: {err}") from None
    except RecursionError:
        raise RequestError("not a request: JSON nested too deeply") from None
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise RequestError('a request is a JSON object with "cmd"')
    cmd = req["cmd"]
    if cmd not in FIELDS:
        raise RequestError(f"unknown cmd {cmd[:40]!r}: {', '.join(FIELDS)}")
    extra = sorted(set(req) - FIELDS[cmd] - {"cmd"})
    if extra:
        raise RequestError(f"{cmd} takes no field {extra[0][:40]!r}"
                           + (f" (its fields: {', '.join(sorted(FIELDS[cmd]))})" if FIELDS[cmd] else ""))
    for name, value in req.items():
        flat = value is None or isinstance(value, (str, int, float, bool))
        if not flat and not (isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)):
            raise RequestError(f"{name}: a number, a string, or a list of them, not {type(value).__name__}")
    if cmd in ("set", "learn") and not isinstance(req.get("key"), str):
        raise RequestError(f'{cmd} needs "key", a setting\'s name')
    if cmd in ("preset", "save-preset") and not (isinstance(req.get("name"), str) and req["name"].strip()):
        raise RequestError(f'{cmd} needs "name", a preset\'s name')
    if cmd == "set" and "value" not in req:
        raise RequestError('set needs "value"')
    switch = {"model": req.get("model"), "mode": req.get("mode")}
    if cmd == "set" and req["key"] in switch:
        switch[req["key"]] = req["value"]
        if req["value"] is None:
            raise RequestError(f"set {req['key']}: needs a value")
    for name, value in switch.items():
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise RequestError(f"{name} must be a name or a path, not {value!r}"[:200])
    if switch["mode"] is not None and switch["mode"] not in MODES:
        raise RequestError(f"mode {switch['mode'][:40]!r}: this version plays {', '.join(MODES)}")
    return req


class Loader:
    """Model switches from the control socket, on a thread of their own: the socket answers
    within LOAD_TIMEOUT_S whatever the file does, and one switch loads at a time."""

    def __init__(self, engine, timeout: float = LOAD_TIMEOUT_S):
        self.engine, self.timeout = engine, timeout
        self.thread: threading.Thread | None = None
        self.what = ""

    def switch(self, spec: str | None, mode: str | None, **preset) -> str:
        """`preset`: the rest of what a preset gives `Engine.switch` (LiveControls.preset_switch)."""
        if self.thread is not None and self.thread.is_alive():
            raise ConfigError(f"still loading {self.what}; try again when it is done")
        result: dict = {}
        abandoned = threading.Event()

        def load():
            try:
                result["path"] = self.engine.switch(spec=spec, mode=mode, wanted=lambda: not abandoned.is_set(),
                                                    **preset)
            except Exception as err:     # (handed to the control thread, which answers with it)
                result["error"] = err

        self.what = spec or mode or "the model"
        self.thread = threading.Thread(target=load, name="livegen-load", daemon=True)
        self.thread.start()
        self.thread.join(self.timeout)
        if self.thread.is_alive():
            abandoned.set()
            raise ConfigError(f"loading {self.what} took over {self.timeout:g} s: abandoned, nothing changed")
        if "error" in result:
            err = result["error"]
            if isinstance(err, (ConfigError, ValueError)):
                raise err
            raise ConfigError(f"cannot switch to {self.what}: {err}") from err
        return result["path"]


class Requests:
    """The control requests, whatever carries them (the ZeroMQ socket, the control page):
    JSON in, a JSON-able reply out, every bad request answered with an error."""

    def __init__(self, engine):
        self.engine = engine
        self.loader = Loader(engine)

    def handle(self, raw: bytes) -> dict:
        try:
            req = parse_request(raw)
        except RequestError as err:
            return {"ok": False, "error": str(err)}
        cmd = req["cmd"]
        if cmd == "status":
            return {"ok": True, "status": self.engine.status()}
        if cmd == "panic":
            self.engine.panic()
            log.info("panic: every note ended (asked for by a control request)")
            return {"ok": True}
        if cmd in ("set", "reload") and (req.get("key") in ("model", "mode") or cmd == "reload"):
            # {"cmd": "set", "key": "mode", "value": "follow", "model": "continue"} changes both at once
            key = req.get("key")
            spec = req.get("value") if key == "model" else req.get("model")
            mode = req.get("value") if key == "mode" else req.get("mode")
            try:
                path = self.loader.switch(spec, mode)
            except (ConfigError, ValueError) as err:   # ModelError is a ValueError
                return {"ok": False, "error": str(err)}
            return {"ok": True, "from_next_phrase": {"model": path, "mode": mode or self.engine.settings.mode}}
        if cmd == "set":
            key, value = req.get("key"), req.get("value")
            try:
                self.engine.apply(key, value)
            except ConfigError as err:
                return {"ok": False, "error": str(err)}
            return {"ok": True, "key": key, "value": getattr(self.engine.settings, key)}
        if cmd in ("preset", "save-preset"):
            try:
                return self._preset(cmd, req["name"])
            except (ConfigError, ValueError) as err:   # ModelError is a ValueError
                return {"ok": False, "error": str(err)}
        if cmd == "learn":
            key = req.get("key")
            if not cc_target(key):
                return {"ok": False, "error": f"a controller cannot drive {key!r}; it can drive {CC_TARGETS}"}
            self.engine.learn(key)
            return {"ok": True, "learning": key}
        return {"ok": False, "error": f"unknown cmd {cmd!r}: {', '.join(FIELDS)}"}

    def _preset(self, cmd: str, name: str) -> dict:
        engine, settings = self.engine, self.engine.settings
        if cmd == "preset":
            path = self.loader.switch(**engine.controls.preset_switch(name))
            return {"ok": True, "from_next_phrase": {"preset": name, "model": path}}
        from livegen.presets import current_values, save_preset

        if not settings.config_path:
            raise ConfigError("livegen was started without a config file: nothing to save the preset into "
                              "(start it with --config FILE)")
        checked, backup = save_preset(settings.config_path, name, current_values(engine))
        settings.presets = {**settings.presets, name: checked}    # (replaced whole: the capture thread reads it)
        engine.controls.preset = name
        log.info("saved preset %s (program %d) into %s", name, checked["program"], settings.config_path)
        return {"ok": True, "saved": name, "program": checked["program"], "file": settings.config_path,
                "backup": str(backup)}


class ControlServer(threading.Thread):
    """REP (requests) and PUB (telemetry) sockets, served from one thread."""

    def __init__(self, engine, endpoint: str, telemetry: str = "", keys: str = ""):
        super().__init__(name="livegen-control", daemon=True)
        import zmq

        if not keys and not (loopback(endpoint) and (not telemetry or loopback(telemetry))):
            raise ConfigError(f"{endpoint}: binding beyond loopback needs CURVE keys: make them with "
                              "`livegen keys DIR` and pass --keys DIR")
        self.engine = engine
        self.ctx = zmq.Context()
        self.auth = None
        self.rep = self.ctx.socket(zmq.REP)
        self.pub = self.ctx.socket(zmq.PUB) if telemetry else None
        if keys:
            self.auth = curve_server(self.ctx, [self.rep, self.pub], keys)
        self.rep.setsockopt(zmq.LINGER, 0)
        self.rep.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)    # a bigger frame ends that peer's connection
        try:
            self.rep.bind(endpoint)
            if self.pub:
                self.pub.setsockopt(zmq.LINGER, 0)
                self.pub.bind(telemetry)
        except zmq.ZMQError as err:
            self.close()
            raise ConfigError(f"cannot bind the control socket: {err}") from err
        self.halt = threading.Event()
        self.requests = Requests(engine)
        self.loader = self.requests.loader
        engine.publish_to(self.publish)

    def run(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self.rep, zmq.POLLIN)
        while not self.halt.is_set():
            if not poller.poll(200):
                continue
            frames = self.rep.recv_multipart()
            try:
                reply = self.requests.handle(frames[0]) if len(frames) == 1 else \
                    {"ok": False, "error": f"one frame per request, not {len(frames)}"}
            except Exception as err:   # a request must never take the daemon down
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {err}"}
            self.rep.send(json.dumps(reply).encode())

    def publish(self, event: dict) -> None:
        if self.pub is not None:
            try:
                self.pub.send(json.dumps(event).encode(), flags=1)   # NOBLOCK: never wait on a listener
            except Exception:
                pass

    def close(self) -> None:
        if hasattr(self, "halt"):
            self.halt.set()
            if self.is_alive():
                self.join(1.0)
        if self.auth:
            self.auth.stop()
        self.ctx.destroy(linger=0)


def request(endpoint: str, message: dict, keys: str = "", timeout_ms: int = 3000) -> dict:
    """One request to a control socket (the client side of `livegen ctl`)."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    if keys:
        curve_client(sock, keys)
    try:
        sock.connect(endpoint)
        sock.send(json.dumps(message).encode())
        return json.loads(sock.recv())
    except zmq.Again:
        raise ConfigError(f"no answer from {endpoint} within {timeout_ms / 1000:g} s "
                          "(not running, or this client's key is not allowed)") from None
    finally:
        ctx.destroy(linger=0)


def watch(endpoint: str, keys: str = "", count: int = 0):
    """The telemetry publisher's messages as dicts, as they come (the client side of
    `livegen watch`); `count` > 0 stops after that many."""
    import zmq

    check_endpoint(endpoint, "telemetry")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    if keys:
        curve_client(sock, keys)
    try:
        sock.connect(endpoint)
        seen = 0
        while not count or seen < count:
            try:
                event = json.loads(sock.recv())
            except ValueError:      # not ours: skip it
                continue
            seen += 1
            yield event
    finally:
        ctx.destroy(linger=0)


def describe(event: dict) -> str:
    """One telemetry message as a line for people."""
    if event.get("event") == "phrase":
        return (f"phrase {event.get('phrase')}: {event.get('notes')} notes, {event.get('inference_ms')} ms "
                f"({event.get('source')}), late dropped so far {event.get('late_dropped')}, "
                f"{event.get('tempo')} BPM, {event.get('mode')}"
                + (f", preset {event['preset']}" if event.get("preset") else "")
                + (f", key {event['key']}" if event.get("key") else ""))
    if event.get("event") == "preset":
        return f"preset {event.get('preset')}: {event.get('mode')} {event.get('model')}"
    return json.dumps(event)
