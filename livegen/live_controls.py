"""Settings that change while the music plays: from the control socket (`apply`) or from MIDI
controllers: `[cc_map]` (a CC moves a setting over its range, mutes a track, or picks mode
and model from `programs`) and MIDI learn (the next CC moved is bound)."""
from __future__ import annotations

import logging
import threading

import numpy as np

from livegen.config import CONTROLS, Settings
from livegen.errors import ConfigError
from livegen.phrase import muted_tracks, same_model

log = logging.getLogger("livegen.engine")


class LiveControls:
    def __init__(self, engine):
        self.engine = engine
        settings = engine.settings
        self.learning: str | None = None       # MIDI learn: the setting the next CC will control
        # the `program` controller's zone in settings.programs (where the session starts, if listed)
        self.program = next((i for i, p in enumerate(settings.programs)
                             if p.split()[0] == settings.mode and same_model(p.split()[1], engine.model)), None)
        self._program_lock = threading.Lock()
        self.preset: str | None = None         # the preset playing (the last one taken up)
        self._preset_wanted: str | None = None

    def apply(self, key, value) -> None:
        """Any thread: change one live setting; ConfigError and no change when it is bad."""
        engine, settings = self.engine, self.engine.settings
        if key not in CONTROLS:
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(CONTROLS)}")
        value = CONTROLS[key].parse(key, value)
        if key == "mute":
            muted = muted_tracks(Settings(mute=value), engine.tracks)
        if key == "bpm":
            engine.transport.set_bpm(value, engine.now())
        setattr(settings, key, value)
        if key in ("temperature", "top_p"):
            engine.stage.sampling.temperature, engine.stage.sampling.top_p = settings.temperature, settings.top_p
        elif key == "key":
            engine.stage.sampling.key = settings.key or None      # (a file's key_penalty pulls towards it)
        elif key == "mute":
            engine.playing.set_muted(muted)
        elif key == "seed":
            engine.stage.rng = np.random.default_rng(value)
        log.info("set %s = %s", key, value)

    def cc(self, number: int, value: int) -> None:
        """Capture thread: a MIDI CC: bind it (MIDI learn), or move what it is mapped to."""
        settings = self.engine.settings
        if self.learning:
            settings.cc_map[self.learning] = number
            log.info("MIDI learn: CC %d now controls %s", number, self.learning)
            self.learning = None
            return
        for key, cc in list(settings.cc_map.items()):
            if cc != number:
                continue
            try:
                if key == "program":
                    self._program(value * len(settings.programs) // 128)
                elif key.startswith("mute_"):
                    self._mute_one(key[len("mute_"):], value >= 64)
                else:
                    self.apply(key, CONTROLS[key].from_cc(value))
            except ConfigError as err:     # (a controller gets no reply: say it here)
                log.warning("CC %d (%s): %s", number, key, err)

    def _mute_one(self, track: str, on: bool) -> None:
        tracks, muted = self.engine.tracks, self.engine.muted
        index = next(iter(muted_tracks(Settings(mute=[track]), tracks)))
        changed = (muted | {index}) if on else (muted - {index})
        if changed != muted:
            self.apply("mute", [tracks[i] for i in sorted(changed)])

    def _program(self, index: int) -> None:
        """The `program` controller moved into another zone: that mode and model from the next
        phrase. Loading takes a while: it is done on a thread of its own."""
        if index == self.program:
            return
        self.program = index
        mode, spec = self.engine.settings.programs[index].split()

        def load():
            with self._program_lock:
                if self.program != index:      # moved on again meanwhile: the latest wins
                    return
                try:
                    self.engine.switch(spec=spec, mode=mode)
                    log.info("program %d: %s %s from the next phrase", index + 1, mode, spec)
                except (ConfigError, ValueError) as err:   # ModelError is a ValueError
                    log.warning("program %d (%s %s): %s", index + 1, mode, spec, err)
                    if self.program == index:  # (so that the same zone may be tried again)
                        self.program = None

        threading.Thread(target=load, name="livegen-program", daemon=True).start()

    # ---------------------------------------------------------------- presets

    def preset_switch(self, name: str) -> dict:
        """What `Engine.switch` needs to take up preset `name` from the next phrase: its mode
        and model, its tracks' channels and mute, and its other settings when it starts."""
        settings = self.engine.settings
        if name not in settings.presets:
            raise ConfigError(f"no preset {name!r}; the config has {', '.join(settings.presets) or 'none'}")
        values = settings.presets[name]
        rest = {k: v for k, v in values.items() if k not in ("program", "mode", "model", "channels", "mute")}

        def start():
            for key, value in rest.items():
                self.apply(key, value)
            for key in ("channels", "mute"):
                if key in values:
                    setattr(settings, key, list(values[key]))
            self.preset = name
            e = self.engine
            log.info("preset %s: %s %s", name, e.listening.name, e.listening.model.info.path)
            e.stage.telemetry({"event": "preset", "mode": e.listening.name, "model": e.listening.model.info.path})

        return {"spec": values.get("model"), "mode": values.get("mode") or settings.mode,
                "channels": values.get("channels"), "mute": values.get("mute"), "on_start": start}

    def program_change(self, number: int) -> None:
        """Capture thread: a Program Change from the player picks the preset with that
        `program`, from the next phrase; it loads on a thread of its own."""
        presets = self.engine.settings.presets      # (read once: save-preset replaces it whole)
        name = next((n for n, p in presets.items() if p["program"] == number), None)
        if name is None:
            log.info("Program Change %d: no preset has program = %d", number, number)
            return
        self._preset_wanted = name

        def load():
            with self._program_lock:
                if self._preset_wanted != name:      # another came meanwhile: the latest wins
                    return
                try:
                    self.engine.switch(**self.preset_switch(name))
                    log.info("Program Change %d: preset %s from the next phrase", number, name)
                except (ConfigError, ValueError) as err:   # ModelError is a ValueError
                    log.warning("Program Change %d (preset %s): %s", number, name, err)

        threading.Thread(target=load, name="livegen-preset", daemon=True).start()

    def settings_played(self) -> dict:
        """The live settings; where one is left to the model (None), the model's own."""
        info = self.engine.model.info
        own = {"threshold": info.threshold, "temperature": info.temperature, "top_p": info.top_p}
        return {k: own[k] if getattr(self.engine.settings, k) is None and k in own else getattr(self.engine.settings, k)
                for k in CONTROLS}

    def status(self) -> dict:
        """What `livegen ctl ... status` shows: the mode, model, tracks, settings and counters."""
        e, settings = self.engine, self.engine.settings
        remote = e.stage.remote
        return {"mode": settings.mode, "model": e.model.info.path, "kind": e.model.info.kind,
                "tracks": dict(zip(e.tracks, [c + 1 for c in e.channels])),
                "muted": sorted(e.tracks[i] for i in e.muted), "bpm": round(e.transport.bpm, 2),
                "running": e.transport.running, "phrase_steps": e.steps,
                "settings": self.settings_played(),
                "cc_map": dict(settings.cc_map), "programs": list(settings.programs),
                "program": None if self.program is None else self.program + 1,
                "preset": self.preset, "presets": {n: p["program"] for n, p in settings.presets.items()},
                "key": settings.key or e.played_key(), "key_from": "set" if settings.key else "played",
                "key_penalty": e.model.info.key_penalty,      # (the file's own pull towards the key)
                "last_inference_ms": e.playing.last_ms(),
                "stats": e.stats | e.scheduler.stats | (remote.stats if remote else {})}
