"""`continue` models (satb16-v1 tokens, KV cache): answer a phrase, or harmonise step by step.

Every grid step is four tokens, soprano, alto, tenor, bass; a token is `pitch - pitch_low`
or `pitch_count` for a rest. The same pitch on consecutive steps is one held note.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from livegen import roll as R
from livegen.generate.accompany import MELODY_TARGET, is_bass, plays_bass, semitone_from
from livegen.key import estimate, scale
from livegen.models import Model


@dataclass
class SamplingSettings:
    """Sampling temperature and nucleus (top-p), and the pull towards the key. None: the model
    file's own (`ModelInfo.temperature`, `top_p`, `key_penalty`: 0.9, 0.95 and 0, or what a
    fine-tune found for its music, see training.finetune). `key`: the player's (`--key`), else
    the one heard (`KeyPull`). Shared and changed live (`livegen ctl ... set temperature`)."""
    temperature: float | None = None
    top_p: float | None = None
    key_penalty: float | None = None
    key: str | None = None

    def of(self, info) -> "SamplingSettings":
        """These settings, the model's own where they are None."""
        if self.temperature is not None and self.top_p is not None and self.key_penalty is not None:
            return self
        return SamplingSettings(info.temperature if self.temperature is None else self.temperature,
                                info.top_p if self.top_p is None else self.top_p,
                                info.key_penalty if self.key_penalty is None else self.key_penalty, self.key)


def sample(logits: np.ndarray, settings: SamplingSettings, rng: np.random.Generator, allowed: int,
           banned: list[int] = (), cost: np.ndarray | None = None) -> int:
    """One token id from the first `allowed` logits, less `cost` (nats per token, `KeyPull`),
    with temperature and nucleus (top-p); never one of `banned` while anything else is left."""
    z = np.array(logits[:allowed], dtype=np.float64)
    if cost is not None:
        z -= cost[:allowed]
    if len(banned) and len(banned) < allowed:
        z[list(banned)] = -np.inf
    if settings.temperature <= 0:
        return int(np.argmax(z))
    z = (z - z.max()) / settings.temperature
    p = np.exp(z)
    p /= p.sum()
    order = np.argsort(-p)
    keep = order[: int(np.searchsorted(np.cumsum(p[order]), settings.top_p) + 1)]
    q = p[keep] / p[keep].sum()
    return int(keep[rng.choice(len(keep), p=q)])


class KeyPull:
    """A file's `livegen.key_penalty`: each pitch outside the key costs that many nats when a
    voice is drawn (rests cost nothing). The key is the player's (`--key`), else the one heard
    in the player's own notes so far (pitch classes counted per step sounded, fading by half in
    about 8 bars), once 8 steps of them are heard. Not the generated voices: a pull towards a
    key heard in them holds on to a wrong first guess (C minor heard as C major, its voices then
    pulled to E natural: with 4 nats, 0.859 of the voices' notes in the chorales' keys against
    0.893 without the pull, and 0.933 hearing the player alone; 12 JSB test sopranos:
    `benchmarks/key_pull.py`)."""

    FADE, HEARD = 0.995, 8.0

    def __init__(self, pitch_low: int, pitch_count: int):
        self.classes = (pitch_low + np.arange(pitch_count)) % 12     # (the octave shift keeps them)
        self.weights = np.zeros(12)
        self.made: tuple = (None, None, None)     # (key, penalty, cost) last made

    def hear(self, pitches) -> None:
        """The player's MIDI pitches on one step (none: a rest)."""
        self.weights *= self.FADE
        for p in pitches:
            self.weights[p % 12] += 1.0

    def cost(self, settings: SamplingSettings) -> np.ndarray | None:
        """Nats per token (the rest last, free) under these settings, or None: no pull."""
        if not settings.key_penalty:
            return None
        if settings.key:
            name = settings.key
        else:
            found = estimate(self.weights) if self.weights.sum() >= self.HEARD else None
            if found is None:
                return None
            name = found[0]
        if self.made[:2] != (name, settings.key_penalty):
            out = np.zeros(len(self.classes) + 1)
            out[:-1] = settings.key_penalty * ~np.isin(self.classes, list(scale(name)))
            self.made = (name, settings.key_penalty, out)
        return self.made[2]


