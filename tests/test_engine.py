"""Every way of listening, in the test process: the live engine on a virtual clock with a
recording output (tests/virtual.py), real ONNX models, exact notes, channels and steps.

Nothing here needs JACK or sleeps; the same melody played twice gives the same messages.
"""
from __future__ import annotations

import numpy as np
import pytest

from livegen.config import Settings
from livegen.models import Model
from livegen.phrase import generate
from livegen.roll import Note
from tests.virtual import MELODY, SHIFTS, Rig

BPM = 120
STEP = 60 / (BPM * 4)       # 125 ms
PHRASE = 32


@pytest.fixture(scope="module")
def bundled():
    return {kind: Model(kind, "cpu") for kind in ("accompany", "edit", "continue")}


def shifted(notes, phrase_offset=PHRASE):
    """(channel, pitch, step) the shift model answers with, one phrase later."""
    return sorted((1 + k, p - s, float(start + phrase_offset)) for p, start, _ in notes for k, s in enumerate(SHIFTS))


def played(notes, velocity=100):
    return [Note(p, s, e, velocity) for p, s, e in notes]


def first_seed(seed: int) -> np.random.Generator:
    """The generator a phrase answer is made with: each phrase draws its seed from the session's."""
    return np.random.default_rng(int(np.random.default_rng(seed).integers(2 ** 63)))


def assert_all_ended(rig: Rig) -> None:
    assert rig.engine.scheduler.ledger.sounding == {}, "the note-off ledger is not empty"
    assert rig.sounding() == set(), "a note-on without its note-off"
    assert rig.unmatched_offs() == 0


def test_loop_answers_each_phrase_in_the_next_on_its_channels_at_the_exact_steps(shift_model):
    rig = Rig(str(shift_model), bpm=BPM, seed=1)
    t0 = rig.t0 + 1.0
    rig.play(MELODY, t0, STEP)
    rig.run_until(t0 + 3 * PHRASE * STEP)
    rig.stop()
    assert rig.notes(STEP, t0) == shifted(MELODY)
    assert {v for *_, v in rig.note_ons()} == {100}
    assert_all_ended(rig)
    ccs = [m for _, m in rig.sent if m[0] & 0xF0 == 0xB0]
    for ch in (1, 2, 3):   # every channel used is told: all notes off, all sound off, after the note-offs
        assert [0xB0 | ch, 123, 0] in ccs and [0xB0 | ch, 120, 0] in ccs
    assert rig.engine.stats["phrases"] == 1 and rig.engine.scheduler.stats["late_dropped"] == 0


def test_the_same_playing_gives_the_same_messages(shift_model):
    runs = []
    for _ in range(2):
        rig = Rig(str(shift_model), bpm=BPM, seed=1)
        rig.play(MELODY, rig.t0 + 1.0, STEP)
        rig.run_until(rig.t0 + 1.0 + 3 * PHRASE * STEP)
        rig.stop()
        runs.append([(round(t - rig.clock.t, 9), m) for t, m in rig.sent])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("mode", ["loop", "respond"])
def test_the_edit_model_answers_with_the_phrase_rewritten(bundled, mode):
    rig = Rig(bundled["edit"], bpm=BPM, seed=3, mode=mode)
    t0 = rig.t0 + 1.0
    rig.play(MELODY, t0, STEP)
    rig.run_until(t0 + 3 * PHRASE * STEP)
    rig.stop()
    want = generate(bundled["edit"], Settings(mode=mode), played(MELODY), 0, PHRASE, first_seed(3))
    assert rig.notes(STEP, t0) == sorted((1, n.pitch, float(n.start + PHRASE)) for n in want)
    if mode == "loop":    # the player's notes are kept (an added note may run into one)
        cells = {(n.pitch, s) for n in want for s in range(n.start, n.end)}
        assert {(p, s) for p, start, end in MELODY for s in range(start, end)} <= cells
    assert_all_ended(rig)


