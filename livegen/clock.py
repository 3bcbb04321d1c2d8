"""Transport maths: where on the 16th grid a moment in time falls, and when a step will come.

`InternalClock` runs at a set tempo from an origin. `MidiClockFollower` follows 0xF8 clock
(24 per quarter note) with Start, Continue, Stop and Song Position Pointer. It fits a line
through the recent ticks (time against tick number), so jitter in single ticks does not
move the predicted step times: every output deadline comes from that fit.
"""
from __future__ import annotations

from collections import deque

TICKS_PER_BEAT = 24


class InternalClock:
    def __init__(self, bpm: float, steps_per_beat: int = 4):
        if not 20 <= bpm <= 400:
            raise ValueError(f"tempo {bpm} BPM is outside 20..400")
        self.steps_per_beat = steps_per_beat
        self.step_seconds = 60.0 / (bpm * steps_per_beat)
        self.origin: float | None = None

    @property
    def running(self) -> bool:
        return self.origin is not None

    @property
    def bpm(self) -> float:
        return 60.0 / (self.step_seconds * self.steps_per_beat)

    def start(self, t: float) -> None:
        self.origin = t

    def stop(self) -> None:
        self.origin = None

    def position(self, t: float) -> float | None:
        """Fractional step at time t (step 0 = the origin), or None before the clock runs."""
        return None if self.origin is None else (t - self.origin) / self.step_seconds

    def time_of(self, step: float) -> float | None:
        return None if self.origin is None else self.origin + step * self.step_seconds

    def set_tempo(self, bpm: float, now: float) -> None:
        """New tempo from `now` on, without a jump in position."""
        if not 20 <= bpm <= 400:
            raise ValueError(f"tempo {bpm} BPM is outside 20..400")
        pos = self.position(now)
        self.step_seconds = 60.0 / (bpm * self.steps_per_beat)
        if pos is not None:
            self.origin = now - pos * self.step_seconds


class MidiClockFollower:
    """Position and tempo from incoming MIDI clock.

    After Start the first tick is tick 0 (step 0); SPP sets the position in 16th notes
    (MIDI beats, 6 ticks each) for the next Continue; Stop halts.
    """

    def __init__(self, steps_per_beat: int = 4, window_ticks: int = 96, default_bpm: float = 120.0):
        self.ticks_per_step = TICKS_PER_BEAT / steps_per_beat
        self.window = window_ticks
        self.samples: deque[tuple[int, float]] = deque(maxlen=window_ticks)
        self.next_tick = 0
        self.running = False
        self.period = 60.0 / (default_bpm * TICKS_PER_BEAT)   # seconds per tick, last estimate
        self._fit: tuple[float, float] | None = None           # time = a + b * tick
        self._off_run, self._off_sign = 0, 1
        self.lost_ticks = 0
        self._maybe_lost = 0     # ticks counted lost at the last tick, until the next one confirms it
        self._last_t: float | None = None    # arrival of the last tick

    @property
    def bpm(self) -> float:
        return 60.0 / (self.period * TICKS_PER_BEAT)

    def start(self) -> None:
        self.song_position(0)
        self.cont()

    def cont(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False
        self.samples.clear()
        self._fit = None

    def song_position(self, sixteenths: int) -> None:
        self.next_tick = sixteenths * 6
        self.samples.clear()
        self._fit = None

    def tick(self, t: float) -> None:
        if not self.running:
            return
        gap = (t - self._last_t) / self.period if self.samples and self._last_t is not None else None
        self._last_t = t
        held_up, self._maybe_lost = self._maybe_lost, 0
        if gap is not None and gap < 0.5 and len(self.samples) >= 6:
            # ticks at once after a gap: the sender was held up and sends what it owed, so
            # the gap lost nothing; the late ticks are counted, kept out of the fit
            if held_up:     # the tick before was late, not after lost ones: out of the fit
                self.samples.pop()
                self.next_tick -= held_up
                self.lost_ticks -= held_up
                self._refit()
            self.next_tick += 1
            return
        if gap is not None and len(self.samples) >= 6 and 1.75 <= gap <= 4.5:
            # A gap of about two or three periods is a tick that went missing on the way
            # (a MIDI hop that dropped it): count it, or every later step would be a tick
            # late; unless the next tick comes at once (see above)
            self._maybe_lost = round(gap) - 1
            self.next_tick += self._maybe_lost
            self.lost_ticks += self._maybe_lost
        if self._fit is not None and len(self.samples) >= 12:
            a, b = self._fit
            off = t - (a + b * self.next_tick)
            # three ticks in a row off the line the same way is a tempo change, not jitter
            # or one late tick: follow it from the recent ticks only
            self._off_run = self._off_run + 1 if abs(off) > 0.5 * b and off * self._off_sign > 0 else \
                (1 if abs(off) > 0.5 * b else 0)
            self._off_sign = 1 if off > 0 else -1
            if self._off_run >= 3:
                recent = list(self.samples)[-2:]
                self.samples.clear()
                self.samples.extend(recent)
                self._off_run = 0
        self.samples.append((self.next_tick, t))
        self.next_tick += 1
        self._refit()

    def _refit(self) -> None:
        n = len(self.samples)
        if n == 1:
            tick, t = self.samples[0]
            self._fit = (t - tick * self.period, self.period)
            return
        ticks = [s[0] for s in self.samples]
        times = [s[1] for s in self.samples]
        mt, mx = sum(times) / n, sum(ticks) / n
        sxx = sum((x - mx) ** 2 for x in ticks)
        sxy = sum((x - mx) * (y - mt) for x, y in zip(ticks, times))
        slope = sxy / sxx
        if n < 6:   # too few ticks for a steady slope: lean on the last tempo
            slope = (slope * n + self.period * (6 - n)) / 6
        if slope > 0:
            self.period = slope
        self._fit = (mt - self.period * mx, self.period)

    def position(self, t: float) -> float | None:
        if not self.running or self._fit is None:
            return None
        a, b = self._fit
        return (t - a) / b / self.ticks_per_step

    def time_of(self, step: float) -> float | None:
        if not self.running or self._fit is None:
            return None
        a, b = self._fit
        return a + b * step * self.ticks_per_step