class RangePull:
    """A file's `livegen.range_penalty`: each pitch outside a voice's range (`livegen.voice_ranges`,
    soprano to bass, in the model's own octave: a tune moved by octaves moves them too) costs
    that many nats when that voice is drawn; rests cost nothing. A fine-tune sets both from its
    music (music whose voices keep to narrower ranges than the chorales')."""

    def __init__(self, info):
        self.costs = None
        if info.range_penalty and info.voice_ranges:
            pitches = info.pitch_low + np.arange(info.pitch_count)
            self.costs = [np.append(info.range_penalty * ((pitches < lo) | (pitches > hi)), 0.0)
                          for lo, hi in info.voice_ranges]

    def plus(self, cost: np.ndarray | None) -> list:
        """Per voice (soprano, alto, tenor, bass): `cost` (the key's, or None) and the range's."""
        if self.costs is None:
            return [cost] * 4
        return [c if cost is None else c + cost for c in self.costs]


def banned(step: list[int], before: list[int] | None, rest: int) -> list[int]:
    """The tokens the next voice of `step` (soprano first, then the voices chosen so far)
    must not take: above the soprano (the player's tune stays on top), or moving in parallel
    fifths or octaves (unisons too) with a voice above it from the step `before` (all four
    voices), as Bach's voices do not."""
    return sorted(above_tune(step, rest) | parallels(step, before, rest))


def above_tune(step: list[int], rest: int) -> set[int]:
    """The tokens above the soprano of `step` (the player's tune stays on top)."""
    return set(range(step[0] + 1, rest)) if step[0] != rest else set()


def parallels(step: list[int], before: list[int] | None, rest: int) -> set[int]:
    """The tokens that would move the next voice of `step` in parallel fifths or octaves
    (unisons too) with a voice above it, from the step `before`."""
    k = len(step)
    out: set[int] = set()
    if before is None or k >= len(before) or before[k] == rest:
        return out
    was = before[k]
    for now, then in zip(step, before):
        if now == rest or then == rest or now == then:
            continue
        interval = (then - was) % 12
        if interval not in (0, 7):
            continue
        up = now > then     # the other voice's motion; the same interval, the same way: parallel
        for c in range((now - interval) % 12, rest, 12):     # (those at that interval under it)
            if c != was and (c > was) == up:
                out.add(c)
    return out


