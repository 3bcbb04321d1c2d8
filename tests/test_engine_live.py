"""End to end over real MIDI ports: `livegen run` as a subprocess on a JACK dummy server,
notes played into it at exact times, and what comes back checked note by note."""
from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import mido
import pytest
import rtmidi

from livegen.ports import JACK_DUMMY_ARGS
from tests.jackmidi import Daemon, Listener, Player, all_but_one_cycle, answered, received, wait_for, wait_for_ports
from tests.virtual import MELODY, SHIFTS

BPM = 120
STEP = 60 / (BPM * 4)          # 125 ms
PHRASE = 32                     # the shift model's window: 2 bars of 4/4
# These tests check what needs real ports: the right notes on the right channels and steps,
# ports lost and found, clock over the wire, the command line. How many ms a note is late is
# measured by benchmarks/live_timing.py, not asserted here: the machines that run the suite
# are shared, and a few ms of scheduling delay must not make a note late enough to be dropped.
LATE_MS = "40"
ON_ITS_STEP_MS = STEP * 1000 / 3    # a note heard within a third of a step belongs to that step

pytestmark = pytest.mark.usefixtures("jack_server")


def play(player: Player, t0: float, notes, channel: int = 0, offset_steps: int = 0) -> float:
    """Plays the notes in time; returns how late (s) the latest message left the player (a busy
    machine can hold the test itself up: a note-off late by a step makes a note of the next phrase)."""
    events = []
    for pitch, start, end in notes:
        events.append(((start + offset_steps) * STEP, [0x90 | channel, pitch, 100]))
        events.append(((end + offset_steps) * STEP - 0.01, [0x80 | channel, pitch, 0]))
    late = 0.0
    for dt, msg in sorted(events, key=lambda e: e[0]):
        late = max(late, player.at(t0 + dt, msg) - (t0 + dt))
    return late


def expected(notes, phrase_offset: int) -> list[tuple[int, int, int]]:
    """(channel 0-based, pitch, step) the shift model must answer with, one phrase later."""
    return sorted((1 + k, p - s, start + phrase_offset) for p, start, _ in notes for k, s in enumerate(SHIFTS))


def heard(listener: Listener, t0: float) -> list[tuple[int, int, int, float]]:
    """(channel, pitch, nearest step, error in ms) of each note-on heard, relative to t0."""
    out = []
    for t, ch, pitch, _ in listener.note_ons():
        pos = (t - t0) / STEP
        out.append((ch, pitch, round(pos), (pos - round(pos)) * STEP * 1000))
    return sorted(out)


@pytest.fixture
def session(shift_model, request):
    made = []

    def start(client, *args, thru_listener=True):
        d = Daemon(client, "--model", str(shift_model), "--bpm", str(BPM), "--seed", "1", "--late-ms", LATE_MS,
                   *args)
        p, l = Player(d.in_port, f"{client}-player"), Listener(d.out_port, f"{client}-listener")
        made.append((d, p, l))
        return d, p, l

    yield start
    for d, p, l in made:
        d.stop()
        p.close()
        l.close()


def test_loop_answers_each_phrase_in_the_next_on_its_channels_in_time(session):
    d, player, listener = session("lgloop")
    t0 = time.perf_counter() + 0.3
    play(player, t0, MELODY)
    time.sleep(t0 + 2 * PHRASE * STEP + 0.2 - time.perf_counter())
    assert d.stop() == 0
    time.sleep(0.2)
    got = heard(listener, t0)
    out = d.output()
    assert answered([(c, p, s) for c, p, s, _ in got], expected(MELODY, PHRASE), out, player), out
    errors = [abs(e) for *_, e in got]
    assert max(errors) < ON_ITS_STEP_MS, f"timing errors (ms) {sorted(errors)}"
    assert listener.stuck() == set(), "stuck notes"    # (the panic's exact messages: test_engine.py)
    assert "late_dropped 0" in out


