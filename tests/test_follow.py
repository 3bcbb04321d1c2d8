"""Follow mode's harmonisers: the shipped Transformer (guesses made between steps) and the
shipped step harmoniser (one pass a step); what both must do is tested on both."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from livegen.generate.continue_ import Harmoniser, SamplingSettings
from livegen.generate.harmonise import harmoniser_for
from livegen.models import Model

JSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


@pytest.fixture(scope="module")
def model():
    return Model("continue", "cpu")


@pytest.fixture(scope="module")
def one_key(one_key_continue):
    """The same Transformer in one key (conftest): for the rules a file's metadata sets, which
    do not depend on how many keys it is heard in."""
    return Model(str(one_key_continue), "cpu")


@pytest.fixture(scope="module", params=["continue", "harmonise"])
def step_model(request):
    """Either model follow mode plays."""
    return Model(request.param, "cpu")


def soprano_line(steps: int) -> list[int | None]:
    chorale = json.loads(JSB.read_text())["test"][0]
    return [row[0] if row[0] >= 0 else None for row in chorale[:steps]]


def harmonise(model, line, speculate: bool, sampling: SamplingSettings = SamplingSettings(0.9, 0.95)):
    h = Harmoniser(model, sampling, np.random.default_rng(7), live=True)
    out = []
    for s in line:
        out.append(h.step(s, urgent=speculate))   # without guesses the context slides in step()
        if speculate:
            h.speculate()
    return out, h


@pytest.mark.parametrize("key_penalty", [0.0, 3.0])
def test_a_guessed_step_sounds_the_same_as_a_decoded_one(model, key_penalty):
    """The seed decides the music: the guesses only make it sooner. Over 80 steps the
    16-step context slides several times, with and without guesses (and with a pull towards
    the key heard, which a guess must see as the step decoded on its note does)."""
    line = soprano_line(80)
    sampling = SamplingSettings(0.9, 0.95, key_penalty)
    plain, _ = harmonise(model, line, speculate=False, sampling=sampling)
    guessed, h = harmonise(model, line, speculate=True, sampling=sampling)
    same = sum(a == b for a, b in zip(plain, guessed))
    assert same >= 0.95 * len(line), same       # batch and single passes round differently, rarely
    # a Bach tune is almost always among the 24 guesses
    assert h.guess_stats["hits"] >= 0.98 * (len(line) - 1), h.guess_stats
    for alto, tenor, bass in guessed:
        assert all(p == -1 or 36 <= p < 84 for p in (alto, tenor, bass))


class RestLoving:
    """The shipped Transformer with its rest made e**5 times likelier: what a model fine-tuned
    on string quartets learned (a voice that rests rests on, as in a solo passage)."""

    def __init__(self, model):
        self.model, self.info = model, model.info

    def run(self, feeds, options=None):
        out = dict(self.model.run(feeds, options))
        out["logits"] = out["logits"].copy()
        out["logits"][..., self.info.pitch_count] += 5.0
        return out


@pytest.mark.parametrize("speculate", [False, True])
def test_no_voice_stays_silent_a_bar_while_the_player_plays(model, speculate):
    """Follow mode with a model that would rather rest: each voice comes in again within
    SILENT_STEPS steps of the player's notes (before: the voices fell silent and stayed so)."""
    line = [s if s is not None else 67 for s in soprano_line(96)]       # the player plays throughout
    out, _ = harmonise(RestLoving(model), line, speculate=speculate)
    longest = [0, 0, 0]
    for voice in range(3):
        run = 0
        for step in out:
            run = run + 1 if step[voice] == -1 else 0
            longest[voice] = max(longest[voice], run)
    assert max(longest) <= Harmoniser.SILENT_STEPS, longest
    assert sum(p != -1 for step in out for p in step) > 0.5 * 3 * len(line)