class TokenDecoder:
    """KV-cached decoding. The context slides: when it is full, it restarts from BOS and the
    most recent steps (one pass), so a session can last for ever."""

    def __init__(self, model: Model, keep_steps: int = 64, max_tokens: int | None = None):
        self.model, self.info = model, model.info
        layers, two, heads, head_dim = self.info.past_shape
        self.empty = np.zeros((layers, two, 1, heads, 0, head_dim), np.float32)
        self.keep_steps = keep_steps
        # each pass copies the whole cache: a shorter context is a faster step
        self.max_tokens = min(max_tokens or self.info.max_context, self.info.max_context)
        self.reset()

    @property
    def cached(self) -> int:
        return self.past.shape[4]

    def reset(self) -> None:
        self.past = self.empty
        self.tokens: list[int] = []          # every token fed since BOS, BOS excluded
        self.logits: np.ndarray | None = None

    def feed(self, ids: list[int], options=None) -> np.ndarray:
        """Feed tokens; returns the logits after the last one. With `options` (RunOptions)
        another thread may stop the pass: it raises, and nothing has changed."""
        if not self.tokens and self.past.shape[4] == 0 and self.info.bos_id is not None:
            ids = [self.info.bos_id] + list(ids)
            body = ids[1:]
        else:
            body = list(ids)
        if self.past.shape[4] + len(ids) > self.max_tokens:
            return self.slide(body, options)
        out = self.model.run({"input_ids": np.asarray([ids], np.int64), "past": self.past}, options)
        self.past = out["present"]
        self.tokens += body
        self.logits = out["logits"][0, -1]
        return self.logits

    def slide(self, body: list[int], options=None) -> np.ndarray:
        history = self.tokens + body
        done = len(history) - len(history) % 4         # keep whole steps, then the partial one
        keep = min(self.keep_steps, (self.max_tokens - 1) // 8)   # at most half a short context
        start = max(0, done - keep * 4)
        recent = history[start:]
        before = self.past, self.tokens, self.logits
        self.past, self.tokens = self.empty, []
        try:
            return self.feed(recent, options)
        except Exception:      # stopped (or failed): the context as it was
            self.past, self.tokens, self.logits = before
            raise


OWN_SLACK = 6   # semitones: a fine-tune learns its music moved up to 6 each way (`training.data`)


def own_soprano(info) -> tuple[int, int] | None:
    """The soprano's range where a continue file gives its voices' ranges
    (`livegen.voice_ranges`: a fine-tune's music, where it lies), else None (the chorales')."""
    if info.kind == "continue" and info.voice_ranges:
        return tuple(info.voice_ranges[0])
    return None


class Placement:
    """What both step harmonisers (this module's and `harmonise.ChordHarmoniser`) share: the
    octaves the player's tune is moved by into the model's register, and what the player
    holds besides the tune, in tokens.

    A model that knows its own soprano's range (`own_soprano`: a fine-tune learned its music
    where it lies) gets a tune inside that range where it is, and one outside moved by the
    octaves that bring it nearest the range's middle. Moved towards the chorales' middle
    instead, a Palestrina tune beginning on F5 went down an octave, the model wrote its voices
    under the lower tune, and they came back up with it: a bass on A4 and B-flat4, the bass's
    notes above its range 70 times in the twelve held-out tails (`benchmarks/README.md`)."""

    def __init__(self, model: Model):
        self.model = model
        self.shift = 0
        self.shift_set = False
        self.own = own_soprano(model.info)
        self.middle = MELODY_TARGET if self.own is None else sum(self.own) / 2

    def soprano_token(self, soprano: int | None) -> int:
        info = self.model.info
        rest = info.pitch_count
        if soprano is not None and (not self.shift_set or self._misplaced(soprano + self.shift)):
            inside = self.own is not None and self.own[0] - OWN_SLACK <= soprano <= self.own[1] + OWN_SLACK
            self.shift = 0 if inside else R.octave_shift([soprano], info.pitch_low, info.pitch_count, self.middle)
            self.shift_set = True
        if soprano is not None and 0 <= soprano + self.shift - info.pitch_low < rest:
            return soprano + self.shift - info.pitch_low
        return rest

    def _misplaced(self, moved: int) -> bool:
        """The soprano, moved by the octaves chosen so far, lies outside the model's range or
        more than an octave from where the model expects it (outside its own soprano's range,
        where it has one): the player has gone to another register (or the first note was a
        lone low or high one), so the octaves are chosen again from this note. Within an octave
        the placement holds, so that a tune is not moved about in the middle of a line."""
        info = self.model.info
        if not 0 <= moved - info.pitch_low < info.pitch_count:
            return True
        if self.own is not None:
            return not self.own[0] - OWN_SLACK <= moved <= self.own[1] + OWN_SLACK
        return abs(moved - self.middle) > 12

    def hand_tokens(self, s_tok: int, held: tuple) -> tuple[set[int], int | None] | None:
        """What the player holds besides the tune, in tokens: those the voices must not take
        (a semitone, mod 12, from a held note, or under the player's bass) and the bass token
        (the player's lowest note when it is a bass line, `accompany.is_bass`, or a rest when
        it lies out of the model's range), or None."""
        info = self.model.info
        others = [t for t in sorted(p + self.shift - info.pitch_low for p in held) if t != s_tok]
        if not others:
            return None
        tune = None if s_tok == info.pitch_count else s_tok + info.pitch_low
        return self._hand(others, is_bass(others[0] + info.pitch_low, tune))

    def answer_hand(self, held: tuple) -> tuple[set[int], int | None] | None:
        """The same for what the player holds while the answer plays over it: the player's
        top note stands for the tune (a lone note is a bass line only under middle C)."""
        if not held:
            return None
        info = self.model.info
        tokens = sorted(p + self.shift - info.pitch_low for p in held)
        return self._hand(tokens, plays_bass([t + info.pitch_low for t in tokens]))

    def _hand(self, held: list[int], bass: bool) -> tuple[set[int], int | None]:
        rest = self.model.info.pitch_count
        no = {t for t in range(rest) if semitone_from(t, held)}
        if not bass:
            return no, None
        no |= set(range(min(max(held[0], 0), rest)))
        return no, held[0] if 0 <= held[0] < rest else rest


class Harmoniser(Placement):
    """Follow mode: the player's note is the soprano of each step; alto, tenor and bass are
    decoded for that same step from the cache.

    Live, three passes one after another are too slow to sound within a few ms of the
    player's note, so between steps `speculate` decodes the next step for the sopranos the
    player is most likely to play (the model's own best guesses, the held note, a rest and
    its neighbours), in batches (TIER at a time). A note among them is answered from that
    table at once; any other is decoded then. Each step samples from its own generator, seeded by the
    step and the soprano, so a guess ready or not draws the same numbers; but a step decoded
    without a guess while a note waits (`urgent`) leaves the context's slide for later, so what
    follows can differ from the guessed path (render always has its guesses ready).
    """

    # follow mode must answer within a few ms: 16 steps of context at most, 8 kept on a slide
    FOLLOW_TOKENS, FOLLOW_KEEP = 64, 8
    TIER, TIERS = 12, 2   # sopranos decoded ahead per step: batches of 12, the likeliest first
    PAUSE_STEPS = 16      # after a bar of the player's silence the model waits where it is
    SILENT_STEPS = 12     # a voice silent this many steps under the player's notes must come in
    STATS = ("steps answered from a guess made ahead: %(hits)d; decoded when played: %(misses)d not guessed, "
             "%(unguessed)d not ready; guess passes stopped by a note: %(stopped)d; steps sounded again for a "
             "late note or another key of a chord: %(corrected)d")    # (follow's closing line, of guess_stats)

    def __init__(self, model: Model, settings: SamplingSettings, rng: np.random.Generator, live: bool = False):
        super().__init__(model)
        self.settings, self.rng = settings, rng
        self.dec = TokenDecoder(model, self.FOLLOW_KEEP, self.FOLLOW_TOKENS) if live else TokenDecoder(model)
        self.live = live
        self.pending_bass: int | None = None
        self.seed = int(rng.integers(2**63))
        self.count = 0                  # steps harmonised
        self.last_token: int | None = None
        self.before: list[int] | None = None   # the last step's soprano, alto, tenor, bass tokens
        self.rest_run = 0               # steps in a row with no soprano
        self.silent = [0, 0, 0]         # steps each voice has rested while the player played
        self.pull = KeyPull(model.info.pitch_low, model.info.pitch_count)
        self.ranges = RangePull(model.info)
        self.guesses: list[dict] = []   # speculation for step `count`: see `speculate`
        # steps answered from a guess; guessed but not that note; no guess ready; passes stopped
        self.guess_stats = {"hits": 0, "misses": 0, "unguessed": 0, "stopped": 0, "corrected": 0}
        self.undo: tuple | None = None  # the state before the last step, while it may be corrected
        self.run_options = None
        if live:
            import onnxruntime as ort
            self.run_options = ort.RunOptions()

    def stop_guessing(self) -> None:
        """Any thread: a note is waiting, so the guess's pass now running stops at once."""
        if self.run_options is not None:
            self.run_options.terminate = True

    def _step_rng(self, s_tok: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.count, s_tok))

    @property
    def paused(self) -> bool:
        """Live, after PAUSE_STEPS steps of silence: the context stops advancing, so the
        guesses need not be made again every step (and the cores rest)."""
        return self.live and self.rest_run >= self.PAUSE_STEPS

    def step(self, soprano: int | None, urgent: bool = False, undo: bool = False, held: tuple = (),
             at: int | None = None) -> list[int]:
        """Soprano MIDI pitch (None = rest) -> [alto, tenor, bass] MIDI pitches or -1.

        When not `urgent` (no player note waits on it) and the context is nearly full, the
        slide is done now, so that it never falls on a step a player is waiting for. With
        `undo`, the step may be taken back and done again with another soprano (`redo`).
        `held`: the player's other notes (MIDI pitches): see `hand_tokens`. (`at`, the grid
        step, is for `ChordHarmoniser`; the Transformer has no beat.)"""
        info = self.model.info
        rest = info.pitch_count
        self.undo = self._state() if undo else None
        s_tok = self.soprano_token(soprano)
        if self.paused and s_tok == rest:
            return [-1, -1, -1]          # still silent: nothing fed, the guesses stay good
        guesses, self.guesses = self.guesses, []
        sampling = self.settings.of(info)
        cost = self.ranges.plus(self.pull.cost(sampling))   # (as the guesses had it: the key heard before)
        hand = self.hand_tokens(s_tok, held)
        guess = next((g for g in guesses if s_tok in g["sopranos"]), None)
        if guess is not None and hand and set(guess["tokens"][guess["sopranos"].index(s_tok)][:2]) & hand[0]:
            guess = None     # (its inner voices clash with the player's other hand)
        if guess is not None:
            out = self._finish(guess, guess["sopranos"].index(s_tok), hand[0] if hand else set(), cost)
            if hand and hand[1] is not None:
                out[2] = hand[1]     # (not fed yet: the next step feeds it)
            self.guess_stats["hits"] += 1
        else:
            self.guess_stats["misses" if guesses else "unguessed"] += 1
            if self.live and not urgent and self.dec.cached + 12 > self.dec.max_tokens:
                self.dec.slide([])
            ids = ([self.pending_bass] if self.pending_bass is not None else []) + [s_tok]
            rng = self._step_rng(s_tok)
            logits = self.dec.feed(ids)
            out = []
            for k in range(3):
                if k == 2 and hand and hand[1] is not None:
                    tok = hand[1]          # the player's bass
                else:
                    ban, charge = self._rules([s_tok] + out, cost[k + 1])
                    tok = sample(logits, sampling, rng, rest + 1, sorted(set(ban) | hand[0]) if hand else ban, charge)
                out.append(tok)
                if k < 2:
                    logits = self.dec.feed([tok])
        self.pending_bass = out[2]   # fed with the next step's soprano: one pass fewer per step
        self.count += 1
        self.last_token = s_tok
        self.before = [s_tok] + out
        self.pull.hear(([soprano] if soprano is not None else []) + list(held))
        self.rest_run = self.rest_run + 1 if s_tok == rest else 0
        self.silent = [n + (s_tok != rest) if t == rest else 0 for t, n in zip(out, self.silent)]
        return [info.pitch_low + t - self.shift if t < rest else -1 for t in out]

    def _rules(self, step: list[int], cost: np.ndarray | None) -> tuple[list[int], np.ndarray | None]:
        """(the tokens the next voice of `step` must not take, what each costs): `banned`, and
        a rest for a voice that has been silent SILENT_STEPS steps while the player played (no
        voice stays silent for a bar under the player's notes: a model fine-tuned on string
        quartets learned that a voice that rests rests on, as in a solo passage, and its voices
        fell silent, 0.7 notes a bar against the quartets' 4.8), or on the step where the
        player plays again after a rest (the voices come in with the player, as the chorales'
        do after a fermata's breath: after a lone note, a beat's rest and a tune, the
        Transformer sometimes took the tune for a solo and let it play alone for 8-12 steps).
        Where the file charges parallels (`livegen.parallel_penalty`: a fine-tune's music that
        has some) they are not banned but cost that many nats, on top of `cost`."""
        info = self.model.info
        rest = info.pitch_count
        if info.parallels_banned:
            out = banned(step, self.before, rest)
        else:
            out = sorted(above_tune(step, rest))
            moves = parallels(step, self.before, rest)
            if moves:
                charge = np.zeros(rest + 1)
                charge[sorted(moves)] = info.parallel_penalty
                cost = charge if cost is None else cost + charge
        if step[0] != rest and (self.silent[len(step) - 1] >= self.SILENT_STEPS or self.rest_run > 0):
            out = sorted(set(out) | {rest})
        return out, cost

    def _state(self) -> tuple:
        d = self.dec
        return (d.past, list(d.tokens), d.logits, self.pending_bass, self.count, self.last_token, self.rest_run,
                list(self.guesses), self.shift, self.shift_set, self.before, list(self.silent),
                self.pull.weights.copy())

    def redo(self, soprano: int | None, held: tuple = ()) -> list[int] | None:
        """The last step again with this soprano (a late note for it, or another key of its
        chord): the state before it comes back (its guesses too), whatever was guessed since
        is dropped; it may be done again until the next step. None when the last step cannot
        be taken back."""
        if self.undo is None:
            return None
        state, self.undo = self.undo, None
        d = self.dec
        (d.past, tokens, d.logits, self.pending_bass, self.count, self.last_token, self.rest_run, self.guesses,
         self.shift, self.shift_set, self.before, self.silent, self.pull.weights) = state
        d.tokens = list(tokens)
        self.guess_stats["corrected"] += 1
        return self.step(soprano, urgent=True, undo=True, held=held)

    def candidates(self, logits: np.ndarray | None) -> list[int]:
        """The next step's likeliest soprano tokens, best first: held, rest, then the model's
        ranking, with the held note's neighbours before the long tail. Before the first note
        the octave it will be moved into comes first (see `soprano_token`)."""
        rest = self.model.info.pitch_count
        ranked = [int(t) for t in np.argsort(-logits[: rest + 1])] if logits is not None else []
        held = [self.last_token] if self.last_token is not None else []
        near = [self.last_token + d for d in (1, -1, 2, -2)] if self.last_token not in (None, rest) else []
        first = []
        if not self.shift_set:
            low = int(self.middle) - 6 - self.model.info.pitch_low
            first = list(range(low, low + 12))
        out: list[int] = []
        for t in held + [rest] + first + ranked[:self.TIER + 8] + near + ranked[self.TIER + 8:]:
            if 0 <= t <= rest and t not in out:
                out.append(t)
        return out[: self.TIER * self.TIERS]

    def speculate(self, interrupt=lambda: False) -> None:
        """Between steps: decode the next step for `candidates()`, the likeliest first, in
        batches of TIER, pass by pass.

        `interrupt()` is asked between passes, and `stop_guessing` stops a pass: when a note
        is waiting the work stops there, and `step` finishes what is done for its row.
        In a long silence (`paused`) the guesses made once are kept."""
        if self.paused and self.guesses:
            return
        self.guesses = []
        if not self.live:
            return
        self.run_options.terminate = False
        if self.count == 0 and self.dec.cached == 0:    # before the first step: from BOS
            head = [self.model.info.bos_id] if self.model.info.bos_id is not None else []
            ranked = self.candidates(None)
        elif self.pending_bass is not None:
            try:      # (a note that comes meanwhile stops these too: its step is decoded without them)
                if self.dec.cached + 12 > self.dec.max_tokens:
                    self.dec.slide([], self.run_options)
                logits = self.dec.feed([self.pending_bass], self.run_options)   # what the model expects next
            except Exception:
                if not self.run_options.terminate:
                    raise
                self.guess_stats["stopped"] += 1
                return
            self.pending_bass = None
            head = []
            ranked = self.candidates(logits)
        else:
            return
        rest = self.model.info.pitch_count
        sampling = self.settings.of(self.model.info)
        cost = self.ranges.plus(self.pull.cost(sampling))
        for first in range(0, len(ranked), self.TIER):
            if interrupt():
                return
            sopranos = ranked[first:first + self.TIER]
            n = len(sopranos)
            past = np.repeat(self.dec.past, n, axis=2)
            ids = np.array([head + [s] for s in sopranos], np.int64)
            guess = {"sopranos": sopranos, "fed": [[s] for s in sopranos], "tokens": [[] for _ in sopranos],
                     "rngs": [self._step_rng(s) for s in sopranos], "logits": None, "past": None}
            for k in range(3):
                try:
                    out = self.model.run({"input_ids": ids, "past": past}, self.run_options)
                except Exception:
                    if not self.run_options.terminate:
                        raise
                    self.guess_stats["stopped"] += 1
                    if k == 0:
                        return
                    # the last pass is lost; what the previous ones made is still good
                    guess["fed"] = [f[:-1] for f in guess["fed"]]
                    return
                past, logits = out["present"], out["logits"][:, -1]
                guess["past"], guess["logits"] = past, logits
                for r in range(n):
                    ban, charge = self._rules([sopranos[r]] + guess["tokens"][r], cost[k + 1])
                    guess["tokens"][r].append(sample(logits[r], sampling, guess["rngs"][r], rest + 1, ban, charge))
                if k == 0:
                    self.guesses.append(guess)
                if k == 2 or interrupt():
                    break
                ids = np.array([[t[-1]] for t in guess["tokens"]], np.int64)
                for r in range(n):
                    guess["fed"][r].append(guess["tokens"][r][-1])
            if k < 2:     # interrupted: a note is waiting
                return

    def _finish(self, guess: dict, row: int, no: set = frozenset(), cost: list = (None,) * 4) -> list[int]:
        """Adopt one row of a speculation; decode whatever passes it still lacks (never
        taking a token of `no`; `cost` per voice, soprano first)."""
        rest = self.model.info.pitch_count
        out = list(guess["tokens"][row])
        self.dec.past = np.ascontiguousarray(guess["past"][:, :, row:row + 1])
        self.dec.tokens += guess["fed"][row]
        self.dec.logits = guess["logits"][row]
        rng = copy.deepcopy(guess["rngs"][row])     # (the guess may be taken up again by `redo`)
        while len(out) < 3:
            logits = self.dec.feed([out[-1]])
            ban, charge = self._rules([guess["sopranos"][row]] + out, cost[len(out) + 1])
            out.append(sample(logits, self.settings.of(self.model.info), rng, rest + 1, sorted(set(ban) | no), charge))
        return out

    def answer(self, steps: int, held_at=None) -> "AnswerSteps":
        """Continue what was harmonised for `steps` steps, all four voices: an iterator of
        (step offset, 4 MIDI pitches), one step decoded each time. `held_at(offset)`: the MIDI
        pitches the player holds as that step is decoded (`answer_hand`: no voice a semitone
        against them or under the player's bass line, where the answer's bass rests)."""
        return AnswerSteps(self, steps, held_at)


