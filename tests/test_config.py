import pytest

from livegen.cli import main
from livegen.config import build_settings, load_toml, parse_meter
from livegen.errors import ConfigError


def test_toml_sets_any_flag_and_the_command_line_wins(tmp_path):
    f = tmp_path / "live.toml"
    f.write_text('bpm = 96\nchannels = [5, 6, 7]\nthru = true\nclient-name = "stage"\n')
    s = build_settings(load_toml(f), {"bpm": 100.0, "channels": None})
    assert (s.bpm, s.channels, s.thru, s.client_name) == (100.0, [5, 6, 7], True, "stage")


@pytest.mark.parametrize("text, msg", [
    ("bpm = 'fast'", "bpm must be a number"),
    ("tempo = 96", "unknown setting 'tempo'"),
    ("bpm = 96\nbpm = 97", "not valid TOML"),
    ("channels = [0]", "channel 0"),
    ("meter = '7/8'", "meter"),
    ("clock = 'atomic'", "clock"),
    ("temperature = 3", "temperature must be within 0..2"),      # the same ranges as live control
    ("edit-passes = 0", "edit-passes must be within 1..40"),
    ("control = 'localhost'", "control 'localhost': not a ZeroMQ address"),
    ("inference = ['tcp://10.0.0.5']", "not a ZeroMQ address"),
    ("programs = ['dance accompany']", "a list of \"MODE MODEL\""),
    ("programs = []", "programs"),
    ("[cc_map]\nmute = 20", "'mute' cannot follow a controller"),
    ("[cc_map]\nvolume = 7", "program \\(mode and model"),
    ("ignore = 'Midi Through'", "ignore 'Midi Through': a list of parts of port names"),
    ("ignore = ['']", "ignore"),
    ("clock-port = 'all'", "name the one port the MIDI clock comes from"),
    ("[presets.verse]\nbpm = 90", "presets.verse: needs program = N"),
    ("[presets.verse]\nprogram = 128", "program = 128: a Program Change number 0..127"),
    ("[presets.a]\nprogram = 1\n[presets.b]\nprogram = 1", "presets.b: program 1 already picks preset 'a'"),
    ("[presets.a]\nprogram = 1\nvolume = 3", "presets.a: 'volume' is not a setting a preset can change"),
    ("[presets.a]\nprogram = 1\ntemperature = 9", "presets.a: temperature must be within 0..2"),
    ("[presets.a]\nprogram = 1\nmode = 'dance'", "presets.a: mode 'dance'"),
    ("presets = 3", "presets: tables like"),
    ("config_path = 'x'", "unknown setting 'config_path'"),
    ("web = 'localhost'", "web 'localhost': HOST:PORT"),
    ("stuck-after-bars = -1", "stuck_after_bars -1: use 0 \\(never\\) up to 1000 bars"),
    ("stuck-after-bars = 'long'", "stuck_after_bars must be a number"),
])
def test_bad_config_values_are_named(tmp_path, text, msg):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=msg):
        build_settings(load_toml(f), {})


def test_meter():
    assert parse_meter("3/4") == (3, 4)
    with pytest.raises(ConfigError):
        parse_meter("four")


def test_cli_reports_a_bad_config_file_with_exit_code_2(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text("bars = -1\n")
    assert main(["run", "--config", str(f)]) == 2
    assert "bars -1" in capsys.readouterr().err


def test_a_controller_can_drive_a_track_mute_and_the_program(tmp_path):
    f = tmp_path / "stage.toml"
    f.write_text('programs = ["loop accompany", "follow continue"]\n[cc_map]\nprogram = 30\nmute_tenor = 31\n')
    s = build_settings(load_toml(f), {})
    assert s.cc_map == {"program": 30, "mute_tenor": 31} and s.programs == ["loop accompany", "follow continue"]
