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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from livegen.capture import Capture, Event, parse, split
from livegen.clock import InternalClock, MidiClockFollower
from livegen.config import MODE_KINDS, Settings
from livegen.control import CONTROLS
from livegen.errors import ConfigError
from livegen.generate.accompany import accompany, seam_after
from livegen.generate.continue_ import Harmoniser, SamplingSettings
from livegen.generate.edit import EditSettings, edit_phrase
from livegen.models import Model, resolve
from livegen.roll import Note
from livegen.scheduler import Scheduler

log = logging.getLogger(__name__)

INPUT_QUEUE = 4096
FOLLOW_GRACE_S = 0.006   # follow: a step with no new note is sounded this long after its grid time, so
                         # a note on time but a little behind the grid (MIDI hops) is not taken as late


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


def output_tracks(settings: Settings, model: Model) -> list[str]:
    """Names of the tracks a mode plays: follow sounds alto, tenor and bass under the player."""
    if settings.mode == "follow":
        return model.info.tracks[1:]
    return list(model.info.tracks)


def same_model(spec: str, model: Model) -> bool:
    try:
        return resolve(spec).resolve() == Path(model.info.path).resolve()
    except ValueError:       # ModelError: not a model file here
        return False


def check_mode(settings: Settings, model: Model) -> None:
    kinds = MODE_KINDS[settings.mode]
    if model.info.kind not in kinds:
        raise ConfigError(f"mode {settings.mode} plays {' or '.join(kinds)} models; "
                          f"{model.info.path} is a{'n' if model.info.kind[0] in 'ae' else ''} {model.info.kind} model")


def track_channels(settings: Settings, tracks: int) -> list[int]:
    """0-based output channel of each generated track (default 2, 3, 4 ... counted from 1)."""
    chosen = [c - 1 for c in settings.channels]
    while len(chosen) < tracks:
        chosen.append((chosen[-1] + 1 if chosen else 1) % 16)
    return chosen[:tracks]


def muted_tracks(settings: Settings, names: list[str]) -> set[int]:
    out = set()
    for m in settings.mute:
        m = str(m).strip().lower()
        if m.isdigit() and 1 <= int(m) <= len(names):
            out.add(int(m) - 1)
        elif m in [n.lower() for n in names]:
            out.add([n.lower() for n in names].index(m))
        else:
            raise ConfigError(f"mute {m!r}: no such track; tracks are {', '.join(names)}")
    return out


def edit_settings(settings: Settings) -> EditSettings:
    keep = settings.keep_player if settings.keep_player is not None else settings.mode == "loop"
    return EditSettings(temperature=settings.edit_temperature, passes=settings.edit_passes,
                        edits_per_pass=settings.edits_per_pass, max_remove_share=settings.max_remove,
                        max_add=settings.max_add, keep_player=keep)


def generate(model: Model, settings: Settings, notes: list[Note], start: int, steps: int,
             rng: np.random.Generator, seam: list[int] | None = None) -> list[Note]:
    """The generated notes for one phrase (loop and respond with accompany or edit models),
    in the same step coordinates as the phrase. `seam`: accompany's voices on the step before
    (accompany.seam_after), when the previous phrase's answer leads into this one's."""
    if model.info.kind == "accompany":
        return accompany(model, notes, start, steps, rng, settings.threshold, seam)
    if model.info.kind == "edit":
        return edit_phrase(model, notes, start, steps, rng, edit_settings(settings))
    # continue (render; live does the same step by step): harmonise the phrase, then answer it
    harmoniser = Harmoniser(model, SamplingSettings(settings.temperature, settings.top_p), rng)
    for step in range(start, start + steps):
        harmoniser.step(max((n.pitch for n in notes if n.start <= step < n.end), default=None))
    stream = VoiceStream(None, [0, 1, 2, 3], 100)
    for s_off, pitches in harmoniser.answer(steps):
        stream.step(start + s_off, pitches)
    stream.close(start + steps)
    return stream.notes


