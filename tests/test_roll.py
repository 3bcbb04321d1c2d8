import numpy as np

from livegen import roll as R
from livegen.generate.accompany import decode


def test_quantise_snaps_early_to_next_step_and_late_back():
    assert R.quantise(3.0) == 3
    assert R.quantise(3.30) == 3        # late by less than a third: snaps back
    assert R.quantise(3.70) == 4        # early by less than a third: belongs to the next step
    assert R.quantise(3.5) == 3
    assert R.quantise(-0.2) == 0        # a hair before bar 1 is bar 1


def test_note_end_is_at_least_one_step_after_start():
    assert R.quantise_end(4, 4.1) == 5
    assert R.quantise_end(4, 7.6) == 8


def test_notes_to_roll_and_back_round_trip():
    notes = [R.Note(60, 0, 4), R.Note(64, 2, 6), R.Note(67, 8, 9)]
    roll = R.notes_to_roll(notes, 0, 16, 36, 46)
    assert roll.shape == (16, 46)
    back = R.roll_to_notes(roll > 0, 36)
    assert [(n.pitch, n.start, n.end) for n in back] == [(60, 0, 4), (64, 2, 6), (67, 8, 9)]


def test_roll_window_clips_notes_to_phrase_and_drops_out_of_range():
    notes = [R.Note(60, -2, 3), R.Note(20, 0, 4), R.Note(62, 14, 20)]
    roll = R.notes_to_roll(notes, 0, 16, 36, 46)
    assert roll[:, 60 - 36].tolist()[:4] == [1, 1, 1, 0]
    assert roll[14:, 62 - 36].sum() == 2
    assert roll.sum() == 5   # the pitch-20 note is outside the model's window


def test_melody_roll_keeps_the_top_note_of_a_chord():
    notes = [R.Note(60, 0, 4), R.Note(64, 0, 4), R.Note(67, 0, 2)]
    roll = R.melody_roll(notes, 0, 4, 36, 46)
    assert [int(np.flatnonzero(r)[0]) + 36 for r in roll] == [67, 67, 64, 64]


def test_octave_shift_moves_low_and_high_melodies_into_the_soprano_range():
    assert R.octave_shift([48, 50, 52], 36, 46, 70) == 24
    assert R.octave_shift([96, 98], 36, 46, 70) == -24
    assert R.octave_shift([70, 72], 36, 46, 70) == 0
    assert R.octave_shift([], 36, 46, 70) == 0


def test_onsets_split_a_run_into_repeated_notes():
    active = np.zeros((8, 3), bool)
    active[0:8, 1] = True
    onsets = np.zeros((8, 3), bool)
    onsets[[0, 4], 1] = True
    held = R.roll_to_notes(active, 40)
    split = R.roll_to_notes(active, 40, onsets=onsets)
    assert [(n.start, n.end) for n in held] == [(0, 8)]
    assert [(n.start, n.end) for n in split] == [(0, 4), (4, 8)]


def test_decode_keeps_the_most_probable_pitch_per_voice_above_threshold():
    probs = np.zeros((2, 4, 5), np.float32)
    probs[0, :, 1] = 0.6
    probs[0, :, 3] = 0.9          # more probable: wins
    probs[1, :2, 2] = 0.4          # under the threshold: rest
    probs[1, 2:, 4] = 0.7
    notes = decode(probs, 0.5, 1, pitch_low=50, start=32)
    got = sorted((n.track, n.pitch, n.start, n.end) for n in notes)
    assert got == [(0, 53, 32, 36), (1, 54, 34, 36)]


def test_decode_with_polyphony_two_keeps_two():
    probs = np.zeros((1, 1, 4), np.float32)
    probs[0, 0] = [0.9, 0.8, 0.7, 0.1]
    assert sorted(n.pitch for n in decode(probs, 0.5, 2, 60, 0)) == [60, 61]
