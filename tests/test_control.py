"""The control plane: JSON over ZeroMQ, telemetry, MIDI CC maps and MIDI learn, CURVE.

Real ZeroMQ sockets on loopback in front of the engine on a virtual clock (tests/virtual.py):
the requests, the replies and the music they change, without JACK."""
from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time

import pytest
import zmq

from livegen.config import CONTROLS
from livegen.control import ControlServer, request
from livegen.endpoints import loopback
from livegen.errors import ConfigError
from tests.virtual import Rig

BPM = 120
STEP = 60 / (BPM * 4)
PHRASE = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loopback_detection_and_value_checks():
    assert loopback("tcp://127.0.0.1:5555") and loopback("tcp://localhost:1") and loopback("ipc:///tmp/x")
    assert not loopback("tcp://0.0.0.0:5555") and not loopback("tcp://192.0.2.7:5555")
    assert CONTROLS["temperature"].parse("temperature", 0.5) == 0.5
    with pytest.raises(ConfigError, match="within"):
        CONTROLS["temperature"].parse("temperature", 9)
    with pytest.raises(ConfigError, match="number"):
        CONTROLS["edit_passes"].parse("edit_passes", "many")
    assert CONTROLS["temperature"].from_cc(127) == 2.0 and CONTROLS["max_add"].from_cc(0) == 0
    with pytest.raises(ConfigError, match=r"seed must be within 0\.\.2147483647$"):   # a readable range
        CONTROLS["seed"].parse("seed", -5)
    assert CONTROLS["mute"].parse("mute", 2) == ["2"] and CONTROLS["mute"].parse("mute", "tenor,bass") == ["tenor", "bass"]


@pytest.fixture
def controlled(shift_model):
    """A rig (the engine, shift model) with its control socket and telemetry publisher."""
    made = []

    def start(*, keys: str = "", **settings):
        rig = Rig(str(shift_model), bpm=BPM, seed=1, **settings)
        ep, tep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        server = ControlServer(rig.engine, ep, tep, keys)
        server.start()
        made.append(server)
        return rig, ep, tep

    yield start
    for server in made:
        server.close()