def test_an_unguessed_note_is_decoded_and_a_note_during_the_guess_uses_what_is_done(model):
    h = Harmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(1), live=True)
    h.speculate()                           # before the first note: its octave, from BOS
    assert h.guesses and h.step(67, urgent=True)
    assert h.guess_stats["hits"] == 1
    h.speculate()
    guessed = {s for g in h.guesses for s in g["sopranos"]}
    assert len(guessed) == h.TIER * h.TIERS
    far = next(p for p in range(40, 80) if h.soprano_token(p) not in guessed)
    assert all(-1 <= v < 128 for v in h.step(far, urgent=True))
    assert h.guess_stats == {"hits": 1, "misses": 1, "unguessed": 0, "stopped": 0, "corrected": 0}
    h.speculate(interrupt=lambda: True)     # a note came in: stop after the bass is fed
    assert h.guesses == [] and h.pending_bass is None
    h.step(far, urgent=True)
    calls = []
    h.speculate(interrupt=lambda: calls.append(1) or len(calls) > 1)   # one batched pass done
    assert len(h.guesses) == 1 and len(h.guesses[0]["tokens"][0]) == 1
    voices = h.step(h.guesses[0]["sopranos"][0] + h.model.info.pitch_low - h.shift, urgent=True)
    assert len(voices) == 3 and h.guess_stats["hits"] == 2 and h.guess_stats["unguessed"] == 1
    assert h.dec.cached <= h.FOLLOW_TOKENS


def stop_during_a_pass(h, model, decoder: bool = False) -> None:
    """`speculate` on a thread of its own, and `stop_guessing` once its first model pass has
    begun (`decoder`: the decoder's passes too, such as the slide), as a note would."""
    import threading

    running = threading.Event()

    def run_and_say(*args):
        running.set()
        return model.run(*args)

    h.model = SimpleNamespace(run=run_and_say, info=model.info)
    if decoder:
        h.dec.model = h.model
    worker = threading.Thread(target=h.speculate)
    worker.start()
    assert running.wait(10)
    h.stop_guessing()
    worker.join()
    h.model = h.dec.model = model


def test_a_note_stops_the_guess_pass_that_is_running(model):
    """stop_guessing (called by the capture thread when a note comes) ends the running
    batched pass; the step is then decoded from what the guess had finished. (How soon, in
    ms, is machine time: benchmarks/live_timing.py --mode follow measures it.)"""
    h = Harmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(3), live=True)
    for p in (67, 67, 69):
        h.step(p, urgent=True)
    stop_during_a_pass(h, model)      # the guess's first pass
    assert h.guess_stats["stopped"] == 1
    full = Harmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(3), live=True)
    for p in (67, 67, 69):
        full.step(p, urgent=True)
    full.speculate()
    assert full.guess_stats["stopped"] == 0
    done = sum(len(t) for g in h.guesses for t in g["tokens"])
    assert done < sum(len(t) for g in full.guesses for t in g["tokens"]) / 2    # it stopped early
    voices = h.step(71, urgent=True)
    assert voices == full.step(71, urgent=True)      # the same music either way
    assert h.dec.tokens == full.dec.tokens


def test_a_note_stops_the_context_slide_that_comes_before_the_guesses(model):
    """Near the end of the context the guesses begin with a slide (the context fed again from
    its last steps, one long pass): a note that comes meanwhile stops it too, the context is
    left as it was, and its step is decoded at once."""
    h = Harmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(5), live=True)
    tune = [67, 69, 71, 72, 74, 72, 71, 69]
    k = 0
    while h.dec.cached + 12 <= h.dec.max_tokens:
        h.step(tune[k % len(tune)], urgent=True)     # (urgent: never slides on its own)
        k += 1
    before = (list(h.dec.tokens), h.dec.cached, h.pending_bass)
    stop_during_a_pass(h, model, decoder=True)      # the slide's pass
    assert h.guess_stats["stopped"] == 1 and h.guesses == []
    assert (list(h.dec.tokens), h.dec.cached, h.pending_bass) == before     # the context as it was
    voices = h.step(tune[k % len(tune)], urgent=True)
    assert len(voices) == 3 and all(v == -1 or 30 <= v <= 90 for v in voices)


def test_in_a_long_silence_the_voices_rest_and_the_guesses_are_made_once(model):
    h = Harmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(4), live=True)
    for p in (67, 69, 71, 72):
        h.step(p, urgent=True)
        h.speculate()
    for _ in range(h.PAUSE_STEPS):
        h.step(None)
        h.speculate()
    assert h.paused
    kept, cached = h.guesses, h.dec.cached
    for _ in range(40):                     # two and a half more bars of silence
        assert h.step(None) == [-1, -1, -1]
        h.speculate()
        assert h.guesses is kept and h.dec.cached == cached
    hits = h.guess_stats["hits"]
    assert len(h.step(72, urgent=True)) == 3 and h.guess_stats["hits"] == hits + 1   # back at once
    assert not h.paused


