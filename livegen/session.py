"""What `livegen run` does: a JACK server if one is needed, the model, the ports, the engine,
the control socket, signals, and a clean shutdown (every note ended)."""
from __future__ import annotations

import faulthandler
import gc
import logging
import os
import signal
import time

from livegen.config import Settings
from livegen.control import ControlServer
from livegen.engine import Engine
from livegen.errors import PortError
from livegen.hub import Hub
from livegen.models import Model
from livegen.ports import JackServerProbe, jack_server_running, pick_backend, start_jack_dummy
from livegen.service import Notifier
from livegen.signals import StopFlag, stop_on

log = logging.getLogger("livegen")
EXIT_SERVER_LOST = 3     # `livegen run`'s status when the JACK server went away under it
CLOSE_S = 5.0            # the most the ports and sockets may take to close at exit


def load_model(settings: Settings) -> Model:
    model = Model(settings.model, settings.device)
    ms = model.warm_up()
    log.info("model %s (%s, tracks %s) on %s, warm-up pass %.1f ms%s", model.info.path, model.info.kind,
             ",".join(model.info.tracks), model.provider, ms, played_with(model.info.meta))
    return model


def played_with(meta: dict) -> str:
    """How the file says it is played (a fine-tune writes these: training.finetune.calibrate;
    the player's --temperature, --top-p, --threshold win)."""
    said = [f"{key.split('.', 1)[1].replace('_', ' ')} {meta[key]}" for key in (
        "livegen.temperature", "livegen.top_p", "livegen.threshold", "livegen.key_penalty", "livegen.voice_ranges",
        "livegen.parallel_penalty", "livegen.range_penalty")
        if key in meta]
    return f"; the file's own {', '.join(said)}" if said else ""


