"""respond with a continue model: the Transformer harmonises each step of the phrase silently
as it is played, so that at the phrase's end it has four voices of context and only the
answer is left to decode; the answer is streamed, each step scheduled as it is decoded."""
from __future__ import annotations

import numpy as np

from livegen.generate.continue_ import Harmoniser
from livegen.modes.base import Job, StepJob
from livegen.modes.phrases import PhraseCut
from livegen.phrase import VoiceStream, answer_velocity
from livegen.roll import Note


class ContinueAnswers(PhraseCut):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.next_step = 0               # the next step to add to the context
        self.harmoniser: Harmoniser | None = None
        self.first_step_ms = 0.0

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
            sounding = sorted({n.pitch for n in self.stage.capture.phrase(self.next_step, self.next_step + 1)})
            self.stage.post(StepJob(self.next_step, sounding[-1] if sounding else None, 90, silent=True,
                                    held=tuple(sounding[:-1])))
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
            else:
                self.harmoniser.step(job.soprano, held=job.held)
            return
        super().run(job)

    def answer(self, job: Job) -> int:
        if self.too_late(job):
            return 0
        stage = self.stage
        stream = VoiceStream(stage.scheduler, self.channels, answer_velocity(job.notes), self.muted)
        stream.lock = stage.in_key
        offset = job.steps
        t = stage.now()
        for s_off, pitches in self.harmoniser.answer(job.steps):
            stream.step(job.start + offset + s_off, pitches)
            if s_off == 0:
                self.first_step_ms = (stage.now() - min(t, job.posted or t)) * 1000
        stream.close(job.start + offset + job.steps)
        self.harmoniser = Harmoniser(self.model, stage.sampling, stage.rng)   # the next phrase starts afresh
        return stream.count

    def answer_ms(self, started: float) -> float:
        return self.first_step_ms     # streamed: the cut must leave time for the first step only