def test_a_late_note_corrects_the_step_sounded_on_the_grid(model):
    """A held step is sounded on its grid time; a note that comes late for that step takes
    it back and harmonises it again, as if the note had been on time."""
    def run(late: bool):
        h = Harmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(6), live=True)
        h.speculate()
        out = [h.step(p, urgent=True) for p in (67, 69)]
        h.speculate()
        if late:
            out.append(h.step(69, undo=True))      # still holding 69 on the grid ...
            h.speculate()                          # (the guessing goes on meanwhile)
            out[-1] = h.redo(71)                   # ... then the 71 meant for this step comes
        else:
            out.append(h.step(71, urgent=True))
        h.speculate()
        out.append(h.step(72, urgent=True))
        return out, h

    on_time, _ = run(late=False)
    corrected, h = run(late=True)
    assert corrected == on_time
    assert h.guess_stats["corrected"] == 1 and h.redo(60) is None    # once per step


def test_an_answer_after_a_cadence_still_sings_in_four_voices(model):
    """respond + continue: the answer never ends the piece. Seed 44 on this melody (the live
    tests' phrase, ending on a cadence) answered with 2 notes in 2 voices before rests were
    left out of answers; CI heard such an empty phrase once."""
    from livegen.config import Settings
    from livegen.phrase import generate
    from livegen.roll import Note
    from tests.virtual import MELODY

    melody = [Note(p, s, e) for p, s, e in MELODY]
    for seed in (44, 1):
        answer = generate(model, Settings(mode="respond"), melody, 0, 32, np.random.default_rng(seed))
        for voice in range(4):
            steps = sorted(s for n in answer if n.track == voice for s in range(n.start, n.end))
            assert steps == list(range(32)), (seed, voice, steps)    # sounding on every step of the phrase


def test_the_player_may_start_anywhere_and_move_to_another_register(step_model):
    """The octaves the model hears the player in are chosen again when the player goes to
    another register, or began with a lone low or high note: the tune is harmonised, under
    the player's note, wherever it is played. (They were fixed by the first note: after a
    lone C3 every step of the tune rested.)"""
    tune = [67] * 4 + [69] * 2 + [71] * 2 + [72] * 4 + [74] * 4 + [72] * 2 + [71] * 2 + [69] * 4 + [67] * 8
    line = tune + [p + 24 for p in tune] + [p - 24 for p in tune]       # G4, then two octaves up, then down
    for first in (None, 36, 48, 60, 96):
        h = harmoniser_for(step_model, SamplingSettings(0.9, 0.95), np.random.default_rng(1), live=False)
        for s in [first] * 4 + [None] * 4 if first else []:
            h.step(s)
        outs = [h.step(s) for s in line]
        for k in range(3):                      # each register
            part = outs[k * len(tune):(k + 1) * len(tune)]
            voiced = sum(any(p >= 0 for p in o) for o in part)
            assert voiced >= 0.9 * len(tune), (first, k, voiced)
        assert all(p <= s for s, o in zip(line, outs) for p in o if p >= 0), first


def parallel_moves(rows) -> tuple[int, int]:
    """(parallel fifths and octaves, moves) over every pair of voices of (s, a, t, b) rows: a
    move is a step where both voices of a pair move; a parallel keeps a fifth or an octave
    (or a unison) in the same direction."""
    moves = found = 0
    for a, b in zip(rows, rows[1:]):
        for i in range(4):
            for j in range(i + 1, 4):
                if min(a[i], a[j], b[i], b[j]) < 0 or a[i] == b[i] or a[j] == b[j]:
                    continue
                moves += 1
                interval = (a[i] - a[j]) % 12
                found += interval in (0, 7) and (b[i] - b[j]) % 12 == interval and (b[i] > a[i]) == (b[j] > a[j])
    return found, moves


def test_the_voices_move_in_parallel_fifths_and_octaves_no_more_than_bach_does(step_model):
    """Each voice is drawn without the notes that would move in parallel fifths or octaves with
    a voice above it. Over the first 128 steps of eight JSB test chorales, played as the
    soprano: at most twice Bach's own rate in those chorales (it was 12 times: 0.036 a move)."""
    chorales = json.loads(JSB.read_text())["test"][:8]
    ours, bach = [0, 0], [0, 0]
    for chorale in chorales:
        rows = [list(r) for r in chorale[:128]]
        h = harmoniser_for(step_model, SamplingSettings(0.9, 0.95), np.random.default_rng(1), live=False)
        out = [[r[0]] + h.step(r[0] if r[0] >= 0 else None) for r in rows]
        for total, (found, moves) in ((ours, parallel_moves(out)), (bach, parallel_moves(rows))):
            total[0] += found
            total[1] += moves
    assert ours[1] > 800 and bach[1] > 800
    assert ours[0] / ours[1] <= 2 * max(bach[0] / bach[1], 0.001), (ours, bach)


