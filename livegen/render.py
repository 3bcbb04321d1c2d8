"""`livegen render IN.mid OUT.mid`: the live pipeline offline, as fast as the model runs.

The file's own grid is used (ticks, not seconds), so tempo changes in the file do not move
notes off the grid. Phrase k's answer is placed in phrase k+1, as live.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from livegen.capture import Capture
from livegen.config import Settings
from livegen.generate.accompany import seam_after
from livegen.generate.continue_ import Harmoniser, SamplingSettings
from livegen.errors import MidiFileError
from livegen.models import Model
from livegen.phrase import (VoiceStream, answer_velocity, check_mode, generate, muted_tracks, output_tracks,
                            phrase_steps, track_channels)
from livegen.roll import Note

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
    import mido

    info = model.info
    check_mode(settings, model)
    folder = Path(out_path).resolve().parent
    if not folder.is_dir():     # (before the work, not after it)
        raise MidiFileError(f"{out_path}: cannot write there: no folder {folder}")
    capture, tpb, tempo, copied = read_player(in_path, info.steps_per_beat, settings.tolerance)
    steps = phrase_steps(settings, model)
    tracks = output_tracks(settings, model)
    channels = track_channels(settings, len(tracks))
    muted = muted_tracks(settings, tracks)
    rng = np.random.default_rng(settings.seed)
    last_step = max(n.end for n in capture.notes)
    phrases = -(-last_step // steps)
    generated: list[Note] = []
    if settings.mode == "follow":   # every step harmonised at once, under the player's note
        phrases = 0
        harmoniser = Harmoniser(model, SamplingSettings(settings.temperature, settings.top_p), rng)
        stream = VoiceStream(None, list(range(len(tracks))), 90)
        for step in range(last_step):
            sounding = [n.pitch for n in capture.notes if n.start <= step < n.end]
            stream.step(step, harmoniser.step(max(sounding) if sounding else None))
            if progress and (step % 16 == 15 or step == last_step - 1):
                print(f"\rrender: step {step + 1}/{last_step}", end="", flush=True)
        stream.close(last_step)
        generated = stream.notes
    seam = None      # accompany: each answer joins the one before without parallels
    for k in range(phrases):
        notes = capture.phrase(k * steps, (k + 1) * steps)
        if notes:
            answer = generate(model, settings, notes, k * steps, steps, rng, seam)
            seam = seam_after(notes, answer, (k + 1) * steps, len(info.tracks)) if info.kind == "accompany" else None
            velocity = answer_velocity(notes)
            generated += [Note(n.pitch, n.start + steps, n.end + steps, velocity, n.track) for n in answer]
        else:
            seam = None
        if progress:
            print(f"\rrender: phrase {k + 1}/{phrases}", end="", flush=True)
    if progress:
        print()
    ticks_per_step = tpb / info.steps_per_beat
    out = mido.MidiFile(ticks_per_beat=tpb)
    player = mido.MidiTrack([mido.MetaMessage("track_name", name="player"),
                             mido.MetaMessage("set_tempo", tempo=tempo or mido.bpm2tempo(settings.bpm))])
    player += _delta([(t, m.copy(time=0)) for t, m in copied])
    out.tracks.append(player)
    for k, name in enumerate(tracks):
        if k in muted:
            continue
        ch = channels[k]
        events = []
        for n in generated:
            if n.track == k:
                events.append((int(n.start * ticks_per_step), mido.Message("note_on", channel=ch, note=n.pitch,
                                                                          velocity=n.velocity)))
                events.append((int(n.end * ticks_per_step) - 1, mido.Message("note_off", channel=ch, note=n.pitch)))
        events.sort(key=lambda e: (e[0], e[1].type == "note_on"))
        out.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name=name)] + _delta(events)))
    try:
        out.save(out_path)
    except OSError as err:
        raise MidiFileError(f"{out_path}: cannot write the MIDI file ({err.strerror})") from err
    return {"phrases": phrases, "steps": last_step, "player_notes": len(capture.notes), "generated_notes": len(generated),
            "tracks": {name: channels[k] + 1 for k, name in enumerate(tracks) if k not in muted}}


def _delta(events):
    out, last = [], 0
    for t, msg in sorted(events, key=lambda e: e[0]):
        out.append(msg.copy(time=t - last))
        last = t
    return out