def test_respond_with_the_transformer_answers_in_four_voices_from_what_was_played(bundled):
    rig = Rig(bundled["continue"], bpm=BPM, seed=5, mode="respond")
    t0 = rig.t0 + 1.0
    rig.play(MELODY, t0, STEP)
    rig.run_until(t0 + 3 * PHRASE * STEP)
    rig.stop()
    want = generate(bundled["continue"], Settings(mode="respond"), played(MELODY), 0, PHRASE,
                    np.random.default_rng(5))
    assert rig.notes(STEP, t0) == sorted((1 + n.track, n.pitch, float(n.start + PHRASE)) for n in want)
    assert {ch for _, ch, _, _ in rig.note_ons()} == {1, 2, 3, 4}
    assert_all_ended(rig)


def test_respond_with_the_transformer_hears_a_flood_of_keys_on_one_step_without_losing_its_own_steps(bundled):
    """Every key struck on an answer step is a job for the worker (the step may not fit it):
    85 keys at once on one step (a forearm on the keyboard, or garbage on the line) are
    looked at a few times, not 85, so the queue keeps room for the context's steps and no
    job is dropped; the answer plays on and every note ends."""
    rig = Rig(bundled["continue"], bpm=BPM, seed=5, mode="respond")
    t0 = rig.t0 + 1.0
    rig.play(MELODY, t0, STEP)
    for pitch in range(24, 109):
        rig.at(t0 + 40 * STEP, [0x90, pitch, 70])
        rig.at(t0 + 42 * STEP, [0x80, pitch, 0])
    rig.run_until(t0 + 3 * PHRASE * STEP)
    rig.stop()
    assert rig.engine.stats["phrases_dropped"] == 0
    assert len([n for n in rig.note_ons() if n[0] - t0 >= PHRASE * STEP]) > 8    # the answer
    assert_all_ended(rig)


FOLLOW_TUNE = [(67, 0, 4), (69, 4, 6), (71, 6, 8), (72, 8, 16), (71, 16, 18), (69, 18, 20), (67, 20, 24)]


def follow_rig(bundled, late_s=0.0):
    """The tune, then a bar and a half of silence, then one note again; with `late_s`, the
    note at step 6 comes that late (after its step was sounded under the note before)."""
    rig = Rig(bundled["continue"], bpm=BPM, seed=2, mode="follow")
    t0 = rig.t0 + 1.0
    for pitch, start, end in FOLLOW_TUNE + [(74, 48, 52)]:
        late = late_s if start == 6 else 0.0
        rig.at(t0 + start * STEP + late, [0x90, pitch, 90])
        rig.at(t0 + end * STEP - 0.01, [0x80, pitch, 0])
    rig.run_until(t0 + 56 * STEP)
    rig.stop()
    return rig, t0


def test_follow_harmonises_each_step_as_it_is_played_and_rests_in_a_silence(bundled):
    rig, t0 = follow_rig(bundled)
    ons = rig.note_ons()
    assert {ch for _, ch, _, _ in ons} <= {1, 2, 3}
    player_times = [t0 + s * STEP for _, s, _ in FOLLOW_TUNE + [(74, 48, 52)]]
    for t, ch, pitch, velocity in ons:
        step = (t - t0) / STEP
        # at the player's note (no delay on a virtual clock), or on the grid under a held note
        on_note = any(abs(t - pt) < 1e-9 for pt in player_times)
        on_grid = abs((step - round(step)) * STEP - 0.006) < 1e-6
        assert on_note or on_grid, f"a voice at step {step:.3f}"
        assert velocity == 90
        assert not 24 + 16 <= step < 48, f"a voice sounds at step {step:.2f}, after a bar of silence"
    sounding_at = {}     # which voices sound at the start of each step the player holds a note
    for s in range(24):
        t = t0 + s * STEP + 0.01
        sounding_at[s] = {(ch, p) for (tt, ch, p, _) in ons if tt <= t} - _ended_by(rig, t)
    assert sum(len(v) >= 2 for v in sounding_at.values()) >= 20, sounding_at
    assert_all_ended(rig)
    again, _ = follow_rig(bundled)
    assert [(round(t - rig.t0, 9), m) for t, m in rig.sent] == [(round(t - again.t0, 9), m) for t, m in again.sent]


