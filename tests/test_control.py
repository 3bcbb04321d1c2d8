"""The control plane: JSON over ZeroMQ, telemetry, MIDI CC maps and MIDI learn, CURVE."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import zmq

from livegen.config import CONTROLS
from livegen.control import request
from livegen.endpoints import loopback
from livegen.errors import ConfigError
from tests.jackmidi import Daemon, Listener, Player
from tests.test_engine_live import BPM, PHRASE, STEP, play


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


LIVE = pytest.mark.flaky(reruns=2)   # see tests/test_engine_live.py


@pytest.fixture
def controlled(jack_server, shift_model, tmp_path):
    port, tport = free_port(), free_port()
    cfg = tmp_path / "live.toml"
    cfg.write_text("[cc_map]\ntemperature = 20\n")
    d = Daemon("lgctl", "--model", str(shift_model), "--bpm", str(BPM), "--config", str(cfg),
               "--control", f"tcp://127.0.0.1:{port}", "--telemetry", f"tcp://127.0.0.1:{tport}")
    player, listener = Player(d.in_port, "lgctl-p"), Listener(d.out_port, "lgctl-l")
    yield d, player, listener, f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{tport}"
    d.stop()
    player.close()
    listener.close()


@LIVE
def test_status_set_and_bad_requests_change_nothing(controlled):
    d, player, listener, ep, _ = controlled
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
    raw.setsockopt(zmq.RCVTIMEO, 3000)
    raw.connect(ep)
    raw.send(b"{not json")
    assert json.loads(raw.recv())["ok"] is False
    ctx.destroy(linger=0)
    assert request(ep, {"cmd": "status"})["status"]["settings"]["temperature"] == 0.4
    assert d.proc.poll() is None


@LIVE
def test_mute_tempo_telemetry_and_midi_controllers_while_playing(controlled):
    d, player, listener, ep, tep = controlled
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 8000)
    sub.connect(tep)
    assert request(ep, {"cmd": "set", "key": "mute", "value": ["tenor"]})["ok"]
    player.send([0xB0, 20, 127])                                  # the CC map: temperature to its top
    time.sleep(0.2)
    assert request(ep, {"cmd": "learn", "key": "threshold"})["ok"]
    time.sleep(0.1)
    player.send([0xB0, 21, 0])                                    # MIDI learn: CC 21 now moves the threshold
    time.sleep(0.2)
    st = request(ep, {"cmd": "status"})["status"]
    assert st["settings"]["temperature"] == 2.0 and st["cc_map"] == {"temperature": 20, "threshold": 21}
    assert st["muted"] == ["tenor"]
    watcher = subprocess.Popen([sys.executable, "-m", "livegen", "watch", tep, "--count", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)   # what a person runs
    time.sleep(1.0)        # (a subscriber hears only what is published after it has connected)
    t0 = time.perf_counter() + 0.3
    play(player, t0, [(72, 0, 4), (74, 4, 8)])
    time.sleep(t0 + 2 * PHRASE * STEP + 0.2 - time.perf_counter())
    line, _ = watcher.communicate(timeout=10)
    assert line.startswith("phrase 0: 4 notes, ") and "(local)" in line and line.rstrip().endswith("loop"), line
    event = json.loads(sub.recv())
    assert event["event"] == "phrase" and event["mode"] == "loop" and event["inference_ms"] >= 0
    assert event["source"] == "local"
    assert event["tempo"] == pytest.approx(BPM)
    ctx.destroy(linger=0)
    channels = {ch for _, ch, _, _ in listener.note_ons()}
    assert channels == {1, 3}                                     # alto and bass; the tenor is muted
    assert request(ep, {"cmd": "set", "key": "bpm", "value": 100})["ok"]
    assert request(ep, {"cmd": "status"})["status"]["bpm"] == pytest.approx(100)


def test_curve_lets_only_allowed_clients_in(jack_server, shift_model, tmp_path):
    keys, other = tmp_path / "keys", tmp_path / "other"
    for folder in (keys, other):
        assert subprocess.run([sys.executable, "-m", "livegen", "keys", str(folder)],
                              capture_output=True).returncode == 0
    other_server = other / "server.key"
    other_server.write_bytes((keys / "server.key").read_bytes())   # knows the server, but is not allowed
    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    d = Daemon("lgcurve", "--model", str(shift_model), "--control", ep, "--keys", str(keys))
    try:
        assert request(ep, {"cmd": "status"}, keys=str(keys))["ok"]
        with pytest.raises(ConfigError, match="no answer"):
            request(ep, {"cmd": "status"}, keys=str(other), timeout_ms=1500)
        with pytest.raises(ConfigError, match="no answer"):
            request(ep, {"cmd": "status"}, timeout_ms=1500)          # no CURVE at all
    finally:
        d.stop()


def test_binding_beyond_loopback_without_keys_is_refused(jack_server, shift_model):
    r = subprocess.run([sys.executable, "-m", "livegen", "run", "--model", str(shift_model), "--client-name", "lgopen",
                        "--control", f"tcp://0.0.0.0:{free_port()}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs CURVE keys" in r.stderr


@LIVE
def test_model_switch_takes_effect_at_the_next_phrase_and_bad_switches_change_nothing(controlled, models_dir):
    from tests import tinymodels

    d, player, listener, ep, _ = controlled
    other = tinymodels.shift_accompany(models_dir / "shift_b.onnx", shifts=(5, 7, 10))
    for bad in ({"cmd": "set", "key": "model", "value": "continue"},        # not an accompany/edit model
                {"cmd": "set", "key": "mode", "value": "follow"},           # follow needs a continue model
                {"cmd": "set", "key": "model", "value": "/no/such.onnx"}):
        reply = request(ep, bad)
        assert reply["ok"] is False and reply["error"], reply
    reply = request(ep, {"cmd": "set", "key": "model", "value": str(other)})
    assert reply["ok"] and reply["from_next_phrase"]["model"] == str(other)
    t0 = time.perf_counter() + 0.3
    play(player, t0, [(72, 0, 4)])
    time.sleep(t0 + 2 * PHRASE * STEP + 0.2 - time.perf_counter())
    assert {(ch, p) for _, ch, p, _ in listener.note_ons()} == {(1, 67), (2, 65), (3, 62)}
    assert request(ep, {"cmd": "status"})["status"]["model"] == str(other)
    assert request(ep, {"cmd": "reload"})["ok"]


@LIVE
def test_a_controller_mutes_one_track_and_picks_mode_and_model(jack_server, shift_model, tmp_path):
    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    cfg = tmp_path / "stage.toml"
    cfg.write_text(f'programs = ["loop {shift_model}", "loop edit", "follow accompany"]\n'
                   "[cc_map]\nprogram = 30\nmute_tenor = 31\n")
    d = Daemon("lgprog", "--model", str(shift_model), "--bpm", str(BPM), "--config", str(cfg), "--control", ep)
    player, listener = Player(d.in_port, "lgprog-p"), Listener(d.out_port, "lgprog-l")
    try:
        player.send([0xB0, 31, 127])                                  # a button: tenor off
        time.sleep(0.3)
        assert request(ep, {"cmd": "status"})["status"]["muted"] == ["tenor"]
        player.send([0xB0, 31, 0])                                    # and on again
        time.sleep(0.3)
        assert request(ep, {"cmd": "status"})["status"]["muted"] == []
        player.send([0xB0, 30, 127])                                  # program 3: follow needs a continue model
        time.sleep(1.0)
        assert "program 3 (follow accompany): mode follow plays continue models" in d.output()
        player.send([0xB0, 30, 64])                                   # program 2: the AR-CNN, loop
        time.sleep(1.5)                                               # (loaded on a thread of its own)
        assert "program 2: loop edit from the next phrase" in d.output(), d.output()
        t0 = time.perf_counter() + 0.3
        play(player, t0, [(72, 0, 4), (74, 4, 8), (76, 8, 12)])
        time.sleep(t0 + 2 * PHRASE * STEP + 0.2 - time.perf_counter())
        st = request(ep, {"cmd": "status"})["status"]
        assert st["kind"] == "edit" and st["mode"] == "loop" and st["tracks"] == {"edited": 2}
        heard = listener.note_ons()
        assert heard and {ch for _, ch, _, _ in heard} == {1}, heard   # the edit model's one track
        assert listener.sounding_after() == set()
        assert request(ep, {"cmd": "learn", "key": "mute_bass"})["ok"]
        assert request(ep, {"cmd": "learn", "key": "volume"})["ok"] is False
    finally:
        d.stop()
        player.close()
        listener.close()