def settle_memory() -> int:
    """What start-up made (modules, the model's session, the ports) collected once, then left
    out of the collector's full passes (`gc.freeze`): a full pass holds every thread, the
    scheduler's too, and over start-up's objects took up to 12.4 ms under load (a tail of
    the stop events in follow/continue); `benchmarks/gc_pause.py`. Returns the objects left out."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class LiveSession:
    """Ports + engine for `livegen run`; owns the JACK server it started, if any."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.backend = pick_backend(settings.backend)
        self.jack = None
        self.engine = None
        self.hub = None
        self.control = None
        self.web = None
        self.server: JackServerProbe | None = None
        if settings.backend == "auto" and self.backend == "jack":
            log.info("no ALSA sequencer here (/dev/snd/seq): using JACK")
        if self.backend == "jack":
            self._need_jack()
        self.model = load_model(settings)
        self.stopped = StopFlag()     # (a threading.Event set from a signal handler can hang: livegen.signals)
        self.notify = Notifier()
        self.fed, self.hung_said = 0.0, False

    def _need_jack(self) -> None:
        server = self.settings.jack_server or os.environ.get("JACK_DEFAULT_SERVER") or None
        if server:
            os.environ["JACK_DEFAULT_SERVER"] = server
        if self.settings.client_name == (server or "default"):
            # libjack (1.9.21, 1.9.22) opens no client in a process after one named like its
            # server was closed: livegen opens several, and would fail half-way
            raise PortError(f"client name {self.settings.client_name!r} is the JACK server's name: "
                            "choose another --client-name")
        if not jack_server_running(server):
            if not self.settings.start_jack:
                raise PortError("no JACK server is running; start one (jackd -d dummy) or drop --no-start-jack")
            log.info("no JACK server running: starting `jackd -d dummy`%s", f" named {server}" if server else "")
            self.jack = start_jack_dummy(server)
            log.info("jackd runs %s, %d frames a cycle (%.2f ms)", "with realtime scheduling" if self.jack.realtime else
                     "without realtime scheduling (not granted to this user): under load a stop's note-offs "
                     "may wait some JACK cycles longer (README: realtime)", self.jack.period,
                     self.jack.period / 48)
        self.server = JackServerProbe(server)

    def open(self) -> None:
        s = self.settings
        self.engine = Engine(s, self.model, self.send, on_stopped=self.stopped.set)
        self.hub = Hub(self.backend, s.client_name, self.engine.feed)
        self.hub.quiet = self.engine.scheduler.in_gap
        self.hub.open([("in", s.input)] + ([("clock", s.clock_port)] if s.clock_port else []), s.output, s.ignore)
        engine = self.engine
        log.info("listening on %s%s, playing to %s; tracks %s on channels %s; %d-step phrases at %s",
                 " and ".join(i.name for i in self.hub.inputs),
                 " (and every MIDI input plugged in)" if self.hub.auto else "", self.hub.out_name,
                 ",".join(engine.tracks),
                 ",".join(str(c + 1) for c in engine.channels), engine.steps,
                 "MIDI clock" if s.clock == "midi" else f"{s.bpm:g} BPM")

    def send(self, msg: list[int]) -> None:
        self.hub.send(msg)

    def _open_control(self) -> None:
        s = self.settings
        if s.control:
            self.control = ControlServer(self.engine, s.control, s.telemetry, s.keys)
            self.control.start()
            log.info("control socket on %s%s%s", s.control, f", telemetry on {s.telemetry}" if s.telemetry else "",
                     " (CURVE)" if s.keys else "")
        if s.web:
            from livegen.control import Requests
            from livegen.web import WebPage, read_token

            requests = self.control.requests if self.control else Requests(self.engine)
            self.web = WebPage(self.engine, requests, s.web, read_token(s.web_token, s.keys))
            self.web.start()
            log.info("control page on %s", self.web.url)

    def run(self) -> int:
        faulthandler.enable()                   # a crash in a native library prints every thread's stack
        faulthandler.register(signal.SIGUSR1)   # and so does `kill -USR1 PID`
        self.open()
        if self.settings.control or self.settings.web:
            self._open_control()
        stop_on(self.stopped)
        log.debug("start-up's %d objects left out of the collector's full passes", settle_memory())
        self.engine.start()
        if self.backend == "jack" and self.settings.output == "virtual":
            self.hub.watch_links(self.engine.scheduler)    # (a thread of its own)
        log.info("running; Ctrl-C stops")
        self.notify.send("READY=1", f"STATUS={self._status()}")
        code, beat = 0, 0
        try:
            while not self.stopped.wait(0.1):
                beat += 1
                self._feed_watchdog()
                if beat % 10:
                    continue
                if self.server is not None and not self.server.alive():
                    # its ports are gone with it and rtmidi cannot move to a new server: exit,
                    # and a service manager (Restart=always) starts livegen on the server again
                    log.error("the JACK server %s is gone: exiting with status %d", self.server.name,
                              EXIT_SERVER_LOST)
                    self.hub.abandon()
                    code = EXIT_SERVER_LOST
                    break
                self.hub.watch(self.engine.scheduler)
                self.notify.set_status(self._status())
        finally:
            self.close()
        return code

    def _status(self) -> str:
        """systemd's STATUS= (`systemctl status livegen`)."""
        e = self.engine
        clock = "MIDI clock" if self.settings.clock == "midi" else f"{e.transport.bpm:g} BPM"
        return (f"{e.settings.mode} {e.model.info.kind} at {clock}; phrases answered {e.stats['phrases']}, "
                f"notes {e.stats['generated_notes']}")

    def _feed_watchdog(self) -> None:
        """WATCHDOG=1 to systemd, at a third of its timeout, only while every engine thread
        turns: a hung worker or scheduler is restarted by systemd (WatchdogSec)."""
        every = self.notify.watchdog_s
        if every is None:
            return
        now = time.monotonic()
        if now - self.fed < every / 3:
            return
        hung = self.engine.hung()
        if hung:
            if not self.hung_said:
                log.error("the %s thread has stopped turning: the watchdog is no longer fed, so systemd "
                          "restarts livegen", " and ".join(hung))
                self.hung_said = True
            return
        self.notify.send("WATCHDOG=1")
        self.fed = now

    def close(self) -> None:
        gc.disable()     # (no finalizer of a MIDI client runs while the ports close: see cli.cmd_run)
        self.notify.send("STOPPING=1")
        engine = self.engine
        if engine is not None:     # the notes end first, then the sockets and ports
            engine.stop()
            # the notes are ended: whatever closing the rest waits on (a JACK or ZeroMQ call
            # that never returns), the process ends within CLOSE_S, saying where it waited
            faulthandler.dump_traceback_later(CLOSE_S, exit=True)
            st = engine.stats | engine.scheduler.stats
            if engine.transport.follower:
                st["clock_ticks_lost"] = engine.transport.follower.lost_ticks
            log.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in st.items()))
            self.engine = None
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.web is not None:
            self.web.close()
            self.web = None
        if self.hub is not None:
            self.hub.close()
            self.hub = None
        if self.jack is not None:
            self.jack.terminate()
            self.jack.wait(5)
            self.jack = None