class AnswerSteps:
    """The answer of `Harmoniser.answer`, step by step. Where the player plays a bass line the
    answer's bass is the player's (in the context) and is not sounded: the answer fills the
    voices between. A step already decoded may be decoded again with what the player holds
    on it (`back_to`: a key struck on the answer's step after it was decoded): the cache, the
    logits and the step's own random generator come back as they were before it, so a step
    done again differs only where the new hand forbids.

    The answer never rests: after a cadence the model may end the piece (all voices
    resting to the end of the answer, or nearly: 1 in 60 answers to the test suite's
    melody had two voices or fewer), which a player hears as no answer, while Bach's voices
    rest in 0.2 % of the steps mid-piece (JSB train split)."""

    KEEP = 4     # steps that may still be decoded again (each holds a cache)

    def __init__(self, harmoniser: Harmoniser, steps: int, held_at=None):
        self.h, self.steps, self.held_at = harmoniser, steps, held_at
        dec = harmoniser.dec
        self.rest = harmoniser.model.info.pitch_count
        logits = dec.feed([harmoniser.pending_bass]) if harmoniser.pending_bass is not None else dec.logits
        harmoniser.pending_bass = None
        if logits is None:
            logits = dec.feed([self.rest] * 4)
        self.logits = logits
        self.seed = int(harmoniser.rng.integers(2**63))
        # per voice: the pull towards the key heard in the phrase (`KeyPull`), the same for the whole
        # answer, and into the voice's range (`RangePull`)
        self.cost = harmoniser.ranges.plus(harmoniser.pull.cost(harmoniser.settings.of(harmoniser.model.info)))
        self.done = 0
        self.tokens: list[list[int]] = []          # per step decoded
        self.quiet: list[bool] = []                # per step: its bass is the player's, not sounded
        self.before: dict[int, tuple] = {}         # step -> the state before it (the last KEEP)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, list[int]]:
        if self.done >= self.steps:
            raise StopIteration
        return self.done, self.decode(self.held_at(self.done) if self.held_at is not None else ())

    def decode(self, held) -> list[int]:
        """The next step, the player holding `held` (MIDI pitches) as it sounds."""
        h, dec, s = self.h, self.h.dec, self.done
        self.before[s] = (dec.past, list(dec.tokens), dec.logits, self.logits)
        self.before.pop(s - self.KEEP, None)
        hand = h.answer_hand(tuple(held))
        rng = np.random.default_rng((self.seed, s))
        logits, step = self.logits, []
        for v in range(4):
            if v == 3 and hand and hand[1] is not None and hand[1] < self.rest:
                tok = hand[1]       # the player's bass
            else:
                tok = sample(logits, h.settings.of(h.model.info), rng, self.rest, sorted(hand[0]) if hand else (),
                             self.cost[v])   # pitches only
            step.append(tok)
            logits = dec.feed([tok])
        self.logits = logits
        self.tokens[s:] = [step]
        self.quiet[s:] = [bool(hand and hand[1] is not None and hand[1] < self.rest)]
        self.done = s + 1
        return self.pitches(s)

    def pitches(self, s: int) -> list[int]:
        info = self.h.model.info
        return [info.pitch_low + t - self.h.shift if v < 3 or not self.quiet[s] else -1
                for v, t in enumerate(self.tokens[s])]

    def misfits(self, s: int, held) -> set[int]:
        """The voices of step `s` as decoded that do not fit what the player holds on it: a
        voice sounding a semitone from (or under) it, a bass sounding where the player plays one."""
        hand = self.h.answer_hand(tuple(held))
        if hand is None or not 0 <= s < self.done:
            return set()
        out = {v for v, t in enumerate(self.tokens[s]) if t in hand[0] and (v < 3 or not self.quiet[s])}
        if hand[1] is not None and hand[1] < self.rest and not self.quiet[s]:
            out.add(3)
        return out

    def back_to(self, s: int) -> bool:
        """Forget the steps from `s` on (decode them again next); False when too far back."""
        if s not in self.before:
            return False
        dec = self.h.dec
        dec.past, tokens, dec.logits, self.logits = self.before[s]
        dec.tokens = list(tokens)
        self.done = s
        del self.tokens[s:], self.quiet[s:]
        for k in [k for k in self.before if k > s]:
            del self.before[k]
        return True
