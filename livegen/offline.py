"""The live engine on a virtual clock: no threads, no ports, no sleeping.

`VirtualRun.run_until(t)` moves the clock from event to event (the next input message, the
current mode's next wake-up, the scheduler's next deadline) and at each one does what the
engine's threads would do live: the capture thread's work, every job waiting for the worker,
and the scheduler's sends. Every message sent is kept with its virtual time.

`livegen render` plays a file into it, so a render is what live plays for the same seed
(with every answer on time: inference takes no virtual time); the tests drive it too.
"""
from __future__ import annotations

import heapq
import itertools

from livegen.config import Settings
from livegen.engine import Engine
from livegen.models import Model


class VirtualClock:
    def __init__(self, start: float = 100.0):
        self.t = start

    def __call__(self) -> float:
        return self.t


class VirtualRun:
    def __init__(self, settings: Settings, model: Model, start: float = 100.0):
        self.clock = VirtualClock(start)
        self.sent: list[tuple[float, list[int]]] = []
        self.model, self.settings = model, settings
        self.engine = Engine(settings, model, self._send, now=self.clock)
        self.engine.prepare()
        self._inputs: list = []
        self._order = itertools.count()
        self.worker_held_until: float | None = None    # jobs wait until then (a slow worker)

    def _send(self, msg: list[int]) -> None:
        self.sent.append((self.clock.t, list(msg)))

    def at(self, t: float, msg: list[int]) -> None:
        """A message arriving at the input at virtual time t."""
        heapq.heappush(self._inputs, (t, next(self._order), list(msg)))

    def run_until(self, t_end: float) -> None:
        engine, stuck = self.engine, 0
        while True:
            due = [t_end]
            if self._inputs:
                due.append(self._inputs[0][0])
            if self.worker_held_until is not None and self.worker_held_until > self.clock.t:
                due.append(self.worker_held_until)
            for when in (engine.listening.wake_at(), engine.scheduler.next_due()):
                if when is not None:
                    due.append(when)
            t = max(self.clock.t, min(due))
            stuck = stuck + 1 if t == self.clock.t else 0
            if stuck > 1000:
                raise RuntimeError(f"the engine makes no progress at {t}")
            self.clock.t = t
            while self._inputs and self._inputs[0][0] <= t:
                when, _, msg = heapq.heappop(self._inputs)
                engine.receive(when, msg)
            engine.capture(t)
            if self.worker_held_until is None or t >= self.worker_held_until:
                self._work()
            engine.scheduler.pump(t)
            if t >= t_end:
                return

    def _work(self) -> None:
        engine = self.engine
        while not engine.jobs.empty():
            engine.work(engine.jobs.get_nowait())
            self.worked()

    def worked(self) -> None:
        """After each job the worker ran."""
