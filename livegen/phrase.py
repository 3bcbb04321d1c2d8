"""What to generate for a phrase, on which channels, and how voices become notes.

Pure helpers, no threads or ports: the live modes (`livegen.modes`), `livegen render` and the
remote worker (`livegen.remote`) all import them, so they all make the same notes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from livegen.config import MODE_KINDS, Settings
from livegen.errors import ConfigError
from livegen.generate.accompany import accompany
from livegen.generate.continue_ import Harmoniser, SamplingSettings
from livegen.generate.edit import EditSettings, edit_phrase
from livegen.models import Model, resolve
from livegen.roll import Note, tune_and_others


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
    kinds = MODE_KINDS.get(settings.mode)
    if kinds is None:
        raise ConfigError(f"mode {settings.mode!r}: this version plays {', '.join(MODE_KINDS)}")
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
    lower = [n.lower() for n in names]
    for m in settings.mute:
        m = str(m).strip().lower()
        if m.isdigit() and 1 <= int(m) <= len(names):
            out.add(int(m) - 1)
        elif m in lower:
            out.add(lower.index(m))
        else:
            raise ConfigError(f"mute {m!r}: no such track; tracks are {', '.join(names)}")
    return out


def answer_velocity(notes: list[Note]) -> int:
    """The answer to a phrase plays at the phrase's mean velocity (never below 30: still heard)."""
    return int(np.clip(np.mean([n.velocity for n in notes]), 30, 127))


def edit_settings(settings: Settings) -> EditSettings:
    keep = settings.keep_player if settings.keep_player is not None else settings.mode == "loop"
    return EditSettings(temperature=settings.edit_temperature, passes=settings.edit_passes,
                        edits_per_pass=settings.edits_per_pass, max_remove_share=settings.max_remove,
                        max_add=settings.max_add, keep_player=keep)


def generate(model: Model, settings: Settings, notes: list[Note], start: int, steps: int,
             rng: np.random.Generator, seam: list[int] | None = None) -> list[Note]:
    """The generated notes for one phrase, in the same step coordinates as the phrase.
    `seam`: accompany's voices on the step before (accompany.seam_after), when the previous
    phrase's answer leads into this one's."""
    if model.info.kind == "accompany":
        return accompany(model, notes, start, steps, rng, settings.threshold, seam)
    if model.info.kind == "edit":
        return edit_phrase(model, notes, start, steps, rng, edit_settings(settings))
    # continue: harmonise the phrase, then answer it (live does the same step by step as it is played)
    sampling = SamplingSettings(settings.temperature, settings.top_p, key=settings.key or None)
    harmoniser = Harmoniser(model, sampling, rng)
    for step in range(start, start + steps):
        tune, others = tune_and_others(n.pitch for n in notes if n.start <= step < n.end)
        harmoniser.step(tune, held=others)
    stream = VoiceStream(None, [0, 1, 2, 3], 100)
    for s_off, pitches in harmoniser.answer(steps):
        stream.step(start + s_off, pitches)
    stream.close(start + steps)
    return stream.notes


class VoiceStream:
    """Turns one pitch per voice per step into notes: the same pitch again is held.

    With a scheduler, notes are scheduled as the steps come (note-on now, note-off when the
    voice moves); without one, they are collected in `notes`. The last steps scheduled may
    be taken back (`take_back`) and scheduled again.
    """

    KEEP = 4     # steps that may be taken back

    def __init__(self, scheduler, channels: list[int], velocity: int, muted: set[int] = frozenset(),
                 immediate: bool = False):
        self.scheduler, self.channels, self.velocity = scheduler, channels, velocity
        self.muted, self.immediate = muted, immediate
        self.current: list[tuple[int, int, int] | None] = [None] * len(channels)   # (pitch, id, start)
        self.notes: list[Note] = []
        self.count = 0
        self.since: float | None = None    # follow mode: arrival of the player's note being answered
        self.lock = lambda pitch: pitch    # --scale-lock: into the key (`Stage.in_key`)
        self.done: dict[int, tuple] = {}   # step -> (current before it, {voice: note started}, {voice: note ended})

    def step(self, step: int, pitches: list[int], voices=None, at_once: bool = False) -> None:
        """Voices (`voices`: only those) at `step`; `at_once`: its time has passed (a step
        taken back and done again): its note-ons go now."""
        before, ons, offs = self.done.get(step) or (list(self.current), {}, {})
        for v, pitch in enumerate(pitches):
            pitch = self.lock(pitch) if pitch >= 0 else pitch
            if v in self.muted or v >= len(self.channels) or (voices is not None and v not in voices):
                continue
            cur = before[v] = self.current[v]
            if cur is not None and cur[0] == pitch:
                continue
            if cur is not None:
                self._off(v, cur, step)
                offs[v] = cur
            self.current[v] = None
            if pitch >= 0:
                note_id = None
                if self.scheduler is not None:
                    ch = self.channels[v]
                    if self.immediate or at_once:
                        note_id = self.scheduler.note_now(ch, pitch, self.velocity, self.since)
                    else:
                        note_id = self.scheduler.schedule_on(step, ch, pitch, self.velocity)
                self.current[v] = (pitch, note_id, step)
                ons[v] = self.current[v]
                self.count += 1
        if self.scheduler is not None and not self.immediate:
            self.done[step] = (before, ons, offs)
            self.done.pop(step - self.KEEP, None)

    def take_back(self, step: int, voices) -> bool:
        """Undo what `voices` did from `step` on (a note-on not sent yet is dropped, one sent
        is ended now; a note-off not sent yet is dropped, so the note sounds on). False, and
        nothing done, when `step` is too far back."""
        if step not in self.done:
            return False
        for k in sorted((k for k in self.done if k >= step), reverse=True):
            before, ons, offs = self.done[k]
            for v in voices:
                if v in ons:
                    pitch, note_id, _ = ons.pop(v)
                    self.scheduler.take_back(note_id, self.channels[v], pitch)
                    self.count -= 1
                self.current[v] = before[v]
                if v in offs:
                    pitch, note_id, _ = offs.pop(v)
                    if not self.scheduler.take_back(note_id, self.channels[v], pitch, off_only=True):
                        self.current[v] = None     # it has ended
        return True

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
        self.done = {}
