"""Threads and queues for live play: input -> capture thread -> the current mode -> worker -> scheduler.

- `feed` (the input poller's thread) only timestamps and enqueues: a bounded queue of
  INPUT_QUEUE messages; when it is full the newest message is dropped and counted.
- The capture thread parses each message and hands it to `livegen.messages` (thru, the
  transport, controllers, notes), and each moment to the current way of listening
  (`livegen.modes`), which queues jobs.
- The worker thread runs the jobs (all inference happens here, never on a MIDI thread).
  The job queue holds JOB_QUEUE jobs; when it is full the newest job is dropped and counted
  (a phrase whose answer would come too late is dropped by the worker too). A switch is
  never dropped: the oldest job makes room for it.
- The scheduler thread owns the output port (`livegen.scheduler`).

A switch of model or mode is loaded on the thread that asks for it; the current mode either
takes it over itself from its next phrase (`Mode.adopt`), or the capture thread hands over
to the new mode at the next phrase boundary and the worker follows when it comes to that
boundary's SwitchJob, so the old mode's queued jobs finish first.

`now` is the clock every decision is taken on: `time.perf_counter` live; tests and tools
drive the same engine on a virtual clock without the threads (`capture`, `work`).
"""
from __future__ import annotations

import itertools
import logging
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import replace

import numpy as np

from livegen.capture import Capture, parse, split
from livegen.config import Settings
from livegen.errors import ConfigError
from livegen.generate.continue_ import SamplingSettings
from livegen.key import played_key
from livegen.live_controls import LiveControls
from livegen.messages import Dispatch
from livegen.models import Model
from livegen.modes import Mode, Stage, SwitchJob, mode_class
from livegen.phrase import check_mode, muted_tracks, phrase_steps, track_channels
from livegen.recorder import Recorder
from livegen.remote import RemoteInference
from livegen.scheduler import Scheduler
from livegen.transport import Transport

log = logging.getLogger(__name__)

INPUT_QUEUE = 4096
JOB_QUEUE = 64
MONITOR_SIZE = 4096   # notes kept for the control page