def test_the_answers_context_hears_the_players_bass_and_chords(step_model):
    """respond + continue: the phrase is harmonised silently as it is played, the answer
    continuing from it. With the player's left hand heard, the context's bass is the
    player's own, and the inner voices never sound a semitone against a held note or go
    under the bass (JSB test chorale 2, soprano and bass played, 64 steps)."""
    chorale = json.loads(JSB.read_text())["test"][2][:64]
    h = harmoniser_for(step_model, SamplingSettings(0.9, 0.95), np.random.default_rng(3))
    for s, _, _, b in chorale:
        held = (int(b),) if b >= 0 else ()
        alto, tenor, bass = h.step(int(s) if s >= 0 else None, held=held)
        assert bass == (int(b) if b >= 0 else -1)
        for v in (alto, tenor):
            if v >= 0 and held:
                assert (v - held[0]) % 12 not in (1, 11) and v >= held[0], (s, v, held)
    plain = harmoniser_for(step_model, SamplingSettings(0.9, 0.95), np.random.default_rng(3))
    own = [plain.step(int(s) if s >= 0 else None)[2] for s, _, _, b in chorale]
    assert sum(o != b for o, (_, _, _, b) in zip(own, chorale)) > 16    # (it writes another bass otherwise)


# ---------------------------------------------------------------- the step harmoniser (harmonise)

class Counting:
    """The bundled harmonise model, its passes counted (and how many steps each one fed)."""

    def __init__(self):
        self.model = Model("harmonise", "cpu")
        self.info = self.model.info
        self.passes: list[int] = []

    def run(self, feeds, options=None):
        self.passes.append(feeds["chord"].shape[1])
        return self.model.run(feeds, options)


def test_a_step_is_one_pass_and_the_state_is_remade_between_steps_the_same_either_way():
    """One pass per step (the Transformer needs three, and guesses ahead). Once the state
    holds REFRESH steps it is made again from the last KEEP (at most 128 steps from zero, as
    trained): between steps when follow mode leaves time for it (`speculate`), else before
    the next step's pass; the voices are the same either way."""
    from livegen.generate.harmonise import ChordHarmoniser

    line = [row[0] for c in json.loads(JSB.read_text())["test"][:6] for row in c if row[0] >= 0][:400]
    assert len(line) == 400
    runs = {}
    for between in (True, False):
        m = Counting()
        h = ChordHarmoniser(m, SamplingSettings(0.9, 0.95), np.random.default_rng(1), live=True)
        in_step, outs = [], []
        for at, s in enumerate(line):
            before = len(m.passes)
            outs.append(h.step(s, urgent=True, at=at))
            in_step += m.passes[before:]
            if between:
                h.speculate()
        runs[between] = outs
        remade = [n for n in m.passes if n > 1]
        every = ChordHarmoniser.REFRESH - ChordHarmoniser.KEEP   # (after a remake the state holds KEEP steps)
        assert remade == [ChordHarmoniser.KEEP] * (1 + (400 - ChordHarmoniser.REFRESH) // every)
        assert in_step == [1] * 400 if between else len(in_step) == 400 + len(remade)
    assert runs[True] == runs[False]


def test_the_step_harmoniser_sings_under_the_tune_for_a_whole_evening():
    """Thirty test chorales' sopranos one after another (over 7,000 steps, one session): at the
    end as at the start the three voices sound under the tune on nearly every step it plays."""
    from livegen.generate.harmonise import ChordHarmoniser

    chorales = json.loads(JSB.read_text())["test"][:30]
    line = [row[0] if row[0] >= 0 else None for c in chorales for row in c]
    h = ChordHarmoniser(Model("harmonise", "cpu"), SamplingSettings(0.9, 0.95), np.random.default_rng(2), live=True)
    outs = [h.step(s, at=at) for at, s in enumerate(line)]
    assert len(line) > 7000
    for part in (slice(0, 512), slice(-512, None)):
        sung = [(s, o) for s, o in zip(line[part], outs[part]) if s is not None]
        full = sum(all(p >= 0 for p in o) for _, o in sung)
        assert full >= 0.95 * len(sung), (part, full, len(sung))
        assert all(p <= s for s, o in sung for p in o)


def test_a_late_note_sounds_its_step_again_with_the_step_harmoniser():
    """A step sounded on the grid under a held note is taken back when the player's note for
    it comes late, and harmonised again under that note; the steps after go on from there."""
    from livegen.generate.harmonise import ChordHarmoniser

    model = Model("harmonise", "cpu")
    h = ChordHarmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(4), live=True)
    for at, s in enumerate([67, 67, 69, 69, 71, 71, 72, 72]):
        h.step(s, urgent=True, at=at)
    h.step(72, undo=True, at=8)                        # held on the grid...
    again = h.redo(64)                                # ...but the player's E came late for it
    assert again is not None and all(-1 <= p < 64 for p in again) and max(again) > 0
    assert h.count == 9 and h.before[0] == 64 + h.shift - model.info.pitch_low
    assert h.redo(65) is not None and h.count == 9    # another key of that chord: again
    h.step(64, urgent=True, at=9)
    assert h.redo(65) is None                         # only the last step