class VoiceStream:
    """Turns one pitch per voice per step into notes: the same pitch again is held.

    With a scheduler, notes are scheduled as the steps come (note-on now, note-off when the
    voice moves); without one, they are collected in `notes`.
    """

    def __init__(self, scheduler, channels: list[int], velocity: int, muted: set[int] = frozenset(),
                 immediate: bool = False):
        self.scheduler, self.channels, self.velocity = scheduler, channels, velocity
        self.muted, self.immediate = muted, immediate
        self.current: list[tuple[int, int, int] | None] = [None] * len(channels)   # (pitch, id, start)
        self.notes: list[Note] = []
        self.count = 0
        self.since: float | None = None    # follow mode: arrival of the player's note being answered

    def step(self, step: int, pitches: list[int]) -> None:
        for v, pitch in enumerate(pitches):
            if v in self.muted or v >= len(self.channels):
                continue
            cur = self.current[v]
            if cur is not None and cur[0] == pitch:
                continue
            if cur is not None:
                self._off(v, cur, step)
            self.current[v] = None
            if pitch >= 0:
                note_id = None
                if self.scheduler is not None:
                    ch = self.channels[v]
                    note_id = (self.scheduler.note_now(ch, pitch, self.velocity, self.since) if self.immediate
                               else self.scheduler.schedule_on(step, ch, pitch, self.velocity))
                self.current[v] = (pitch, note_id, step)
                self.count += 1

    def _off(self, v: int, cur, step: int) -> None:
        pitch, note_id, start = cur
        if self.scheduler is not None:
            self.scheduler.schedule_off(step, note_id, self.channels[v], pitch)
        else:
            self.notes.append(Note(pitch, start, step, self.velocity, v))

    def close(self, step: int) -> None:
        for v, cur in enumerate(self.current):
            if cur is not None:
                self._off(v, cur, step)
        self.current = [None] * len(self.channels)


@dataclass
class Job:
    phrase: int
    start: int
    steps: int
    notes: list[Note]
    posted: float = 0.0     # when the phrase was cut: its answer's time counts from here, queue included


@dataclass
class FollowJob:
    step: int
    soprano: int | None     # the player's top sounding pitch at that step, or None
    velocity: int
    heard_at: float | None = None   # arrival of the player's note that asked for it (None: a held step)
    silent: bool = False    # respond + continue: the step only builds the answer's context
    provisional: bool = False   # follow: a step with no new note, sounded on its grid time; a
                                # late note for it may still come and correct it
    correction: bool = False    # follow: that late note: harmonise the step again with it


