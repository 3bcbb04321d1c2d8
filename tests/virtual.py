"""The live engine in the test process on a virtual clock (`livegen.offline.VirtualRun`),
with what a player does and what a listener checks: exact pitches, channels and steps.
"""
from __future__ import annotations

from livegen.config import Settings
from livegen.models import Model
from livegen.offline import VirtualRun
from livegen.scheduler import ECHO_S

NOTE_ON, NOTE_OFF, CONTROL = 0x90, 0x80, 0xB0
# (pitch, start step, end step): two bars that end on a cadence, played by the tests in phrase 0
MELODY = [(72, 0, 4), (74, 4, 6), (76, 8, 12), (77, 12, 14), (79, 16, 24), (77, 24, 28), (76, 28, 31)]
SHIFTS = (3, 12, 24)            # the shift model: alto, tenor, bass this far under the melody


class Rig(VirtualRun):
    def __init__(self, model: Model | str, **settings):
        model = model if isinstance(model, Model) else Model(model, "cpu")
        super().__init__(Settings(model=model.info.path, **settings).check(), model)
        self.modes: list[tuple[float, str, str]] = [(self.clock.t, self.settings.mode, self.model.info.kind)]

    def worked(self) -> None:
        mode = (self.clock.t, self.engine.settings.mode, self.engine.model.info.kind)
        if mode[1:] != self.modes[-1][1:]:
            self.modes.append(mode)

    # ---------------------------------------------------------------- what the player does

    @property
    def t0(self) -> float:
        return self.clock.t

    def play(self, notes, t0: float, step_s: float, channel: int = 0, velocity: int = 100,
             off_early_s: float = 0.01) -> None:
        """(pitch, start step, end step) notes, each ended `off_early_s` before its end step."""
        for pitch, start, end in notes:
            self.at(t0 + start * step_s, [NOTE_ON | channel, pitch, velocity])
            self.at(t0 + end * step_s - off_early_s, [NOTE_OFF | channel, pitch, 0])

    def stop(self) -> None:
        """What `livegen run` does at Ctrl-C: stop the engine, every note ended."""
        self.engine.stop()
        self.engine.scheduler.pump(self.clock.t)

    # ---------------------------------------------------------------- what came out

    def note_ons(self, channels=None) -> list[tuple[float, int, int, int]]:
        """(time, channel, pitch, velocity) of every note-on sent."""
        return [(t, m[0] & 0x0F, m[1], m[2]) for t, m in self.sent
                if m[0] & 0xF0 == NOTE_ON and m[2] > 0 and (channels is None or m[0] & 0x0F in channels)]

    def notes(self, step_s: float, t0: float, channels=None) -> list[tuple[int, int, float]]:
        """(channel, pitch, step) of every note-on, the step as a float from t0."""
        return sorted((ch, p, round((t - t0) / step_s, 6)) for t, ch, p, _ in self.note_ons(channels))

    def sounding(self) -> set[tuple[int, int]]:
        """(channel, pitch) of the notes left on at the end (a note-on with no note-off after it)."""
        on: set[tuple[int, int]] = set()
        for _, m in self.sent:
            kind, key = m[0] & 0xF0, (m[0] & 0x0F, m[1] if len(m) > 1 else 0)
            if kind == NOTE_ON and m[2] > 0:
                on.add(key)
            elif kind == NOTE_OFF or kind == NOTE_ON:
                on.discard(key)
        return on

    def unmatched_offs(self) -> int:
        """Note-offs sent for notes that were not sounding (a dropped note's off, say); a
        panic's note-off sent once more ECHO_S later (by design) is not one."""
        on, ended, count = set(), {}, 0
        for t, m in self.sent:
            key = (m[0] & 0x0F, m[1] if len(m) > 1 else 0)
            if m[0] & 0xF0 == NOTE_ON and m[2] > 0:
                on.add(key)
            elif m[0] & 0xF0 == NOTE_OFF:
                count += key not in on and not t - ended.get(key, -1.0) <= ECHO_S + 0.005
                on.discard(key)
                ended[key] = t
        return count
