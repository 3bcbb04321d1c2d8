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

    def status(self) -> dict:
        """What `livegen ctl ... status` shows: the mode, model, tracks, settings and counters."""
        e, settings = self.engine, self.engine.settings
        remote = e.stage.remote
        return {"mode": settings.mode, "model": e.model.info.path, "kind": e.model.info.kind,
                "tracks": dict(zip(e.tracks, [c + 1 for c in e.channels])),
                "muted": sorted(e.tracks[i] for i in e.muted), "bpm": round(e.transport.bpm, 2),
                "running": e.transport.running, "phrase_steps": e.steps,
                "settings": {k: getattr(settings, k) for k in CONTROLS},
                "cc_map": dict(settings.cc_map), "programs": list(settings.programs),
                "program": None if self.program is None else self.program + 1,
                "last_inference_ms": e.playing.last_ms(),
                "stats": e.stats | e.scheduler.stats | (remote.stats if remote else {})}