class Engine:
    def __init__(self, settings: Settings, model: Model, send, on_stopped=None, now=time.perf_counter):
        check_mode(settings, model)
        self.settings, self.steps, self.now, self.on_stopped = settings, phrase_steps(settings, model), now, on_stopped
        self.transport = Transport(settings.clock, settings.bpm, model.info.steps_per_beat, settings.send_clock)
        self.recorder = Recorder() if settings.record else None
        # the notes of the last seconds, played and sent: (number, time, "player" or "out", message),
        # for the control page's piano roll (appended by the capture and scheduler threads)
        self.monitor: deque = deque(maxlen=MONITOR_SIZE)
        self._monitored = itertools.count()
        self.scheduler = Scheduler(send, self.transport.time_of, settings.late_ms, on_sent=self._sent, now=now)
        self.transport.scheduler = self.scheduler
        self.inq: queue.Queue = queue.Queue(maxsize=INPUT_QUEUE)
        self.jobs: queue.Queue = queue.Queue(maxsize=JOB_QUEUE)
        self.stats = {"received": 0, "input_dropped": 0, "malformed": 0, "sysex": 0, "ignored": 0,
                      "phrases": 0, "phrases_dropped": 0, "worker_errors": 0, "generated_notes": 0,
                      "answer_notes_taken_back": 0}
        self.stage = Stage(settings, self.scheduler, self.transport, self.new_capture(),
                           np.random.default_rng(settings.seed),
                           SamplingSettings(settings.temperature, settings.top_p, key=settings.key or None),
                           self.stats, self._post, lambda: not self.jobs.empty(), now,
                           RemoteInference(settings.inference, settings.keys) if settings.inference else None)
        # the mode the capture thread listens with, and the one whose jobs the worker runs
        self.listening = self.playing = self._mode(model, settings.mode, strict_mute=True, calibrate=False)
        self.pending: Mode | None = None       # a switch waiting for the next phrase boundary
        self._switch_lock = threading.Lock()
        self._key, self._key_at = None, None
        self.stage.played_key = self.played_key
        self.controls = LiveControls(self)
        self.dispatch = Dispatch(self)
        self.thru_channels: set[int] = set()
        self.stop_event = threading.Event()
        self.beats = {"capture": time.monotonic(), "worker": time.monotonic()}   # see `alive`
        self._threads = [threading.Thread(target=self._capture_loop, name="livegen-capture", daemon=True),
                         threading.Thread(target=self._worker_loop, name="livegen-worker", daemon=True)]

    def new_capture(self) -> Capture:
        """An empty capture (at start, and after a Start or SPP)."""
        s = self.settings
        steps_per_bar = s.beats_per_bar * self.transport.steps_per_beat
        return Capture(s.tolerance, round(s.stuck_after_bars * steps_per_bar))

    def _mode(self, model: Model, name: str, strict_mute: bool = False, calibrate: bool = True) -> Mode:
        """A way of listening, with the time its answer takes measured (the model is warm)."""
        mode = mode_class(name, model.info.kind)(self.stage, model, name, self.steps, strict_mute=strict_mute)
        if calibrate:
            mode.lead_ms = mode.calibrate()
        return mode

    @property
    def model(self) -> Model:
        return self.playing.model

    @property
    def tracks(self) -> list[str]:
        return self.playing.tracks

    @property
    def channels(self) -> list[int]:
        return self.playing.channels

    @property
    def muted(self) -> set[int]:
        return self.playing.muted

    def _sent(self, t: float, msg: list[int]) -> None:
        if self.recorder:
            self.recorder.add(t, msg)
        self.watch_note(t, "out", msg)

    def watch_note(self, t: float, who: str, msg) -> None:
        if len(msg) == 3 and msg[0] & 0xE0 == 0x80:      # note-on or note-off
            self.monitor.append((next(self._monitored), t, who, list(msg)))

    def _post(self, job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.stats["phrases_dropped"] += 1

    # ---------------------------------------------------------------- lifecycle

    def prepare(self) -> None:
        """Before the first note: time one answer, and let the mode take up its model."""
        self.playing.lead_ms = self.playing.calibrate()
        self.playing.start_playing(np.random.default_rng(self.settings.seed))

    def start(self) -> None:
        self.prepare()
        # The MIDI API's thread must take the GIL: a short switch interval keeps its wait short
        sys.setswitchinterval(0.0005)
        self.scheduler.start()
        for t in self._threads:
            t.start()

    # how long each thread may go without turning before the engine counts as hung: the
    # worker may be in the middle of an answer (seconds at most), the others wake every 0.25 s
    HUNG_S = {"capture": 2.0, "scheduler": 2.0, "worker": 30.0}

    def hung(self) -> list[str]:
        """The threads that are dead or have not turned for HUNG_S (the systemd watchdog
        is fed only while this is empty)."""
        now = time.monotonic()
        beats = dict(self.beats, scheduler=self.scheduler.beat)
        alive = {"capture": self._threads[0].is_alive(), "worker": self._threads[1].is_alive(),
                 "scheduler": self.scheduler.is_alive()}
        return [name for name, limit in self.HUNG_S.items() if not alive[name] or now - beats[name] > limit]

    def silence(self) -> None:
        self.scheduler.panic(channels=set(self.channels) | self.thru_channels)

    def stop(self) -> None:
        """Silence everything and end the threads (safe to call twice)."""
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        # silent first: a thread may take a while to end (a worker in the middle of an answer)
        self.scheduler.close_notes(set(self.channels) | self.thru_channels)
        for t in self._threads:
            if t.is_alive():
                t.join(2.0)
        self.transport.stop()
        self.silence()      # (a note played thru since)
        self.scheduler.stop()
        self.scheduler.log_timing()
        self.playing.log_stats()
        if self.stage.remote is not None:
            log.info("remote inference: %s", ", ".join(f"{k} {v}" for k, v in self.stage.remote.stats.items()))
            self.stage.remote.close()
        if self.recorder:
            count = self.recorder.write(self.settings.record, self.transport.bpm)
            log.info("recorded %d messages to %s", count, self.settings.record)

    # ---------------------------------------------------------------- input (the port's poller thread)

    def feed(self, t: float, data: list[int]) -> None:
        """A message from an input port with its arrival time: enqueue, nothing else; but a
        MIDI Stop under a running MIDI clock silences at once, from here: the capture thread,
        which then stops the grid, can be a wake-up or two behind on a busy machine, and each
        JACK cycle it misses holds the notes 5 ms longer (a Stop's p99 was 14.4 ms from its
        arrival with every kind of event in `benchmarks/reliability.py`, 6.0 ms with Stops only)."""
        if len(data) == 1 and data[0] == 0xFC and self.transport.follower is not None and self.transport.running:
            self.silence()
        try:
            self.inq.put_nowait((t, data))
        except queue.Full:
            self.stats["input_dropped"] += 1

    # ---------------------------------------------------------------- capture thread

    def _capture_loop(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.beats["capture"] = time.monotonic()
                wake = self.listening.wake_at()
                timeout = 0.1 if wake is None else min(0.1, max(wake - self.now(), 0.0))
                try:
                    t, data = self.inq.get(timeout=timeout)
                    self.receive(t, data)
                except queue.Empty:
                    pass
                self.capture(self.now())
        except Exception:   # an internal error must still end every note
            log.exception("capture thread failed; stopping")
            self.silence()
            if self.on_stopped:
                self.on_stopped()

    def receive(self, t: float, data) -> None:
        """One message as the input delivered it (rtmidi may have joined several)."""
        for part in split(data):
            self.dispatch.handle(parse(part), t, part)

    def capture(self, now: float) -> None:
        """Let the current mode queue what is due by `now`; hand over at a boundary."""
        pending = self.pending          # (read once: a control thread may replace it)
        boundary = self.listening.tick(now, pending)
        if boundary is not None and pending is not None:
            if self.pending is pending:
                self.pending = None
            pending.begin(boundary)
            self.listening = pending
            if pending.on_start is not None:     # (a preset's other settings, at the boundary)
                pending.on_start()
            self._post_switch(SwitchJob(pending, boundary))

    def _post_switch(self, job: SwitchJob) -> None:
        while True:
            try:
                self.jobs.put(job, timeout=0.05)
                return
            except queue.Full:     # never lose a switch: drop the oldest job instead
                try:
                    self.jobs.get_nowait()
                    self.stats["phrases_dropped"] += 1
                except queue.Empty:
                    pass

    # ---------------------------------------------------------------- worker thread

    def _worker_loop(self) -> None:
        while not self.stop_event.is_set():
            self.beats["worker"] = time.monotonic()
            try:
                job = self.jobs.get(timeout=0.25)
            except queue.Empty:
                if self.stage.remote is not None:
                    self.stage.remote.tick()     # is each worker (still, again) there?
                continue
            self.work(job)

    def work(self, job) -> None:
        try:
            if isinstance(job, SwitchJob):
                self.playing.close(job.step)
                self.playing = job.mode
                job.mode.start_playing(self.stage.rng)
                log.info("now playing %s in %s mode; tracks %s on channels %s", job.mode.model.info.path,
                         job.mode.name, ",".join(job.mode.tracks), ",".join(str(c + 1) for c in job.mode.channels))
            else:
                self.playing.run(job)
        except Exception:
            self.stats["worker_errors"] += 1
            log.exception("generation failed for %s; skipping it", job)

    # ---------------------------------------------------------------- live control (any thread)

    def publish_to(self, telemetry) -> None:
        """Telemetry: one event (a dict) per phrase answered, and one per preset taken up;
        each names the preset playing and the key of what the player played."""
        self.stage.telemetry = lambda event: telemetry(event | {"preset": self.controls.preset,
                                                                "key": self.settings.key or self.played_key()})

    def played_key(self) -> str | None:
        """The key of what the player played lately (worked out at most once a second)."""
        now = self.now()
        if self._key_at is None or now - self._key_at >= 1.0:
            self._key, self._key_at = played_key(self.monitor, now), now
        return self._key

    def learn(self, key: str) -> None:
        """The next MIDI CC moved controls `key`."""
        self.controls.learning = key

    def panic(self) -> None:
        self.scheduler.panic(channels=set(self.channels))

    def apply(self, key, value) -> None:
        """Change one live setting; ConfigError and no change when it is bad."""
        self.controls.apply(key, value)

    def switch(self, spec: str | None = None, mode: str | None = None, wanted=lambda: True,
               channels: list[int] | None = None, mute: list[str] | None = None, on_start=None) -> str:
        """Another model and/or mode from the next phrase on (any thread but the worker).

        Loads and warms the model here, so the worker only swaps it in; refuses, with no
        change, what would need a different grid (restart for that), and what is no longer
        `wanted()` once it is ready. A preset also gives the tracks' `channels` and `mute`,
        and `on_start`, called when the new mode takes over (its other settings)."""
        with self._switch_lock:      # (the control socket and the program controller may both ask)
            model = Model(spec or self.model.info.path, self.settings.device) if spec or mode is None else self.model
            trial = replace(self.settings, mode=mode or self.settings.mode)
            check_mode(trial, model)
            if phrase_steps(trial, model) != self.steps:
                raise ConfigError(f"{model.info.path}: a {phrase_steps(trial, model)}-step phrase, not "
                                  f"{self.steps}: restart livegen to change the phrase length")
            model.warm_up(1)
            new = self._mode(model, trial.mode)
            if channels:
                new.channels = track_channels(replace(self.settings, channels=channels), len(new.tracks))
            if mute is not None:
                new.muted, new.clear_mute = muted_tracks(replace(self.settings, mute=mute), new.tracks), False
            new.on_start = on_start
            if not wanted():         # (the asker gave up waiting)
                raise ConfigError(f"{model.info.path}: the switch was abandoned")
            self.pending = None      # the latest request wins
            if not self.listening.adopt(new):
                self.pending = new
            return model.info.path

    def status(self) -> dict:
        return self.controls.status()
