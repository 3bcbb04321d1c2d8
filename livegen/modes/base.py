"""What every way of listening shares: the stage it plays on, the jobs it queues, and the
interface the engine drives it through (see livegen/modes/__init__.py)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from livegen.capture import Capture
from livegen.config import Settings
from livegen.errors import ConfigError
from livegen.generate.continue_ import SamplingSettings
from livegen.key import into_scale, scale
from livegen.models import Model
from livegen.phrase import muted_tracks, output_tracks, track_channels
from livegen.roll import Note

log = logging.getLogger("livegen.engine")


@dataclass
class Stage:
    """What the engine lends the current mode. `capture` is replaced after a Start or SPP and
    `rng` by `set seed`, so modes read them from here each time."""
    settings: Settings
    scheduler: object
    transport: object
    capture: Capture
    rng: np.random.Generator
    sampling: SamplingSettings
    stats: dict
    post: Callable[[object], None]          # queue a job for the worker (dropped and counted when full)
    busy: Callable[[], bool]                # a job is waiting for the worker
    now: Callable[[], float]
    remote: object = None                   # livegen.remote.RemoteInference, or None
    telemetry: Callable[[dict], None] = lambda event: None

    played_key: Callable[[], str | None] = lambda: None     # the key of what was played lately

    def time_of(self, step: float) -> float | None:
        return self.transport.time_of(step)

    def in_key(self, pitch: int) -> int:
        """`scale_lock`: the pitch moved into the key (the one set, else the played one)."""
        if not self.settings.scale_lock:
            return pitch
        key = self.settings.key or self.played_key()
        return into_scale(pitch, scale(key)) if key else pitch


@dataclass
class Job:
    """A phrase to answer."""
    phrase: int
    start: int
    steps: int
    notes: list[Note]
    posted: float = 0.0     # when the phrase was cut: its answer's time counts from here, queue included


@dataclass
class StepJob:
    """One grid step to harmonise (follow), or to add to the answer's context (respond + continue)."""
    step: int
    soprano: int | None     # the player's top sounding pitch at that step, or None
    velocity: int
    heard_at: float | None = None   # arrival of the player's note that asked for it (None: a held step)
    silent: bool = False    # respond + continue: the step only builds the answer's context
    provisional: bool = False   # follow: a step with no new note, sounded on its grid time; a
                                # late note for it may still come and correct it
    correction: bool = False    # follow: that late note: harmonise the step again with it
    held: tuple = ()        # the player's other pitches sounding at that step (both hands)


@dataclass
class SwitchJob:
    """Another way of listening from `step` (a phrase boundary) on, queued behind the jobs of
    the old one so that the worker takes it up in order."""
    mode: "Mode"
    step: int


class Mode:
    """One way of listening. The capture thread calls `begin`, `note_on`, `wake_at`, `tick`
    and `relocate`; the worker calls `start_playing`, `run`, `adopt` and `close`."""

    sounds_while_played = False   # it plays over the phrase it starts in (the old mode's answer would clash)
    on_start = None               # called when it takes over from the mode before (a preset's settings)

    def __init__(self, stage: Stage, model: Model, name: str, steps: int, lead_ms: float = 0.0,
                 strict_mute: bool = True):
        self.stage, self.model, self.name, self.steps, self.lead_ms = stage, model, name, steps, lead_ms
        self._take_tracks(strict_mute)

    def _take_tracks(self, strict_mute: bool) -> None:
        settings = self.stage.settings
        self.tracks = output_tracks(replace(settings, mode=self.name), self.model)
        self.channels = track_channels(settings, len(self.tracks))
        self.clear_mute = False
        try:
            self.muted = muted_tracks(settings, self.tracks)
        except ConfigError:
            if strict_mute:
                raise
            self.muted, self.clear_mute = set(), True   # the new model has other tracks: play them all

    def calibrate(self) -> float:
        """Milliseconds one answer takes, timed on a made-up phrase, so that the first real
        phrase is cut early enough."""
        return 0.0

    # ---------------------------------------------------------------- capture thread

    def begin(self, step: int) -> None:
        """Listen from `step` (a phrase boundary) on."""

    def note_on(self, pitch: int, velocity: int, pos: float, t: float) -> None:
        self.stage.capture.note_on(pitch, velocity, pos)

    def wake_at(self) -> float | None:
        """When `tick` has work next (None: when a message comes)."""
        return None

    def tick(self, now: float, next_mode: "Mode | None") -> int | None:
        """Queue what is due by `now`; returns the phrase boundary just reached, where the
        engine may hand over to `next_mode` (a switch asked for), or None."""
        return None

    def relocate(self, step: float) -> None:
        """After a Start or SPP: count phrases from `step`."""

    # ---------------------------------------------------------------- worker thread

    def start_playing(self, rng: np.random.Generator) -> None:
        """Taken up by the worker (at start or at a switch's boundary)."""
        if self.clear_mute:
            self.stage.settings.mute = []
        self.stage.settings.mode = self.name

    def run(self, job) -> None:
        """Do one job this mode queued."""
        raise TypeError(f"{type(self).__name__} queues no {type(job).__name__}")

    def adopt(self, mode: "Mode") -> bool:
        """A switch to `mode` asked for: True when this mode takes it over itself from its next
        phrase (it listens the same way), False when the engine is to switch at a boundary."""
        return False

    def set_muted(self, muted: set[int]) -> None:
        self.muted = muted

    def close(self, step: int) -> None:
        """The next mode starts at `step`: end what this one sounds from there."""

    def last_ms(self) -> float | None:
        return None

    def log_stats(self) -> None:
        """At the end of a session."""