def _ended_by(rig: Rig, t: float) -> set[tuple[int, int]]:
    ended, on = set(), set()
    for tt, m in rig.sent:
        if tt > t:
            break
        key = (m[0] & 0x0F, m[1] if len(m) > 1 else 0)
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            on.add(key)
            ended.discard(key)
        elif m[0] & 0xF0 == 0x80 and key in on:
            ended.add(key)
    return ended


def test_follow_sounds_a_late_note_s_step_again_with_it(bundled):
    rig, t0 = follow_rig(bundled, late_s=0.03)    # 30 ms late: within the early/late tolerance (42 ms)
    late_at = t0 + 6 * STEP + 0.03
    assert rig.engine.playing.harmoniser.guess_stats["corrected"] == 1
    again = [(t, ch, p) for t, ch, p, _ in rig.note_ons() if abs(t - late_at) < 1e-9]
    sounded = [(t, ch, p) for t, ch, p, _ in rig.note_ons() if abs(t - (t0 + 6 * STEP + 0.006)) < 1e-9]
    assert again or sounded, "nothing sounded at step 6"
    on_time, _ = follow_rig(bundled)
    assert [m for t, m in on_time.sent if t > t0 + 8 * STEP] == [m for t, m in rig.sent if t > t0 + 8 * STEP], \
        "after the corrected step the music goes on as if the note had come on time"
    assert_all_ended(rig)


def test_midi_clock_start_stop_continue_and_song_position(shift_model):
    rig = Rig(str(shift_model), clock="midi", bpm=BPM, seed=1)
    tick = 60 / (150 * 24)
    step = tick * 6
    t0 = rig.t0 + 1.0
    rig.at(t0 - 0.05, [0xFA])                    # Start: the next tick is step 0
    for n in range(int(1.5 * PHRASE * 6)):
        rig.at(t0 + n * tick, [0xF8])
    notes = [(72, 0, 4), (76, 8, 12), (79, 16, 20)]
    rig.play(notes, t0, step)
    stop_at = t0 + (PHRASE + 10) * step + 0.001
    rig.at(stop_at, [0xFC])                      # Stop in the middle of the answer
    rig.run_until(stop_at + 0.5)
    assert rig.notes(step, t0) == shifted(notes[:2])      # the third answer note would come after Stop
    ends = [(t, tuple(m)) for t, m in rig.sent if m[0] & 0xF0 == 0x80 and t >= stop_at]
    at_once = [m for t, m in ends if t == stop_at]
    assert len(at_once) == 3, "the voices sounding at Stop are ended at once"
    assert sorted(m for t, m in ends if t > stop_at) == sorted(at_once), "and their note-offs go once more"
    assert not [t for t, m in rig.sent if m[0] & 0xF0 == 0x90 and t > stop_at]
    assert rig.sounding() == set() and rig.engine.scheduler.ledger.sounding == {}
    # Song Position Pointer to bar 3 (step 32), then Continue: phrases count from there
    sent_before = len(rig.sent)
    t1 = stop_at + 1.0
    rig.at(t1 - 0.05, [0xF2, 32, 0])
    rig.at(t1 - 0.04, [0xFB])
    for n in range(int(2.2 * PHRASE * 6)):
        rig.at(t1 + n * tick, [0xF8])
    rig.play([(74, 0, 4)], t1, step)
    rig.run_until(t1 + 2.2 * PHRASE * step)
    rig.stop()
    later = sorted((m[0] & 0x0F, m[1], round((t - t1) / step + 32, 6)) for t, m in rig.sent[sent_before:]
                   if m[0] & 0xF0 == 0x90)
    assert later == [(1 + k, 74 - s, 64.0) for k, s in enumerate(SHIFTS)]   # phrase 1 (steps 32..63) answered in 2


