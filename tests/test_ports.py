import time

import pytest
import rtmidi

from livegen.errors import PortError
from livegen.ports import list_ports, match_port, open_port, pick_backend

NAMES = ["Midi Through:Midi Through Port-0 14:0", "KeyStep 37:KeyStep 37 MIDI 1 20:0", "a2j:KeyStep out"]


def test_exact_name_wins_then_unique_substring():
    assert match_port(NAMES, NAMES[1]) == 1
    assert match_port(NAMES, "through") == 0


def test_no_match_lists_the_ports():
    with pytest.raises(PortError) as err:
        match_port(NAMES, "Launchpad", "input")
    assert "no MIDI input matches 'Launchpad'" in str(err.value) and NAMES[2] in str(err.value)


def test_several_matches_is_an_error_naming_them():
    with pytest.raises(PortError, match="2 MIDI ports match 'KeyStep'"):
        match_port(NAMES, "KeyStep")


def test_unknown_backend():
    with pytest.raises(PortError, match="unknown backend"):
        pick_backend("oss")


def test_ports_over_jack_list_and_open_by_substring(jack_server):
    synth = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "testsynth")
    synth.open_virtual_port("notes")
    try:
        ins, outs = list_ports("jack")
        assert "testsynth:notes" in outs
        port, name = open_port("out", "jack", "testsynth", "lgports")
        assert name == "testsynth:notes"
        port.close_port()
        with pytest.raises(PortError, match="no MIDI output matches"):
            open_port("out", "jack", "nosuchsynth", "lgports")
    finally:
        synth.close_port()
        synth.delete()


def _libjacks() -> set[str]:
    with open("/proc/self/maps") as maps:
        return {line.split()[-1] for line in maps if "/libjack" in line}


def test_connections_are_read_through_rtmidis_own_libjack(jack_server):
    # two JACK client libraries in one process (the wheel's copy and the system's) crashed
    # the daemon now and then: the connections' client must use the copy rtmidi loaded
    from livegen.ports import JackLinks

    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "lglinks")
    out.open_virtual_port("out")
    synth = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "lglinks-synth")
    try:
        links = JackLinks("lglinks")
        assert links.connections("lglinks:out") == []
        assert links.connections("lglinks:nosuchport") is None
        synth.open_port(synth.get_ports().index("lglinks:out"), "in")
        deadline = time.monotonic() + 2          # (the server takes the new graph a cycle or two later)
        while links.connections("lglinks:out") == [] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert links.connections("lglinks:out") == ["lglinks-synth:in"]
        assert len(_libjacks()) == 1, _libjacks()
    finally:
        synth.close_port()
        synth.delete()
        out.close_port()
        out.delete()


def test_the_connections_client_is_told_when_a_connection_is_made_or_removed(jack_server):
    """libjack says at once when a cable or a DAW connects or disconnects livegen's output (so
    that a synth plugged back in gets its missed note-offs in the connection's first cycle),
    and says nothing once the watch is over."""
    import subprocess
    import threading

    from livegen.ports import JackLinks

    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "lgtold")
    out.open_virtual_port("out")
    synth = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "lgtold-synth")
    synth.open_virtual_port("in")
    links = JackLinks("lgtold")
    told, said = threading.Event(), []

    def changed(ours, made):
        said.append((ours, made))
        told.set()

    try:
        assert links.on_change(changed, "lgtold:out")
        for command, made in (("jack_connect", True), ("jack_disconnect", False)):
            told.clear()
            subprocess.run([command, "lgtold:out", "lgtold-synth:in"], check=True, timeout=10)
            assert told.wait(2) and said[-1] == ("lgtold:out", made), (command, said)
        links.deactivate()
        told.clear()
        subprocess.run(["jack_connect", "lgtold:out", "lgtold-synth:in"], check=True, timeout=10)
        assert links.connections("lgtold:out") == ["lgtold-synth:in"] and not told.wait(0.3)
    finally:
        links.close()
        for port in (synth, out):
            port.close_port()
            port.delete()


def test_input_all_leaves_out_our_own_ports_other_livegens_and_the_ignored():
    from livegen.hub import wanted_inputs

    sources = ["KeyStep 37:KeyStep 37 MIDI 1 20:0", "Midi Through:Midi Through Port-0 14:0", "rig:out",
               "rig-01:out", "rig-guard:sysex-guard", "rig-guard-01:sysex-guard", "livegen-01:out",
               "system:midi_capture_1", "a2j:Launchpad [24] (capture): Launchpad MIDI 1", "rigby:notes"]
    assert wanted_inputs(sources, "rig", ["Midi Through", "launchpad"]) == [
        "KeyStep 37:KeyStep 37 MIDI 1 20:0", "system:midi_capture_1", "rigby:notes"]


def test_a_client_named_like_the_jack_server_is_refused_with_a_reason(jack_server):
    """libjack opens no further client in a process after one named like its server was
    closed, so `livegen run --client-name SERVER` would fail half-way through opening its
    ports ("JACK server not running?" while it runs): it is refused at once, saying why."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "livegen", "run", "--client-name", jack_server], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"client name {jack_server!r} is the JACK server's name" in r.stderr and "Traceback" not in r.stderr
