"""follow mode over real JACK ports: each note harmonised within milliseconds, as a musician
hears it (the modes' music is tested in the test process: tests/test_engine.py)."""
from __future__ import annotations

import time

import pytest

from tests.jackmidi import Daemon, Listener, Player
from tests.virtual import MELODY

pytestmark = pytest.mark.usefixtures("jack_server")


def session(client: str, *args: str):
    d = Daemon(client, "--seed", "2", *args)
    return d, Player(d.in_port, f"{client}-p"), Listener(d.out_port, f"{client}-l")


def finish(d, player, listener, until: float):
    time.sleep(max(0.0, until - time.perf_counter()))
    assert d.stop() == 0
    time.sleep(0.2)
    out = d.output()
    print(out)           # (whole, in the report of a failure: an assertion's message is cut short)
    player.close()
    listener.close()
    return out


def test_follow_harmonises_each_note_within_milliseconds():
    # at 120 BPM, as played and benchmarked: the guesses for the next step (about 56 ms of one
    # core here) fit between 16ths; at the suite's 240 BPM they are now and then cut short,
    # and a step decoded on the spot came 19 ms after its grid time in one CI run
    bpm = 120
    step = 60 / bpm / 4
    d, player, listener = session("lgfollow", "-v", "--mode", "follow", "--model", "continue", "--bpm", str(bpm))
    t0 = time.perf_counter() + 0.3
    sent = []
    late = 0.012          # one note 12 ms late (within the late window: it belongs to its step)
    for i, (p, s, e) in enumerate(MELODY):
        sent.append(player.at(t0 + s * step + (late if i == 3 else 0), [0x90, p, 100]))
        player.at(t0 + e * step - 0.01, [0x80, p, 0])
    out = finish(d, player, listener, t0 + 34 * step)
    ons = listener.note_ons()
    assert {ch for _, ch, _, _ in ons} <= {1, 2, 3} and ons
    # each player note is answered by the voices that move on that step, a few ms later
    delays = []
    for t_sent in sent:
        after = [t for t, *_ in ons if t_sent <= t < t_sent + 0.03]
        if after:
            delays.append((min(after) - t_sent) * 1000)
    # (a failure shows what was heard, at which step and channel: missing, or late)
    heard_at = [(round((t - t0) / step, 2), ch, p) for t, ch, p, _ in ons]
    assert len(delays) >= len(sent) - 1, (delays, heard_at)
    # heard as "with the note" (the benchmark measures p50/p99 against the 10 ms target)
    assert max(delays) < 30.0, delays
    # the voices that move under a held note move on the grid too (6 ms after it, plus the
    # decoding), not when its late window closes (a third of a step, 41.7 ms here); only
    # the late note's own harmony comes after its step
    for t, *_ in ons:
        if not sent[3] <= t < sent[3] + 0.03:
            pos = (t - t0) / step
            assert -1.0 < (pos - round(pos)) * step * 1000 < 25.0, ((t - t0) / step, heard_at)
    for _, ch, p, _ in ons:
        assert p < 81
    assert "follow: harmony sent after the player's note" in out
    stuck = listener.sounding_after()
    assert stuck == set(), [(round((t - t0) / step, 2), m) for t, m in listener.messages()
                            if m[0] & 0x0F in {c for c, _ in stuck}]