@dataclass
class SwitchJob:
    """A switch of how livegen listens (into or out of follow, respond + continue), queued
    behind the jobs of the old mode so the worker takes it up in order."""
    model: Model
    mode: str
    step: int               # the new mode's first step (a phrase boundary)
    lead_ms: float


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
        check_mode(settings, model)
        self.steps = phrase_steps(settings, model)
        self.tracks = output_tracks(settings, model)
        self.channels = track_channels(settings, len(self.tracks))
        self.muted = muted_tracks(settings, self.tracks)
        self.sampling = SamplingSettings(settings.temperature, settings.top_p)
        self.follow = settings.mode == "follow"
        # respond with a continue model: each step of the phrase is harmonised silently as it
        # is played, so at the phrase's end the model has four voices of context, and only
        # the answer is left to decode
        self.context_steps = settings.mode == "respond" and model.info.kind == "continue"
        self.lead_ms = 0.0            # how long the answer to a phrase takes: the phrase is cut that early
        self.first_step_ms = 0.0
        self.follow_next = 0          # next step to harmonise in follow mode
        self.provisional: int | None = None   # follow: the last step sounded before its late window closed
        self.follow_velocity = 90
        self.harmoniser = Harmoniser(model, self.sampling, np.random.default_rng(settings.seed), live=self.follow) \
            if self.follow or self.context_steps else None
        self.follow_stream = None
        spb = model.info.steps_per_beat
        self.internal = InternalClock(settings.bpm, spb)
        self.follower = MidiClockFollower(spb, default_bpm=settings.bpm) if settings.clock == "midi" else None
        self.capture = Capture(settings.tolerance)
        self.rng = np.random.default_rng(settings.seed)
        self.inq: queue.Queue = queue.Queue(maxsize=INPUT_QUEUE)
        self.jobs: queue.Queue = queue.Queue(maxsize=64)   # a phrase too old to play is skipped by the worker
        self.recorder = Recorder() if settings.record else None
        self.scheduler = Scheduler(send, self.time_of, settings.late_ms,
                                   on_sent=self.recorder.add if self.recorder else None)
        self.stop_event = threading.Event()
        self.learning: str | None = None       # MIDI learn: the setting the next CC will control
        # the `program` controller's zone in settings.programs (where the session starts, if listed)
        self.program = next((i for i, p in enumerate(settings.programs)
                             if p.split()[0] == settings.mode and same_model(p.split()[1], model)), None)
        self._program_lock, self._switch_lock = threading.Lock(), threading.Lock()
        self.pending: tuple[Model, str, float] | None = None   # a model/mode switch for the next phrase
        self.pending_listen: tuple[Model, str, float] | None = None   # the same, changing how livegen listens
        self.switch_step: int | None = None
        self.telemetry = lambda event: None    # set by the control server
        self.next_phrase = 0
        self.thru_channels: set[int] = set()
        self.stats = {"received": 0, "input_dropped": 0, "malformed": 0, "sysex": 0, "ignored": 0,
                      "phrases": 0, "phrases_dropped": 0, "worker_errors": 0, "generated_notes": 0}
        self.phrase_ms: list[float] = []     # how long each phrase's answer took, remote or local
        self.local_ms: list[float] = []      # generation here: the fallback must always fit
        self.seam: tuple[int, list[int]] | None = None   # (phrase, accompany's last step): see seam_after
        self.source = "local"         # where the last phrase's answer was made: local or a worker's address
        self.remote = None
        if settings.inference:
            from livegen.remote import RemoteInference
            self.remote = RemoteInference(settings.inference, settings.keys)
        self.on_stopped = on_stopped
        self.lead_ms = self.calibrate()
        if self.follow:
            self.harmoniser.speculate()   # the first note is answered from a guess too
        self._threads = [threading.Thread(target=self._capture_loop, name="livegen-capture", daemon=True),
                         threading.Thread(target=self._worker_loop, name="livegen-worker", daemon=True)]

    def calibrate(self, model: Model | None = None, mode: str | None = None) -> float:
        """Time one answer on a made-up phrase, so the first real phrase is cut early enough."""
        model, mode = model or self.model, mode or self.settings.mode
        if mode == "follow":
            return 0.0
        tune = [Note(60 + p, 2 * i, 2 * i + 2) for i, p in enumerate((0, 2, 4, 5, 7, 9, 11, 12) * 2)]
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        if mode == "respond" and model.info.kind == "continue":   # at the cut: the last steps, the answer's first
            h = Harmoniser(model, self.sampling, rng)
            h.step(72)
            h.step(72)
            next(h.answer(1))
        else:
            generate(model, replace(self.settings, mode=mode), tune, 0, self.steps, rng)
        return (time.perf_counter() - t) * 1000

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
            if t.is_alive():
                t.join(2.0)
        if self.settings.send_clock:
            self.scheduler.send_now([0xFC])
        self.scheduler.panic(channels=set(self.channels) | self.thru_channels)
        self.scheduler.stop()
        if self.scheduler.timing:
            late = np.array([sent - deadline for deadline, sent in self.scheduler.timing]) * 1000
            log.info("note-ons sent after their deadline: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d notes)",
                     np.percentile(late, 50), np.percentile(late, 99), late.max(), len(late))
        if self.scheduler.follow_delays:
            d = np.array(self.scheduler.follow_delays)
            log.info("follow: harmony sent after the player's note: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d notes)",
                     np.percentile(d, 50), np.percentile(d, 99), d.max(), len(d))
        if self.follow and self.harmoniser is not None:
            log.info("follow: steps answered from a guess made ahead: %(hits)d; decoded when played: %(misses)d "
                     "not guessed, %(unguessed)d not ready; guess passes stopped by a note: %(stopped)d; "
                     "steps sounded again for a late note: %(corrected)d", self.harmoniser.guess_stats)
        if self.remote is not None:
            log.info("remote inference: %s", ", ".join(f"{k} {v}" for k, v in self.remote.stats.items()))
            self.remote.close()
        if self.recorder:
            count = self.recorder.write(self.settings.record, self.clock.bpm)
            log.info("recorded %d messages to %s", count, self.settings.record)

    # ---------------------------------------------------------------- capture thread

    def _capture_loop(self) -> None:
        try:
            while not self.stop_event.is_set():
                if self.follow:
                    cut_at = self._due(self.follow_next)
                else:
                    cut_at = self.time_of((self.next_phrase + 1) * self.steps - self.lead_steps())
                    if self.context_steps:
                        due = [x for x in (cut_at, self.time_of(self.follow_next + self.settings.tolerance))
                               if x is not None]
                        cut_at = min(due) if due else None
                timeout = 0.1 if cut_at is None else min(0.1, max(cut_at - time.perf_counter(), 0.0))
                try:
                    t, data = self.inq.get(timeout=timeout)
                    for part in split(data):
                        self.handle(parse(part), t, part)
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
        if kind == "cc" and ev.a != 64:
            self._controller(ev.a, ev.b)
            return
        if pos is None:
            return   # MIDI clock stopped: nothing to place on the grid
        if kind == "note_on":
            if self.follow:
                self._follow_note(ev.a, ev.b, pos, t)
                return
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

    # ---------------------------------------------------------------- live control

    def _controller(self, number: int, value: int) -> None:
        """A MIDI CC: bind it (MIDI learn), or move the setting it is mapped to."""
        if self.learning:
            self.settings.cc_map[self.learning] = number
            log.info("MIDI learn: CC %d now controls %s", number, self.learning)
            self.learning = None
            return
        for key, cc in list(self.settings.cc_map.items()):
            if cc != number:
                continue
            try:
                if key == "program":
                    self._program(value * len(self.settings.programs) // 128)
                elif key.startswith("mute_"):
                    self._mute_one(key[len("mute_"):], value >= 64)
                else:
                    self.apply(key, CONTROLS[key].from_cc(value))
            except ConfigError as err:     # (a controller gets no reply: say it here)
                log.warning("CC %d (%s): %s", number, key, err)

    def _mute_one(self, track: str, on: bool) -> None:
        index = next(iter(muted_tracks(Settings(mute=[track]), self.tracks)))
        muted = (self.muted | {index}) if on else (self.muted - {index})
        if muted != self.muted:
            self.apply("mute", [self.tracks[i] for i in sorted(muted)])

    def _program(self, index: int) -> None:
        """Capture thread: the `program` controller moved into another zone: that mode and
        model from the next phrase. Loading takes a while: it is done on a thread of its own."""
        if index == self.program:
            return
        self.program = index
        mode, spec = self.settings.programs[index].split()

        def load():
            with self._program_lock:
                if self.program != index:      # moved on again meanwhile: the latest wins
                    return
                try:
                    self.switch(spec=spec, mode=mode)
                    log.info("program %d: %s %s from the next phrase", index + 1, mode, spec)
                except (ConfigError, ValueError) as err:   # ModelError is a ValueError
                    log.warning("program %d (%s %s): %s", index + 1, mode, spec, err)
                    if self.program == index:  # (so that the same zone may be tried again)
                        self.program = None

        threading.Thread(target=load, name="livegen-program", daemon=True).start()

    def apply(self, key, value) -> None:
        """Change one live setting (any thread); ConfigError and no change when it is bad."""
        if key not in CONTROLS:
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(CONTROLS)}")
        value = CONTROLS[key].parse(key, value)
        if key == "mute":
            muted = muted_tracks(Settings(mute=value), self.tracks)
        if key == "bpm" and self.follower is not None:
            raise ConfigError("bpm follows the MIDI clock here (--clock midi)")
        setattr(self.settings, key, value)
        if key in ("temperature", "top_p"):
            self.sampling.temperature, self.sampling.top_p = self.settings.temperature, self.settings.top_p
        elif key == "mute":
            self.muted = muted
            if self.follow_stream is not None:
                self.follow_stream.muted = muted
        elif key == "bpm":
            if self.internal.running:
                self.internal.set_tempo(value, time.perf_counter())
            else:
                self.internal = InternalClock(value, self.model.info.steps_per_beat)
        elif key == "seed":
            self.rng = np.random.default_rng(value)
        log.info("set %s = %s", key, value)

    def switch(self, spec: str | None = None, mode: str | None = None) -> str:
        """Another model and/or mode from the next phrase on (any thread but the worker).

        Loads and warms the model here, so the worker only swaps it in; refuses, with no
        change, what would need a different grid (restart for that). A switch into or out of
        follow, or respond with a continue model, changes how the capture thread listens: it
        is made at the next phrase boundary (see `_switch_listening`)."""
        with self._switch_lock:      # (the control socket and the program controller may both ask)
            return self._switch_now(spec, mode)

    def _switch_now(self, spec: str | None, mode: str | None) -> str:
        model = Model(spec or self.model.info.path, self.settings.device) if spec or mode is None else self.model
        trial = replace(self.settings, mode=mode or self.settings.mode)
        check_mode(trial, model)
        if phrase_steps(trial, model) != self.steps:
            raise ConfigError(f"{model.info.path}: a {phrase_steps(trial, model)}-step phrase, not "
                              f"{self.steps}: restart livegen to change the phrase length")
        follow, context = trial.mode == "follow", trial.mode == "respond" and model.info.kind == "continue"
        model.warm_up(1)
        lead = self.calibrate(model, trial.mode)
        self.pending = self.pending_listen = None      # the latest request wins
        if (follow, context) != (self.follow, self.context_steps) or follow:   # follow: a fresh harmoniser too
            self.pending_listen = (model, trial.mode, lead)
        else:
            self.pending = (model, trial.mode, lead)
        return model.info.path

    def _adopt_pending(self) -> None:
        """On the worker, between phrases: take the model and mode from `switch`."""
        pending, self.pending = self.pending, None
        self._adopt(*pending)

    def _adopt(self, model: Model, mode: str, lead_ms: float) -> None:
        self.model, self.settings.mode, self.lead_ms = model, mode, lead_ms
        self.tracks = output_tracks(self.settings, model)
        self.channels = track_channels(self.settings, len(self.tracks))
        try:
            self.muted = muted_tracks(self.settings, self.tracks)
        except ConfigError:       # the new model has other tracks: play them all
            self.settings.mute, self.muted = [], set()
        self.phrase_ms, self.local_ms = [], []   # the cut lead is measured again
        if self.remote is not None:
            self.remote.recent_ms = []
        log.info("now playing %s in %s mode; tracks %s on channels %s", model.info.path, mode,
                 ",".join(self.tracks), ",".join(str(c + 1) for c in self.channels))

    def status(self) -> dict:
        return {"mode": self.settings.mode, "model": self.model.info.path, "kind": self.model.info.kind,
                "tracks": dict(zip(self.tracks, [c + 1 for c in self.channels])),
                "muted": sorted(self.tracks[i] for i in self.muted), "bpm": round(self.clock.bpm, 2),
                "running": self.clock.running, "phrase_steps": self.steps,
                "settings": {k: getattr(self.settings, k) for k in CONTROLS},
                "cc_map": dict(self.settings.cc_map), "programs": list(self.settings.programs),
                "program": None if self.program is None else self.program + 1,
                "last_inference_ms": round(self.phrase_ms[-1], 2)
                if self.phrase_ms else None,
                "stats": self.stats | self.scheduler.stats | (self.remote.stats if self.remote else {})}

    # ---------------------------------------------------------------- follow mode (capture thread)

    def _soprano(self) -> int | None:
        held = list(self.capture.held) + list(self.capture.pedalled)
        return max(held) if held else None

    def _post_follow(self, step: int, soprano: int | None, t: float | None = None, provisional: bool = False,
                     correction: bool = False) -> None:
        job = FollowJob(step, soprano, self.follow_velocity, t, silent=not self.follow, provisional=provisional,
                        correction=correction)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.stats["phrases_dropped"] += 1
        harmoniser = self.harmoniser
        if self.follow and harmoniser is not None:   # the step is due now: stop guessing ahead, use what is done
            harmoniser.stop_guessing()

    def _follow_note(self, pitch: int, velocity: int, pos: float, t: float) -> None:
        before = self._soprano()
        step = self.capture.note_on(pitch, velocity, pos)
        self.follow_velocity = velocity
        if step < self.follow_next:
            if step == self.provisional:   # a late note for the step just sounded: sound it again with it
                self.provisional = None
                self._post_follow(step, self._soprano(), t, correction=True)
            return   # (an older step: the next one holds it)
        for s in range(self.follow_next, step):   # steps before it, as they were
            self._post_follow(s, before)
        self.follow_next = step + 1
        self.provisional = None
        self._post_follow(step, self._soprano(), t)

    def _follow_due(self, now: float, upto: int | None = None) -> None:
        """Steps with no new note. Follow: on the step's grid time, harmonise what is held (or
        a rest), so the voices move in time; a note that comes late for that step corrects it
        (`_follow_note`). Respond + continue: once the late window closes (or, with `upto`,
        every step before it now)."""
        while upto is None or self.follow_next < upto:
            due = self._due(self.follow_next)
            if upto is None and (due is None or now < due):
                return
            if self.follow:
                self._post_follow(self.follow_next, self._soprano(), provisional=True)
                self.provisional = self.follow_next
                self.capture.forget_before(self.follow_next - 64)
            else:
                sounding = self.capture.phrase(self.follow_next, self.follow_next + 1)
                self._post_follow(self.follow_next, max((n.pitch for n in sounding), default=None))
            self.follow_next += 1

    def _due(self, step: int) -> float | None:
        """When a step with no new note is harmonised (see `_follow_due`)."""
        late_window = self.time_of(step + self.settings.tolerance)
        if not self.follow:
            return late_window
        grid = self.time_of(step)
        return None if grid is None else min(grid + FOLLOW_GRACE_S, late_window)

    def lead_steps(self) -> float:
        """How far before a phrase boundary to cut: at least the early/late tolerance, and
        long enough for the answer's first step to be ready (recent generation times)."""
        t0, t1 = self.time_of(0), self.time_of(1)
        if t0 is None or t1 is None:
            return self.settings.tolerance
        return max(self.settings.tolerance, (self.local_need() + self.remote_need()) / (t1 - t0))

    def local_need(self) -> float:
        """Seconds to leave for generating a phrase here (margin: a busy machine is slower
        than the last phrase)."""
        recent = (self.local_ms if self.remote else self.phrase_ms)[-8:]
        if not recent:     # the first phrase (of a session, or after a switch): only a timing on a made-up one
            return (self.lead_ms * 2 + 10) / 1000
        return (max(recent) * 1.5 + 10) / 1000

    def remote_need(self) -> float:
        """Seconds to leave for a remote worker's answer before the local fallback's time."""
        if self.remote is None or self.model.info.kind == "continue":
            return 0.0
        # before the first answer: as long as a phrase takes here
        return (max(self.remote.recent_ms or [self.lead_ms]) * 1.5 + 5) / 1000

    def _maybe_cut(self, now: float) -> None:
        if self.follow:
            self._follow_due(now)
            pending = self.pending_listen        # (read once: the control thread may replace it)
            if pending is not None:              # out of follow at the next phrase boundary
                if self.switch_step is None:
                    self.switch_step = -(-self.follow_next // self.steps) * self.steps
                if self.follow_next >= self.switch_step:
                    self._switch_listening(pending, self.switch_step)
            return
        if self.context_steps:
            self._follow_due(now)
        cut_at = self.time_of((self.next_phrase + 1) * self.steps - self.lead_steps())
        if cut_at is None or now < cut_at:
            return
        k = self.next_phrase
        self.next_phrase += 1
        start = k * self.steps
        notes = self.capture.phrase(start, start + self.steps)
        self.capture.forget_before(start)
        if self.context_steps:
            self._follow_due(now, upto=start + self.steps)   # the phrase's last steps, as they stand
        pending = self.pending_listen
        into_follow = pending is not None and pending[1] == "follow"
        if not notes:
            if self.context_steps:
                self._post_follow(-1, None)                     # an empty phrase: start afresh
        elif not into_follow:     # (follow would harmonise the next phrase over this one's answer)
            try:
                self.jobs.put_nowait(Job(k, start, self.steps, notes, posted=now))
            except queue.Full:
                self.stats["phrases_dropped"] += 1
        if pending is not None:
            self._switch_listening(pending, start + self.steps)

    def _switch_listening(self, pending: tuple, step: int) -> None:
        """Capture thread: listen the new mode's way from `step` (a phrase boundary) on; the
        worker swaps the model when it comes to the SwitchJob, after the old mode's jobs."""
        model, mode, lead = pending
        if self.pending_listen is pending:
            self.pending_listen = None
        self.switch_step = None
        self.follow = mode == "follow"
        self.context_steps = mode == "respond" and model.info.kind == "continue"
        self.follow_next, self.next_phrase = step, step // self.steps
        while True:
            try:
                self.jobs.put(SwitchJob(model, mode, step, lead), timeout=0.05)
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
            try:
                job = self.jobs.get(timeout=0.25)
            except queue.Empty:
                if self.remote is not None:
                    self.remote.tick()     # is each worker (still, again) there?
                continue
            t = time.perf_counter()
            try:
                if isinstance(job, SwitchJob):
                    self._switch(job)
                    continue
                if isinstance(job, FollowJob):
                    self._harmonise(job)
                    if not job.silent and self.jobs.empty():   # guess the next step while nothing waits
                        self.harmoniser.speculate(interrupt=lambda: not self.jobs.empty())
                    continue
                count = self._play_phrase(job)
            except Exception:
                self.stats["worker_errors"] += 1
                log.exception("generation failed for %s; skipping it", job)
                continue
            # what the cut must leave time for, from the cut: the jobs before it in the queue (the
            # phrase's last steps, in respond + continue) and the answer's first step or all of it
            t = min(t, job.posted or t)
            self.phrase_ms.append(self.first_step_ms if self.model.info.kind == "continue"
                                  else (time.perf_counter() - t) * 1000)
            self.stats["phrases"] += 1
            self.telemetry({"event": "phrase", "phrase": job.phrase, "inference_ms": round(self.phrase_ms[-1], 2),
                            "late_dropped": self.scheduler.stats["late_dropped"], "tempo": round(self.clock.bpm, 2),
                            "mode": self.settings.mode, "notes": count, "source": self.source})
            self.stats["generated_notes"] += count
            ahead = (self.time_of(job.start + job.steps) or 0) - time.perf_counter()
            log.debug("phrase %d: %d notes in, %d out, %.1f ms, ready %.1f ms before its first step", job.phrase,
                      len(job.notes), count, self.phrase_ms[-1], ahead * 1000)

    def _switch(self, job: SwitchJob) -> None:
        """Worker: take up the model and mode of a listening switch at its boundary step."""
        if self.follow_stream is not None:      # follow's voices end where the new mode begins
            self.follow_stream.close(job.step)
            self.follow_stream = None
        self.pending = None
        self._adopt(job.model, job.mode, job.lead_ms)
        follow = job.mode == "follow"
        self.harmoniser = Harmoniser(job.model, self.sampling, self.rng, live=follow) \
            if follow or job.model.info.kind == "continue" else None
        if follow:
            self.harmoniser.speculate()

    def _play_phrase(self, job: Job) -> int:
        """Generate the answer to one phrase and schedule it one phrase later; returns notes played."""
        end = self.time_of(job.start + 2 * job.steps)
        if end is not None and end < time.perf_counter():     # its whole answer would be late
            self.stats["phrases_dropped"] += 1
            return 0
        if self.pending:
            self._adopt_pending()
        self.source = "local"
        velocity = int(np.clip(np.mean([n.velocity for n in job.notes]), 30, 127))
        offset = job.steps
        if self.model.info.kind == "continue":   # streamed: each step is scheduled as it is decoded
            stream = VoiceStream(self.scheduler, self.channels, velocity, self.muted)
            t = time.perf_counter()
            for s_off, pitches in self.harmoniser.answer(job.steps):
                stream.step(job.start + offset + s_off, pitches)
                if s_off == 0:
                    self.first_step_ms = (time.perf_counter() - min(t, job.posted or t)) * 1000
            stream.close(job.start + offset + job.steps)
            self.harmoniser = Harmoniser(self.model, self.sampling, self.rng)   # the next phrase starts afresh
            return stream.count
        count = 0
        for n in self.phrase_notes(job):
            if n.track in self.muted:
                continue
            self.scheduler.schedule_note(n.start + offset, n.end + offset, self.channels[n.track], n.pitch, velocity)
            count += 1
        return count

    def phrase_notes(self, job: Job) -> list[Note]:
        """The answer's notes: from a remote worker when one answers in time, else made here
        with the same seed."""
        seed = int(self.rng.integers(2 ** 63))
        seam = self.seam[1] if self.seam and self.seam[0] == job.phrase - 1 else None   # answers back to back
        boundary = self.time_of(job.start + job.steps)
        notes = None
        if self.remote is not None and boundary is not None:
            notes = self.remote.generate(self.model, self.settings, job.notes, job.start, job.steps, seed,
                                         deadline=boundary - self.local_need(), seam=seam)
            if notes is None:
                self.remote.stats["local_fallbacks"] += 1
        self.source = self.remote.last_worker if notes is not None else "local"
        if notes is None:
            t = time.perf_counter()
            notes = generate(self.model, self.settings, job.notes, job.start, job.steps, np.random.default_rng(seed),
                             seam)
            self.local_ms.append((time.perf_counter() - t) * 1000)
        if self.model.info.kind == "accompany":
            self.seam = (job.phrase, seam_after(job.notes, notes, job.start + job.steps, len(self.model.info.tracks)))
        return notes

    def _harmonise(self, job: FollowJob) -> None:
        if job.silent:   # it only builds the phrase's context
            if job.step < 0:
                self.harmoniser = Harmoniser(self.model, self.sampling, self.rng)
            else:
                self.harmoniser.step(job.soprano)
            return
        if job.correction:
            pitches = self.harmoniser.redo(job.soprano)
            if pitches is None:
                return
        else:
            pitches = self.harmoniser.step(job.soprano, urgent=job.heard_at is not None, undo=job.provisional)
        if self.follow_stream is None:
            self.follow_stream = VoiceStream(self.scheduler, self.channels, job.velocity, self.muted, immediate=True)
        self.follow_stream.velocity = job.velocity
        self.follow_stream.since = job.heard_at
        self.follow_stream.step(job.step, pitches)
        log.debug("follow step %d: soprano %s -> %s%s", job.step, job.soprano, pitches,
                  " (late note)" if job.correction else " (no new note)" if job.provisional else "")
        self.stats["generated_notes"] = self.follow_stream.count