def subscriber(endpoint: str):
    """(context, SUB socket) on the telemetry publisher, 8 s for each message."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 8000)
    sub.connect(endpoint)
    return ctx, sub


def wait_for_loads() -> None:
    """The program controller loads a model on a thread of its own: let it finish."""
    for t in threading.enumerate():
        if t.name in ("livegen-program", "livegen-preset"):
            t.join(30)


def test_status_set_and_bad_requests_change_nothing(controlled):
    rig, ep, _ = controlled()
    st = request(ep, {"cmd": "status"})
    assert st["ok"] and st["status"]["mode"] == "loop" and st["status"]["tracks"] == {"alto": 2, "tenor": 3, "bass": 4}
    assert request(ep, {"cmd": "set", "key": "temperature", "value": 0.4}) == \
        {"ok": True, "key": "temperature", "value": 0.4}
    for bad in ({"cmd": "set", "key": "temperature", "value": "hot"}, {"cmd": "set", "key": "volume", "value": 1},
                {"cmd": "dance"}, {"nothing": 1}):
        reply = request(ep, bad)
        assert reply["ok"] is False and reply["error"]
    ctx = zmq.Context()
    raw = ctx.socket(zmq.REQ)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.RCVTIMEO, 3000)
    raw.connect(ep)
    raw.send(b"{not json")
    assert json.loads(raw.recv())["ok"] is False
    ctx.destroy(linger=0)
    assert request(ep, {"cmd": "status"})["status"]["settings"]["temperature"] == 0.4


def test_mute_tempo_telemetry_and_midi_controllers_while_playing(controlled):
    rig, ep, tep = controlled(cc_map={"temperature": 20})
    ctx, sub = subscriber(tep)
    try:
        assert request(ep, {"cmd": "set", "key": "mute", "value": ["tenor"]})["ok"]
        t = rig.t0 + 0.1
        rig.at(t, [0xB0, 20, 127])                                    # the CC map: temperature to its top
        rig.run_until(t)
        assert request(ep, {"cmd": "learn", "key": "threshold"})["ok"]
        rig.at(t + 0.1, [0xB0, 21, 0])                                # MIDI learn: CC 21 now moves the threshold
        rig.run_until(t + 0.1)
        st = request(ep, {"cmd": "status"})["status"]
        assert st["settings"]["temperature"] == 2.0 and st["cc_map"] == {"temperature": 20, "threshold": 21}
        assert st["muted"] == ["tenor"]
        watcher = subprocess.Popen([sys.executable, "-m", "livegen", "watch", tep, "--count", "1"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)   # what a person runs
        time.sleep(1.0)        # (a subscriber hears only what is published after it has connected)
        t0 = t + 1.0
        rig.play([(72, 0, 4), (74, 4, 8)], t0, STEP)
        rig.run_until(t0 + 2 * PHRASE * STEP)
        line, _ = watcher.communicate(timeout=10)
        assert line.startswith("phrase 0: 4 notes, ") and "(local)" in line and line.rstrip().endswith("loop"), line
        event = json.loads(sub.recv())
        assert event["event"] == "phrase" and event["mode"] == "loop" and event["inference_ms"] >= 0
        assert event["source"] == "local" and event["tempo"] == pytest.approx(BPM)
    finally:
        ctx.destroy(linger=0)
    assert {ch for _, ch, _, _ in rig.note_ons()} == {1, 3}      # alto and bass; the tenor is muted
    assert request(ep, {"cmd": "set", "key": "bpm", "value": 100})["ok"]
    assert request(ep, {"cmd": "status"})["status"]["bpm"] == pytest.approx(100)
    assert request(ep, {"cmd": "panic"})["ok"]
    rig.stop()
    assert rig.sounding() == set()


def test_curve_lets_only_allowed_clients_in(controlled, tmp_path):
    keys, other = tmp_path / "keys", tmp_path / "other"
    for folder in (keys, other):
        assert subprocess.run([sys.executable, "-m", "livegen", "keys", str(folder)],
                              capture_output=True).returncode == 0
    other_server = other / "server.key"
    other_server.write_bytes((keys / "server.key").read_bytes())   # knows the server, but is not allowed
    rig, ep, _ = controlled(keys=str(keys))
    assert request(ep, {"cmd": "status"}, keys=str(keys))["ok"]
    with pytest.raises(ConfigError, match="no answer"):
        request(ep, {"cmd": "status"}, keys=str(other), timeout_ms=1500)
    with pytest.raises(ConfigError, match="no answer"):
        request(ep, {"cmd": "status"}, timeout_ms=1500)          # no CURVE at all


def test_binding_beyond_loopback_without_keys_is_refused(jack_server, shift_model):
    r = subprocess.run([sys.executable, "-m", "livegen", "run", "--model", str(shift_model), "--client-name", "lgopen",
                        "--control", f"tcp://0.0.0.0:{free_port()}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs CURVE keys" in r.stderr


def test_model_switch_takes_effect_at_the_next_phrase_and_bad_switches_change_nothing(controlled, models_dir):
    from tests import tinymodels

    rig, ep, _ = controlled()
    other = tinymodels.shift_accompany(models_dir / "shift_b.onnx", shifts=(5, 7, 10))
    for bad in ({"cmd": "set", "key": "model", "value": "continue"},        # not an accompany/edit model
                {"cmd": "set", "key": "mode", "value": "follow"},           # follow needs a continue model
                {"cmd": "set", "key": "model", "value": "/no/such.onnx"}):
        reply = request(ep, bad)
        assert reply["ok"] is False and reply["error"], reply
    t0 = rig.t0 + 1.0
    rig.play([(72, 0, 4)], t0, STEP)
    rig.play([(74, 0, 4)], t0 + PHRASE * STEP, STEP)
    rig.run_until(t0 + 10 * STEP)                                   # in phrase 0
    reply = request(ep, {"cmd": "set", "key": "model", "value": str(other)})
    assert reply["ok"] and reply["from_next_phrase"]["model"] == str(other)
    rig.run_until(t0 + 3 * PHRASE * STEP)
    rig.stop()
    # phrase 0 (played before the boundary) is answered by the new model, and so is phrase 1
    assert rig.notes(STEP, t0) == sorted([(1, 67, 32.0), (2, 65, 32.0), (3, 62, 32.0),
                                          (1, 69, 64.0), (2, 67, 64.0), (3, 64, 64.0)])
    assert request(ep, {"cmd": "status"})["status"]["model"] == str(other)
    assert request(ep, {"cmd": "reload"})["ok"]


def test_a_controller_mutes_one_track_and_picks_mode_and_model(controlled, shift_model, caplog):
    caplog.set_level(logging.INFO)
    rig, ep, _ = controlled(programs=[f"loop {shift_model}", "loop edit", "follow accompany"],
                            cc_map={"program": 30, "mute_tenor": 31})
    t = rig.t0

    def cc(number, value):
        nonlocal t
        t += 0.1
        rig.at(t, [0xB0, number, value])
        rig.run_until(t)
        wait_for_loads()

    cc(31, 127)                                                   # a button: tenor off
    assert request(ep, {"cmd": "status"})["status"]["muted"] == ["tenor"]
    cc(31, 0)                                                     # and on again
    assert request(ep, {"cmd": "status"})["status"]["muted"] == []
    cc(30, 127)                                                   # program 3: follow needs a continue model
    assert "program 3 (follow accompany): mode follow plays harmonise or continue models" in caplog.text
    cc(30, 64)                                                    # program 2: the AR-CNN, loop
    assert "program 2: loop edit from the next phrase" in caplog.text
    t0 = t + 1.0
    rig.play([(72, 0, 4), (74, 4, 8), (76, 8, 12)], t0, STEP)
    rig.run_until(t0 + 2 * PHRASE * STEP)
    rig.stop()
    st = request(ep, {"cmd": "status"})["status"]
    assert st["kind"] == "edit" and st["mode"] == "loop" and st["tracks"] == {"edited": 2}
    heard = rig.note_ons()
    assert heard and {ch for _, ch, _, _ in heard} == {1}, heard   # the edit model's one track
    assert rig.sounding() == set()
    assert request(ep, {"cmd": "learn", "key": "mute_bass"})["ok"]
    assert request(ep, {"cmd": "learn", "key": "volume"})["ok"] is False


def test_malformed_requests_get_a_clear_error_and_change_nothing(controlled, tmp_path):
    """What a fuzzer found: each of these once answered "internal error" with a traceback,
    read a device into memory, or blocked the control thread for good."""
    import os

    rig, ep, _ = controlled()
    before = request(ep, {"cmd": "status"})["status"]
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    bad = [{"cmd": "set", "key": "mode", "value": "../../x"}, {"cmd": "set", "key": "model", "value": "a" * 5000},
           {"cmd": "reload", "model": 5}, {"cmd": "reload", "model": ["x"]}, {"cmd": "reload", "mode": [1, 2]},
           {"cmd": "set", "key": "model", "value": "/dev/zero"}, {"cmd": "set", "key": "model", "value": str(fifo)},
           {"cmd": "set", "key": "model", "value": str(tmp_path)}, {"cmd": "set", "key": "model", "value": ""},
           {"cmd": "set", "key": "mode", "value": " "}, {"cmd": "set", "key": "mode", "value": None},
           {"cmd": "set", "key": "temperature"}, {"cmd": "set", "key": ["temperature"], "value": 1},
           {"cmd": "set", "key": "temperature", "value": {"a": 1}}, {"cmd": "status", "extra": 1},
           {"cmd": "learn", "key": 7}, {"cmd": "set", "key": "bpm", "value": [[120]]}, {"cmd": 5}]
    ctx = zmq.Context()
    for req in bad:
        reply = request(ep, req, timeout_ms=5000)
        assert reply["ok"] is False and reply["error"] and "internal" not in reply["error"], (req, reply)
    for raw, said in ([b"[" * 50_000, "nested too deeply"], [b'{"cmd": "status", "x": "' + b"y" * 70_000 + b'"}',
                                                               "too large"],
                      [b"\xff\xfe", "not JSON"], [b"null", "JSON object"]):
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(ep)
        sock.send(raw)
        reply = json.loads(sock.recv())
        assert reply["ok"] is False and said in reply["error"], reply
        sock.close()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(ep)
    sock.send_multipart([b'{"cmd": "status"}', b"more"])
    assert "one frame" in json.loads(sock.recv())["error"]
    ctx.destroy(linger=0)
    after = request(ep, {"cmd": "status"})["status"]
    assert after["settings"] == before["settings"] and after["model"] == before["model"]


def test_a_model_that_loads_too_slowly_is_abandoned_and_the_socket_answers(controlled, models_dir, monkeypatch):
    import livegen.engine
    from tests import tinymodels

    rig, ep, _ = controlled()
    other = tinymodels.shift_accompany(models_dir / "shift_slow.onnx", shifts=(5, 7, 10))
    real = livegen.engine.Model

    def slow_model(*args, **kwargs):     # a stand-in for a model file on a stalled network disk
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(livegen.engine, "Model", slow_model)
    server = next(t for t in threading.enumerate() if isinstance(t, ControlServer))
    server.loader.timeout = 0.3
    t = time.perf_counter()
    reply = request(ep, {"cmd": "set", "key": "model", "value": str(other)})
    assert reply["ok"] is False and "abandoned" in reply["error"] and time.perf_counter() - t < 0.9, reply
    busy = request(ep, {"cmd": "set", "key": "model", "value": str(other)})
    assert busy["ok"] is False and "still loading" in busy["error"]
    server.loader.thread.join(10)
    t0 = rig.t0 + 1.0
    rig.play([(72, 0, 4)], t0, STEP)
    rig.run_until(t0 + 2 * PHRASE * STEP)
    assert rig.notes(STEP, t0) == sorted([(1, 69, 32.0), (2, 60, 32.0), (3, 48, 32.0)])   # the old model plays on
    assert request(ep, {"cmd": "status"})["status"]["model"] != str(other)


RIG_TOML = """# my stage rig
bpm = 120

