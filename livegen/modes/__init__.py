"""Ways of listening, one module each, behind one interface (`livegen.modes.base.Mode`):

- `phrases.PhraseAnswers`: loop (accompany, edit) and respond with an edit model: phrase k's
  answer, generated whole at its cut, plays in phrase k+1.
- `answer.ContinueAnswers`: respond with a continue model: the phrase is harmonised step by
  step as it is played, and the answer is decoded and streamed in phrase k+1.
- `follow.Follow`: every step harmonised as it is played.

The engine knows none of them by name: `mode_class` picks one from the mode and the model.
"""
from __future__ import annotations

from livegen.modes.answer import ContinueAnswers
from livegen.modes.base import Job, Mode, Stage, StepJob, SwitchJob
from livegen.modes.follow import Follow
from livegen.modes.phrases import PhraseAnswers

__all__ = ["ContinueAnswers", "Follow", "Job", "Mode", "PhraseAnswers", "Stage", "StepJob", "SwitchJob",
           "mode_class"]


def mode_class(mode: str, kind: str) -> type[Mode]:
    if mode == "follow":
        return Follow
    if mode == "respond" and kind == "continue":
        return ContinueAnswers
    return PhraseAnswers
