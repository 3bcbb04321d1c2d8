"""What each message from the player does, on the capture thread: transport messages move
the grid (Start, Stop, Continue, SPP), notes and the sustain pedal go to the current way of
listening and the capture, other controllers to the live controls; thru and `--record` see
the notes first."""
from __future__ import annotations

from livegen.capture import Event

TRANSPORT = ("clock", "start", "continue", "stop", "spp")


class Dispatch:
    def __init__(self, engine):
        self.engine = engine

    def handle(self, ev: Event, t: float, raw) -> None:
        e = self.engine
        e.stats["received"] += 1
        kind = ev.kind
        if kind in ("bad", "sysex"):
            e.stats["malformed" if kind == "bad" else "sysex"] += 1
            return
        if kind in TRANSPORT:
            self._transport(kind, ev.a, t)
            return
        if kind == "program" and e.settings.presets:
            e.controls.program_change(ev.a)
            return
        if kind not in ("note_on", "note_off", "cc"):
            e.stats["ignored"] += 1
            return
        if kind == "note_on":
            e.transport.note_played(t)
        pos = e.transport.position(t)
        e.watch_note(t, "player", raw)
        if e.settings.thru and kind in ("note_on", "note_off"):
            e.thru_channels.add(ev.channel)
            e.scheduler.send_now(list(raw))   # recorded when sent
        elif e.recorder:
            e.recorder.add(t, list(raw))
        if kind == "cc" and ev.a != 64:
            e.controls.cc(ev.a, ev.b)
            return
        if pos is None:
            return   # MIDI clock stopped: nothing to place on the grid
        capture = e.stage.capture
        if kind == "note_on":
            e.listening.note_on(ev.a, ev.b, pos, t)
        elif kind == "note_off":
            capture.note_off(ev.a, pos)
        else:
            capture.sustain(ev.b >= 64, pos)

    def _transport(self, kind: str, value: int, t: float) -> None:
        e = self.engine
        action = e.transport.message(kind, value, t)
        if action is None:
            return
        what, step = action
        if what == "ignored":
            e.stats["ignored"] += 1
        elif what == "stop":
            e.stage.capture.release_all(step)
            e.silence()
        else:   # relocate: forget old notes and schedules, count phrases from here
            e.silence()
            e.stage.capture = e.new_capture()
            e.listening.relocate(step)
