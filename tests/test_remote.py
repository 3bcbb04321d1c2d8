"""Remote inference over real ZeroMQ sockets with the shipped accompany model."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import zmq

from livegen.config import Settings
from livegen.control import make_keys
from livegen.phrase import generate
from livegen.errors import ConfigError
from livegen.models import Model
from livegen.remote import RemoteInference, Worker
from livegen.roll import Note
from tests.test_control import free_port

TUNE = [Note(p, 2 * i, 2 * i + 2, 100) for i, p in enumerate((72, 74, 76, 77, 79, 77, 76, 74) * 2)]


@pytest.fixture(scope="module")
def model():
    return Model("accompany", "cpu")


class Served:
    """A worker on a thread, as `livegen worker` runs it."""

    def __init__(self, models, keys: str = ""):
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.worker = Worker(self.address, models, keys)
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.worker.serve, args=(self.halt,), daemon=True)
        self.thread.start()

    def close(self):
        self.halt.set()
        self.thread.join(2)
        self.worker.close()


def wait_up(remote: RemoteInference, seconds: float = 5.0) -> bool:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        remote.tick()
        if any(ep.up for ep in remote.endpoints):
            return True
        time.sleep(0.05)
    return False


def test_a_worker_plays_the_same_phrase_as_local_inference(model):
    served = Served([model])
    remote = RemoteInference([served.address])
    try:
        assert wait_up(remote)
        settings = Settings()
        got = remote.generate(model, settings, TUNE, 0, 32, seed=5, deadline=time.perf_counter() + 2)
        here = generate(model, settings, TUNE, 0, 32, np.random.default_rng(5))
        assert got == here and len(got) > 10
        assert {n.track for n in got} == {0, 1, 2}
        assert remote.stats["remote_phrases"] == 1 and served.worker.stats["served"] == 1
    finally:
        remote.close()
        served.close()


def test_a_late_reply_is_dropped_and_a_request_past_its_budget_is_not_run(model):
    served = Served([model])
    remote = RemoteInference([served.address])
    try:
        assert wait_up(remote)
        # no answer can come within 3 ms (a phrase takes ~10 ms here): the caller plays the phrase itself
        assert remote.generate(model, Settings(), TUNE, 0, 32, seed=1, deadline=time.perf_counter() + 0.003) is None
        assert not remote.endpoints[0].up           # left out until it answers a ping again
        assert wait_up(remote)
        time.sleep(0.1)
        remote.tick()
        assert remote.stats["late_replies"] + served.worker.stats["expired"] == 1
    finally:
        remote.close()
        served.close()


def test_bad_requests_get_an_error_and_change_nothing(model):
    served = Served([model])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 3000)
    sock.connect(served.address)
    try:
        def ask(raw: bytes) -> dict:
            sock.send(raw)
            return json.loads(sock.recv())

        assert "not JSON" in ask(b"{nope")["error"]
        assert "version" in ask(json.dumps({"v": 9, "type": "ping"}).encode())["error"]
        assert "not served" in ask(json.dumps({"v": 1, "type": "generate", "id": 1, "model": "ab" * 32}).encode())["error"]
        bad_note = {"v": 1, "type": "generate", "id": 2, "model": model.sha256, "budget_ms": 5000, "start": 0,
                    "steps": 32, "seed": 0, "settings": {}, "notes": [[200, 0, 2, 100, 0]]}
        assert "out of range" in ask(json.dumps(bad_note).encode())["error"]
        bad_setting = dict(bad_note, notes=[], settings={"threshold": 7})
        assert "threshold" in ask(json.dumps(bad_setting).encode())["error"]
        assert "bad request" in ask(json.dumps(dict(bad_note, settings=[1])).encode())["error"]
        assert "bad request" in ask(json.dumps(dict(bad_note, steps="many")).encode())["error"]
        assert ask(json.dumps({"v": 1, "type": "ping", "id": 3}).encode())["models"] == [model.sha256]
        assert served.worker.stats["served"] == 0
    finally:
        ctx.destroy(linger=0)
        served.close()


def test_off_loopback_needs_curve_and_a_client_without_an_allowed_key_gets_nothing(model, tmp_path):
    with pytest.raises(ConfigError, match="CURVE"):
        Worker(f"tcp://0.0.0.0:{free_port()}", [model])
    with pytest.raises(ConfigError, match="CURVE"):
        RemoteInference(["tcp://10.1.2.3:5560"])
    keys = tmp_path / "keys"
    make_keys(keys)
    served = Served([model], keys=str(keys))
    allowed = RemoteInference([served.address], keys=str(keys))
    stranger = RemoteInference([served.address])
    other = tmp_path / "other"
    make_keys(other)
    (other / "server.key").write_bytes((keys / "server.key").read_bytes())   # knows the server, not allowed
    impostor = RemoteInference([served.address], keys=str(other))
    try:
        assert wait_up(allowed)
        assert allowed.generate(model, Settings(), TUNE, 0, 32, seed=2, deadline=time.perf_counter() + 2)
        assert not wait_up(stranger, 1.0) and not wait_up(impostor, 1.0)
        assert served.worker.stats["served"] == 1
    finally:
        for r in (allowed, stranger, impostor):
            r.close()
        served.close()


# --------------------------------------------------------------------------- failover, live

def start_worker(address: str, log_path: str):
    import subprocess
    import sys

    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "livegen", "worker", "--bind", address, "--model", "accompany",
                             "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT)
    end = time.perf_counter() + 30
    while "worker listening" not in open(log_path).read():
        assert proc.poll() is None and time.perf_counter() < end, open(log_path).read()
        time.sleep(0.1)
    return proc


@pytest.mark.usefixtures("jack_server")
def test_the_music_goes_on_when_the_worker_hangs_or_dies_and_its_return_is_picked_up(tmp_path):
    import signal

    from tests.jackmidi import Daemon, Listener, Player
    from tests.test_engine_live import BPM, MELODY, PHRASE, STEP, heard, play
    from tests.test_follow_live import finish

    address = f"tcp://127.0.0.1:{free_port()}"
    first = start_worker(address, str(tmp_path / "w1.log"))
    # (a late phrase is the failover's own subject: --late-ms 100 so that a loaded machine's delays
    # are not counted as one; benchmarks/remote.py measures the round trip)
    d = Daemon("lgremote", "--bpm", str(BPM), "--seed", "3", "--late-ms", "100", "--inference", address)
    player, listener = Player(d.in_port, "lgremote-p"), Listener(d.out_port, "lgremote-l")
    second = None
    try:
        time.sleep(0.6)                    # the worker answers the daemon's first ping
        t0 = time.perf_counter() + 0.3
        for k in range(8):                 # the tune in every phrase
            if k == 2:
                play(player, t0, MELODY, offset_steps=k * PHRASE)
                first.send_signal(signal.SIGSTOP)      # hung: the next request gets no answer
                continue
            if k == 3:
                play(player, t0, MELODY, offset_steps=k * PHRASE)
                first.kill()                           # gone
                first.wait()
                continue
            if k == 5:
                second = start_worker(address, str(tmp_path / "w2.log"))   # back
            play(player, t0, MELODY, offset_steps=k * PHRASE)
        out = finish(d, player, listener, t0 + 8 * PHRASE * STEP + 0.2)
    finally:
        for w in (first, second):
            if w is not None and w.poll() is None:
                w.send_signal(signal.SIGCONT)
                w.terminate()
                w.wait(10)
    got = heard(listener, t0)
    answered = {s // PHRASE for ch, p, s, e in got}
    assert answered >= set(range(1, 8)), (sorted(answered), out)        # every phrase answered, in time
    assert {ch for ch, *_ in got} == {1, 2, 3}
    assert "late_dropped 0" in out, out
    stats = dict(kv.rsplit(" ", 1) for kv in out.split("remote inference: ")[1].splitlines()[0].split(", "))
    assert int(stats["remote_phrases"]) >= 3 and int(stats["local_fallbacks"]) >= 2, stats
    assert "did not answer in time" in out
    served_again = open(tmp_path / "w2.log").read()
    assert "served" in served_again and "served 0" not in served_again, served_again
    assert listener.stuck() == set()


def test_requests_are_spread_across_workers_and_a_dead_one_is_left_out(model):
    first, second = Served([model]), Served([model])
    remote = RemoteInference([first.address, second.address])
    try:
        end = time.perf_counter() + 5
        while not all(ep.up for ep in remote.endpoints) and time.perf_counter() < end:
            remote.tick()
            time.sleep(0.05)
        for seed in range(4):
            assert remote.generate(model, Settings(), TUNE, 0, 32, seed=seed, deadline=time.perf_counter() + 2)
        assert first.worker.stats["served"] == second.worker.stats["served"] == 2
        second.close()                       # gone: its socket closes
        time.sleep(0.3)
        got = [remote.generate(model, Settings(), TUNE, 0, 32, seed=s, deadline=time.perf_counter() + 0.5)
               for s in range(4)]
        assert sum(g is not None for g in got) >= 3          # at most one request lost on the way out
        assert first.worker.stats["served"] >= 5
    finally:
        remote.close()
        first.close()