def test_a_midi_stop_silences_before_the_capture_thread_gets_to_it(shift_model):
    """The input's thread hands a Stop to the capture thread, and silences at once itself:
    the capture thread may be behind (here: not run at all until later), and the notes
    must not sound on for as long as it is. When it comes, it stops the grid: no note more,
    and no second note-off for what was ended."""
    rig = Rig(str(shift_model), clock="midi", bpm=BPM, seed=1)
    tick = 60 / (BPM * 24)
    step = tick * 6
    t0 = rig.t0 + 1.0
    rig.at(t0 - 0.05, [0xFA])
    for n in range(int(1.5 * PHRASE * 6)):
        rig.at(t0 + n * tick, [0xF8])
    rig.play([(72, 0, 4), (76, 8, 20)], t0, step)
    stop_at = t0 + (PHRASE + 10) * step + 0.001      # the answer's second chord sounding
    rig.run_until(stop_at)
    sounding = set(rig.engine.scheduler.ledger.sounding)
    assert len(sounding) == 3
    sent = len(rig.sent)
    rig.engine.feed(stop_at, [0xFC])                 # from the input's thread; the capture thread is busy
    rig.engine.scheduler.pump(stop_at)
    ended = {(m[0] & 0x0F, m[1]) for _, m in rig.sent[sent:] if m[0] & 0xF0 == 0x80}
    assert ended == sounding, "the Stop waited for the capture thread"
    while not rig.engine.inq.empty():                # the capture thread's turn, 30 ms later
        _, data = rig.engine.inq.get_nowait()
        rig.engine.receive(stop_at + 0.03, data)
    rig.run_until(stop_at + 2.0)
    assert not [m for _, m in rig.sent[sent:] if m[0] & 0xF0 == 0x90], "a note after the Stop"
    assert not rig.engine.transport.running and rig.sounding() == set()
    echo = [m for t, m in rig.sent[sent:] if m[0] & 0xF0 == 0x80 and t > stop_at]
    assert len(echo) <= len(sounding)               # (its echo once, not again for the capture thread)
    rig.stop()


def test_a_tempo_change_moves_the_scheduled_answer_along(shift_model):
    rig = Rig(str(shift_model), bpm=BPM, seed=1)
    t0 = rig.t0 + 1.0
    rig.play(MELODY[:3], t0, STEP)
    change = t0 + 31.8 * STEP                   # after the cut, before the answer starts
    rig.run_until(change)
    rig.engine.apply("bpm", 60)
    rig.run_until(change + 40 * 2 * STEP)
    rig.stop()
    slow = 2 * STEP
    got = sorted((ch, p, round(31.8 + (t - change) / slow, 6)) for t, ch, p, _ in rig.note_ons())
    assert got == shifted(MELODY[:3])
    assert rig.engine.status()["bpm"] == 60


def test_an_answer_whose_first_notes_would_be_late_drops_them_and_plays_the_rest(shift_model):
    rig = Rig(str(shift_model), bpm=BPM, seed=1)
    t0 = rig.t0 + 1.0
    rig.play(MELODY, t0, STEP)
    rig.worker_held_until = t0 + PHRASE * STEP + 0.04      # a busy machine: the answer comes 40 ms late
    rig.run_until(t0 + 3 * PHRASE * STEP)
    rig.stop()
    assert rig.engine.scheduler.stats["late_dropped"] == 3          # the three voices of step 32
    assert rig.notes(STEP, t0) == [n for n in shifted(MELODY) if n[2] != PHRASE]
    assert_all_ended(rig)


