"""respond with a continue model: the Transformer harmonises each step of the phrase silently
as it is played, so that at the phrase's end it has four voices of context and only the
answer is left to decode; the answer is streamed, each step scheduled as it is decoded."""
from __future__ import annotations

import numpy as np

from livegen.generate.continue_ import Harmoniser
from livegen.modes.base import Job, StepJob
from livegen.modes.phrases import PhraseCut
from livegen.phrase import VoiceStream, answer_velocity
from livegen.roll import Note, tune_and_others


class ContinueAnswers(PhraseCut):
    """The answer is decoded AHEAD steps before each of its steps sounds, as the next phrase
    is played, so that it hears what the player holds then (both hands: no voice a semitone
    against a held note or under the player's bass, which its bass follows)."""

    AHEAD = 2    # steps: an answer step is decoded once the step AHEAD before it has been played
                 # (at its late window's close, a third of a step after it), or sooner (`_answer_in_time`)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.next_step = 0               # the next step to add to the context
        self.harmoniser: Harmoniser | None = None
        self.first_step_ms = 0.0
        self.answering: list | None = None   # [answer's steps, stream, first step, steps, steps decoded]
        self.now_held: tuple = ()        # what the player held at the last step played
        self.step_ms: list[float] = []   # how long the last answer steps took to decode

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
        if isinstance(job, StepJob):
            if job.step < 0:
                self.harmoniser = Harmoniser(self.model, self.stage.sampling, self.stage.rng)
                return
            self.harmoniser.step(job.soprano, held=job.held)
            self.now_held = job.held + ((job.soprano,) if job.soprano is not None else ())
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
        self.answering = [self.harmoniser.answer(job.steps, lambda s: self.now_held), stream, first, job.steps, 0]
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

    def close(self, step: int) -> None:
        """Another mode from `step` (a phrase boundary, where the answer ends anyway): what
        is decoded ends where it is."""
        if self.answering is not None:
            self._answer_upto(None, close_at=max(step, self.answering[2] + self.answering[4]))

    def answer_ms(self, started: float) -> float:
        return self.first_step_ms     # streamed: the cut must leave time for the first step only
