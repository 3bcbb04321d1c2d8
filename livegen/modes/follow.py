"""follow: every 16th step harmonised as it is played; the player's note is the soprano and
alto, tenor and bass sound with it, a few ms after it.

Capture thread: a note-on queues its step at once (and the steps before it, as they were); a
step with no new note is queued on its grid time (FOLLOW_GRACE_S after it), so the voices
move in time under a held note, and a note that comes late for that step corrects it.
Worker: decodes the step and sounds it at once: with a `harmonise` model in one pass; with a
`continue` model from a guess made ahead when there is one, and while nothing waits it
guesses the next step (`Harmoniser.speculate`).
"""
from __future__ import annotations

import numpy as np

from livegen.generate.harmonise import harmoniser_for
from livegen.modes.base import Mode, StepJob, log
from livegen.phrase import VoiceStream
from livegen.roll import tune_and_others

FOLLOW_GRACE_S = 0.006   # a step with no new note is sounded this long after its grid time, so a
                         # note on time but a little behind the grid (MIDI hops) is not taken as late
FORGET_AFTER = 64        # steps of finished notes kept in the capture


class Follow(Mode):
    sounds_while_played = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.next_step = 0
        self.provisional: int | None = None   # the last step sounded before its late window closed
        self.struck: int | None = None        # the last step sounded on a note played for it
        self.velocity = 90
        self.switch_step: int | None = None   # where a switch asked for is made
        self.harmoniser = None    # continue_.Harmoniser or harmonise.ChordHarmoniser
        self.stream: VoiceStream | None = None

    # ---------------------------------------------------------------- capture thread

    def begin(self, step: int) -> None:
        self.next_step = step

    def _hands(self) -> tuple[int | None, tuple]:
        """The tune (the top note sounding, None: none) and the player's other notes."""
        capture = self.stage.capture
        return tune_and_others(set(capture.held) | set(capture.pedalled))

    def _post(self, step: int, hands: tuple[int | None, tuple], t: float | None = None, provisional: bool = False,
              correction: bool = False) -> None:
        self.stage.post(StepJob(step, hands[0], self.velocity, t, provisional=provisional, correction=correction,
                                held=hands[1]))
        harmoniser = self.harmoniser
        if harmoniser is not None:   # the step is due now: stop guessing ahead, use what is done
            harmoniser.stop_guessing()

    def note_on(self, pitch: int, velocity: int, pos: float, t: float) -> None:
        before = self._hands()
        step = self.stage.capture.note_on(pitch, velocity, pos)
        self.velocity = velocity
        if step < self.next_step:
            # a late note for the step just sounded, or another key of the chord that sounded it
            # (the hands do not land at once: the bass first would be taken for the tune):
            # the step again, with every key held now
            if step in (self.provisional, self.struck):
                self.provisional = None
                self._post(step, self._hands(), t, correction=True)
            return   # (an older step: the next one holds it)
        for s in range(self.next_step, step):   # steps before it, as they were
            self._post(s, before)
        self.next_step = step + 1
        self.provisional = None
        self.struck = step
        self._post(step, self._hands(), t)

    def wake_at(self) -> float | None:
        """A step with no new note is harmonised on its grid time (plus the grace), or when
        its late window closes, whichever comes first."""
        step, stage = self.next_step, self.stage
        late_window = stage.time_of(step + stage.settings.tolerance)
        grid = stage.time_of(step)
        return None if grid is None else min(grid + FOLLOW_GRACE_S, late_window)

    def tick(self, now: float, next_mode: Mode | None) -> int | None:
        while True:
            due = self.wake_at()
            if due is None or now < due:
                break
            self._post(self.next_step, self._hands(), provisional=True)
            self.provisional, self.struck = self.next_step, None
            self.stage.capture.forget_before(self.next_step - FORGET_AFTER)
            self.next_step += 1
        if next_mode is None:
            return None
        if self.switch_step is None:    # out of follow at the next phrase boundary
            self.switch_step = -(-self.next_step // self.steps) * self.steps
        if self.next_step < self.switch_step:
            return None
        step, self.switch_step = self.switch_step, None
        return step

    # ---------------------------------------------------------------- worker thread

    def start_playing(self, rng: np.random.Generator) -> None:
        super().start_playing(rng)
        self.harmoniser = harmoniser_for(self.model, self.stage.sampling, rng, live=True)
        self.harmoniser.speculate()   # the first note is answered from a guess too

    def run(self, job) -> None:
        if not isinstance(job, StepJob):
            return super().run(job)
        self._harmonise(job)
        if not self.stage.busy():   # guess the next step while nothing waits
            self.harmoniser.speculate(interrupt=self.stage.busy)

    def _harmonise(self, job: StepJob) -> None:
        harmoniser = self.harmoniser
        if job.correction:
            pitches = harmoniser.redo(job.soprano, job.held)
            if pitches is None:
                return
        else:
            pitches = harmoniser.step(job.soprano, urgent=job.heard_at is not None, undo=True, held=job.held,
                                      at=job.step)
        if self.stream is None:
            self.stream = VoiceStream(self.stage.scheduler, self.channels, job.velocity, self.muted, immediate=True)
            self.stream.lock = self.stage.in_key
        self.stream.velocity = job.velocity
        self.stream.since = job.heard_at
        self.stream.step(job.step, pitches)
        grid = self.stage.time_of(job.step)
        if job.provisional and grid is not None and self.stage.now() - grid > 0.02:
            # (-v: what holds up the voices under a held note: a late capture or worker)
            log.debug("follow step %d: sounded %.1f ms after its grid time", job.step,
                      (self.stage.now() - grid) * 1000)
        log.debug("follow step %d: soprano %s -> %s%s", job.step, job.soprano, pitches,
                  " (again: a late note or a chord)" if job.correction else " (no new note)" if job.provisional else "")
        self.stage.stats["generated_notes"] = self.stream.count

    def set_muted(self, muted: set[int]) -> None:
        self.muted = muted
        if self.stream is not None:
            self.stream.muted = muted

    def close(self, step: int) -> None:
        if self.stream is not None:      # the voices end where the next mode begins
            self.stream.close(step)
            self.stream = None

    def log_stats(self) -> None:
        if self.harmoniser is not None:
            log.info("follow: " + self.harmoniser.STATS, self.harmoniser.guess_stats)
