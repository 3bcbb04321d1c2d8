"""Phrase answers: cut what is played into phrases; the answer to phrase k plays in phrase k+1.

`PhraseCut` is the cutting, shared by `PhraseAnswers` (loop, and respond with an edit model:
the whole answer is generated at the cut, here or by a remote worker) and by
`livegen.modes.answer.ContinueAnswers` (respond with a continue model).

A phrase is cut early enough for its answer to be ready on the next phrase's first step: at
least the early/late tolerance before the boundary (a note played later belongs to the next
phrase anyway), more when recent answers took longer.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from livegen.generate.accompany import plays_bass, seam_after, semitone_from
from livegen.modes.base import Job, Mode, log
from livegen.phrase import answer_velocity, generate
from livegen.roll import Note


class PhraseCut(Mode):
    source = "local"      # where the last answer was made: local or a worker's address

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.next_phrase = 0
        self.phrase_ms: list[float] = []     # how long each phrase's answer took, remote or local
        self.local_ms: list[float] = []      # generation here: the fallback must always fit

    def begin(self, step: int) -> None:
        self.next_phrase = step // self.steps

    def relocate(self, step: float) -> None:
        self.next_phrase = int(step // self.steps)

    def cut_time(self) -> float | None:
        return self.stage.time_of((self.next_phrase + 1) * self.steps - self.lead_steps())

    def wake_at(self) -> float | None:
        return self.cut_time()

    def tick(self, now: float, next_mode: Mode | None) -> int | None:
        cut_at = self.cut_time()
        if cut_at is None or now < cut_at:
            return None
        k = self.next_phrase
        self.next_phrase += 1
        start = k * self.steps
        capture = self.stage.capture
        notes = capture.phrase(start, start + self.steps)
        capture.forget_before(start)
        self.cut(k, start, notes, now, next_mode is not None and next_mode.sounds_while_played)
        return start + self.steps

    def cut(self, phrase: int, start: int, notes: list[Note], now: float, overplayed: bool) -> None:
        """Queue the phrase's answer; not when the next mode plays over where it would sound."""
        if notes and not overplayed:
            self.stage.post(Job(phrase, start, self.steps, notes, posted=now))

    def lead_steps(self) -> float:
        """How far before a phrase boundary to cut: at least the early/late tolerance, and
        long enough for the answer's first step to be ready (recent generation times)."""
        t0, t1 = self.stage.time_of(0), self.stage.time_of(1)
        tolerance = self.stage.settings.tolerance
        if t0 is None or t1 is None:
            return tolerance
        return max(tolerance, (self.local_need() + self.remote_need()) / (t1 - t0))

    def local_need(self) -> float:
        """Seconds to leave for generating a phrase here (margin: a busy machine is slower
        than the last phrase)."""
        recent = (self.local_ms if self.stage.remote else self.phrase_ms)[-8:]
        if not recent:     # the first phrase (of a session, or after a switch): only a timing on a made-up one
            return (self.lead_ms * 2 + 10) / 1000
        return (max(recent) * 1.5 + 10) / 1000

    def remote_need(self) -> float:
        return 0.0

    def run(self, job) -> None:
        if not isinstance(job, Job):
            return super().run(job)
        t = self.stage.now()
        count = self.answer(job)
        self.done(job, t, count)

    def answer(self, job: Job) -> int:
        """Generate and schedule the answer to a phrase; returns the notes played."""
        raise TypeError(f"{type(self).__name__} does not answer phrases")

    def too_late(self, job: Job) -> bool:
        end = self.stage.time_of(job.start + 2 * job.steps)
        if end is not None and end < self.stage.now():     # its whole answer would be late
            self.stage.stats["phrases_dropped"] += 1
            return True
        return False

    def answer_ms(self, started: float) -> float:
        return (self.stage.now() - started) * 1000

    def done(self, job: Job, t: float, count: int) -> None:
        # what the cut must leave time for, from the cut: the jobs before it in the queue and the answer
        stage = self.stage
        self.phrase_ms.append(self.answer_ms(min(t, job.posted or t)))
        stage.stats["phrases"] += 1
        stage.telemetry({"event": "phrase", "phrase": job.phrase, "inference_ms": round(self.phrase_ms[-1], 2),
                         "late_dropped": stage.scheduler.stats["late_dropped"],
                         "tempo": round(stage.transport.bpm, 2), "mode": self.name, "notes": count,
                         "source": self.source})
        stage.stats["generated_notes"] += count
        ahead = (stage.time_of(job.start + job.steps) or 0) - stage.now()
        log.debug("phrase %d: %d notes in, %d out, %.1f ms, ready %.1f ms before its first step", job.phrase,
                  len(job.notes), count, self.phrase_ms[-1], ahead * 1000)

    def last_ms(self) -> float | None:
        return round(self.phrase_ms[-1], 2) if self.phrase_ms else None

    def start_playing(self, rng: np.random.Generator) -> None:
        super().start_playing(rng)
        if self.stage.remote is not None:
            self.stage.remote.recent_ms = []   # the cut lead is measured again