def test_an_answer_that_would_be_wholly_late_is_not_played(shift_model):
    rig = Rig(str(shift_model), bpm=BPM, seed=1)
    t0 = rig.t0 + 1.0
    rig.play(MELODY, t0, STEP)
    rig.worker_held_until = t0 + 2 * PHRASE * STEP + 0.01
    rig.run_until(t0 + 3 * PHRASE * STEP)
    rig.stop()
    assert rig.note_ons() == [] and rig.engine.stats["phrases_dropped"] == 1


def test_panic_ends_every_sounding_note_then_tells_each_channel(shift_model):
    rig = Rig(str(shift_model), bpm=BPM, seed=1)
    t0 = rig.t0 + 1.0
    rig.play(MELODY, t0, STEP)
    rig.run_until(t0 + (PHRASE + 17) * STEP)            # the answer's G and its voices are sounding
    rig.engine.panic()
    n = len(rig.sent)
    rig.run_until(t0 + 3 * PHRASE * STEP)
    after = [m for _, m in rig.sent[n:]]
    assert after[:3] == [[0x80 | ch, 79 - s, 0] for ch, s in zip((1, 2, 3), SHIFTS)]
    assert after[3:9] == [[0xB0 | ch, cc, 0] for ch in (1, 2, 3) for cc in (123, 120)]
    assert after[9:] == after[:3], "the note-offs once more (a lost MIDI cycle), and nothing more is played"
    rig.stop()
    assert_all_ended(rig)


def test_a_failing_model_skips_its_phrase_and_the_next_is_played(shift_model):
    model = Model(str(shift_model), "cpu")
    real_run, failures = model.run, []

    def run(feeds, options=None):
        if not failures:            # a stand-in for ONNX Runtime failing once (e.g. a GPU error)
            failures.append(1)
            raise RuntimeError("ONNX Runtime failed")
        return real_run(feeds, options) if options is not None else real_run(feeds)

    rig = Rig(model, bpm=BPM, seed=1)
    model.run = run
    t0 = rig.t0 + 1.0
    rig.play(MELODY[:2], t0, STEP)
    rig.play([(76, 0, 4)], t0 + PHRASE * STEP, STEP)
    rig.run_until(t0 + 3 * PHRASE * STEP)
    rig.stop()
    assert rig.engine.stats["worker_errors"] == 1
    assert rig.notes(STEP, t0) == shifted([(76, PHRASE, PHRASE + 4)])     # phrase 1's answer, in phrase 2
    assert_all_ended(rig)


PROGRAMS = [("loop", "accompany"), ("loop", "edit"), ("respond", "continue"), ("respond", "edit"),
            ("follow", "continue")]


@pytest.mark.parametrize("old,new", [(a, b) for a in PROGRAMS for b in PROGRAMS if a != b],
                         ids=lambda p: "-".join(p))
def test_a_switch_between_any_two_modes_is_made_at_the_next_phrase_boundary(bundled, old, new):
    rig = Rig(bundled[old[1]], bpm=BPM, seed=4, mode=old[0])
    t0 = rig.t0 + 1.0
    tune = [(72, 0, 4), (74, 4, 8), (76, 8, 12), (77, 12, 16), (79, 16, 24), (77, 24, 28), (76, 28, 30)]
    for k in range(4):
        rig.play(tune, t0 + k * PHRASE * STEP, STEP)
    rig.run_until(t0 + 40 * STEP)                  # in phrase 1
    rig.engine.switch(spec=new[1], mode=new[0])
    rig.run_until(t0 + 4 * PHRASE * STEP)
    rig.stop()
    (_, *was), (t_new, *now) = rig.modes[0], rig.modes[-1]
    assert len(rig.modes) == 2 and was == list(old) and now == list(new)
    boundary = t0 + 2 * PHRASE * STEP
    assert boundary - STEP < t_new <= boundary + 0.01, f"switched at step {(t_new - t0) / STEP:.2f}"
    assert rig.engine.status()["mode"] == new[0] and rig.engine.status()["kind"] == new[1]
    assert [t for t, *_ in rig.note_ons() if t >= t0 + 3 * PHRASE * STEP], "the new mode plays"
    assert_all_ended(rig)


