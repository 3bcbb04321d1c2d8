"""livegen under systemd: the unit it writes, the config it finds, and sd_notify as systemd
hears it (a real datagram socket in $NOTIFY_SOCKET; systemd itself does not run here)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from livegen.config import Settings
from livegen.engine import Engine
from livegen.models import Model
from livegen.service import Notifier, default_config, install, unit_text
from tests.jackmidi import Daemon


def test_the_units_are_ones_systemd_reads_without_a_complaint(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (apt-get install --no-install-recommends systemd)")
    for user in (False, True):
        path = tmp_path / f"{'user' if user else 'system'}" / "livegen.service"
        path.parent.mkdir()
        text = unit_text(user, run_as="stage")
        path.write_text(text)
        for key in ("Type=notify", "Restart=always", "WatchdogSec=", "After=sound.target", "-m livegen run --config"):
            assert key in text
        assert ("User=stage" in text and "SupplementaryGroups=audio" in text) != user
        assert ("WantedBy=default.target" if user else "WantedBy=multi-user.target") in text
        if not user:      # (a user unit needs a user manager to verify against)
            r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
            assert r.returncode == 0 and "Failed" not in r.stderr and "Unknown" not in r.stderr, r.stderr
    bad = tmp_path / "bad.service"        # (the check above does see a mistake)
    bad.write_text(unit_text(False).replace("WatchdogSec=10", "WatchdogSec=ten"))
    r = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True)
    assert "Failed to parse sec value" in r.stderr


def test_install_writes_the_user_unit_and_a_config_that_run_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config() is None or not str(default_config()).startswith(str(tmp_path))
    unit, config, made = install(user=True)
    assert unit == tmp_path / "systemd" / "user" / "livegen.service" and made
    assert f"--config {config}" in unit.read_text()
    assert default_config() == config
    config.write_text('# my rig\nbpm = 96\n')
    assert install(user=True)[2] is False and config.read_text() == '# my rig\nbpm = 96\n'   # kept
    # `livegen run` without --config reads it: a bad value there is named with the file
    config.write_text('bpm = "fast"\n')
    r = subprocess.run([sys.executable, "-m", "livegen", "run", "--no-start-jack"], capture_output=True, text=True,
                       env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path)), timeout=60)
    assert r.returncode == 2 and "bpm must be a number" in r.stderr, r.stderr
    assert f"settings from {config}" in r.stderr


def test_a_unit_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch):
    import livegen.service as service
    from livegen.errors import ConfigError

    (tmp_path / "file").write_text("")
    monkeypatch.setattr(service, "SYSTEM_UNIT", tmp_path / "file" / "livegen.service")   # (even root cannot)
    with pytest.raises(ConfigError, match=r"cannot write .*file.*needs root: sudo, or --user"):
        install(user=False)


class Systemd:
    """The notify socket's end that systemd holds."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.got: list[tuple[float, str]] = []
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.halt.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            for line in data.decode().splitlines():
                self.got.append((time.monotonic(), line))

    def lines(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, x) for t, x in self.got if x.startswith(prefix)]

    def close(self):
        self.halt.set()
        self.thread.join()
        self.sock.close()


@pytest.mark.usefixtures("jack_server")
def test_the_daemon_tells_systemd_ready_alive_status_and_stopping(shift_model, tmp_path):
    systemd = Systemd(tmp_path / "notify")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="600000")
    d = Daemon("lgsystemd", "--model", str(shift_model), "--bpm", "100", env=env)
    try:
        deadline = time.monotonic() + 10
        while not systemd.lines("READY=1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(systemd.lines("READY=1")) == 1, systemd.got       # once its ports are open and it plays
        time.sleep(1.5)
        pings = [t for t, _ in systemd.lines("WATCHDOG=1")]
        assert len(pings) >= 4 and max(b - a for a, b in zip(pings, pings[1:])) < 0.3, pings   # half of 0.6 s
        assert ("STATUS=loop accompany at 100 BPM; phrases answered 0, notes 0" in [x for _, x in systemd.got]), \
            systemd.got
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        time.sleep(0.3)
        assert systemd.got[-1][1] == "STOPPING=1" or "STOPPING=1" in [x for _, x in systemd.got[-3:]], systemd.got
    finally:
        d.stop()
        systemd.close()


def test_the_watchdog_is_fed_only_while_every_engine_thread_turns(shift_model):
    engine = Engine(Settings(model=str(shift_model)).check(), Model(str(shift_model), "cpu"), send=lambda m: None)
    engine.start()
    try:
        time.sleep(0.1)
        assert engine.hung() == []
        engine.HUNG_S = dict(engine.HUNG_S, worker=0.3)
        held = threading.Event()
        engine.playing.run = lambda job: held.wait(10)       # a worker stuck in one job
        engine.jobs.put(object())
        time.sleep(0.6)
        assert engine.hung() == ["worker"]
        held.set()
        time.sleep(0.4)
        assert engine.hung() == []
    finally:
        engine.stop()
    assert set(engine.hung()) == {"capture", "worker", "scheduler"}


def test_without_systemd_the_notifier_does_nothing_and_a_bad_watchdog_is_named(caplog):
    n = Notifier({})
    assert not n.active and n.watchdog_s is None
    n.send("READY=1")                                        # (nothing to send to, no error)
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "soon"})
    n.send("READY=1")                                        # systemd gone: logged at debug, never raised
    assert n.watchdog_s is None and "WATCHDOG_USEC='soon'" in caplog.text
    assert Notifier({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}).watchdog_s is None   # another process's
    assert Notifier({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 5.0


# The main thread waits on the stop flag (0 s at a time, so that it is inside the flag's code
# nearly always) while another thread signals it 5,000 times a second. threading.Event in its
# place hangs for good within a second or two: the handler's set() waits on the lock that the
# interrupted wait() holds (what once kept `livegen run` from ever ending on SIGTERM).
HAMMER = """
import os, signal, sys, threading, time
from livegen.signals import StopFlag, stop_on
flag = StopFlag()
stop_on(flag, (signal.SIGUSR2,))
def shoot():
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.0002)
shooter = threading.Thread(target=shoot)
shooter.start()
waits = 0
while shooter.is_alive():
    flag.wait(0)
    waits += 1
shooter.join()
print("set", flag.is_set(), "waits", waits)
"""


def test_a_stop_signal_never_hangs_the_thread_it_interrupts():
    run = subprocess.run([sys.executable, "-c", HAMMER], capture_output=True, text=True, timeout=30,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("set True waits "), run.stdout
    # and the flag wakes a waiting thread at once, as SIGTERM must (its notes end within 10 ms)
    from livegen.signals import StopFlag
    flag = StopFlag()
    threading.Timer(0.05, flag.set).start()
    t = time.monotonic()
    assert flag.wait(5.0) and time.monotonic() - t < 1.0
    flag.close()


def test_start_ups_objects_are_left_out_of_the_collectors_full_passes():
    """A full pass of Python's garbage collector holds every thread, the scheduler's too: over
    start-up's objects (modules, the model's session) it took up to 12.4 ms under load, a tail
    of the stop events. The daemon collects once after start-up and leaves those objects out
    of later passes (`settle_memory`; tests/test_jack_race.py sees the daemon say so)."""
    import gc

    from livegen.session import settle_memory

    made = [[k] for k in range(50_000)]       # what start-up made
    try:
        assert settle_memory() >= len(made)
        assert len(gc.get_objects()) < 5_000, "start-up's objects are still in every full pass"
    finally:
        gc.unfreeze()
    assert len(gc.get_objects()) >= len(made)
