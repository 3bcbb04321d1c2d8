"""A stop flag that a signal handler may raise.

`threading.Event.set()` takes the event's lock. A Python signal handler runs in the main
thread between two bytecodes, so when SIGTERM lands while the main thread is inside
`Event.wait()` holding that same lock, the handler waits on it for ever: the daemon hung on
SIGTERM with its notes still sounding (once in CI, in
test_the_daemon_tells_systemd_ready_alive_status_and_stopping; with signals sent 5,000 times
a second at a thread polling `Event.wait(0)`, within a second: tests/test_service.py;
CPython issue 126434 is the same trap in multiprocessing.Event). `StopFlag.set()` takes no
lock: it sets a bool and writes a byte to a pipe, which wakes `wait()` in `select`.
"""
from __future__ import annotations

import os
import select
import signal


class StopFlag:
    """Event-like (`set`, `is_set`, `wait`) and safe to set from a signal handler or any thread;
    only one thread waits on it."""

    def __init__(self):
        self._set = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def set(self) -> None:
        self._set = True
        try:
            os.write(self._w, b"\0")
        except (BlockingIOError, OSError):     # full (it is already set) or closed at exit
            pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """True as soon as the flag is set, False after `timeout` seconds without."""
        if not self._set:
            select.select([self._r], [], [], timeout)
            try:
                while os.read(self._r, 512):
                    pass
            except (BlockingIOError, OSError):
                pass
        return self._set

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def stop_on(flag: StopFlag, signals=(signal.SIGINT, signal.SIGTERM)) -> None:
    """SIGINT and SIGTERM raise `flag` (from the main thread only, as `signal.signal` requires)."""
    for sig in signals:
        signal.signal(sig, lambda *_: flag.set())
