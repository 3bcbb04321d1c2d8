"""The key livegen names (status, telemetry, the control page) from what the player played."""
import numpy as np

import pytest

from livegen.config import Settings
from livegen.errors import ConfigError
from livegen.key import estimate, into_scale, parse_key, scale
from livegen.models import Model
from tests.virtual import MELODY, Rig

STEP = 60 / (120 * 4)


@pytest.fixture(scope="module")
def bundled():
    return {kind: Model(kind, "cpu") for kind in ("accompany", "continue")}


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


def test_key_names_are_read_as_a_musician_writes_them():
    for text, name in [("D minor", "D minor"), ("f# major", "F# major"), ("Bb", "Bb major"), ("Am", "A minor"),
                       ("  eb  MINOR ", "Eb minor"), ("Cb", "B major"), ("E#m", "F minor")]:
        assert parse_key(text) == name
    for bad in ["", "H major", "D dorian", "D minor please", "Dbb", "7"]:
        with pytest.raises(ValueError, match="a tonic and major or minor"):
            parse_key(bad)
    assert sorted(scale("D minor")) == [0, 1, 2, 4, 5, 7, 9, 10]       # C# and C both: Bach raises the seventh
    assert into_scale(61, scale("C major")) == 60 and into_scale(66, scale("C major")) == 65
    assert into_scale(66, scale("F# major")) == 66
    assert Settings(key="bb minor").check().key == "Bb minor"
    with pytest.raises(ConfigError, match="key 'H'"):
        Settings(key="H").check()


@pytest.mark.parametrize("mode,kind", [("loop", "accompany"), ("respond", "continue"), ("follow", "continue")])
def test_scale_lock_keeps_every_generated_note_in_the_key(bundled, mode, kind):
    """The tune is in C major; locked to F# major (six sharps) every voice is moved into it,
    in each path notes take to the output (phrase answers, a streamed answer, follow)."""
    def played_in(**settings):
        rig = Rig(bundled[kind], bpm=120, seed=3, mode=mode, **settings)
        t0 = rig.t0 + 0.1
        rig.play(MELODY, t0, STEP)
        rig.run_until(t0 + 64 * STEP)
        rig.stop()
        return [p for _, ch, p, _ in rig.note_ons() if ch != 0]

    f_sharp = scale("F# major")
    free = played_in(key="F# major")
    locked = played_in(key="F# major", scale_lock=True)
    assert sum(p % 12 not in f_sharp for p in free) > len(free) // 3      # (without the lock: C major voices)
    assert locked and all(p % 12 in f_sharp for p in locked), sorted({p % 12 for p in locked})


def test_the_key_is_set_and_cleared_while_playing_and_status_says_whence(shift_model):
    rig = Rig(str(shift_model), bpm=120)
    rig.engine.apply("key", "g minor")
    assert (rig.engine.status()["key"], rig.engine.status()["key_from"]) == ("G minor", "set")
    assert rig.engine.stage.sampling.key == "G minor"     # (what a continue file's key_penalty pulls towards)
    with pytest.raises(ConfigError, match="key 'X minor'"):
        rig.engine.apply("key", "X minor")
    assert rig.engine.status()["key"] == "G minor"
    rig.engine.apply("key", "")
    assert (rig.engine.status()["key"], rig.engine.status()["key_from"]) == (None, "played")
    assert rig.engine.stage.sampling.key is None
    rig.stop()
