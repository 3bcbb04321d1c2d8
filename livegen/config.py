"""Settings for `livegen run` and `render`: defaults, then a TOML file, then the command line."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from livegen.endpoints import check_endpoint, parse_address
from livegen.errors import ConfigError
from livegen.key import parse_key

MODES = ("loop", "respond", "follow")
# which model kinds each mode plays
DEFAULT_PROGRAMS = ("loop accompany", "loop edit", "respond continue", "respond edit", "follow continue",
                    "follow harmonise")
MODE_KINDS = {"loop": ("accompany", "edit"), "respond": ("continue", "edit"), "follow": ("harmonise", "continue")}
CLOCKS = ("internal", "midi")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Settings:
    backend: str = "auto"
    input: str = "virtual"
    output: str = "virtual"
    client_name: str = "livegen"
    clock_port: str = ""            # follow MIDI clock from this port instead of the input
    # input = "all": sources whose name contains one of these are not listened to
    ignore: list[str] = field(default_factory=lambda: ["Midi Through"])
    model: str = "accompany"
    mode: str = "loop"
    bars: int = 0                   # 0 = the model's window
    bpm: float = 120.0
    meter: str = "4/4"
    clock: str = "internal"
    channels: list[int] = field(default_factory=list)   # 1-based; default 2, 3, 4 ...
    thru: bool = False
    device: str = "auto"
    record: str = ""
    send_clock: bool = False
    seed: int | None = None
    threshold: float | None = None
    tolerance: float = 1 / 3        # of a step, early/late onset snap
    key: str = ""                   # e.g. "D minor"; "" = the key of what is played
    scale_lock: bool = False        # every generated note inside the key
    # a key down this many bars when another is struck has lost its note-off: ended (0 = never)
    stuck_after_bars: float = 8.0
    late_ms: float = 10.0           # a note-on later than this is dropped, not played
    start_jack: bool = True         # start `jackd -d dummy` when JACK is needed and none runs
    jack_server: str = ""           # JACK server name (JACK_DEFAULT_SERVER)
    temperature: float | None = None    # continue: sampling temperature (None: the model's, 0.9 unless a fine-tune set it)
    top_p: float | None = None          # continue: nucleus sampling (None: the model's, 0.95)
    edit_passes: int = 10
    edits_per_pass: int = 10
    edit_temperature: float = 0.05
    max_remove: float = 0.5         # edit: largest share of the player's notes that may be removed
    max_add: int = 64               # edit: most notes (cells) that may be added
    keep_player: bool | None = None  # edit: the player's notes stay (default: yes in loop, no in respond)
    mute: list[str] = field(default_factory=list)   # track names (alto) or numbers from 1
    control: str = ""               # ZeroMQ control socket, e.g. tcp://127.0.0.1:5555
    telemetry: str = ""             # ZeroMQ telemetry publisher, e.g. tcp://127.0.0.1:5556
    keys: str = ""                  # CURVE key folder (livegen keys DIR): required off loopback
    web: str = ""                   # the control page, e.g. 127.0.0.1:8080
    web_token: str = ""             # a file holding its token (else KEYS/web.token): required off loopback
    inference: list[str] = field(default_factory=list)   # remote workers, e.g. ["tcp://10.0.0.5:5560"]
    cc_map: dict = field(default_factory=dict)      # setting -> MIDI CC number, e.g. {temperature = 20}
    # what the `program` controller (cc_map) picks from: "MODE MODEL", its 0..127 split evenly
    programs: list[str] = field(default_factory=lambda: list(DEFAULT_PROGRAMS))
    # [presets.NAME] tables: program = N (the Program Change that picks it) and settings
    presets: dict = field(default_factory=dict)
    config_path: str = ""           # the file read (save-preset writes there); not a TOML key

    @property
    def beats_per_bar(self) -> int:
        return parse_meter(self.meter)[0]

    def check(self) -> "Settings":
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r}: this version plays {', '.join(MODES)}")
        if self.clock not in CLOCKS:
            raise ConfigError(f"clock {self.clock!r}: use internal or midi")
        if self.device not in DEVICES:
            raise ConfigError(f"device {self.device!r}: use auto, cpu or cuda")
        if not 20 <= self.bpm <= 400:
            raise ConfigError(f"bpm {self.bpm}: use 20..400")
        if self.bars < 0 or self.bars > 64:
            raise ConfigError(f"bars {self.bars}: use 1..64 (0 = the model's window)")
        parse_meter(self.meter)
        for ch in self.channels:
            if not 1 <= ch <= 16:
                raise ConfigError(f"channel {ch}: MIDI channels are 1..16")
        if not 0 <= self.tolerance < 0.5:
            raise ConfigError(f"tolerance {self.tolerance}: use 0 up to 0.5 of a step")
        if self.key:
            self.key = CONTROLS["key"].parse("key", self.key)
        if not 0 <= self.stuck_after_bars <= 1000:
            raise ConfigError(f"stuck_after_bars {self.stuck_after_bars}: use 0 (never) up to 1000 bars")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ConfigError(f"threshold {self.threshold}: use a number between 0 and 1")
        for key, control in CONTROLS.items():   # the live controls' ranges hold at start-up too
            value = getattr(self, key)
            if key != "mute" and value is not None:
                control.parse(key.replace("_", "-"), value)

        for key, cc in self.cc_map.items():
            if not cc_target(key):
                raise ConfigError(f"cc_map: {key!r} cannot follow a controller; use one of {CC_TARGETS}")
            if not isinstance(cc, int) or not 0 <= cc <= 127 or cc == 64:
                raise ConfigError(f"cc_map: {key} = {cc!r}: a controller number 0..127 (64 is the sustain pedal)")
        if not isinstance(self.programs, list) or not self.programs or not all(
                isinstance(p, str) and len(p.split()) == 2 and p.split()[0] in MODES for p in self.programs):
            raise ConfigError(f"programs {self.programs!r}: a list of \"MODE MODEL\", e.g. [\"loop accompany\", "
                              f"\"follow continue\"] (modes: {', '.join(MODES)})")
        if not isinstance(self.ignore, list) or not all(isinstance(p, str) and p for p in self.ignore):
            raise ConfigError(f"ignore {self.ignore!r}: a list of parts of port names, e.g. [\"Midi Through\"]")
        if self.clock_port == "all":
            raise ConfigError("clock_port \"all\": name the one port the MIDI clock comes from")
        if not isinstance(self.inference, list) or not all(isinstance(e, str) for e in self.inference):
            raise ConfigError(f"inference {self.inference!r}: worker addresses like tcp://10.0.0.5:5560")
        self.presets = check_presets(self.presets)
        if self.web:
            parse_address(self.web)
        for what, endpoint in [("control", self.control), ("telemetry", self.telemetry)] + \
                [("inference", e) for e in self.inference]:
            if endpoint:
                check_endpoint(endpoint, what)
        return self


def parse_meter(text: str) -> tuple[int, int]:
    try:
        beats, unit = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"meter {text!r}: write it like 4/4 or 3/4") from None
    if not 1 <= beats <= 16 or unit != 4:
        raise ConfigError(f"meter {text!r}: 1..16 quarter-note beats per bar (N/4)")
    return beats, unit


def parse_channels(text: str | list) -> list[int]:
    if isinstance(text, list):
        items = text
    else:
        items = [x for x in str(text).replace(" ", "").split(",") if x]
    try:
        return [int(x) for x in items]
    except ValueError:
        raise ConfigError(f"channels {text!r}: a comma-separated list like 2,3,4") from None


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    known = {f.name: f for f in fields(Settings)}
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known or name == "config_path":
            raise ConfigError(f"{path}: unknown setting {key!r}; known: "
                              f"{', '.join(sorted(set(known) - {'config_path'}))}")
        if name == "channels":
            value = parse_channels(value)
        if name == "inference" and isinstance(value, str):
            value = [x for x in value.split(",") if x]
        out[name] = value
    return out


def preset_keys() -> tuple[str, ...]:
    return ("program", "mode", "model", "channels", *CONTROLS)


def check_presets(presets) -> dict[str, dict]:
    """[presets.NAME] tables, checked and with their keys as Settings names."""
    if not isinstance(presets, dict):
        raise ConfigError("presets: tables like [presets.verse] with program = N and the settings it changes")
    keys = preset_keys()
    out: dict[str, dict] = {}
    programs: dict[int, str] = {}
    for name, table in presets.items():
        if not isinstance(table, dict):
            raise ConfigError(f"presets.{name}: a table ([presets.{name}]) of settings, not {table!r}"[:200])
        values = {}
        for key, value in table.items():
            k = str(key).replace("-", "_")
            if k not in keys:
                raise ConfigError(f"presets.{name}: {key!r} is not a setting a preset can change; it can change "
                                  f"{', '.join(keys)}")
            if k == "program":
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 127:
                    raise ConfigError(f"presets.{name}: program = {value!r}: a Program Change number 0..127, "
                                      "as sent on the wire")
                if value in programs:
                    raise ConfigError(f"presets.{name}: program {value} already picks preset {programs[value]!r}")
                programs[value] = name
            elif k == "mode" and value not in MODES:
                raise ConfigError(f"presets.{name}: mode {value!r}: this version plays {', '.join(MODES)}")
            elif k == "model" and not (isinstance(value, str) and value.strip()):
                raise ConfigError(f"presets.{name}: model {value!r}: a bundled model's name or an .onnx file")
            elif k == "channels":
                value = parse_channels(value)
                if not value or not all(1 <= c <= 16 for c in value):
                    raise ConfigError(f"presets.{name}: channels {value!r}: MIDI channels 1..16")
            elif k in CONTROLS:
                try:
                    value = CONTROLS[k].parse(key, value)
                except ConfigError as err:
                    raise ConfigError(f"presets.{name}: {err}") from None
            values[k] = value
        if "program" not in values:
            raise ConfigError(f"presets.{name}: needs program = N, the Program Change (0..127) that picks it")
        out[str(name)] = values
    return out


def build_settings(file_values: dict, cli_values: dict) -> Settings:
    """Defaults < TOML file < flags given on the command line (None means not given)."""
    values = dict(file_values)
    values.update({k: v for k, v in cli_values.items() if v is not None})
    try:
        s = Settings(**values)
    except TypeError as err:
        raise ConfigError(str(err)) from None
    for f in fields(Settings):
        v = getattr(s, f.name)
        if f.name in ("bpm", "tolerance", "late_ms", "stuck_after_bars") and (
                not isinstance(v, (int, float)) or isinstance(v, bool)):
            raise ConfigError(f"{f.name} must be a number, not {v!r}")
        if f.name in ("bars",) and not isinstance(v, int):
            raise ConfigError(f"{f.name} must be a whole number, not {v!r}")
    return s.check()


# ---------------------------------------------------------------- settings that change while playing

@dataclass(frozen=True)
class Control:
    """One live setting: its type, range, and how a CC value 0..127 maps onto it."""
    kind: type
    low: float = 0.0
    high: float = 1.0

    def parse(self, key: str, value):
        if self.kind is str:      # (the only one: a key name; "" = the key of what is played)
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a text such as \"D minor\"")
            try:
                return parse_key(value) if value.strip() else ""
            except ValueError as err:
                raise ConfigError(str(err)) from None
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise ConfigError(f"{key} must be true or false")
        if self.kind is list:
            if isinstance(value, str):
                value = [x for x in value.split(",") if x]
            elif isinstance(value, int) and not isinstance(value, bool):   # one track by number
                value = [value]
            if not isinstance(value, list):
                raise ConfigError(f"{key} must be a list of track names or numbers")
            return [str(x) for x in value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number")
        if not self.low <= value <= self.high:
            low, high = (int(self.low), int(self.high)) if self.kind is int else (f"{self.low:g}", f"{self.high:g}")
            raise ConfigError(f"{key} must be within {low}..{high}")
        return self.kind(value)

    def from_cc(self, cc_value: int):
        if self.kind is bool:
            return cc_value >= 64
        value = self.low + (self.high - self.low) * cc_value / 127
        return self.kind(round(value)) if self.kind is int else value


CONTROLS = {
    "temperature": Control(float, 0.0, 2.0),
    "top_p": Control(float, 0.05, 1.0),
    "threshold": Control(float, 0.05, 0.95),
    "edit_passes": Control(int, 1, 40),
    "edits_per_pass": Control(int, 1, 40),
    "edit_temperature": Control(float, 0.0, 2.0),
    "max_remove": Control(float, 0.0, 1.0),
    "max_add": Control(int, 0, 256),
    "keep_player": Control(bool),
    "bpm": Control(float, 20, 400),
    "key": Control(str),
    "scale_lock": Control(bool),
    "seed": Control(int, 0, 2 ** 31 - 1),
    "mute": Control(list),
}


CC_TARGETS = (", ".join(k for k in CONTROLS if k not in ("mute", "key")) +
              ", program (mode and model from `programs`), mute_TRACK (e.g. mute_tenor: on at 64 and up)")


def cc_target(key) -> bool:
    """Whether a MIDI controller can drive `key` (cc_map, MIDI learn)."""
    return isinstance(key, str) and (key in CONTROLS and key not in ("mute", "key") or key == "program"
                                     or key.startswith("mute_") and len(key) > len("mute_"))
