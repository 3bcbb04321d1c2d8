import numpy as np
import pytest

from livegen.clock import InternalClock, MidiClockFollower


def test_internal_clock_maps_steps_and_times_both_ways():
    c = InternalClock(120)
    assert c.position(5.0) is None
    c.start(10.0)
    assert c.time_of(4) == pytest.approx(10.5)        # 4 sixteenths = one beat = 0.5 s at 120 BPM
    assert c.position(11.0) == pytest.approx(8)


def test_tempo_change_keeps_position_continuous():
    c = InternalClock(120)
    c.start(0.0)
    c.set_tempo(60, now=1.0)          # at step 8
    assert c.position(1.0) == pytest.approx(8)
    assert c.time_of(12) == pytest.approx(2.0)        # 4 steps at 60 BPM = 1 s


def test_internal_clock_rejects_silly_tempos():
    with pytest.raises(ValueError):
        InternalClock(0)


def ticks(f: MidiClockFollower, start: float, count: int, period: float, jitter: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    for n in range(count):
        f.tick(start + n * period + rng.uniform(-jitter, jitter))


def test_follower_locks_to_tempo_and_predicts_steps_despite_jitter():
    f = MidiClockFollower()
    f.start()
    period = 60 / (100 * 24)             # 100 BPM
    ticks(f, 1.0, 96, period, jitter=0.001)
    assert f.bpm == pytest.approx(100, rel=0.01)
    # the next steps' times fall within a fraction of a millisecond of the true grid,
    # though each tick wandered by up to 1 ms
    for step in (16, 17, 20):
        true = 1.0 + step * 6 * period
        assert abs(f.time_of(step) - true) < 0.0004


def test_follower_first_tick_after_start_is_step_zero():
    f = MidiClockFollower()
    f.start()
    f.tick(5.0)
    assert f.position(5.0) == pytest.approx(0)


def test_song_position_pointer_relocates():
    f = MidiClockFollower()
    f.song_position(32)                  # 32 sixteenths = bar 3
    f.cont()
    period = 60 / (120 * 24)
    ticks(f, 2.0, 12, period)
    assert f.position(2.0) == pytest.approx(32, abs=0.01)
    assert f.time_of(34) == pytest.approx(2.0 + 12 * period, abs=1e-4)


def test_stop_halts_the_follower():
    f = MidiClockFollower()
    f.start()
    ticks(f, 0.0, 10, 0.02)
    f.stop()
    assert f.time_of(10) is None and f.position(1.0) is None
    f.tick(1.0)                          # ticks while stopped do not move it
    assert f.time_of(10) is None


def test_tempo_change_is_followed_within_two_beats():
    f = MidiClockFollower()
    f.start()
    p1, p2 = 60 / (120 * 24), 60 / (90 * 24)
    ticks(f, 0.0, 48, p1)
    ticks(f, 48 * p1, 48, p2)
    assert f.bpm == pytest.approx(90, rel=0.01)


def test_a_lost_tick_does_not_shift_the_grid():
    f = MidiClockFollower()
    f.start()
    period = 60 / (120 * 24)
    for n in range(48):
        if n != 30:                      # tick 30 never arrives
            f.tick(n * period)
    assert f.lost_ticks == 1
    assert f.time_of(8) == pytest.approx(48 * period, abs=1e-4)   # step 8 = tick 48


@pytest.mark.parametrize("delay_periods", [1.9, 2.1, 3.0, 4.2])
def test_a_late_tick_and_the_burst_after_it_do_not_shift_the_grid(delay_periods):
    """A sender held up (a busy DAW, a loaded machine) sends its ticks late and then all at
    once: nothing was lost, so the grid must stay where it was (this once moved it a tick
    per hold-up, and the notes after it landed on the wrong steps)."""
    f = MidiClockFollower()
    f.start()
    period = 60 / (120 * 24)
    late_until = 30 * period + delay_periods * period     # ticks 30.. come at once at this time
    for n in range(72):
        t = n * period
        if 30 <= n and t < late_until + 0.002:
            t = late_until + (n - 30) * 0.0002            # the burst: 0.2 ms apart
        f.tick(t)
    assert f.lost_ticks == 0
    assert f.time_of(12) == pytest.approx(72 * period, abs=1e-3)   # step 12 = tick 72


def test_lost_ticks_are_still_counted_between_late_ones():
    f = MidiClockFollower()
    f.start()
    period = 60 / (120 * 24)
    for n in range(96):
        if n in (30, 60, 61):            # lost on the way, each time the next arrives on time
            continue
        f.tick(n * period + (0.004 if n == 45 else 0.0))
    assert f.lost_ticks == 3
    assert f.time_of(16) == pytest.approx(96 * period, abs=1e-3)
