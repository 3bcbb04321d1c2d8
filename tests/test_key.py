"""The key livegen names (status, telemetry, the control page) from what the player played."""
import numpy as np

from livegen.key import estimate
from tests.virtual import MELODY, Rig

STEP = 60 / (120 * 4)


def weights(pitches_and_lengths):
    w = np.zeros(12)
    for pitch, length in pitches_and_lengths:
        w[pitch % 12] += length
    return w


def test_scales_and_tunes_are_named_in_their_keys():
    assert estimate(weights([(p, 1) for p in (60, 62, 64, 65, 67, 69, 71)] + [(60, 3), (67, 2)]))[0] == "C major"
    d_minor = [(62, 4), (65, 2), (69, 3), (64, 1), (67, 1), (70, 1), (61, 1), (62, 2), (57, 2)]
    assert estimate(weights(d_minor))[0] == "D minor"
    # the same tune a whole tone up is named a whole tone up
    assert estimate(weights([(p + 2, n) for p, n in d_minor]))[0] == "E minor"
    assert estimate(np.zeros(12)) is None


def test_the_engine_names_the_key_of_what_was_played(shift_model):
    rig = Rig(str(shift_model), bpm=120)
    assert rig.engine.status()["key"] is None                 # nothing played: no key
    t0 = rig.t0 + 0.1
    rig.play(MELODY, t0, STEP)                                # C D E F G F E: 7 notes, too few to tell
    rig.run_until(t0 + 32 * STEP)
    assert rig.engine.status()["key"] is None
    rig.play([(p - 7, s, e) for p, s, e in MELODY], t0 + 32 * STEP, STEP)   # then a fifth lower, in F
    rig.run_until(t0 + 64 * STEP)
    assert rig.engine.status()["key"] in ("C major", "F major")
    for phrase in (2, 3):
        rig.play([(p - 7, s, e) for p, s, e in MELODY], t0 + 32 * phrase * STEP, STEP)
    rig.run_until(t0 + 128 * STEP)
    assert rig.engine.status()["key"] == "F major"           # the F major tune now outweighs the first
    rig.stop()
