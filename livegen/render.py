"""`livegen render IN.mid OUT.mid`: the live engine on a virtual clock, as fast as the model runs.

The file is played into the same engine and modes as `livegen run` (`livegen.offline`), so
what it writes is what live plays for the same seed, every answer on time. The file's own
grid is used (ticks, not seconds), so tempo changes in the file do not move notes off the
grid. Phrase k's answer is placed in phrase k+1, as live.
"""
from __future__ import annotations

import logging
from pathlib import Path

from dataclasses import replace

from livegen.capture import Capture
from livegen.config import Settings
from livegen.errors import MidiFileError, ModelError
from livegen.models import Model
from livegen.offline import VirtualRun
from livegen.phrase import check_mode, phrase_steps

log = logging.getLogger(__name__)


def read_player(path: str | Path, steps_per_beat: int, tolerance: float):
    """Notes of a MIDI file on the grid, its ticks per beat, first tempo and the messages to copy."""
    import mido

    try:
        mid = mido.MidiFile(path)
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as err:
        raise MidiFileError(f"{path}: not a readable MIDI file ({err})") from err
    if mid.type == 2:
        raise MidiFileError(f"{path}: type 2 MIDI files (independent songs) are not supported")
    tpb = mid.ticks_per_beat
    ticks_per_step = tpb / steps_per_beat
    capture = Capture(tolerance)
    tempo, now, copied = None, 0, []
    for msg in mido.merge_tracks(mid.tracks):
        now += msg.time
        pos = now / ticks_per_step
        if msg.type == "set_tempo" and tempo is None:
            tempo = msg.tempo
        if msg.type == "note_on" and msg.velocity > 0:
            capture.note_on(msg.note, msg.velocity, pos)
        elif msg.type in ("note_off", "note_on"):
            capture.note_off(msg.note, pos)
        elif msg.type == "control_change" and msg.control == 64:
            capture.sustain(msg.value >= 64, pos)
        if msg.type in ("note_on", "note_off", "control_change", "program_change", "pitchwheel"):
            copied.append((now, msg))
    capture.release_all(now / ticks_per_step)
    if not capture.notes:
        raise MidiFileError(f"{path}: no notes to accompany")
    return capture, tpb, tempo, copied


def render(in_path: str, out_path: str, settings: Settings, model: Model, progress: bool = True) -> dict:
    """Play the file into the live engine on a virtual clock and write what it sends."""
    import mido

    info = model.info
    check_mode(settings, model)
    folder = Path(out_path).resolve().parent
    if not folder.is_dir():     # (before the work, not after it)
        raise MidiFileError(f"{out_path}: cannot write there: no folder {folder}")
    capture, tpb, tempo, copied = read_player(in_path, info.steps_per_beat, settings.tolerance)
    # the file's own grid at a steady tempo; nothing on the wire but the answer
    settings = replace(settings, clock="internal", thru=False, record="", send_clock=False, inference=[])
    run = VirtualRun(settings, model)
    step_s = 60.0 / (settings.bpm * info.steps_per_beat)
    ticks_per_step = tpb / info.steps_per_beat
    t0 = run.clock.t
    run.at(t0, [0xFA])      # a MIDI Start: bar 1 at the file's first tick, not at its first note
    for tick, msg in copied:
        if msg.type in ("note_on", "note_off") or (msg.type == "control_change" and msg.control == 64):
            run.at(t0 + tick / ticks_per_step * step_s, msg.bytes())
    last_step = max(n.end for n in capture.notes)
    steps = phrase_steps(settings, model)
    follow = settings.mode == "follow"
    # follow answers each step up to the file's end; a phrase answer plays in the phrase after
    end = last_step if follow else (-(-last_step // steps) + 1) * steps
    every = 16 if follow else steps
    for upto in range(every, end + every, every):
        run.run_until(t0 + min(upto, end) * step_s)
        if progress:
            print(f"\rrender: step {min(upto, end)}/{end}", end="", flush=True)
    if progress:
        print()
    run.engine.playing.close(end)        # follow's voices end with the file
    run.engine.scheduler.pump(run.clock.t)
    errors = run.engine.stats["worker_errors"]
    if errors:
        raise ModelError(f"{info.path}: generation failed {errors} times (see the log above)")
    tracks = run.engine.tracks
    names = {}                           # channel -> its unmuted tracks
    for k, ch in enumerate(run.engine.channels):
        if k not in run.engine.muted:
            names.setdefault(ch, []).append(tracks[k])
    generated = _notes(run.sent, t0, step_s, end)
    out = mido.MidiFile(ticks_per_beat=tpb)
    player = mido.MidiTrack([mido.MetaMessage("track_name", name="player"),
                             mido.MetaMessage("set_tempo", tempo=tempo or mido.bpm2tempo(settings.bpm))])
    player += _delta([(t, m.copy(time=0)) for t, m in copied])
    out.tracks.append(player)
    for ch, track_names in names.items():
        events = []
        for pitch, start, stop, velocity in generated.get(ch, []):
            events.append((int(start * ticks_per_step), mido.Message("note_on", channel=ch, note=pitch,
                                                                     velocity=velocity)))
            events.append((int(stop * ticks_per_step) - 1, mido.Message("note_off", channel=ch, note=pitch)))
        events.sort(key=lambda e: (e[0], e[1].type == "note_on"))
        out.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="+".join(track_names))]
                                         + _delta(events)))
    try:
        out.save(out_path)
    except OSError as err:
        raise MidiFileError(f"{out_path}: cannot write the MIDI file ({err.strerror})") from err
    return {"phrases": 0 if follow else -(-last_step // steps), "steps": last_step,
            "player_notes": len(capture.notes), "generated_notes": sum(len(v) for v in generated.values()),
            "tracks": {name: ch + 1 for ch, ns in names.items() for name in ns}}


def _notes(sent, t0: float, step_s: float, end: int) -> dict[int, list[tuple[int, int, int, int]]]:
    """(pitch, start step, end step, velocity) per channel of the note messages sent. Each is
    placed on its grid step: follow's voices sound a few ms after the player's note live."""
    sounding: dict[tuple[int, int], tuple[int, int]] = {}
    notes: dict[int, list] = {}
    for t, msg in sent:
        kind, ch = msg[0] & 0xF0, msg[0] & 0x0F
        if kind not in (0x80, 0x90):
            continue
        step = round((t - t0) / step_s)
        key = (ch, msg[1])
        if key in sounding:
            start, velocity = sounding.pop(key)
            if step > start:
                notes.setdefault(ch, []).append((msg[1], start, step, velocity))
        if kind == 0x90 and msg[2] > 0:
            sounding[key] = (step, msg[2])
    for (ch, pitch), (start, velocity) in sounding.items():   # (none: every voice is closed at the end)
        if end > start:
            notes.setdefault(ch, []).append((pitch, start, end, velocity))
    return notes


def _delta(events):
    out, last = [], 0
    for t, msg in sorted(events, key=lambda e: e[0]):
        out.append(msg.copy(time=t - last))
        last = t
    return out
