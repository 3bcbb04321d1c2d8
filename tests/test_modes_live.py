"""Every mode with the shipped models, over real JACK ports: what a musician would hear."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.jackmidi import Daemon, Listener, Player
from tests.test_engine_live import BPM, MELODY, PHRASE, STEP, play

# A JACK server with the dummy driver and no real-time scheduling, on a shared 2-core
# machine, now and then drops an event between two clients (NOTES-platform.md); a live
# test that meets one is run again, up to twice. Each run still has to pass in full.
LIVE = [pytest.mark.usefixtures("jack_server"), pytest.mark.flaky(reruns=2)]
pytestmark = LIVE


def session(client: str, *args: str):
    d = Daemon(client, "--bpm", str(BPM), "--seed", "2", *args)
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


def grid(listener, t0):
    """(channel, pitch, step, error ms) of each note-on heard."""
    out = []
    for t, ch, p, _ in listener.note_ons():
        pos = (t - t0) / STEP
        out.append((ch, p, round(pos), (pos - round(pos)) * STEP * 1000))
    return out


def check_phrase_answer(out, heard, channels, low=36, high=84):
    assert heard, out
    assert {ch for ch, *_ in heard} <= set(channels), heard
    outside = [h for h in heard if not PHRASE <= h[2] < 2 * PHRASE]
    assert not outside, (outside, out)                                          # during the next phrase
    assert all(low <= p <= high for _, p, _, _ in heard)
    errors = sorted(abs(e) for *_, e in heard)
    assert errors[-1] < 8.0, errors
    assert "late_dropped 0" in out, out


def answer_to_melody(client: str, *args: str):
    """Play MELODY as phrase 0; returns the daemon's log, the note-ons heard and the listener."""
    d, player, listener = session(client, *args)
    t0 = time.perf_counter() + 0.3
    late = play(player, t0, MELODY)
    out = finish(d, player, listener, t0 + 2 * PHRASE * STEP + 0.2)
    # (in a failure's message: a note heard a phrase later may answer a note-off the test sent late)
    out += f"the test player's latest message left {late * 1000:.1f} ms after its time\n"
    return out, grid(listener, t0), listener


def test_loop_with_the_edit_model_rewrites_the_phrase_and_keeps_the_players_notes():
    out, heard, listener = answer_to_melody("lgedit", "--mode", "loop", "--model", "edit")
    check_phrase_answer(out, heard, {1})
    answered = {(p, s - PHRASE) for _, p, s, _ in heard}
    assert {(p, s) for p, s, _ in MELODY} <= answered        # the player's notes kept
    assert len(answered) > len(MELODY)                       # and notes added
    assert listener.sounding_after() == set()


def test_respond_with_the_transformer_answers_in_four_voices():
    out, heard, listener = answer_to_melody("lgresp", "-v", "--mode", "respond", "--model", "continue")
    check_phrase_answer(out, heard, {1, 2, 3, 4})
    by_voice = {ch: [p for c, p, *_ in heard if c == ch] for ch in (1, 2, 3, 4)}
    assert all(by_voice.values()), by_voice                  # soprano, alto, tenor and bass all sing
    assert min(by_voice[1]) > max(by_voice[4])               # the soprano stays above the bass
    assert listener.sounding_after() == set()


def test_respond_with_the_edit_model_varies_the_phrase():
    out, heard, listener = answer_to_melody("lgresped", "--mode", "respond", "--model", "edit", "--max-remove", "0.5")
    check_phrase_answer(out, heard, {1})
    assert listener.sounding_after() == set()


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


def test_a_mode_given_the_wrong_kind_of_model_is_refused(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "livegen", "render", "in.mid", str(tmp_path / "o.mid"),
                        "--mode", "follow", "--model", "accompany"], capture_output=True, text=True)
    assert r.returncode == 2 and "mode follow plays continue models" in r.stderr