@pytest.mark.parametrize("name", ["harmonise", "continue"])
def test_a_chord_is_heard_whole_though_its_keys_land_one_after_another(name):
    """Both hands strike together, but their note-ons come one by one: here the bass a
    millisecond before the tune. The step was sounded on the first key, the bass taken for
    the tune; every other key of the chord sounds the step again with all the keys held, so
    the voices sit between the player's bass and the tune, and the bass voice is the player's
    bass (or rests, where that bass lies under the model's range as the tune is moved)."""
    from tests.virtual import Rig

    rig = Rig(Model(name, "cpu"), mode="follow", seed=3)
    step_s = 60 / (120 * 4)
    t0 = rig.t0 + 0.1
    for k, (bass, tune) in enumerate([(48, 76), (43, 74), (45, 72), (41, 72)]):
        at = t0 + 4 * k * step_s
        rig.at(at, [0x90, bass, 90])
        rig.at(at + 0.001, [0x90, tune, 90])
        rig.at(at + 4 * step_s - 0.01, [0x80, bass, 0])
        rig.at(at + 4 * step_s - 0.005, [0x80, tune, 0])
    for k, (bass, tune) in enumerate([(48, 76), (43, 74), (45, 72), (41, 72)]):
        rig.run_until(t0 + (4 * k + 0.5) * step_s)       # (the step the chord is struck on)
        voices = {ch: p for ch, p in rig.sounding() if ch in (1, 2, 3)}
        assert voices.get(3) in (bass, None) and 1 in voices and 2 in voices, (k, voices)
        assert all(bass <= p <= tune for p in voices.values()), (k, voices)
        if k == 0:
            assert voices[3] == 48                                    # (C3 lies in the range)
    rig.stop()


def test_a_files_range_penalty_keeps_each_voice_in_its_range(one_key):
    """A continue file's `livegen.voice_ranges` and `livegen.range_penalty` (a fine-tune
    sets them from music whose voices keep to narrower ranges than the chorales') keep each
    voice in its range: in follow mode, decoded on the note or from a guess, and in a respond
    answer, which writes the tune too. Without the penalty the same narrow ranges are left."""
    model = one_key
    ranges = [(67, 74), (62, 67), (52, 57), (40, 45)]
    line = [s if s is not None else 69 for s in soprano_line(48)]
    info = model.info
    saved = info.voice_ranges, info.range_penalty

    def outside(penalty) -> float:
        info.voice_ranges, info.range_penalty = ranges, penalty
        out = []
        for speculate in (False, True):
            out += [dict(zip((1, 2, 3), step)) for step in harmonise(model, line, speculate)[0]]
        h = Harmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(3))
        for s in line[:16]:
            h.step(s)
        out += [dict(enumerate(step)) for _, step in h.answer(16)]
        notes = [(v, p) for step in out for v, p in step.items() if p >= 0]
        return sum(not ranges[v][0] <= p <= ranges[v][1] for v, p in notes) / len(notes)

    try:
        free, pulled = outside(0.0), outside(20.0)
    finally:
        info.voice_ranges, info.range_penalty = saved
    assert free > 0.3 and pulled == 0.0, (free, pulled)