def test_channels_thru_and_record(session, tmp_path):
    rec = tmp_path / "session.mid"
    d, player, listener = session("lgthru", "--channels", "10,11,12", "--thru", "--record", str(rec))
    t0 = time.perf_counter() + 0.3
    notes = MELODY[:3]
    play(player, t0, notes, channel=4)
    time.sleep(t0 + 2 * PHRASE * STEP + 0.1 - time.perf_counter())
    d.proc.send_signal(signal.SIGINT)          # Ctrl-C stops cleanly too
    assert d.proc.wait(10) == 0
    time.sleep(0.2)
    got = heard(listener, t0)
    thru = [(c, p, s) for c, p, s, _ in got if c == 4]
    assert all_but_one_cycle(thru, [(4, p, s) for p, s, _ in notes])   # the player's own notes, at once
    generated = sorted((c, p, s) for c, p, s, _ in got if c != 4)
    assert answered(generated, [(9 + k, p - sh, s + PHRASE) for p, s, _ in notes for k, sh in enumerate(SHIFTS)],
                    d.output(), player), d.output()
    assert listener.stuck() == set()
    mid = mido.MidiFile(rec)
    ons = [m for m in mid.tracks[0] if m.type == "note_on" and m.velocity > 0]
    assert sorted({m.channel for m in ons}) == [4, 9, 10, 11]
    # every note the daemon heard, and its three voices (a note lost on the way in: one JACK cycle)
    mine = [m for m in ons if m.channel == 4]
    assert len(notes) - 1 <= len(mine) <= len(notes) and len(ons) == len(mine) * 4, ons


def test_follows_midi_clock_start_stop(session):
    d, player, listener = session("lgclock", "--clock", "midi")
    bpm = 150
    tick = 60 / (bpm * 24)
    step = tick * 6
    t0 = time.perf_counter() + 0.3
    player.at(t0 - 0.05, [0xFA])                   # Start: the next tick is step 0
    notes = [(72, 0, 4), (76, 8, 12), (79, 16, 20)]
    events = [(n * tick, [0xF8]) for n in range(int(2 * PHRASE * 6 + 24))]
    for p, s, e in notes:
        events += [(s * step + 0.0005, [0x90, p, 100]), (e * step - 0.01, [0x80, p, 0])]
    for dt, msg in sorted(events, key=lambda x: x[0]):
        player.at(t0 + dt, msg)
    player.send([0xFC])                             # Stop
    time.sleep(0.3)
    ons = listener.note_ons()
    got = sorted((ch, p, round((t - t0) / step)) for t, ch, p, _ in ons)
    assert d.proc.poll() is None                                     # Stop halts; it does not quit
    d.stop()
    out = d.output()
    want = [(1 + k, p - sh, s + PHRASE) for p, s, _ in notes for k, sh in enumerate(SHIFTS)]
    if received(out) >= player.sent:
        assert all_but_one_cycle(got, want), out
    else:
        # messages lost on the way in (the daemon's log says how many it received): a lost
        # tick moves the grid, a lost note changes the phrase; the answer must still come, on
        # the answer's channels, in the answer's phrase
        assert got and all(c in (1, 2, 3) and PHRASE - 1 <= s < 2 * PHRASE for c, _, s in got), out
    if received(out) >= player.sent:
        errors = [abs((t - t0) / step - round((t - t0) / step)) * step * 1000 for t, *_ in ons]
        assert max(errors) < step * 1000 / 3, f"timing errors (ms) {sorted(errors)}\n{out}"
    assert listener.stuck() == set()                        # Stop silenced every note


