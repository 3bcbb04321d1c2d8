"""follow mode over real JACK ports: each note harmonised within milliseconds, as a musician
hears it (the modes' music is tested in the test process: tests/test_engine.py)."""
from __future__ import annotations

import time

import pytest

from tests.jackmidi import Daemon, Listener, Player, received
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


@pytest.mark.parametrize("model", ["harmonise", "continue"])
def test_follow_harmonises_each_note_as_it_is_played(model):
    # What needs real ports: the daemon hears each note over JACK and its voices come back on
    # that note's step. How many ms after the note is measured by benchmarks/live_timing.py
    # (--mode follow): the suite's machines are shared, so no ms bound is asserted here.
    bpm = 120
    step = 60 / bpm / 4
    d, player, listener = session("lgfollow", "-v", "--mode", "follow", "--model", model, "--bpm", str(bpm),
                                  "--late-ms", "40")
    t0 = time.perf_counter() + 0.3
    sent = []
    late = 0.012          # one note 12 ms late (within the late window: it belongs to its step)
    for i, (p, s, e) in enumerate(MELODY):
        sent.append(player.at(t0 + s * step + (late if i == 3 else 0), [0x90, p, 100]))
        player.at(t0 + e * step - 0.01, [0x80, p, 0])
    out = finish(d, player, listener, t0 + 34 * step)
    ons = listener.note_ons()
    heard_at = [(round((t - t0) / step, 2), ch, p) for t, ch, p, _ in ons]
    assert ons and {ch for _, ch, _, _ in ons} <= {1, 2, 3}, heard_at
    # every note was heard and harmonised on its step, with its pitch as the soprano (a note
    # lost on the way in, when the daemon's log says so, is the JACK cycle of all_but_one_cycle)
    unheard = [(pitch, start) for pitch, start, _ in MELODY if f"follow step {start}: soprano {pitch} -> " not in out]
    assert not unheard or (len(unheard) == 1 and received(out) < player.sent), (unheard, out)
    # and every voice heard came on its step: with the note (within a third of a step of when
    # the player's note actually left: a busy test machine sends some late), or on the grid
    # under a held one
    played = [(ts - t0) / step for ts in sent]
    for t, *_ in ons:
        pos = (t - t0) / step
        if any(0 <= pos - p < 1 / 3 for p in played):
            continue
        assert abs(pos - round(pos)) < 1 / 3, ((t - t0) / step, heard_at, [round(p, 2) for p in played])
    assert all(p < 81 for _, _, p, _ in ons)
    assert "follow: harmony sent after the player's note" in out
    stuck = listener.stuck()
    assert stuck == set(), [(round((t - t0) / step, 2), m) for t, m in listener.messages()
                            if m[0] & 0x0F in {c for c, _ in stuck}]
