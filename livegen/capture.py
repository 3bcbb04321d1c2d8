"""What the player plays, as data: raw MIDI bytes parsed and checked, notes captured on the grid.

Pure logic (no ports, no threads): the engine feeds it timestamped bytes converted to
fractional step positions, and asks it for the notes of a phrase.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from livegen.roll import DEFAULT_TOLERANCE, Note, quantise, quantise_end

# length of each channel message by its high nibble
CHANNEL_LENGTHS = {0x80: 3, 0x90: 3, 0xA0: 3, 0xB0: 3, 0xC0: 2, 0xD0: 2, 0xE0: 3}
log = logging.getLogger("livegen.engine")

SYSTEM_LENGTHS = {0xF1: 2, 0xF2: 3, 0xF3: 2, 0xF6: 1, 0xF8: 1, 0xFA: 1, 0xFB: 1, 0xFC: 1, 0xFE: 1, 0xFF: 1}


@dataclass(frozen=True)
class Event:
    kind: str            # note_on, note_off, cc, clock, start, continue, stop, spp, other, sysex, bad
    channel: int = 0
    a: int = 0           # pitch, controller number or SPP value
    b: int = 0           # velocity or controller value


def split(data) -> list:
    """One message as rtmidi delivered it -> the MIDI messages in it.

    rtmidi joins a system-exclusive message that never ended (no F7) with everything that
    comes after it until an F7 does (on JACK it delivers nothing in between). By MIDI's
    rules any status byte but F7 ends a sysex, so the message is split there and the notes
    after a cut-off sysex are played, not lost; the cut-off part is malformed. A lone F7
    (what the JACK input guard sends, `livegen.ports.InputPoller`) ends nothing: it is dropped.
    """
    if not data or data[0] != 0xF0 or len(data) < 2:   # (every other message: no copy made)
        return [] if len(data) == 1 and data[0] == 0xF7 else [data]
    out, cur = [], [data[0]]
    for b in data[1:]:
        if b == 0xF7:
            if cur and cur[0] == 0xF0:
                out.append(cur + [b])
            elif cur:
                out.append(cur)
            cur = []
        elif isinstance(b, int) and b >= 0x80:
            if cur:
                out.append(cur)
            cur = [b]
        else:
            cur.append(b)
    if cur:
        out.append(cur)
    return out


def parse(data) -> Event:
    """One raw MIDI message -> Event; anything malformed is Event('bad') (never an exception)."""
    if not data:
        return Event("bad")
    status = data[0]
    if not isinstance(status, int) or not 0x80 <= status <= 0xFF:
        return Event("bad")
    if status == 0xF0:
        return Event("sysex") if data[-1] == 0xF7 else Event("bad")
    if status < 0xF0:
        kind, channel = status & 0xF0, status & 0x0F
        need = CHANNEL_LENGTHS[kind]
    else:
        kind, channel = status, 0
        need = SYSTEM_LENGTHS.get(status)
        if need is None:
            return Event("bad")
    if len(data) != need or any(not isinstance(x, int) or not 0 <= x <= 127 for x in data[1:]):
        return Event("bad")
    if kind == 0x90:
        return Event("note_on", channel, data[1], data[2]) if data[2] else Event("note_off", channel, data[1])
    if kind == 0x80:
        return Event("note_off", channel, data[1])
    if kind == 0xB0:
        return Event("cc", channel, data[1], data[2])
    if kind == 0xC0:
        return Event("program", channel, data[1])
    if kind == 0xF8:
        return Event("clock")
    if kind == 0xFA:
        return Event("start")
    if kind == 0xFB:
        return Event("continue")
    if kind == 0xFC:
        return Event("stop")
    if kind == 0xF2:
        return Event("spp", 0, data[1] | (data[2] << 7))
    return Event("other", channel)


class Capture:
    """The player's notes on the grid, with the sustain pedal holding released notes."""

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE, hold_limit: int = 0):
        """`hold_limit`: a key down for this many steps or more when another is struck is
        taken as stuck (its note-off was lost: a dropped message, garbage on the line) and
        ended there; 0: never."""
        self.tolerance = tolerance
        self.hold_limit = hold_limit
        self.stuck = 0                                   # keys ended so
        self.held: dict[int, tuple[int, int]] = {}       # pitch -> (start step, velocity), key down
        self.pedalled: dict[int, tuple[int, int]] = {}   # released while the pedal is down
        self.pedal = False
        self.notes: list[Note] = []                      # finished notes

    def note_on(self, pitch: int, velocity: int, position: float) -> int:
        """Returns the grid step the note starts on."""
        step = quantise(position, self.tolerance)
        for table in (self.held, self.pedalled):   # the same key again ends the earlier note
            if pitch in table:
                self._finish(pitch, table.pop(pitch), position)
        if self.hold_limit:
            for other, start in list(self.held.items()):
                if step - start[0] >= self.hold_limit:
                    self._finish(other, self.held.pop(other), position)
                    self.stuck += 1
                    log.warning("key %d down for %d steps while others are played: taken as stuck (its "
                                "note-off was lost) and ended", other, step - start[0])
        self.held[pitch] = (step, velocity)
        return step

    def note_off(self, pitch: int, position: float) -> None:
        if pitch not in self.held:
            return
        start = self.held.pop(pitch)
        if self.pedal:
            self.pedalled[pitch] = start
        else:
            self._finish(pitch, start, position)

    def sustain(self, down: bool, position: float) -> None:
        self.pedal = down
        if not down:
            for pitch, start in list(self.pedalled.items()):
                self._finish(pitch, start, position)
            self.pedalled.clear()

    def release_all(self, position: float) -> None:
        for table in (self.held, self.pedalled):
            for pitch, start in list(table.items()):
                self._finish(pitch, start, position)
            table.clear()

    def _finish(self, pitch: int, start: tuple[int, int], position: float) -> None:
        step, velocity = start
        self.notes.append(Note(pitch, step, quantise_end(step, position), velocity))

    def phrase(self, start: int, end: int) -> list[Note]:
        """Notes sounding in [start, end): finished ones, and held ones as if held to the end."""
        out = []
        for n in self.notes:
            if n.start < end and n.end > start:
                out.append(Note(n.pitch, max(n.start, start), min(n.end, end), n.velocity))
        for table in (self.held, self.pedalled):
            for pitch, (step, velocity) in table.items():
                if step < end:
                    out.append(Note(pitch, max(step, start), end, velocity))
        out.sort(key=lambda n: (n.start, n.pitch))
        return out

    def forget_before(self, step: int) -> None:
        self.notes = [n for n in self.notes if n.end > step]