def test_survives_garbage_and_a_flood_then_plays_in_time_again(session):
    d, player, listener = session("lgflood", "-v")
    player.send([0xFE])                                 # (the first messages after a connect can be lost)
    time.sleep(0.2)
    for _ in range(3):                                  # (three times: JACK's dummy server may lose a cycle)
        for bad in ([0xF0, 0x7E, 0x7F, 0x09, 0x01, 0xF7], [0x90, 60], [0xF4], [0xB0, 200, 1], [0xF5, 1]):
            player.send(bad)
        time.sleep(0.05)
    t_flood = time.perf_counter()
    sent = 0
    while time.perf_counter() - t_flood < 3.0:          # 10,000 messages per second, all 16 channels
        for ch in range(16):
            player.send([0x90 | ch, 40 + ch, 64])
            player.send([0x80 | ch, 40 + ch, 0])
            sent += 2
        while sent > (time.perf_counter() - t_flood) * 10_000:
            time.sleep(0.0005)
    assert d.proc.poll() is None, d.output()
    # wait for a phrase boundary after the flood has been answered, then play cleanly
    time.sleep(2 * PHRASE * STEP)
    player.send([0xFE])
    listener.clear()
    # find the daemon's grid: it began at the first flood note
    t_grid = t_flood + 1 * STEP * 0
    n = int((time.perf_counter() + 0.3 - t_grid) / (PHRASE * STEP)) + 1
    t0 = t_grid + n * PHRASE * STEP
    _ = rtmidi  # the flood went through the same python-rtmidi ports as a keyboard
    play(player, t0, MELODY[:4])
    time.sleep(t0 + 2 * PHRASE * STEP + 0.2 - time.perf_counter())
    assert d.stop() == 0
    out = d.output()
    assert "malformed" in out and "malformed 0," not in out and "sysex 0," not in out
    # the daemon's own log: it answered the clean phrase whole, on time, after the flood
    # (a flood note whose note-off JACK lost stays held, issue 13: a note or two more may come in)
    answer = [m for m in re.findall(r"phrase \d+: (\d+) notes in, (\d+) out", out)
              if int(m[0]) >= 4 and int(m[1]) >= 12]
    sent_late = [float(x) for x in re.findall(r"note-ons sent after their deadline: .*max ([\d.]+) ms", out)]
    assert answer and sent_late and sent_late[-1] < float(LATE_MS), out[-2000:]
    # and over the wire: what came is that answer, on its steps (after a flood, JACK's dummy
    # server was seen to lose two cycles 500 ms apart; the note-for-note check over the wire
    # is the loop test's)
    got = [(c, p, s) for c, p, s, e in heard(listener, t0) if s >= PHRASE]
    # (and the voices of a flood note still held, when JACK lost its note-off: 40..55)
    held = {(c, p, s) for c, p, s in got if 40 <= p + SHIFTS[c - 1] <= 55}
    assert got and set(got) - held <= set(expected(MELODY[:4], PHRASE)), (got, out[-2000:])
    late = [abs(e) for c, p, s, e in heard(listener, t0) if s >= PHRASE]
    assert max(late) < ON_ITS_STEP_MS
    assert listener.stuck() == set()