FIT_AFTER_S = 0.004   # the answer's notes starting on a step are looked at against the keys held this long after
                      # it (before, a key about to be let go would still count: a legato player lets go on the beat)


class PhraseAnswers(PhraseCut):
    """loop (accompany, edit) and respond (edit): each phrase answered whole at its cut.

    The answer is made from the phrase before; a key struck as it plays that a note of the
    answer sounding on that step does not fit (a semitone from a key held, or under the
    player's bass line) ends that note at once, or before it sounds; and a note of the answer
    that starts on a step the keys held then do not fit ends FIT_AFTER_S after it began."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending: Mode | None = None    # a model or mode switch for the next phrase
        self.seam: tuple[int, list[int]] | None = None   # (phrase, accompany's last step): see seam_after
        self.scheduled: list[tuple] = []    # the last two answers' notes: (id, channel, pitch, start, end); the
                                            # worker puts a new list here, the capture thread reads it
        self.taken: set[int] = set()        # capture thread: ids of the notes taken back
        self.fit_step = 0                   # capture thread: the next step whose starting notes are looked at

    def begin(self, step: int) -> None:
        super().begin(step)
        self.fit_step = step

    def relocate(self, step: float) -> None:
        super().relocate(step)
        self.fit_step = int(step)

    def note_on(self, pitch: int, velocity: int, pos: float, t: float) -> None:
        capture = self.stage.capture
        step = capture.note_on(pitch, velocity, pos)
        # (the keys down now: a few, however many notes a flood has left in the capture)
        self._fit(step, set(capture.held) | set(capture.pedalled), lambda start: start <= step)

    def wake_at(self) -> float | None:
        due = [x for x in (self.cut_time(), self._fit_time()) if x is not None]
        return min(due) if due else None

    def _fit_time(self) -> float | None:
        t = self.stage.time_of(self.fit_step)
        return None if t is None else t + FIT_AFTER_S

    def tick(self, now: float, next_mode: Mode | None) -> int | None:
        capture = self.stage.capture
        while (due := self._fit_time()) is not None and now >= due:
            if now - due > 0.05:     # (steps long past, after a pause of the clock: from the step now)
                self.fit_step = max(self.fit_step + 1, int(self.stage.transport.position(now - FIT_AFTER_S) or 0))
                continue
            self._fit(self.fit_step, set(capture.held) | set(capture.pedalled), lambda start: start == self.fit_step)
            self.fit_step += 1
        return super().tick(now, next_mode)

    def _fit(self, step: int, held: set[int], starts) -> None:
        """Capture thread: the answer's notes sounding on `step` (those whose start passes
        `starts`) that do not fit what the player holds on it are taken back."""
        if not held:
            return
        notes = [n for answer in self.scheduled for n in answer
                 if starts(n[3]) and step < n[4] and n[0] not in self.taken]
        if not notes:
            return
        held = sorted(held)
        bass = held[0] if plays_bass(held) else None
        for note_id, ch, p, start, end in notes:
            if semitone_from(p, held) or (bass is not None and p < bass):
                self.stage.scheduler.take_back(note_id, ch, p)
                self.taken.add(note_id)
                self.stage.stats["answer_notes_taken_back"] += 1
        if len(self.taken) > 4096:
            self.taken = {i for answer in self.scheduled for i, *_ in answer} & self.taken

    def calibrate(self) -> float:
        tune = [Note(60 + p, 2 * i, 2 * i + 2) for i, p in enumerate((0, 2, 4, 5, 7, 9, 11, 12) * 2)]
        now = self.stage.now
        t = now()
        generate(self.model, replace(self.stage.settings, mode=self.name), tune, 0, self.steps,
                 np.random.default_rng(0))
        return (now() - t) * 1000

    def adopt(self, mode: Mode) -> bool:
        if type(mode) is not PhraseAnswers:
            self.pending = None
            return False
        self.pending = mode
        return True

    def _take_pending(self) -> None:
        """Between phrases: the model and mode of a switch to another phrase answer."""
        new, self.pending = self.pending, None
        self.model, self.name, self.lead_ms = new.model, new.name, new.lead_ms
        self.tracks, self.channels, self.muted, self.clear_mute = new.tracks, new.channels, new.muted, new.clear_mute
        self.phrase_ms, self.local_ms = [], []
        self.start_playing(self.stage.rng)
        log.info("now playing %s in %s mode; tracks %s on channels %s", self.model.info.path, self.name,
                 ",".join(self.tracks), ",".join(str(c + 1) for c in self.channels))
        if new.on_start is not None:      # (a preset's other settings, between the phrases)
            new.on_start()

    def remote_need(self) -> float:
        """Seconds to leave for a remote worker's answer before the local fallback's time."""
        remote = self.stage.remote
        if remote is None:
            return 0.0
        # before the first answer: as long as a phrase takes here
        return (max(remote.recent_ms or [self.lead_ms]) * 1.5 + 5) / 1000

    def answer(self, job: Job) -> int:
        if self.too_late(job):
            return 0
        if self.pending is not None:
            self._take_pending()
        self.source = "local"
        velocity = answer_velocity(job.notes)
        scheduler, scheduled = self.stage.scheduler, []
        for n in self.phrase_notes(job):
            if n.track in self.muted:
                continue
            ch, pitch = self.channels[n.track], self.stage.in_key(n.pitch)
            note_id = scheduler.schedule_on(n.start + job.steps, ch, pitch, velocity)
            scheduler.schedule_off(n.end + job.steps, note_id, ch, pitch)
            scheduled.append((note_id, ch, pitch, n.start + job.steps, n.end + job.steps))
        self.scheduled = self.scheduled[-1:] + [scheduled]
        return len(scheduled)

    def phrase_notes(self, job: Job) -> list[Note]:
        """The answer's notes: from a remote worker when one answers in time, else made here
        with the same seed."""
        stage = self.stage
        seed = int(stage.rng.integers(2 ** 63))
        seam = self.seam[1] if self.seam and self.seam[0] == job.phrase - 1 else None   # answers back to back
        boundary = stage.time_of(job.start + job.steps)
        settings = replace(stage.settings, mode=self.name)
        notes = None
        if stage.remote is not None and boundary is not None:
            notes = stage.remote.generate(self.model, settings, job.notes, job.start, job.steps, seed,
                                          deadline=boundary - self.local_need(), seam=seam)
            if notes is None:
                stage.remote.stats["local_fallbacks"] += 1
        self.source = stage.remote.last_worker if notes is not None else "local"
        if notes is None:
            t = stage.now()
            notes = generate(self.model, settings, job.notes, job.start, job.steps, np.random.default_rng(seed),
                             seam)
            self.local_ms.append((stage.now() - t) * 1000)
        if self.model.info.kind == "accompany":
            self.seam = (job.phrase, seam_after(job.notes, notes, job.start + job.steps, len(self.model.info.tracks)))
        return notes