def test_a_tune_in_a_files_own_soprano_range_is_not_moved_by_octaves(model):
    """A fine-tune writes where its music's voices lie (`livegen.voice_ranges`, soprano
    first, here a Palestrina folder's): a tune in that register, low or high, is played to the
    model where it is. Moved by octaves towards the chorales' middle, the voices the model
    wrote under the moved tune came back with it, out of their ranges (a bass above B-flat4).
    Without the file's ranges a low tune is moved up an octave, as for the chorales."""
    from training.evaluate import VOICE_RANGES

    line = soprano_line(48)
    top = max(s for s in line if s is not None)
    info = model.info
    saved = info.voice_ranges, info.range_penalty
    own = [(57, 77), (57, 69), (55, 67), (48, 62)]

    def placed(tune, ranges) -> tuple[set, list]:
        info.voice_ranges, info.range_penalty = ranges, (4.0 if ranges else 0.0)
        h = Harmoniser(model, SamplingSettings(0.9, 0.95), np.random.default_rng(5))
        shifts, steps = set(), []
        for s in tune:
            steps.append(h.step(s))
            shifts.add(h.shift)
        return shifts, steps

    try:
        for moved in (63 - top, 80 - top):       # (the tune's top on E-flat4, then on A-flat5)
            tune = [None if s is None else s + moved for s in line]
            shifts, steps = placed(tune, own)
            assert shifts == {0}, (moved, shifts)
            bass = [step[2] for step in steps if step[2] >= 0]
            lo, hi = VOICE_RANGES["bass"]
            assert bass and all(lo <= p <= hi for p in bass), (moved, bass)
            assert all(p <= s for s, step in zip(tune, steps) if s is not None for p in step), "above the tune"
        chorale_shifts, _ = placed([None if s is None else s + 63 - top for s in line], None)
        assert min(chorale_shifts) >= 12, chorale_shifts       # (up an octave or two)
    finally:
        info.voice_ranges, info.range_penalty = saved


def test_a_files_parallel_penalty_lets_some_parallels_through(one_key):
    """The chorales' voices avoid parallel fifths and octaves, and follow mode bans them; a
    fine-tune on music that has some (Palestrina: 0.014 a move) writes what they cost instead
    (`livegen.parallel_penalty`), decoded on the note or from a guess: free, the voices move
    in parallels; at a high charge almost never; banned, never."""
    model = one_key
    from training.evaluate import estimate_key, voice_metrics

    tunes = [np.array(c, np.int16)[:64] for c in json.loads(JSB.read_text())["test"][:6]]
    info = model.info

    def rate(banned_, penalty=0.0) -> float:
        info.parallels_banned, info.parallel_penalty = banned_, penalty
        moves = parallels = 0
        for c in tunes:
            h = Harmoniser(model, SamplingSettings(1.0, 1.0), np.random.default_rng(0), live=True)
            line = [int(s) if s >= 0 else None for s in c[:, 0]]
            voices = []
            for k, s in enumerate(line):
                voices.append([s if s is not None else -1] + h.step(s, urgent=k % 2 == 0))
                if k % 2 == 0:
                    h.speculate()      # (every other step from a guess)
            m = voice_metrics(np.array(voices), estimate_key(c))
            moves, parallels = moves + m["moves"], parallels + m["parallels"]
        return parallels / moves

    try:
        banned_rate, charged, free = rate(True), rate(False, 20.0), rate(False, 0.0)
    finally:
        info.parallels_banned, info.parallel_penalty = True, 3.0
    assert banned_rate == 0.0 and charged < 0.005 and free > 0.02, (banned_rate, charged, free)


def test_a_files_key_penalty_keeps_the_voices_in_the_key(one_key):
    """A continue file's `livegen.key_penalty` (a fine-tune writes the one that fits its
    music) pulls the voices follow mode draws into the key heard in the player's notes, or
    into the player's own `--key`; without it they are drawn as the model has them."""
    model = one_key
    from livegen.key import scale
    from training.evaluate import estimate_key

    tunes = [np.array(c, np.int16)[:64] for c in json.loads(JSB.read_text())["test"][:6]]

    def in_key(penalty, key=None):
        inside = total = 0
        for c in tunes:
            h = Harmoniser(model, SamplingSettings(0.9, 0.95, penalty, key), np.random.default_rng(0))
            pcs = scale(key) if key else estimate_key(c)
            for s in c[:, 0]:
                voices = [p for p in h.step(int(s) if s >= 0 else None) if p >= 0]
                inside, total = inside + sum(p % 12 in pcs for p in voices), total + len(voices)
        return inside / total

    free, pulled = in_key(0.0), in_key(4.0)
    assert pulled > free + 0.02 and pulled > 0.94, (free, pulled)      # (0.918 and 0.955 when written)
    # the player's key wins over the one heard: a tune in a chorale's key, voices pulled to F#
    assert in_key(0.0, "F# major") < 0.6 < 0.9 < in_key(4.0, "F# major")