@pytest.mark.parametrize("source", ["keyboard", "program"])
def test_a_sysex_cut_off_does_not_make_livegen_deaf(shift_model, source):
    # rtmidi's JACK input holds back everything after a sysex with no F7 until an F7 comes:
    # without the daemon's guard this phrase would never be heard. From a keyboard (the
    # daemon opens its port) or a program playing into livegen's own input
    if source == "keyboard":
        kbd = Player(None, "lgsxkbd")
        d = Daemon("lgsysex", "--model", str(shift_model), "--bpm", str(BPM), "--late-ms", LATE_MS,
                   "--input", "lgsxkbd:keys")
    else:
        d = Daemon("lgsysex", "--model", str(shift_model), "--bpm", str(BPM), "--late-ms", LATE_MS)
        kbd = Player(d.in_port, "lgsxprog")
    listener = Listener(d.out_port, "lgsysex-listener")
    try:
        time.sleep(0.3)
        kbd.send([0xFE])                                 # (the first message after a connect can be lost)
        for _ in range(3):     # a dump cut off: no F7, ever (three times: JACK's dummy server may lose one)
            kbd.send([0xF0, 0x43, 0x10, 0x4C])
            time.sleep(0.15)                             # (the guard ends each after 50 ms of quiet)
        t0 = time.perf_counter() + 0.3
        play(kbd, t0, MELODY)
        time.sleep(t0 + 2 * PHRASE * STEP + 0.2 - time.perf_counter())
        assert d.stop() == 0
        out = d.output()
        assert re.search(r"sysex [123],", out) and "malformed 0," in out, out   # the guard ended them: whole sysexes
        # and livegen heard the phrase after it and answered it. (Not note for note: the guard
        # is a second source into the input, and JACK's dummy server then loses a few more
        # messages on the way in: 4 of 16 in one run of ten. The notes themselves are checked
        # without a guard in test_loop_answers_each_phrase_in_the_next_on_its_channels_in_time.)
        got = [(c, p, s) for c, p, s, e in heard(listener, t0)]
        assert received(out) >= kbd.sent // 2 and got and {c for c, _, _ in got} <= {1, 2, 3}, out
        assert listener.stuck() == set()
    finally:
        d.stop()
        listener.close()
        kbd.close()


def test_unplugged_keyboard_is_picked_up_again(shift_model):
    kbd = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "testkbd")
    kbd.open_virtual_port("keys")
    wait_for_ports(["testkbd:keys"])
    d = Daemon("lgplug", "--model", str(shift_model), "--bpm", str(BPM), "--input", "testkbd:keys")
    listener = Listener(d.out_port, "lgplug-listener")
    try:
        time.sleep(0.3)
        kbd.send_message([0xFE])                          # (the first message after a connect can be lost)
        time.sleep(0.1)
        t0 = time.perf_counter()
        kbd.send_message([0x90, 48, 100])                 # a key held down when the cable is pulled
        time.sleep(0.2)
        kbd.close_port()
        kbd.delete()
        time.sleep(2.5)
        assert d.proc.poll() is None
        assert "input testkbd:keys is gone (ended the 1 notes it held)" in d.output(), d.output()
        kbd = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "testkbd")
        kbd.open_virtual_port("keys")
        time.sleep(2.5)                                   # the daemon checks once a second
        assert "input testkbd:keys is back" in d.output()
        kbd.send_message([0xFE])
        for p, s, e in MELODY[:2]:
            kbd.send_message([0x90, p, 100])
            time.sleep((e - s) * STEP - 0.01)
            kbd.send_message([0x80, p, 0])
        time.sleep(max(2 * PHRASE * STEP, t0 + (2 * PHRASE + 4) * STEP - time.perf_counter()))
        got = {(ch, p) for _, ch, p, _ in listener.note_ons()}
        voices = [{(1 + k, p - sh) for k, sh in enumerate(SHIFTS)} for p, _, _ in MELODY[:2]]
        assert voices[0] <= got or voices[1] <= got, got   # (one JACK cycle may be lost: all_but_one_cycle)
        # the held key was answered in phrase 1 (its part of phrase 0), never again: not held for ever
        held_voice = [round((t - t0) / STEP) for t, ch, p, _ in listener.note_ons() if (ch, p) == (1, 48 - SHIFTS[0])]
        assert held_voice and max(held_voice) < 2 * PHRASE, held_voice
    finally:
        d.stop()
        listener.close()
        kbd.delete()


