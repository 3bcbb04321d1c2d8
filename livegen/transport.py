"""Which clock places the music on the grid, and what Start, Stop, Continue and SPP do to it.

`internal`: a tempo; bar 1 starts at the first note played (or a MIDI Start). `midi`: follow
0xF8 clock with Start/Continue/Stop/SPP (`livegen.clock.MidiClockFollower`). With
`send_clock`, livegen is the clock master: Start and 24 clocks per quarter from bar 1, Stop
at the end.
"""
from __future__ import annotations

from livegen.clock import TICKS_PER_BEAT, InternalClock, MidiClockFollower
from livegen.errors import ConfigError


class Transport:
    def __init__(self, clock: str, bpm: float, steps_per_beat: int, send_clock: bool = False):
        self.steps_per_beat = steps_per_beat
        self.internal = InternalClock(bpm, steps_per_beat)
        self.follower = MidiClockFollower(steps_per_beat, default_bpm=bpm) if clock == "midi" else None
        self.send_clock = send_clock
        self.scheduler = None      # set by the engine: clock output goes through it

    @property
    def clock(self):
        return self.follower if self.follower else self.internal

    @property
    def bpm(self) -> float:
        return self.clock.bpm

    @property
    def running(self) -> bool:
        return self.clock.running

    def time_of(self, step: float) -> float | None:
        return self.clock.time_of(step)

    def position(self, t: float) -> float | None:
        return self.clock.position(t)

    def note_played(self, t: float) -> None:
        """Bar 1 starts at the first note played (internal clock)."""
        if self.follower is None and not self.internal.running:
            self._start_internal(t)

    def _start_internal(self, t: float) -> None:
        self.internal.start(t)
        if self.send_clock:   # a DAW following our clock starts with bar 1
            self.scheduler.send_now([0xFA])
            self.scheduler.start_clock_output(0.0, TICKS_PER_BEAT / self.steps_per_beat)

    def message(self, kind: str, value: int, t: float) -> tuple[str, float] | None:
        """A clock, start, continue, stop or spp message. Returns what the music must do:
        ("relocate", step) after Start or SPP, ("stop", step) after Stop, ("ignored", 0)
        for transport messages the internal clock does not follow, or None."""
        f = self.follower
        if f is None:
            if kind == "start" and not self.internal.running:
                self._start_internal(t)
                return None
            return ("ignored", 0.0)
        if kind == "clock":
            f.tick(t)
        elif kind == "start":
            f.start()
            return ("relocate", 0.0)
        elif kind == "continue":
            f.cont()
        elif kind == "stop":
            f.stop()
            return ("stop", f.next_tick / f.ticks_per_step)
        elif kind == "spp":
            f.song_position(value)
            return ("relocate", value * 6 / f.ticks_per_step)
        return None

    def set_bpm(self, bpm: float, now: float) -> None:
        if self.follower is not None:
            raise ConfigError("bpm follows the MIDI clock here (--clock midi)")
        if self.internal.running:
            self.internal.set_tempo(bpm, now)
        else:
            self.internal = InternalClock(bpm, self.steps_per_beat)

    def stop(self) -> None:
        """At the end of a session: tell a DAW following our clock."""
        if self.send_clock:
            self.scheduler.send_now([0xFC])
