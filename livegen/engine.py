"""Wiring for live play: MIDI input callback -> capture thread -> inference worker -> scheduler.

- The input poller only timestamps and enqueues (bounded; when full the newest message is
  dropped and counted; see ports.InputPoller for why it is not an rtmidi callback).
- The capture thread parses, quantises, forwards thru, follows the clock, and at the end of
  each phrase hands the phrase to the worker. It cuts the phrase `tolerance` of a step before
  the boundary: any note played later belongs to the next phrase anyway, and the head start
  lets the model's answer be ready for the first step of the next phrase.
- The worker runs the model (never on a MIDI thread); its queue holds 2 jobs and drops the
  oldest, since an old phrase's answer would be late.
- The scheduler thread owns the output port.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from livegen.capture import Capture, Event, parse
from livegen.clock import InternalClock, MidiClockFollower
from livegen.config import Settings
from livegen.generate.accompany import accompany
from livegen.models import Model
from livegen.roll import Note
from livegen.scheduler import Scheduler

log = logging.getLogger(__name__)

INPUT_QUEUE = 4096


def phrase_steps(settings: Settings, model: Model) -> int:
    """Steps in one phrase: --bars, or as many whole bars as fit the model's window."""
    steps_per_bar = settings.beats_per_bar * model.info.steps_per_beat
    if settings.bars:
        bars = settings.bars
    elif model.info.window_steps:
        bars = max(1, model.info.window_steps // steps_per_bar)
    else:
        bars = 2
    return bars * steps_per_bar


def track_channels(settings: Settings, tracks: int) -> list[int]:
    """0-based output channel of each generated track (default 2, 3, 4 ... counted from 1)."""
    chosen = [c - 1 for c in settings.channels]
    while len(chosen) < tracks:
        chosen.append((chosen[-1] + 1 if chosen else 1) % 16)
    return chosen[:tracks]


def generate(model: Model, settings: Settings, notes: list[Note], start: int, steps: int,
             rng: np.random.Generator) -> list[Note]:
    """The generated notes for one phrase, in the same step coordinates as the phrase."""
    if model.info.kind != "accompany":
        raise ValueError(f"mode loop plays accompany models; {model.info.path} is {model.info.kind}")
    return accompany(model, notes, start, steps, rng, settings.threshold)


@dataclass
class Job:
    phrase: int
    start: int
    steps: int
    notes: list[Note]


class Recorder:
    """Everything played in and sent out, with times, written to a .mid file at the end."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events: list[tuple[float, list[int]]] = []

    def add(self, t: float, msg: list[int]) -> None:
        if msg and (msg[0] & 0xF0) in (0x80, 0x90, 0xB0):
            with self.lock:
                self.events.append((t, list(msg)))

    def write(self, path: str, bpm: float) -> int:
        import mido

        with self.lock:
            events = sorted(self.events, key=lambda e: e[0])
        mid = mido.MidiFile(ticks_per_beat=480)
        track = mido.MidiTrack()
        mid.tracks.append(track)
        track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
        t0 = events[0][0] if events else 0.0
        last = 0
        for t, msg in events:
            tick = int(round((t - t0) * 480 * bpm / 60))
            track.append(mido.Message.from_bytes(msg, time=tick - last))
            last = tick
        mid.save(path)
        return len(events)


class Engine:
    def __init__(self, settings: Settings, model: Model, send, on_stopped=None):
        self.settings = settings
        self.model = model
        self.steps = phrase_steps(settings, model)
        self.channels = track_channels(settings, len(model.info.tracks))
        spb = model.info.steps_per_beat
        self.internal = InternalClock(settings.bpm, spb)
        self.follower = MidiClockFollower(spb, default_bpm=settings.bpm) if settings.clock == "midi" else None
        self.capture = Capture(settings.tolerance)
        self.rng = np.random.default_rng(settings.seed)
        self.inq: queue.Queue = queue.Queue(maxsize=INPUT_QUEUE)
        self.jobs: queue.Queue = queue.Queue(maxsize=2)
        self.recorder = Recorder() if settings.record else None
        self.scheduler = Scheduler(send, self.time_of, settings.late_ms,
                                   on_sent=self.recorder.add if self.recorder else None)
        self.stop_event = threading.Event()
        self.next_phrase = 0
        self.thru_channels: set[int] = set()
        self.stats = {"received": 0, "input_dropped": 0, "malformed": 0, "sysex": 0, "ignored": 0,
                      "phrases": 0, "phrases_dropped": 0, "worker_errors": 0, "generated_notes": 0}
        self.phrase_ms: list[float] = []
        self.on_stopped = on_stopped
        self._threads = [threading.Thread(target=self._capture_loop, name="livegen-capture", daemon=True),
                         threading.Thread(target=self._worker_loop, name="livegen-worker", daemon=True)]

    # ---------------------------------------------------------------- clock

    @property
    def clock(self):
        return self.follower if self.follower else self.internal

    def time_of(self, step: float) -> float | None:
        return self.clock.time_of(step)

    # ---------------------------------------------------------------- input (the port's poller thread)

    def feed(self, t: float, data: list[int]) -> None:
        """A message from an input port with its arrival time: enqueue, nothing else."""
        try:
            self.inq.put_nowait((t, data))
        except queue.Full:
            self.stats["input_dropped"] += 1

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        # The rtmidi callback runs on the MIDI API's own thread (JACK's process thread) and
        # must take the GIL: a short switch interval keeps its wait far below one JACK period.
        sys.setswitchinterval(0.0005)
        self.scheduler.start()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Silence everything and end the threads (safe to call twice)."""
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        for t in self._threads:
            t.join(2.0)
        if self.settings.send_clock:
            self.scheduler.send_now([0xFC])
        self.scheduler.panic(channels=set(self.channels) | self.thru_channels)
        self.scheduler.stop()
        if self.scheduler.timing:
            late = np.array([sent - deadline for deadline, sent in self.scheduler.timing]) * 1000
            log.info("note-ons sent after their deadline: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d notes)",
                     np.percentile(late, 50), np.percentile(late, 99), late.max(), len(late))
        if self.recorder:
            count = self.recorder.write(self.settings.record, self.clock.bpm)
            log.info("recorded %d messages to %s", count, self.settings.record)

    # ---------------------------------------------------------------- capture thread

    def _capture_loop(self) -> None:
        try:
            while not self.stop_event.is_set():
                cut_at = self.time_of((self.next_phrase + 1) * self.steps - self.settings.tolerance)
                timeout = 0.1 if cut_at is None else min(0.1, max(cut_at - time.perf_counter(), 0.0))
                try:
                    t, data = self.inq.get(timeout=timeout)
                    self.handle(parse(data), t, data)
                except queue.Empty:
                    pass
                self._maybe_cut(time.perf_counter())
        except Exception:   # an internal error must still end every note
            log.exception("capture thread failed; stopping")
            self.scheduler.panic(channels=set(self.channels) | self.thru_channels)
            if self.on_stopped:
                self.on_stopped()

    def handle(self, ev: Event, t: float, raw) -> None:
        self.stats["received"] += 1
        kind = ev.kind
        if kind == "bad":
            self.stats["malformed"] += 1
            return
        if kind == "sysex":
            self.stats["sysex"] += 1
            return
        if kind in ("clock", "start", "continue", "stop", "spp"):
            self._transport(kind, ev, t)
            return
        if kind not in ("note_on", "note_off", "cc"):
            self.stats["ignored"] += 1
            return
        if kind == "note_on" and not self.clock.running and self.follower is None:
            self._start_internal(t)   # bar 1 starts at the first note played
        pos = self.clock.position(t)
        if self.settings.thru and kind in ("note_on", "note_off"):
            self.thru_channels.add(ev.channel)
            self.scheduler.send_now(list(raw))   # recorded when sent
        elif self.recorder:
            self.recorder.add(t, list(raw))
        if pos is None:
            return   # MIDI clock stopped: nothing to place on the grid
        if kind == "note_on":
            self.capture.note_on(ev.a, ev.b, pos)
        elif kind == "note_off":
            self.capture.note_off(ev.a, pos)
        elif ev.a == 64:
            self.capture.sustain(ev.b >= 64, pos)

    def _start_internal(self, t: float) -> None:
        self.internal.start(t)
        if self.settings.send_clock:   # a DAW following our clock starts with bar 1
            self.scheduler.send_now([0xFA])
            self.scheduler.start_clock_output(0.0, 24 / self.model.info.steps_per_beat)

    def _transport(self, kind: str, ev: Event, t: float) -> None:
        f = self.follower
        if f is None:
            if kind == "start" and not self.internal.running:
                self._start_internal(t)
            else:
                self.stats["ignored"] += 1
            return
        if kind == "clock":
            f.tick(t)
        elif kind == "start":
            f.start()
            self._relocate(0)
        elif kind == "continue":
            f.cont()
        elif kind == "stop":
            f.stop()
            self.capture.release_all(f.next_tick / f.ticks_per_step)
            self.scheduler.panic(channels=set(self.channels) | self.thru_channels)
        elif kind == "spp":
            f.song_position(ev.a)
            self._relocate(ev.a * 6 / f.ticks_per_step)

    def _relocate(self, step: float) -> None:
        """After Start or SPP: forget old notes and schedules, count phrases from here."""
        self.scheduler.panic(channels=set(self.channels) | self.thru_channels)
        self.capture = Capture(self.settings.tolerance)
        self.next_phrase = int(step // self.steps)

    def _maybe_cut(self, now: float) -> None:
        cut_at = self.time_of((self.next_phrase + 1) * self.steps - self.settings.tolerance)
        if cut_at is None or now < cut_at:
            return
        k = self.next_phrase
        self.next_phrase += 1
        start = k * self.steps
        notes = self.capture.phrase(start, start + self.steps)
        self.capture.forget_before(start)
        if not notes:
            return
        try:
            self.jobs.put_nowait(Job(k, start, self.steps, notes))
        except queue.Full:
            try:
                self.jobs.get_nowait()
                self.stats["phrases_dropped"] += 1
            except queue.Empty:
                pass
            self.jobs.put_nowait(Job(k, start, self.steps, notes))

    # ---------------------------------------------------------------- worker thread

    def _worker_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                job = self.jobs.get(timeout=0.25)
            except queue.Empty:
                continue
            t = time.perf_counter()
            try:
                generated = generate(self.model, self.settings, job.notes, job.start, job.steps, self.rng)
            except Exception:
                self.stats["worker_errors"] += 1
                log.exception("generation failed for phrase %d; skipping it", job.phrase)
                continue
            self.phrase_ms.append((time.perf_counter() - t) * 1000)
            velocity = int(np.clip(np.mean([n.velocity for n in job.notes]), 30, 127))
            for n in generated:
                self.scheduler.schedule_note(n.start + job.steps, n.end + job.steps, self.channels[n.track],
                                             n.pitch, velocity)
            self.stats["phrases"] += 1
            self.stats["generated_notes"] += len(generated)
            ahead = (self.time_of(job.start + job.steps) or 0) - time.perf_counter()
            log.debug("phrase %d: %d notes in, %d out, %.1f ms, ready %.1f ms before its first step", job.phrase,
                      len(job.notes), len(generated), self.phrase_ms[-1], ahead * 1000)