def test_input_all_listens_to_every_keyboard_plugged_in_but_never_to_itself(shift_model):
    from livegen.ports import JackLinks

    def source(client, port="keys"):
        out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, client)
        out.open_virtual_port(port)
        return out

    def listened(links, port):
        return [c for c in links.connections(port) or [] if c.startswith("lgall")]

    first = source("testkbd1")
    wait_for_ports(["testkbd1:keys"])
    d = Daemon("lgall", "--model", str(shift_model), "--bpm", str(BPM), "--input", "all", "--ignore", "testpads")
    listener = Listener(d.out_port, "lgall-listener")
    made = [first]
    try:
        assert "input testkbd1:keys connected" in d.output()
        assert re.search(r"listening on lgall:in and testkbd1:keys \(and every MIDI input plugged in\)",
                         d.output()), d.output()
        made += [source("testkbd2"), source("testpads"), source("livegen-other", "out")]
        # the daemon looks once a second (opening a port waits for a gap in the music, and the
        # new input is checked by a probe: seconds on a loaded 2-core machine)
        wait_for(lambda: "input testkbd2:keys connected" in d.output(), 8, "testkbd2 connected")
        time.sleep(1.2)                                   # (a look more: nothing else is taken)
        links = JackLinks("lgall-test")
        out = d.output()
        assert listened(links, "testkbd1:keys") and listened(links, "testkbd2:keys")
        assert not listened(links, "testpads:keys")                      # ignored
        assert not listened(links, "livegen-other:out")                  # another livegen
        assert links.connections(d.out_port) == ["lgall-listener:in"]    # never itself
        assert "lgall-01:out connected" not in out
        # both keyboards are heard: one note each, answered in the next phrase
        t0 = time.perf_counter()
        for kbd, pitch in ((made[0], MELODY[0][0]), (made[1], MELODY[1][0])):
            kbd.send_message([0xFE])
            kbd.send_message([0x90, pitch, 100])
            time.sleep(2 * STEP)
            kbd.send_message([0x80, pitch, 0])
        time.sleep(max(0.0, t0 + 2 * PHRASE * STEP + 0.5 - time.perf_counter()))
        got = {(ch, p) for _, ch, p, _ in listener.note_ons()}
        voices = [{(1 + k, p - sh) for k, sh in enumerate(SHIFTS)} for p in (MELODY[0][0], MELODY[1][0])]
        assert voices[0] <= got or voices[1] <= got, (got, d.output())     # (one JACK cycle may be lost)
        # unplugged, then plugged in again: forgotten, then found again
        made[1].close_port()
        made[1].delete()
        wait_for(lambda: "input testkbd2:keys is gone" in d.output(), 8, "testkbd2 gone")
        made[1] = source("testkbd2")
        wait_for(lambda: d.output().count("input testkbd2:keys connected") == 2, 8, "testkbd2 found again")
        assert listened(links, "testkbd2:keys")
        assert d.stop() == 0
    finally:
        d.stop()
        listener.close()
        for port in made:
            port.delete()


