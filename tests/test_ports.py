import rtmidi
import pytest

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
