"""`livegen run | render | ports`: the command line."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from livegen import __version__
from livegen.config import Settings, build_settings, load_toml, parse_channels
from livegen.errors import ConfigError, LivegenError, PortError

log = logging.getLogger("livegen")


def add_settings_flags(p: argparse.ArgumentParser, live: bool) -> None:
    """Flags that map onto Settings; default None so a TOML file can set them."""
    p.add_argument("--config", help="TOML file; any flag below can be set there (e.g. bpm = 96)")
    p.add_argument("--model", help="an .onnx file or a bundled model: accompany (default), edit, continue")
    p.add_argument("--mode", choices=["loop", "respond", "follow"],
                   help="loop (accompany, edit): phrase k rewritten or accompanied plays in phrase k+1; "
                        "respond (continue, edit): an answer to phrase k plays in k+1; "
                        "follow (continue): every step harmonised as you play it")
    p.add_argument("--bars", type=int, help="bars per phrase (default: the model's window, 2 bars of 4/4)")
    p.add_argument("--bpm", type=float, help="tempo of the internal clock (default 120)")
    p.add_argument("--meter", help="beats per bar as N/4 (default 4/4)")
    p.add_argument("--channels", type=parse_channels, help="output channels of the tracks, from 1 (default 2,3,4)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device (default auto)")
    p.add_argument("--seed", type=int, help="seed for reproducible output")
    p.add_argument("--threshold", type=float, help="cut for note probabilities (default: the model's)")
    p.add_argument("--temperature", type=float, help="continue: sampling temperature (default 0.9)")
    p.add_argument("--top-p", type=float, help="continue: nucleus sampling (default 0.95)")
    p.add_argument("--edit-passes", type=int, help="edit: network passes (default 10)")
    p.add_argument("--edits-per-pass", type=int, help="edit: cells flipped per pass (default 10)")
    p.add_argument("--max-remove", type=float, help="edit: largest share of your notes removed (default 0.5)")
    p.add_argument("--max-add", type=int, help="edit: most notes added (default 64)")
    p.add_argument("--keep-player", dest="keep_player", action="store_const", const=True,
                   help="edit: your notes are never removed (default in loop mode)")
    p.add_argument("--edit-player", dest="keep_player", action="store_const", const=False,
                   help="edit: your notes may be removed too (default in respond mode)")
    p.add_argument("--mute", type=lambda t: [x for x in t.split(",") if x],
                   help="tracks not to play, by name or number: --mute tenor,4")
    if not live:
        return
    p.add_argument("--backend", choices=["auto", "alsa", "jack", "coremidi", "winmm"], help="MIDI API (default auto)")
    p.add_argument("--input", help="input port name or unique part of it, or 'virtual' (default)")
    p.add_argument("--output", help="output port name or unique part of it, or 'virtual' (default)")
    p.add_argument("--client-name", help="MIDI client name (default livegen)")
    p.add_argument("--clock", choices=["internal", "midi"], help="internal tempo, or follow MIDI clock")
    p.add_argument("--clock-port", help="follow MIDI clock from this port instead of the input")
    p.add_argument("--send-clock", action="store_const", const=True, help="be the MIDI clock master (Start + 0xF8)")
    p.add_argument("--thru", action="store_const", const=True, help="also send the player's notes to the output")
    p.add_argument("--record", help="record the session (player and generated) to this .mid file")
    p.add_argument("--late-ms", type=float, help="drop a note-on later than this instead of playing it (default 10)")
    p.add_argument("--control", help="ZeroMQ control socket, e.g. tcp://127.0.0.1:5555 (see `livegen ctl`)")
    p.add_argument("--telemetry", help="ZeroMQ publisher of per-phrase telemetry, e.g. tcp://127.0.0.1:5556")
    p.add_argument("--keys", help="CURVE key folder from `livegen keys`: required to bind beyond loopback "
                                  "and to reach a worker beyond loopback")
    p.add_argument("--inference", type=lambda t: [x for x in t.split(",") if x],
                   help="remote workers (`livegen worker`), comma-separated, e.g. tcp://10.0.0.5:5560: "
                        "phrases are generated there, and here when a worker is late or gone")
    p.add_argument("--no-start-jack", dest="start_jack", action="store_const", const=False,
                   help="do not start `jackd -d dummy` when JACK is needed and none runs")


SETTING_KEYS = {f for f in Settings.__dataclass_fields__}


def settings_from(args) -> Settings:
    file_values = load_toml(args.config) if args.config else {}
    cli = {k: v for k, v in vars(args).items() if k in SETTING_KEYS}
    return build_settings(file_values, cli)


def cmd_ports(args) -> int:
    from livegen.ports import list_ports, pick_backend

    backend = pick_backend(args.backend)
    ins, outs = list_ports(backend)
    print(f"backend: {backend}")
    print("inputs:")
    for n in ins:
        print(f"  {n}")
    print("outputs:")
    for n in outs:
        print(f"  {n}")
    return 0


def load_model(settings: Settings):
    from livegen.models import Model

    model = Model(settings.model, settings.device)
    ms = model.warm_up()
    log.info("model %s (%s, tracks %s) on %s, warm-up pass %.1f ms", model.info.path, model.info.kind,
             ",".join(model.info.tracks), model.provider, ms)
    return model


def cmd_render(args) -> int:
    from livegen.render import render

    settings = settings_from(args)
    model = load_model(settings)
    t = time.perf_counter()
    result = render(args.infile, args.outfile, settings, model, progress=sys.stderr.isatty())
    result["seconds"] = round(time.perf_counter() - t, 3)
    span = f"{result['steps']} steps" if settings.mode == "follow" else f"{result['phrases']} phrases"
    print(f"wrote {args.outfile}: {result['generated_notes']} generated notes in {span} "
          f"({result['seconds']} s); tracks on channels {result['tracks']}")
    return 0


class LiveSession:
    """Ports + engine for `livegen run`; owns the JACK server it started, if any."""

    def __init__(self, settings: Settings):
        from livegen.ports import jack_server_running, pick_backend, start_jack_dummy

        self.settings = settings
        self.backend = pick_backend(settings.backend)
        self.jack = None
        if settings.backend == "auto" and self.backend == "jack":
            log.info("no ALSA sequencer here (/dev/snd/seq): using JACK")
        if self.backend == "jack":
            server = settings.jack_server or os.environ.get("JACK_DEFAULT_SERVER") or None
            if server:
                os.environ["JACK_DEFAULT_SERVER"] = server
            if not jack_server_running(server):
                if not settings.start_jack:
                    raise PortError("no JACK server is running; start one (jackd -d dummy) or drop --no-start-jack")
                log.info("no JACK server running: starting `jackd -d dummy`%s", f" named {server}" if server else "")
                self.jack = start_jack_dummy(server)
        self.model = load_model(settings)
        self.out = None
        self.inputs = []
        self.stopped = threading.Event()
        self.watcher = None

    def send(self, msg: list[int]) -> None:
        self.out.send_message(msg)

    def open(self) -> None:
        from livegen.engine import Engine, phrase_steps
        from livegen.ports import open_port

        s = self.settings
        self.engine = Engine(s, self.model, self.send, on_stopped=self.stopped.set)
        # inputs first: on JACK the first client keeps the plain name (livegen:in), the output
        # client gets a suffix (livegen-01:out)
        self.inputs = []
        specs = [("in", s.input)] + ([("clock", s.clock_port)] if s.clock_port else [])
        for port_name, spec in specs:
            port, name = open_port("in", self.backend, spec, s.client_name, port_name)
            self.inputs.append([port, name, spec, self._poll(port), port_name])
        self.out, self.out_name = open_port("out", self.backend, s.output, s.client_name)
        if self.backend == "jack":
            self._name_virtual_ports()
            for entry in self.inputs:
                if entry[2] != "virtual":   # a keyboard's port (see `_guard`)
                    self._guard(entry)
        channels = ",".join(str(c + 1) for c in self.engine.channels)
        log.info("listening on %s, playing to %s; tracks %s on channels %s; %d-step phrases at %s",
                 " and ".join(i[1] for i in self.inputs), self.out_name, ",".join(self.engine.tracks), channels,
                 phrase_steps(s, self.model), "MIDI clock" if s.clock == "midi" else f"{s.bpm:g} BPM")

    def _poll(self, port):
        from livegen.ports import InputPoller

        port.ignore_types(sysex=False, timing=False, active_sense=False)   # see InputPoller
        poller = InputPoller(port, self.engine.feed)
        poller.start()
        return poller

    def _own_port(self, port_name: str, ports: list[str]) -> str | None:
        """The full JACK name of a port of ours among `ports` (JACK may have renamed the client)."""
        import re

        pattern = re.escape(self.settings.client_name) + r"(-\d+)?:" + re.escape(port_name)
        hits = [n for n in ports if re.fullmatch(pattern, n)]
        return hits[-1] if hits else None

    def _guard(self, entry) -> None:
        """JACK: let the input's poller end a cut-off sysex (see InputPoller). Only on inputs
        opened by name, i.e. devices: a sysex cut off by an unplugged cable or a firmware
        fault comes from them. (A second connection into an input makes JACK mix its
        sources each cycle, and with the dummy driver that lost a few more messages: 3.2 vs
        1.4 of 3,000 played into `livegen run`, mean of 9 runs each way, session 3. Virtual
        ports, which a DAW or a test plays into, are left alone.)"""
        from livegen.ports import list_ports, open_guard

        own = self._own_port(entry[4], list_ports(self.backend)[1])   # (inputs are among destinations)
        if own is not None:
            entry[3].guard = open_guard(self.backend, self.settings.client_name, own)

    def _name_virtual_ports(self) -> None:
        """JACK renames a second client of the same name (livegen-01): report the real names."""
        from livegen.ports import list_ports

        ins, outs = list_ports(self.backend)
        for entry in self.inputs:
            if entry[2] == "virtual":
                entry[1] = self._own_port(entry[4], outs) or entry[1]
        if self.settings.output == "virtual":
            self.out_name = self._own_port("out", ins) or self.out_name

    def watch_ports(self) -> None:
        """Reconnect an unplugged keyboard; silence and reconnect a lost output."""
        from livegen.ports import PortWatcher, open_port

        named = [e for e in self.inputs if e[2] != "virtual"] or self.settings.output != "virtual"
        if not named:
            return
        if self.watcher is None:
            # one long-lived probe: making JACK clients every second upsets the JACK graph
            self.watcher = PortWatcher(self.backend, self.settings.client_name)
        ins, outs = self.watcher.inputs(), self.watcher.outputs()
        for entry in self.inputs:
            port, name, spec, poller, _ = entry
            if spec == "virtual":
                continue
            if port is not None and name not in ins:
                log.warning("input %s is gone; waiting for it to come back", name)
                poller.stop()
                port.close_port()
                entry[0] = None
            elif port is None and name in ins:
                new, _ = open_port("in", self.backend, name, self.settings.client_name, entry[4])
                entry[0], entry[3] = new, self._poll(new)
                if self.backend == "jack":
                    self._guard(entry)
                log.info("input %s is back", name)
        if self.settings.output != "virtual":
            if self.out is not None and self.out_name not in outs:
                log.warning("output %s is gone: silencing, waiting for it to come back", self.out_name)
                self.engine.scheduler.panic(channels=set(self.engine.channels))
                self.out_lost = True
            elif getattr(self, "out_lost", False) and self.out_name in outs:
                new, _ = open_port("out", self.backend, self.out_name, self.settings.client_name)
                old, self.out = self.out, new
                old.close_port()
                self.out_lost = False
                log.info("output %s is back", self.out_name)

    def run(self) -> int:
        import faulthandler

        faulthandler.register(signal.SIGUSR1)   # `kill -USR1 PID` prints every thread's stack
        self.open()
        if self.settings.control:
            from livegen.control import ControlServer

            self.control = ControlServer(self.engine, self.settings.control, self.settings.telemetry,
                                         self.settings.keys)
            self.control.start()
            log.info("control socket on %s%s%s", self.settings.control,
                     f", telemetry on {self.settings.telemetry}" if self.settings.telemetry else "",
                     " (CURVE)" if self.settings.keys else "")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopped.set())
        self.engine.start()
        log.info("running; Ctrl-C stops")
        try:
            while not self.stopped.wait(1.0):
                self.watch_ports()
        finally:
            self.close()
        return 0

    def close(self) -> None:
        if getattr(self, "control", None):
            self.control.close()
        engine = getattr(self, "engine", None)
        if engine:
            engine.stop()
            st = engine.stats | engine.scheduler.stats
            if engine.follower:
                st["clock_ticks_lost"] = engine.follower.lost_ticks
            log.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in st.items()))
        for port, _, _, poller, _ in self.inputs:
            poller.stop()
            if port is not None:
                port.close_port()
        if self.out is not None:
            # the last note-offs and CC 123/120 sit in rtmidi's buffer until the MIDI API's
            # next cycles take them: closing at once would lose them
            time.sleep(0.1)
            self.out.close_port()
        if self.jack is not None:
            self.jack.terminate()
            self.jack.wait(5)


def cmd_run(args) -> int:
    settings = settings_from(args)
    session = LiveSession(settings)
    try:
        return session.run()
    except BaseException:
        session.close()
        raise


def cmd_worker(args) -> int:
    from livegen.models import BUNDLED, Model
    from livegen.remote import Worker, check_bind

    check_bind(args.bind, args.keys or "")          # before loading the models
    specs = args.model or list(BUNDLED)
    models = []
    for spec in specs:
        m = Model(spec, args.device)
        ms = m.warm_up()
        models.append(m)
        log.info("serving %s (%s) on %s, sha256 %s..., warm-up pass %.1f ms", m.info.path, m.info.kind, m.provider,
                 m.sha256[:12], ms)
    worker = Worker(args.bind, models, args.keys or "")
    halt = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: halt.set())
    log.info("worker listening on %s%s; Ctrl-C stops", args.bind, " (CURVE)" if args.keys else "")
    try:
        worker.serve(halt)
    finally:
        log.info("worker stopped: %s", ", ".join(f"{k} {v}" for k, v in worker.stats.items()))
        worker.close()
    return 0


def cmd_keys(args) -> int:
    from livegen.control import make_keys

    made = make_keys(args.folder)
    print(f"server keys: {made['server']} (+ _secret); client keys: {made['client']} (+ _secret)")
    print(f"allowed clients: public keys in {made['authorized'].parent}; copy client.key_secret and "
          "server.key to each client")
    return 0


def cmd_ctl(args) -> int:
    import json

    from livegen.control import request

    if args.action == "set":
        if len(args.args) == 4 and {args.args[0], args.args[2]} == {"mode", "model"}:
            # ctl set mode follow model continue: both at the next phrase
            message = {"cmd": "set", "key": args.args[0], "value": args.args[1], args.args[2]: args.args[3]}
        elif len(args.args) != 2:
            raise ConfigError("ctl set KEY VALUE (or: ctl set mode MODE model MODEL)")
        else:
            key, raw = args.args
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            message = {"cmd": "set", "key": key, "value": value}
    elif args.action == "learn":
        if len(args.args) != 1:
            raise ConfigError("ctl learn KEY")
        message = {"cmd": "learn", "key": args.args[0]}
    else:
        message = {"cmd": args.action}
    reply = request(args.endpoint, message, args.keys or "")
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def cmd_watch(args) -> int:
    import json

    from livegen.control import describe, watch

    print(f"watching {args.endpoint} (Ctrl-C stops)", file=sys.stderr, flush=True)
    for event in watch(args.endpoint, args.keys or "", args.count):
        print(json.dumps(event) if args.json else describe(event), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="livegen", description="Real-time MIDI accompaniment with ONNX models.")
    p.add_argument("--version", action="version", version=f"livegen {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log every phrase")
    sub = p.add_subparsers(dest="command", required=True)
    ports = sub.add_parser("ports", help="list MIDI inputs and outputs")
    ports.add_argument("--backend", default="auto", choices=["auto", "alsa", "jack", "coremidi", "winmm"])
    run = sub.add_parser("run", help="listen, generate and play live")
    add_settings_flags(run, live=True)
    render = sub.add_parser("render", help="the same pipeline offline: IN.mid -> OUT.mid")
    render.add_argument("infile")
    render.add_argument("outfile")
    add_settings_flags(render, live=False)
    worker = sub.add_parser("worker", help="serve the models to daemons over the network (e.g. on a GPU box)")
    worker.add_argument("--bind", required=True, help="e.g. tcp://127.0.0.1:5560 (beyond loopback needs --keys)")
    worker.add_argument("--model", action="append", help="a model to serve (repeat; default: the bundled ones)")
    worker.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="inference device")
    worker.add_argument("--keys", help="CURVE key folder (server.key_secret, authorized/)")
    keys = sub.add_parser("keys", help="make CURVE keys for the control socket and workers")
    keys.add_argument("folder")
    ctl = sub.add_parser("ctl", help="talk to a running daemon's control socket")
    ctl.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5555")
    ctl.add_argument("action", choices=["status", "set", "reload", "panic", "learn"])
    ctl.add_argument("args", nargs="*", help="set: KEY VALUE; learn: KEY")
    ctl.add_argument("--keys", help="CURVE key folder (client.key_secret, server.key)")
    watch = sub.add_parser("watch", help="print a running daemon's telemetry, a line per phrase")
    watch.add_argument("endpoint", help="its --telemetry address, e.g. tcp://127.0.0.1:5556")
    watch.add_argument("--json", action="store_true", help="the messages as they come, JSON per line")
    watch.add_argument("--count", type=int, default=0, help="stop after N messages (default: never)")
    watch.add_argument("--keys", help="CURVE key folder (client.key_secret, server.key)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s livegen: %(message)s", datefmt="%H:%M:%S")
    try:
        return {"ports": cmd_ports, "run": cmd_run, "render": cmd_render, "keys": cmd_keys,
                "ctl": cmd_ctl, "worker": cmd_worker, "watch": cmd_watch}[args.command](args)
    except LivegenError as err:
        print(f"livegen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