def test_send_clock_makes_livegen_the_clock_master(session):
    d, player, listener = session("lgmaster", "--send-clock")
    time.sleep(0.3)
    assert not [m for _, m in listener.messages() if m == [0xF8]]    # no clock before bar 1
    player.send([0x90, 72, 100])                                       # bar 1 starts here
    time.sleep(0.5)
    if not [m for _, m in listener.messages() if m == [0xF8]]:
        # the note-on was lost on the way in (one JACK cycle of the dummy server, benchmarks/
        # README "JACK's dummy server loses whole cycles": the daemon received only its note-off)
        player.send([0x90, 72, 100])
    time.sleep(1.0)
    player.send([0x80, 72, 0])
    d.stop()
    msgs = listener.messages()
    kinds = [m[0] for _, m in msgs]
    assert 0xFA in kinds and kinds.index(0xFA) < kinds.index(0xF8)
    ticks = [t for t, m in msgs if m == [0xF8]]
    gaps = sorted(b - a for a, b in zip(ticks, ticks[1:]))
    assert abs(gaps[len(gaps) // 2] - 60 / (BPM * 24)) < 0.001
    # Stop when the daemon stops. A stop silences first (one burst of CC 123s), then sends the
    # Stop in the same JACK cycle as a second burst: when the Stop is missing, so is that burst
    # (one lost cycle, all_but_one_cycle)
    all_off = [m for _, m in msgs if m == [0xB1, 123, 0]]
    print("CC 123 on channel 2 heard", len(all_off), "times; Stop heard:", 0xFC in kinds)
    assert 0xFC in kinds or len(all_off) <= 1, all_off


def test_lost_output_is_silenced_and_picked_up_again(shift_model):
    from livegen.ports import InputPoller

    def synth_port():
        port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "testsynth2", queue_size_limit=4096)
        port.ignore_types(sysex=False, timing=False, active_sense=False)
        port.open_virtual_port("in")
        return port

    synth = synth_port()
    wait_for_ports(["testsynth2:in"])
    d = Daemon("lglost", "--model", str(shift_model), "--bpm", str(BPM), output="testsynth2:in")
    player = Player(d.in_port, "lglost-p")
    try:
        synth.close_port()
        synth.delete()
        time.sleep(2.5)                                   # the daemon checks once a second
        assert d.proc.poll() is None and "output testsynth2:in is gone" in d.output()
        synth = synth_port()
        time.sleep(2.5)
        assert "output testsynth2:in is back" in d.output()
        heard = []
        poller = InputPoller(synth, lambda t, m: heard.append(m))
        poller.start()
        first = player.send([0x90, 72, 100])              # bar 1 starts here
        player.at(first + 4 * STEP - 0.01, [0x80, 72, 0])
        player.at(first + 4 * STEP, [0x90, 74, 100])
        player.at(first + 8 * STEP - 0.01, [0x80, 74, 0])
        time.sleep(2 * PHRASE * STEP + 0.3)
        poller.stop()
        got = {(m[0] & 0x0F, m[1]) for m in heard if m[0] & 0xF0 == 0x90}
        voices = [{(1 + k, p - sh) for k, sh in enumerate(SHIFTS)} for p in (72, 74)]
        # both answers, or one of them when a JACK cycle was lost (all_but_one_cycle)
        assert got <= voices[0] | voices[1] and (voices[0] <= got or voices[1] <= got), got
    finally:
        d.stop()
        player.close()
        synth.delete()


def test_an_output_port_lost_while_notes_sound_gets_their_note_offs_when_it_comes_back(shift_model):
    """A MIDI interface unplugged while the answer's voices sound and plugged back in: the
    synth behind it never heard their note-offs (sent into a port that was gone), and gets
    them when the port is back."""
    from livegen.ports import InputPoller

    heard: list[list[int]] = []

    def synth_port():
        port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "testsynth3", queue_size_limit=4096)
        port.ignore_types(sysex=False, timing=False, active_sense=False)
        port.open_virtual_port("in")
        poller = InputPoller(port, lambda t, m: heard.append(m))
        poller.start()
        return port, poller

    synth, poller = synth_port()
    wait_for_ports(["testsynth3:in"])
    d = Daemon("lgreplug", "--model", str(shift_model), "--bpm", str(BPM), output="testsynth3:in")
    player = Player(d.in_port, "lgreplug-p")
    try:
        t0 = time.perf_counter() + 0.3
        play(player, t0, MELODY)
        time.sleep(t0 + (PHRASE + 17.5) * STEP - time.perf_counter())   # the answer's G voices sound
        g_voices = {(1 + k, 79 - s) for k, s in enumerate(SHIFTS)}
        sounding = {(m[0] & 0x0F, m[1]) for m in heard if m[0] & 0xF0 == 0x90 and m[2] > 0} & g_voices
        poller.stop()
        synth.close_port()
        synth.delete()                                   # unplugged: their note-offs go nowhere
        time.sleep(2.5)                                  # (the daemon looks once a second)
        assert "output testsynth3:in is gone" in d.output()
        heard.clear()
        synth, poller = synth_port()                     # plugged back in
        time.sleep(2.5)
        assert "output testsynth3:in is back" in d.output()
        offs = {(m[0] & 0x0F, m[1]) for m in heard if m[0] & 0xF0 == 0x80}
        assert sounding, "(at least one G voice was heard before the port went)"
        assert sounding <= offs, (sounding, heard)
    finally:
        d.stop()
        player.close()
        poller.stop()
        synth.delete()


