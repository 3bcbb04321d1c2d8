"""`save-preset`: the settings playing now, written as a [presets.NAME] table into the config
file, which keeps everything else it holds (comments, order, other tables) and a backup."""
from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from pathlib import Path

from livegen.config import CONTROLS, check_presets
from livegen.errors import ConfigError
from livegen.models import BUNDLED


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)          # (a TOML basic string: the same escapes)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def table_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def current_values(engine) -> dict:
    """The live settings of `engine` as a preset (without its program)."""
    from livegen.phrase import same_model

    settings, model = engine.settings, engine.model
    spec = next((name for name in BUNDLED if same_model(name, model)), model.info.path)
    values = {"mode": settings.mode, "model": spec}
    if settings.channels:
        values["channels"] = list(settings.channels)
    for key in CONTROLS:
        value = getattr(settings, key)
        if value is not None:
            values[key] = list(value) if isinstance(value, list) else value
    return values


def save_preset(path: str | Path, name: str, values: dict) -> tuple[dict, Path]:
    """Write preset `name` into the config file at `path`: its table replaced in place (other
    lines in it, such as comments, kept) or added at the end. The program number is the
    table's own, else the lowest free one. Returns (the preset as checked, the backup)."""
    if not name or len(name) > 64 or any(c in name for c in "\n\r[]"):
        raise ConfigError(f"preset name {name[:64]!r}: 1 to 64 characters, no brackets or line breaks")
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config to save into ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML, left as it is ({err})") from err
    presets = data.get("presets", {}) if isinstance(data.get("presets", {}), dict) else {}
    old = presets.get(name, {})
    taken = {p.get("program") for n, p in presets.items() if n != name and isinstance(p, dict)}
    program = old.get("program") if isinstance(old, dict) and "program" in old else \
        next((n for n in range(128) if n not in taken), None)
    if program is None:
        raise ConfigError("all 128 Program Change numbers are taken by presets")
    values = {"program": program, **{k: v for k, v in values.items() if k != "program"}}
    body = [f"{key} = {toml_value(value)}" for key, value in values.items()]

    lines = text.splitlines()
    header = re.compile(r"\s*\[\s*presets\s*\.\s*(" + re.escape(name) + "|" + re.escape(json.dumps(name))
                        + r")\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.fullmatch(line)), None)
    if start is None:
        new = lines + ([""] if lines and lines[-1].strip() else []) + [f"[presets.{table_key(name)}]"] + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        written = {k.replace("_", "-") for k in values} | set(values)
        kept = [line for line in lines[start + 1:end]
                if not re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line)
                or re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line).group(1) not in written]
        new = lines[:start + 1] + body + kept + lines[end:]
    out = "\n".join(new) + "\n"
    try:       # what is written must read back as this preset
        checked = check_presets(tomllib.loads(out)["presets"])[name]
    except (tomllib.TOMLDecodeError, KeyError) as err:
        raise ConfigError(f"{path}: saving preset {name!r} would break the file ({err}); left as it is") from err
    backup = path.with_name(path.name + ".bak")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        shutil.copy2(path, backup)
        tmp.write_text(out)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write ({err.strerror})") from err
    return checked, backup
