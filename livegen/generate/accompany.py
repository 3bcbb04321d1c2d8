"""`accompany` models: the player's phrase becomes the melody, the model adds the other voices."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from livegen import roll as R
from livegen.models import Model

MELODY_TARGET = 70.0   # median soprano pitch the Bach-trained models expect; other models are moved alike
# the usual choral ranges (MIDI pitches), for tracks with these names, where the melody sits
# around MELODY_TARGET: the voice-leading decoder keeps each voice inside its own
VOICE_RANGES = {"soprano": (60, 81), "alto": (53, 74), "tenor": (48, 69), "bass": (40, 64)}


def melody_windows(notes: list[R.Note], start: int, steps: int, window: int, pitch_low: int,
                   pitch_count: int, shift: int) -> np.ndarray:
    """(windows, window, pitch_count) melody rolls covering [start, start + steps)."""
    count = max(1, -(-steps // window))
    return np.stack([R.melody_roll(notes, start + k * window, window, pitch_low, pitch_count, shift)
                     for k in range(count)])


def parallels(before: list[int], after: list[int]) -> int:
    """Pairs of voices (pitches or -1) moving the same way in parallel unisons, octaves or fifths."""
    count = 0
    for a, b in itertools.combinations(range(len(before)), 2):
        a0, b0, a1, b1 = before[a], before[b], after[a], after[b]
        if min(a0, b0, a1, b1) < 0 or a0 == a1 or b0 == b1:
            continue
        i0, i1 = (a0 - b0) % 12, (a1 - b1) % 12
        if i0 == i1 and i0 in (0, 7) and (a1 > a0) == (b1 > b0):
            count += 1
    return count


def _options(p: np.ndarray, threshold: float, near: float, widest: int,
             span: tuple[int, int] | None = None, outside: float = 0.0,
             hand: "Hands | None" = None) -> list[tuple[int, float]]:
    """A voice's choices at one step: (pitch index or -1, log-probability, less `outside`
    nats for a pitch outside the voice's `span`, less `hand.clash` for a semitone against a
    note the player holds). With the player's `hand` at this step: never under the player's
    bass, and the best pitch that does not clash is always among the choices."""
    best = float(p.max())
    if best < threshold:
        return [(-1, 0.0)]
    floor = hand.floor if hand is not None else -(10 ** 6)
    idx = np.flatnonzero((p >= near * best) & (np.arange(len(p)) > floor))
    idx = list(idx[np.argsort(-p[idx])][:widest])
    lo, hi = span if span else (-1, len(p))
    inside = [i for i in range(max(lo, 0, floor + 1), min(hi, len(p) - 1) + 1)]
    if inside and not any(lo <= i <= hi for i in idx):   # the voice's best pitch inside its range too
        idx.append(max(inside, key=lambda i: p[i]))
    if hand is not None and hand.held and all(hand.clashes(i) for i in idx):
        fits = [i for i in (inside or range(floor + 1, len(p))) if not hand.clashes(i)]
        if fits:
            idx.append(max(fits, key=lambda i: p[i]))
    if not idx:
        return [(-1, 0.0)]
    return [(int(i), float(np.log(max(p[i], 1e-12))) - (outside if not lo <= i <= hi else 0.0)
             - (hand.clash if hand is not None and hand.clashes(i) else 0.0)) for i in idx]


@dataclass(frozen=True)
class Hands:
    """What the player holds at one step besides the tune, as pitch indices of the model's
    axis (they may lie outside it: only their pitch class and height matter): the voices
    must not sound a semitone (mod 12) against any, and none goes under the player's bass
    (`floor`, the lowest held index, when the player plays a bass line)."""
    held: tuple[int, ...] = ()
    floor: int = -(10 ** 6)
    clash: float = 4.0      # nats a semitone against a held note costs (loop: 0.6 % of voice-steps clash, Bach 2.6 %)

    def clashes(self, i: int) -> bool:
        return semitone_from(i, self.held)


def semitone_from(pitch: int, held) -> bool:
    """A minor second, major seventh or minor ninth (a semitone, mod 12) from any of `held`."""
    return any((pitch - h) % 12 in (1, 11) for h in held)


def _parallel_counts(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """(S, V) and (R, V) pitch sets (-1 = rest) -> (S, R) parallel unisons/octaves/fifths
    between every pair of voices moving the same way from one to the other."""
    a0, a1 = prev[:, None, :], cur[None, :, :]
    count = np.zeros((len(prev), len(cur)), np.int32)
    for i, j in itertools.combinations(range(prev.shape[1]), 2):
        p_i, p_j, c_i, c_j = a0[..., i], a0[..., j], a1[..., i], a1[..., j]
        sounding = (p_i >= 0) & (p_j >= 0) & (c_i >= 0) & (c_j >= 0)
        moving = (p_i != c_i) & (p_j != c_j)
        i0, i1 = (p_i - p_j) % 12, (c_i - c_j) % 12
        same_way = (c_i > p_i) == (c_j > p_j)
        count += sounding & moving & (i0 == i1) & ((i0 == 0) | (i0 == 7)) & same_way
    return count


def voice_lead(probs: np.ndarray, melody: np.ndarray, threshold: float, near: float = 0.1,
               penalty: float = 3.0, widest: int = 4, before: np.ndarray | None = None,
               spans: list | None = None, outside: float = 3.0, hands: list | None = None,
               fixed: np.ndarray | None = None) -> np.ndarray:
    """One pitch index (or -1, a rest) per track and step, (tracks, T).

    Each voice may take any of its `widest` most probable pitches that are at least `near`
    times its best; the path through the phrase with the highest log-probability, less
    `penalty` nats per parallel fifth or octave (with the melody or between voices), is
    chosen (Viterbi: a voice may leave its best pitch one step early to avoid a parallel on
    the next). Where the model is sure there is no choice to make. `before`: the melody's
    and the voices' pitch indices on the step before (the previous window's last), so that
    no parallel is made across the seam. `spans`: each voice's (low, high) pitch index, or
    None; a pitch outside costs `outside` nats. (Tuned on the JSB valid split: see the
    model card.) `hands`: the player's other notes per step (`Hands` or None); `fixed`
    (tracks, T): a pitch index (or -1, a rest) a track must take at that step, -2 where it
    is free (the bass that follows the player's).
    """
    tracks, steps, _ = probs.shape
    states, scores, back = [], [], []
    for t in range(steps):
        hand = hands[t] if hands else None
        options = [[(int(fixed[k, t]), 0.0)] if fixed is not None and fixed[k, t] > -2 else
                   _options(probs[k, t], threshold, near, widest, spans[k] if spans else None, outside, hand)
                   for k in range(tracks)]
        combos = list(itertools.product(*options))
        pitches = np.array([[int(melody[t])] + [c[0] for c in combo] for combo in combos])
        emit = np.array([sum(c[1] for c in combo) for combo in combos])
        if t == 0:
            score, arg = emit, np.zeros(len(combos), np.int64)
            if before is not None:
                score = score - penalty * _parallel_counts(np.asarray(before)[None, :], pitches)[0]
        else:
            total = scores[-1][:, None] - penalty * _parallel_counts(states[-1], pitches)
            arg = total.argmax(axis=0)
            score = total[arg, np.arange(len(combos))] + emit
        states.append(pitches)
        scores.append(score)
        back.append(arg)
    chosen = np.full((tracks, steps), -1)
    s = int(scores[-1].argmax())
    for t in range(steps - 1, -1, -1):
        chosen[:, t] = states[t][s, 1:]
        s = int(back[t][s])
    return chosen


def decode(probs: np.ndarray, threshold: float, max_polyphony: int, pitch_low: int, start: int,
           onset_probs: np.ndarray | None = None, melody: np.ndarray | None = None,
           seam: list | None = None, spans: list | None = None, hands: list | None = None,
           fixed: np.ndarray | None = None, penalty: float = 3.0) -> list[R.Note]:
    """(tracks, T, P) probabilities -> notes, track index kept in Note.track.

    With one note per track and the melody's pitch index per step (-1 for none), the voices
    are chosen with `voice_lead`; otherwise the most probable cells above the threshold.
    `seam` (a list, for consecutive windows): holds the last step's pitch indices, read
    and then replaced, so that windows join without parallels. `hands`, `fixed`: the
    player's other notes (see `voice_lead`).
    """
    if max_polyphony == 1 and melody is not None:
        chosen = voice_lead(probs, melody, threshold, penalty=penalty, before=seam[0] if seam else None,
                            spans=spans, hands=hands, fixed=fixed)
        if seam is not None:
            seam[:] = [np.concatenate([[melody[-1]], chosen[:, -1]])]
        active = np.zeros(probs.shape, bool)
        k, t = np.nonzero(chosen >= 0)
        active[k, t, chosen[k, t]] = True
    else:
        active = R.keep_most_probable(probs, threshold, max_polyphony)
    notes = []
    for k in range(probs.shape[0]):
        onsets = None if onset_probs is None else (onset_probs[k] >= threshold) & active[k]
        notes += R.roll_to_notes(active[k], pitch_low, start, onsets, track=k)
    return notes


def seam_after(melody: list[R.Note], answer: list[R.Note], end: int, tracks: int) -> list[int]:
    """MIDI pitches (-1: none) of the melody and of each generated track on the step before
    `end`: what the next phrase's voices must join without parallels."""
    t = end - 1
    top = max((n.pitch for n in melody if n.start <= t < n.end), default=-1)
    return [top] + [next((n.pitch for n in answer if n.track == k and n.start <= t < n.end), -1) for k in range(tracks)]


BASS_BELOW = 60   # in the model's register (the tune near MELODY_TARGET)


def is_bass(low: int, tune: int | None) -> bool:
    """The player's lowest note besides the tune is a bass line: under middle C once the
    tune sits where the models expect a soprano, or an octave or more under the tune (two
    notes of one hand lie closer; Bach's bass rises to E4)."""
    return tune is None or (low < tune and (low < BASS_BELOW or tune - low >= 12))


def plays_bass(held: list[int]) -> bool:
    """What the player holds over an answer (sorted pitches, the top one standing for the
    tune): its lowest note is a bass line (`is_bass`; a lone note only under middle C)."""
    return is_bass(held[0], held[-1]) if len(held) > 1 else held[0] < BASS_BELOW


def both_hands(notes: list[R.Note], start: int, steps: int, shift: int, pitch_low: int, tracks: list[str],
               tune: np.ndarray) -> tuple[list, np.ndarray | None]:
    """What the player holds besides the tune at each step of [start, start + steps) (the
    notes moved by `shift`, `tune` the tune's pitch index per step): a `Hands` per step, and
    the tracks' `fixed` pitches (see `voice_lead`): where the player plays a bass line, the
    model's bass follows it (the player's own bass, or a rest while it rests) instead of
    adding another one under or against it, and the other voices stay above it."""
    hands, low, played = [], np.full(steps, -1), np.zeros(steps, bool)
    for t in range(steps):
        others = sorted({n.pitch + shift - pitch_low for n in notes if n.start <= start + t < n.end} - {int(tune[t])})
        if not others:
            hands.append(None)
            continue
        bass = others[0] if is_bass(others[0] + pitch_low, tune[t] + pitch_low if tune[t] >= 0 else None) else None
        hands.append(Hands(tuple(others), floor=bass if bass is not None else -(10 ** 6)))
        if bass is not None:
            played[t] = True
            low[t] = bass if bass >= 0 else -1      # (under the model's range: a rest)
    names = [t.lower() for t in tracks]
    if "bass" not in names or not played.any():
        return hands, None
    fixed = np.full((len(tracks), steps), -2)
    fixed[names.index("bass")] = low      # (and a rest where the player's bass rests)
    return hands, fixed


def accompany(model: Model, notes: list[R.Note], start: int, steps: int, rng: np.random.Generator,
              threshold: float | None = None, seam: list[int] | None = None) -> list[R.Note]:
    """Generated tracks for the player's notes in [start, start + steps), in the player's octave.

    The phrase is moved by whole octaves into the model's pitch window and the result moved
    back, so a melody played low still gets voices under it. `seam` (see `seam_after`): the
    step before, when this phrase's voices follow on from the previous phrase's. The model
    hears the tune (the top note); the decoder hears both hands (`both_hands`).
    """
    info = model.info
    phrase = R.clip_to_window(notes, start, start + steps)
    shift = R.octave_shift([n.pitch for n in phrase], info.pitch_low, info.pitch_count, MELODY_TARGET)
    melody = melody_windows(phrase, start, steps, info.window_steps, info.pitch_low, info.pitch_count, shift)
    feeds = {"melody": melody}
    if info.z_dim:
        feeds["z"] = rng.standard_normal((len(melody), info.z_dim)).astype(np.float32)
    out = model.run(feeds)
    cut = info.threshold if threshold is None else threshold
    joined = [np.array([p + shift - info.pitch_low if p >= 0 else -1 for p in seam])] \
        if seam and len(seam) == len(info.tracks) + 1 else []
    result = []
    # in the model's register (the melody moved near MELODY_TARGET), so the voices keep
    # their ranges relative to the melody wherever it is played: the file's own (a fine-tune
    # writes its music's), or the choral ones
    ranges = info.voice_ranges or [VOICE_RANGES.get(t.lower()) for t in info.tracks]
    spans = [tuple(p - info.pitch_low for p in r) if r else None for r in ranges]
    w = info.window_steps
    for k in range(len(melody)):
        onsets = out["onset_probs"][k] if "onset_probs" in out else None
        tune = np.where(melody[k].any(axis=1), melody[k].argmax(axis=1), -1)
        hands, fixed = both_hands(phrase, start + k * w, w, shift, info.pitch_low, info.tracks, tune)
        result += decode(out["probs"][k], cut, info.max_polyphony, info.pitch_low, start + k * w,
                         onsets, tune, joined, spans, hands, fixed, info.parallel_penalty)
    return R.transpose(R.clip_to_window(result, start, start + steps), -shift)