def test_a_lost_jack_server_is_noticed_and_livegen_exits_for_a_restart(shift_model, tmp_path):
    """The JACK server killed under the daemon (its own server here, not the suite's): within
    a second or two livegen says so in one line and exits with status 3, so that systemd's
    Restart=always starts it again on the server that comes back."""
    import os
    import subprocess
    import sys
    import uuid

    name = f"lglost-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    jackd = subprocess.Popen(["jackd", "-n", name, *JACK_DUMMY_ARGS],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = tmp_path / "daemon.log"
    daemon = None
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and jackd.poll() is None, "jackd did not start"
            time.sleep(0.1)
        with open(log, "w") as out:
            daemon = subprocess.Popen([sys.executable, "-m", "livegen", "run", "--client-name", "lgdead", "--model",
                                       str(shift_model), "--no-start-jack"], stdout=out, stderr=subprocess.STDOUT,
                                      env=env)
        while "running; Ctrl-C stops" not in log.read_text():
            assert time.monotonic() < deadline and daemon.poll() is None, log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)
        jackd.kill()
        t = time.monotonic()
        code = daemon.wait(10)
        took = time.monotonic() - t
        said = log.read_text()
        assert code == 3 and f"the JACK server {name} is gone: exiting with status 3" in said, said
        assert took < 3.0 and "Traceback" not in said, (took, said)
    finally:
        for proc in (daemon, jackd):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for leftover in Path("/dev/shm").glob(f"jack*{name}*"):
            leftover.unlink(missing_ok=True)