def test_switching_into_follow_and_back_over_the_control_socket_takes_effect_at_the_next_phrase():
    from livegen.control import request
    from tests.test_control import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    d, player, listener = session("lgswitch", "--model", "accompany", "--control", endpoint)
    t0 = time.perf_counter() + 0.3
    at = lambda phrases: time.sleep(max(0.0, t0 + phrases * PHRASE * STEP - time.perf_counter()))  # noqa: E731
    play(player, t0, MELODY)                                  # phrase 0, loop: answered in phrase 1
    at(1.2)               # (after phrase 0's answer is made: loading a model takes the CPU for a while)
    reply = request(endpoint, {"cmd": "set", "key": "mode", "value": "follow", "model": "continue"})
    assert reply["ok"] and reply["from_next_phrase"]["mode"] == "follow", reply
    at(1.9)
    back = []                                                 # asked during phrase 2 (loading takes a while)
    asking = threading.Timer(t0 + 2.3 * PHRASE * STEP - time.perf_counter(), lambda: back.append(subprocess.run(
        [sys.executable, "-m", "livegen", "ctl", endpoint, "set", "mode", "loop", "model", "accompany"],
        capture_output=True, text=True, timeout=30)))
    asking.start()
    sent = []
    for p, s, e in MELODY:                                    # phrase 2: harmonised as played
        sent.append(player.at(t0 + (2 * PHRASE + s) * STEP, [0x90, p, 100]))
        player.at(t0 + (2 * PHRASE + e) * STEP - 0.01, [0x80, p, 0])
    asking.join()
    assert back and back[0].returncode == 0 and '"ok": true' in back[0].stdout, back
    play(player, t0, MELODY, offset_steps=3 * PHRASE)         # phrase 3, loop again: answered in phrase 4
    out = finish(d, player, listener, t0 + 5 * PHRASE * STEP + 0.2)
    heard = grid(listener, t0)
    by_phrase = {k: [h for h in heard if h[2] // PHRASE == k] for k in range(5)}
    assert by_phrase[0] == [] and by_phrase[1] and by_phrase[4], (heard, out)
    for k in (1, 4):                                          # loop answers on the grid
        assert {ch for ch, *_ in by_phrase[k]} == {1, 2, 3} and max(abs(e) for *_, e in by_phrase[k]) < 8.0
    ons = listener.note_ons()
    # follow: the notes are answered at once (a voice may also hold through a note: at most
    # two of the seven pass without a new note under them)
    answered = [any(t_sent <= t < t_sent + 0.03 for t, *_ in ons) for t_sent in sent]
    assert sum(answered) >= len(sent) - 2, \
        (answered, [(round((t - t0) / STEP, 2), m) for t, m in listener.messages()
                    if 2 * PHRASE - 2 <= (t - t0) / STEP < 2 * PHRASE + 2])
    assert by_phrase[3] == [], by_phrase[3]                   # follow ended at the boundary; loop waits a phrase
    assert "now playing" in out and "late_dropped 0" in out, out
    assert listener.sounding_after() == set()


def test_switching_from_loop_to_respond_with_the_transformer_answers_from_the_next_phrase():
    from livegen.control import request
    from tests.test_control import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    d, player, listener = session("lgswitch2", "--model", "accompany", "--control", endpoint)
    t0 = time.perf_counter() + 0.3
    play(player, t0, MELODY)                                  # phrase 0, loop: answered in phrase 1
    replies = []          # asked early in phrase 1 (after phrase 0's answer is made: loading takes the CPU)
    asking = threading.Timer(t0 + 1.15 * PHRASE * STEP - time.perf_counter(), lambda: replies.append(
        request(endpoint, {"cmd": "set", "key": "mode", "value": "respond", "model": "continue"})))
    asking.start()
    play(player, t0, MELODY, offset_steps=PHRASE)             # phrase 1: still loop, answered in phrase 2
    asking.join()
    assert replies and replies[0]["ok"], replies
    play(player, t0, MELODY, offset_steps=2 * PHRASE)         # phrase 2: the Transformer answers in phrase 3
    out = finish(d, player, listener, t0 + 4 * PHRASE * STEP + 0.2)
    heard = grid(listener, t0)
    channels = {k: {ch for ch, _, s, _ in heard if s // PHRASE == k} for k in range(4)}
    assert channels[1] == channels[2] == {1, 2, 3}, (channels, out)   # accompany: alto, tenor, bass
    assert channels[3] == {1, 2, 3, 4}, (channels, out)               # continue: four voices
    # (a bound on the worst note, with the test's own player and listener on the same 2 cores;
    # the p99 target is measured by benchmarks/live_timing.py)
    assert max(abs(e) for *_, e in heard) < 10.0 and "late_dropped 0" in out, out
    assert listener.sounding_after() == set()