def test_a_stop_silences_at_once_while_the_worker_is_still_busy(shift_model):
    """SIGTERM, Ctrl-C and the end of `livegen run` call Engine.stop: the sounding notes end
    within milliseconds, not when the busy worker gets round to ending (real threads here)."""
    import threading
    import time

    from livegen.engine import Engine
    from livegen.modes import Job

    sent, release = [], threading.Event()
    engine = Engine(Settings(model=str(shift_model), bpm=BPM).check(), Model(str(shift_model), "cpu"),
                    lambda msg: sent.append((time.perf_counter(), list(msg))))
    engine.start()
    engine.playing.run = lambda job: release.wait(1.5)     # a stand-in for an answer taking 1.5 s
    engine.scheduler.note_now(1, 67, 90)                     # a voice sounding
    engine.jobs.put(Job(0, 0, PHRASE, []))
    deadline = time.perf_counter() + 2
    while not any(m[:2] == [0x91, 67] for _, m in sent) and time.perf_counter() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)                                          # the worker is in its job now
    t = time.perf_counter()
    stopper = threading.Thread(target=engine.stop)
    stopper.start()
    while not any(m == [0x81, 67, 0] for _, m in sent) and time.perf_counter() < deadline:
        time.sleep(0.001)
    silent_at = next(when for when, m in sent if m == [0x81, 67, 0])
    release.set()
    stopper.join(5)
    assert silent_at - t < 0.1, f"the note ended {1000 * (silent_at - t):.0f} ms after the stop"
    offs = [i for i, (_, m) in enumerate(sent) if m == [0x81, 67, 0]]
    ccs = [i for i, (_, m) in enumerate(sent) if m[0] == 0xB1 and m[1] in (123, 120)]
    assert offs and ccs and offs[0] < ccs[0], "its own note-off first, then CC 123/120"
    assert len(offs) <= 2, "one note-off, and the panic's once more"


def test_follow_ends_a_key_whose_note_off_was_lost_and_harmonises_the_tune_again(bundled, caplog):
    """A high C whose note-off never came was the soprano for ever: the tune played under it
    was never harmonised. After `stuck_after_bars` (2 here) the next key struck ends it."""
    tune = [(p, s + 8 + 24 * k, e + 8 + 24 * k) for k in range(3) for p, s, e in FOLLOW_TUNE]

    def voices_after(step_from: int, stuck_after_bars: float):
        rig = Rig(bundled["continue"], bpm=BPM, seed=2, mode="follow", stuck_after_bars=stuck_after_bars)
        t0 = rig.t0 + 1.0
        rig.at(t0, [0x90, 84, 90])                     # its note-off is lost
        for pitch, start, end in tune:
            rig.at(t0 + start * STEP, [0x90, pitch, 90])
            rig.at(t0 + end * STEP - 0.01, [0x80, pitch, 0])
        rig.run_until(t0 + 82 * STEP)
        rig.stop()
        out = []
        for t, _, pitch, _ in rig.note_ons():
            step = (t - t0) / STEP
            if step >= step_from:
                out.append((pitch, next((p for p, s, e in tune if s <= int(step + 0.01) < e), None)))
        return out, rig

    with caplog.at_level("WARNING", logger="livegen.engine"):
        after, rig = voices_after(40, 2)
    assert rig.engine.stage.capture.stuck == 1 and "key 84 down for 32 steps" in caplog.text
    assert len(after) >= 20 and all(voice <= played for voice, played in after), after
    # never ended, the key stays the soprano and the tune is heard as the other hand: the
    # voices harmonise the key, on or over the tune, none under it (before both hands were
    # heard: not at all)
    kept, _ = voices_after(40, 0)
    assert kept and all(voice >= played for voice, played in kept if played is not None), kept