def test_a_jack_server_livegen_starts_runs_realtime_where_this_user_may(shift_model, tmp_path):
    """No JACK server runs under the name given: livegen starts one, with realtime scheduling
    where this user may ask for it (root, or an RLIMIT_RTPRIO), so that the server's and
    livegen's own process threads run before inference (a Stop's note-offs waited up to 13 ms
    without it: benchmarks/README.md); it says which in its log, and stops the server at its
    end."""
    import os
    import subprocess
    import sys
    import uuid

    from livegen.ports import may_realtime, runs_realtime

    name = f"lgrt-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    log = tmp_path / "daemon.log"
    daemon = jackd = None
    try:
        with open(log, "w") as out:
            daemon = subprocess.Popen([sys.executable, "-m", "livegen", "run", "--client-name", "lgrtd", "--model",
                                       str(shift_model)], stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while "running; Ctrl-C stops" not in log.read_text():
            assert time.monotonic() < deadline and daemon.poll() is None, log.read_text()
            time.sleep(0.1)
        found = subprocess.run(["pgrep", "-f", f"jackd -n {name} "], capture_output=True, text=True).stdout.split()
        assert len(found) == 1, found
        jackd = int(found[0])
        said = log.read_text()
        expected = may_realtime()
        assert runs_realtime(jackd) == expected and runs_realtime(daemon.pid) == expected, (expected, said)
        assert ("jackd runs with realtime scheduling" in said) == expected, said
        # realtime, 2.67 ms cycles (every kind of stop within 10 ms at p99: benchmarks/README.md);
        # without it, 5.33 ms (shorter ones miss cycles beside busy processes)
        frames = 128 if expected else 256
        assert f"{frames} frames a cycle" in said, said
        bufsize = subprocess.run(["jack_bufsize"], env=env, capture_output=True, text=True, timeout=10).stdout
        assert bufsize.split()[-1] == str(frames), bufsize
        daemon.send_signal(15)
        assert daemon.wait(10) == 0, log.read_text()
        for _ in range(50):
            if not Path(f"/proc/{jackd}").exists():
                break
            time.sleep(0.1)
        assert not Path(f"/proc/{jackd}").exists(), "the server livegen started outlived it"
        jackd = None
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if jackd is not None:
            subprocess.run(["kill", "-9", str(jackd)])
        for leftover in Path("/dev/shm").glob(f"jack*{name}*"):
            leftover.unlink(missing_ok=True)


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and setpriv to take realtime scheduling away")
def test_a_server_refused_realtime_scheduling_is_started_again_without_it(tmp_path):
    """Where this user may ask for realtime scheduling but the system refuses it (root in a
    container without CAP_SYS_NICE), jackd would go on without it at the realtime cycle of
    2.67 ms, which misses cycles beside busy processes: livegen says so and starts it again
    without, at 5.33 ms."""
    import subprocess
    import sys
    import uuid

    name = f"lgcap-{uuid.uuid4().hex[:8]}"
    script = ("import logging; logging.basicConfig(level=logging.INFO)\n"
              "from livegen.ports import start_jack_dummy\n"
              f"p = start_jack_dummy({name!r})\n"
              "import subprocess; size = subprocess.run(['jack_bufsize'], capture_output=True, text=True).stdout\n"
              "print('realtime', p.realtime, 'frames', size.split()[-1], flush=True)\n"
              "p.terminate(); p.wait(10)\n")
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    try:
        done = subprocess.run(["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--",
                               sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "jackd was refused realtime scheduling: starting it again without" in done.stderr, done.stderr
        assert "realtime False frames 256" in done.stdout, (done.stdout, done.stderr)
    finally:
        subprocess.run(["pkill", "-f", f"jackd -n {name} "])
        for leftover in Path("/dev/shm").glob(f"jack*{name}*"):
            leftover.unlink(missing_ok=True)


def own_note_offs_missing(listener: Listener) -> set[tuple[int, int]]:
    """(channel, pitch) of notes heard with no note-off of their own after them (CC 123 does not count)."""
    on: set[tuple[int, int]] = set()
    for _, m in listener.messages():
        kind, key = m[0] & 0xF0, (m[0] & 0x0F, m[1] if len(m) > 1 else 0)
        if kind == 0x90 and m[2] > 0:
            on.add(key)
        elif kind == 0x80 or kind == 0x90:
            on.discard(key)
    return on


def test_a_synth_disconnected_while_notes_sound_gets_their_note_offs_when_it_comes_back(session):
    """A DAW's routing change or a cable: the connection from livegen's output to the synth is
    removed while the answer's voices sound, and made again a second later. The note-offs
    sent meanwhile went nowhere; the synth gets them when it is connected again."""
    import subprocess

    d, player, listener = session("lglink")
    t0 = time.perf_counter() + 0.3
    play(player, t0, MELODY)
    synth = "lglink-listener:in"
    time.sleep(t0 + (PHRASE + 17.5) * STEP - time.perf_counter())     # the answer's G voices sound (steps 48-56)
    heard_before = {(ch, p) for t, ch, p, _ in listener.note_ons()}
    subprocess.run(["jack_disconnect", d.out_port, synth], check=True)
    time.sleep(t0 + (PHRASE + 27) * STEP - time.perf_counter())      # their note-offs are sent into nowhere
    subprocess.run(["jack_connect", d.out_port, synth], check=True)
    time.sleep(t0 + 3 * PHRASE * STEP - time.perf_counter())
    out = d.output()
    assert "disconnected from lglink-listener:in" in out and "sent the note-offs missed" in out, out
    g_voices = {(1 + k, 79 - s) for k, s in enumerate(SHIFTS)}
    assert g_voices & heard_before, heard_before              # (all but one JACK cycle: at least one voice)
    # the voices sounding at the disconnect got their own note-offs (sent twice, 12 ms apart,
    # so that one JACK cycle lost on the way, as the dummy server does, cannot leave them on).
    # Only those: a note-off of an earlier voice lost in one JACK cycle (CI once lost the
    # first C's three at step 36, long before the disconnect) is not what this test is about
    assert own_note_offs_missing(listener) & g_voices == set()
    assert d.stop() == 0