[presets.verse]  # the quiet one
program = 3
bpm = 90
mute = ["tenor"]

[presets.chorus]
program = 5
mode = "respond"
model = "edit"
"""


def test_presets_by_program_change_by_name_and_saved_into_the_config(controlled, tmp_path, caplog):
    from livegen.config import load_toml

    caplog.set_level(logging.INFO)
    config = tmp_path / "rig.toml"
    config.write_text(RIG_TOML)
    rig, ep, tep = controlled(presets=load_toml(config)["presets"], config_path=str(config))
    ctx, sub = subscriber(tep)
    time.sleep(0.2)
    try:
        t = rig.t0 + 0.1
        rig.at(t, [0xC0, 7])                              # a Program Change no preset has: nothing changes
        rig.at(t + 0.1, [0xC0, 3])                        # the verse, from the next phrase
        rig.run_until(t + 0.1)
        wait_for_loads()
        assert "Program Change 7: no preset has program = 7" in caplog.text
        assert request(ep, {"cmd": "status"})["status"]["preset"] is None   # (not before the boundary)
        t0 = t + 1.0
        rig.play([(72, 0, 4), (74, 4, 8), (76, 8, 12)], t0, STEP)
        rig.run_until(t0 + 3 * PHRASE * STEP)
        st = request(ep, {"cmd": "status"})["status"]
        assert st["preset"] == "verse" and st["bpm"] == 90 and st["muted"] == ["tenor"], st
        assert st["presets"] == {"verse": 3, "chorus": 5}
        assert rig.note_ons() and 2 not in {ch for _, ch, _, _ in rig.note_ons()}    # the tenor is silent
        events = [json.loads(sub.recv()) for _ in range(2)]
        assert {"event": "preset", "mode": "loop", "model": rig.engine.model.info.path, "preset": "verse",
                "key": None} in events                    # (3 notes played: too few to name a key)
        assert any(e["event"] == "phrase" and e["preset"] == "verse" for e in events), events
        # by name, over the control socket; a name the config lacks lists those it has
        assert request(ep, {"cmd": "preset", "name": "nosuch"}) == \
            {"ok": False, "error": "no preset 'nosuch'; the config has verse, chorus"}
        assert request(ep, {"cmd": "preset", "name": "chorus"})["ok"]
        step = 60 / (90 * 4)
        t1 = rig.clock.t + step
        rig.play([(72, 0, 4), (74, 4, 8)], t1, step)
        rig.run_until(t1 + 3 * PHRASE * step)
        st = request(ep, {"cmd": "status"})["status"]
        assert (st["preset"], st["mode"], st["kind"]) == ("chorus", "respond", "edit"), st
        # saved: a new table at the end, the file's comments and tables kept, a backup of it
        assert request(ep, {"cmd": "set", "key": "temperature", "value": 0.42})["ok"]
        reply = request(ep, {"cmd": "save-preset", "name": "late night"})
        assert reply["ok"] and reply["program"] == 0, reply       # the lowest number free
        text = config.read_text()
        assert text.startswith(RIG_TOML) and '[presets."late night"]\nprogram = 0\nmode = "respond"\n' \
            'model = "edit"\n' in text, text
        assert (tmp_path / "rig.toml.bak").read_text() == RIG_TOML
        saved = load_toml(config)["presets"]["late night"]
        # (the edit model has no tenor: no mute)
        assert saved["temperature"] == 0.42 and saved["bpm"] == 90 and saved["mute"] == []
        # saved again under an existing name: that table changes in place, its comment kept
        assert request(ep, {"cmd": "save-preset", "name": "verse"})["program"] == 3
        text = config.read_text()
        assert "[presets.verse]  # the quiet one\nprogram = 3\nmode = \"respond\"" in text
        assert text.count("[presets.verse]") == 1 and "[presets.chorus]\nprogram = 5\n" in text
        assert load_toml(config)["bpm"] == 120 and load_toml(config)["presets"]["verse"]["model"] == "edit"
        assert request(ep, {"cmd": "status"})["status"]["presets"] == {"verse": 3, "chorus": 5, "late night": 0}
        rig.stop()
        assert rig.sounding() == set()
    finally:
        ctx.destroy(linger=0)


def test_save_preset_needs_a_config_file(controlled):
    rig, ep, _ = controlled()
    reply = request(ep, {"cmd": "save-preset", "name": "x"})
    assert reply["ok"] is False and "started without a config file" in reply["error"]
    assert request(ep, {"cmd": "preset"})["error"] == 'preset needs "name", a preset\'s name'
