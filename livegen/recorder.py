"""`--record FILE.mid`: everything played in and sent out, with times, written at the end."""
from __future__ import annotations

import threading


class Recorder:
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
