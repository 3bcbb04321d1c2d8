"""respond with a continue model: the Transformer harmonises each step of the phrase silently
as it is played, so that at the phrase's end it has four voices of context and only the
answer is left to decode; the answer is streamed, each step scheduled as it is decoded.

An answer step is decoded before the keys struck on it are known: a key struck on a step
already decoded that the step does not fit (a voice a semitone from it or under the
player's bass line, a bass where the player plays one) has the step decoded again with it:
the voices that do not fit are silenced at once, and the voices that change sound when the
step is decoded (before the step's time, nothing is heard of the first)."""
from __future__ import annotations

import logging

import numpy as np

from livegen.generate.continue_ import Harmoniser
from livegen.modes.base import Job, StepJob
from livegen.modes.phrases import PhraseCut
from livegen.phrase import VoiceStream, answer_velocity
from livegen.roll import Note, tune_and_others
from livegen.scheduler import Lateness

log = logging.getLogger("livegen.engine")


class ContinueAnswers(PhraseCut):
    """The answer is decoded AHEAD steps before each of its steps sounds, as the next phrase
    is played, so that it hears what the player holds then (both hands: no voice a semitone
    against a held note or under the player's bass line, where its own bass rests), and again
    when a key struck on a step already decoded does not fit it (`_struck`)."""

    MAX_KEYS = 4   # keys struck on one step that are looked at against the answer's step
    AHEAD = 2    # steps: an answer step is decoded once the step AHEAD before it has been played
                 # (at its late window's close, a third of a step after it), or sooner (`_answer_in_time`)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.next_step = 0               # the next step to add to the context
        self.keys_posted = (-1, 0)       # capture thread: (step, keys on it posted to the worker)
        self.harmoniser: Harmoniser | None = None
        self.first_step_ms = 0.0
        self.answering: list | None = None   # [answer's steps, stream, first step, steps, steps decoded]
        self.heard: dict[int, tuple] = {}   # step -> what the player holds on it (its keys struck so far,
                                            # all of it once its late window has closed)
        self.step_ms: list[float] = []   # how long the last answer steps took to decode
        self.redone = Lateness()         # ms from a key to its answer step decoded again
        self.silenced = Lateness()       # ms from a key to the answer's voices that did not fit it silenced

    def calibrate(self) -> float:
        now = self.stage.now
        t = now()
        # at the cut: the phrase's last steps, then the answer's first
        h = Harmoniser(self.model, self.stage.sampling, np.random.default_rng(0))
        h.step(72)
        h.step(72)
        next(h.answer(1))
        return (now() - t) * 1000

    # ---------------------------------------------------------------- capture thread

    def begin(self, step: int) -> None:
        super().begin(step)
        self.next_step = step

    def note_on(self, pitch: int, velocity: int, pos: float, t: float) -> None:
        step = self.stage.capture.note_on(pitch, velocity, pos)
        posted = self.keys_posted[1] if self.keys_posted[0] == step else 0
        # (the answer step it falls on may be decoded already; a flood of keys on one step is
        # heard MAX_KEYS times at most, so that the context's own steps always find room)
        if step >= self.next_step - 1 and posted < self.MAX_KEYS:
            self.keys_posted = (step, posted + 1)
            tune, others = tune_and_others(n.pitch for n in self.stage.capture.phrase(step, step + 1))
            self.stage.post(StepJob(step, tune, velocity, t, silent=True, correction=True, held=others))

    def wake_at(self) -> float | None:
        due = [x for x in (self.cut_time(), self._late_window(self.next_step)) if x is not None]
        return min(due) if due else None

    def _late_window(self, step: int) -> float | None:
        return self.stage.time_of(step + self.stage.settings.tolerance)

    def tick(self, now: float, next_mode) -> int | None:
        self._post_steps(now)
        return super().tick(now, next_mode)

    def _post_steps(self, now: float, upto: int | None = None) -> None:
        """Each step once its late window closes (with `upto`: every step before it, now)."""
        while upto is None or self.next_step < upto:
            if upto is None:
                due = self._late_window(self.next_step)
                if due is None or now < due:
                    return
            tune, others = tune_and_others(n.pitch for n in self.stage.capture.phrase(self.next_step,
                                                                                       self.next_step + 1))
            self.stage.post(StepJob(self.next_step, tune, 90, silent=True, held=others))
            self.next_step += 1

    def cut(self, phrase: int, start: int, notes: list[Note], now: float, overplayed: bool) -> None:
        self._post_steps(now, upto=start + self.steps)     # the phrase's last steps, as they stand
        if not notes:
            self.stage.post(StepJob(-1, None, 90, silent=True))   # an empty phrase: start afresh
        else:
            super().cut(phrase, start, notes, now, overplayed)

    # ---------------------------------------------------------------- worker thread

    def start_playing(self, rng: np.random.Generator) -> None:
        super().start_playing(rng)
        self.harmoniser = Harmoniser(self.model, self.stage.sampling, rng)

    def run(self, job) -> None:
        if isinstance(job, StepJob) and job.correction:
            self._struck(job.step, job.held + ((job.soprano,) if job.soprano is not None else ()), job.heard_at)
            return
        if isinstance(job, StepJob):
            if job.step < 0:
                self.harmoniser = Harmoniser(self.model, self.stage.sampling, self.stage.rng)
                return
            self.harmoniser.step(job.soprano, held=job.held)
            self._hear(job.step, job.held + ((job.soprano,) if job.soprano is not None else ()))
            if self.answering is not None and not 0 <= job.step - self.answering[2] + 1 <= self.answering[3]:
                self._answer_upto(None, close_at=self.answering[2] + self.answering[4])   # (a Start: steps from 0)
            self.stage.stats["generated_notes"] += self._answer_upto(job.step + self.AHEAD)
            self.stage.stats["generated_notes"] += self._answer_in_time()
            return
        super().run(job)

    def answer(self, job: Job) -> int:
        self.stage.stats["generated_notes"] += self._answer_upto(None)   # the last steps of the answer before
        if self.too_late(job):
            return 0
        stage = self.stage
        stream = VoiceStream(stage.scheduler, self.channels, answer_velocity(job.notes), self.muted)
        stream.lock = stage.in_key
        first = job.start + job.steps
        t = stage.now()
        self.answering = [self.harmoniser.answer(job.steps, lambda s: self.held_on(first + s)),
                          stream, first, job.steps, 0]
        self._answer_upto(first + 1)
        self.first_step_ms = (stage.now() - min(t, job.posted or t)) * 1000
        self._answer_upto(first + self.AHEAD)
        self.harmoniser = Harmoniser(self.model, stage.sampling, stage.rng)   # the next phrase starts afresh
        return stream.count

    def _answer_in_time(self) -> int:
        """Decode on while the answer's next step is due sooner than three steps' decoding
        (and 10 ms) from now: a busy machine hears the player from further back, but no
        answer step is late."""
        started = 0
        while self.answering is not None:
            due = self.stage.time_of(self.answering[2] + self.answering[4])
            if due is None or due - self.stage.now() > 3 * max(self.step_ms[-8:], default=0.0) / 1000 + 0.01:
                break
            started += self._answer_upto(self.answering[2] + self.answering[4] + 1)
        return started

    def _answer_upto(self, step: int | None, close_at: int | None = None) -> int:
        """Decode the answer's steps before `step` (None: all that are left; with `close_at`:
        none, its notes end there), scheduling each; at its end its voices end. Returns the
        notes it started."""
        a = self.answering
        if a is None:
            return 0
        steps, stream, first, count, done = a
        upto = count if step is None else min(count, step - first)
        before = stream.count
        while close_at is None and done < upto:
            t = self.stage.now()
            s_off, pitches = next(steps)
            self.step_ms = self.step_ms[-15:] + [(self.stage.now() - t) * 1000]
            stream.step(first + s_off, pitches)
            done = a[4] = done + 1
        if done >= count or close_at is not None:
            stream.close(first + count if close_at is None else close_at)
            self.answering = None
        return stream.count - before

    def _hear(self, step: int, held: tuple) -> None:
        self.heard = {k: v for k, v in self.heard.items() if k > step - 16}
        self.heard[step] = held

    def held_on(self, step: int) -> tuple:
        """What the player holds on `step`, as far as is known now (what was held last before it)."""
        known = [k for k in self.heard if k <= step]
        return self.heard[max(known)] if known else ()

    def _struck(self, step: int, held: tuple, heard_at: float | None = None) -> None:
        """A key struck on `step`, the player holding `held` on it: the answer steps decoded
        already from there on that do not fit what is held are decoded again."""
        self._hear(step, held)
        a = self.answering
        if a is None:
            return
        steps, stream, first, count, done = a
        misfits = ((k, steps.misfits(k, self.held_on(first + k))) for k in range(max(step - first, 0), done))
        s, wrong = next(((k, w) for k, w in misfits if w), (None, set()))
        if s is None or first + s not in stream.done:
            return
        old = [steps.pitches(k) for k in range(s, done)]
        t, notes = self.stage.now(), stream.count
        if not steps.back_to(s):
            return
        stream.take_back(first + s, wrong)     # silent at once: a gap while the step is decoded again, not a clash
        since = t if heard_at is None else heard_at
        self.silenced.add((self.stage.now() - since) * 1000)
        new = [steps.decode(self.held_on(first + k)) for k in range(s, done)]
        changed = {v for v in range(4) if [p[v] for p in old] != [p[v] for p in new]} - wrong
        stream.take_back(first + s, changed)
        for k, pitches in enumerate(new):
            grid = self.stage.time_of(first + s + k)
            stream.step(first + s + k, pitches, changed | wrong, at_once=grid is not None and grid <= self.stage.now())
        log.debug("respond step %d: %s -> %s for the key struck on step %d (%.1f ms)", first + s, old[0], new[0],
                  step, (self.stage.now() - t) * 1000)
        self.redone.add((self.stage.now() - since) * 1000)
        self.stage.stats["generated_notes"] += stream.count - notes

    def close(self, step: int) -> None:
        """Another mode from `step` (a phrase boundary, where the answer ends anyway): what
        is decoded ends where it is."""
        if self.answering is not None:
            self._answer_upto(None, close_at=max(step, self.answering[2] + self.answering[4]))

    def log_stats(self) -> None:
        if len(self.redone):
            r, q = self.redone, self.silenced
            log.info("respond: answer steps decoded again for a key struck on them: %d; after the key, the voices "
                     "that did not fit silenced p50 %.1f / p99 %.1f / max %.1f ms, sounded again p50 %.1f / p99 %.1f "
                     "/ max %.1f ms", len(r), q.percentile(50), q.percentile(99), q.max_ms, r.percentile(50),
                     r.percentile(99), r.max_ms)

    def answer_ms(self, started: float) -> float:
        return self.first_step_ms     # streamed: the cut must leave time for the first step only
