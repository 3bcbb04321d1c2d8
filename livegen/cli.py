"""`livegen run | render | ports | worker | ctl | watch | keys | service`: the command line (arguments only;
what `run` does is livegen/session.py)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from livegen import __version__
from livegen.config import Settings, build_settings, load_toml, parse_channels
from livegen.errors import ConfigError, LivegenError



def add_settings_flags(p: argparse.ArgumentParser, live: bool) -> None:
    """Flags that map onto Settings; default None so a TOML file can set them."""
    p.add_argument("--config", help="TOML file; any flag below can be set there (e.g. bpm = 96)")
    p.add_argument("--model", help="an .onnx file or a bundled model: accompany (default), edit, continue, "
                                        "harmonise")
    p.add_argument("--mode", choices=["loop", "respond", "follow"],
                   help="loop (accompany, edit): phrase k rewritten or accompanied plays in phrase k+1; "
                        "respond (continue, edit): an answer to phrase k plays in k+1; "
                        "follow (harmonise, continue): every step harmonised as you play it")
    p.add_argument("--bars", type=int, help="bars per phrase (default: the model's window, 2 bars of 4/4)")
    p.add_argument("--bpm", type=float, help="tempo of the internal clock (default 120)")
    p.add_argument("--meter", help="beats per bar as N/4 (default 4/4)")
    p.add_argument("--channels", type=parse_channels, help="output channels of the tracks, from 1 (default 2,3,4)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device (default auto)")
    p.add_argument("--seed", type=int, help="seed for reproducible output")
    p.add_argument("--threshold", type=float, help="cut for note probabilities (default: the model's)")
    p.add_argument("--key", help='the key, e.g. "D minor" (default: the key of what is played)')
    p.add_argument("--scale-lock", action="store_const", const=True,
                   help="every generated note inside the key (the --key, else the key of what is played)")
    p.add_argument("--temperature", type=float, help="continue: sampling temperature (default: the model's, 0.9 unless a fine-tune set it)")
    p.add_argument("--top-p", type=float, help="continue: nucleus sampling (default: the model's, 0.95 unless a fine-tune set it)")
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
    p.add_argument("--input", help="input port name or unique part of it, 'virtual' (default), or 'all': "
                                   "the virtual input and every MIDI source, now and when plugged in")
    p.add_argument("--ignore", type=lambda t: [x for x in t.split(",") if x],
                   help="with --input all: sources whose name contains one of these (comma-separated) are "
                        "left out (default: Midi Through)")
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
    p.add_argument("--web", help="serve the control page for a phone, e.g. 127.0.0.1:8080 (beyond loopback "
                                 "needs a token: --keys DIR with its web.token, or --web-token)")
    p.add_argument("--web-token", help="a file holding the control page's secret token")
    p.add_argument("--keys", help="CURVE key folder from `livegen keys`: required to bind beyond loopback "
                                  "and to reach a worker beyond loopback")
    p.add_argument("--inference", type=lambda t: [x for x in t.split(",") if x],
                   help="remote workers (`livegen worker`), comma-separated, e.g. tcp://10.0.0.5:5560: "
                        "phrases are generated there, and here when a worker is late or gone")
    p.add_argument("--no-start-jack", dest="start_jack", action="store_const", const=False,
                   help="do not start `jackd -d dummy` when JACK is needed and none runs")


SETTING_KEYS = {f for f in Settings.__dataclass_fields__}


def settings_from(args, default_config: bool = False) -> Settings:
    """`default_config` (run): without --config, the user's or the system's livegen.toml."""
    config = args.config
    if config is None and default_config:
        from livegen.service import default_config as find

        config = find()
        if config is not None:
            logging.getLogger("livegen").info("settings from %s", config)
    file_values = load_toml(config) if config else {}
    cli = {k: v for k, v in vars(args).items() if k in SETTING_KEYS}
    cli["config_path"] = str(config) if config else None
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


def cmd_render(args) -> int:
    from livegen.render import render
    from livegen.session import load_model

    settings = settings_from(args)
    model = load_model(settings)
    t = time.perf_counter()
    result = render(args.infile, args.outfile, settings, model, progress=sys.stderr.isatty())
    result["seconds"] = round(time.perf_counter() - t, 3)
    span = f"{result['steps']} steps" if settings.mode == "follow" else f"{result['phrases']} phrases"
    print(f"wrote {args.outfile}: {result['generated_notes']} generated notes in {span} "
          f"({result['seconds']} s); tracks on channels {result['tracks']}")
    if args.png:
        from livegen.picture import draw_roll

        draw_roll(args.outfile, args.png, f"{args.infile}: {settings.mode} {model.info.kind}")
        print(f"wrote {args.png}: the player's notes and the generated voices as a piano roll")
    return 0


def cmd_run(args) -> int:
    from livegen.session import LiveSession

    settings = settings_from(args, default_config=True)
    session = LiveSession(settings)
    try:
        code = session.run()
    except BaseException:
        session.close()
        raise
    # everything is closed: end here, without the interpreter's last garbage collection, where
    # an rtmidi JACK client's destructor once crashed the process (exit -11 after "stopped:",
    # 1 CI run in many, a keyboard unplugged and plugged back during the session)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_worker(args) -> int:
    from livegen.remote import serve

    serve(args.bind, args.model, args.device, args.keys or "")
    return 0


def cmd_keys(args) -> int:
    from livegen.control import make_keys

    from livegen.web import make_token

    made = make_keys(args.folder)
    token = make_token(args.folder)
    print(f"server keys: {made['server']} (+ _secret); client keys: {made['client']} (+ _secret)")
    print(f"control page token (--web beyond loopback): {token}")
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
    elif args.action in ("preset", "save-preset"):
        if len(args.args) != 1:
            raise ConfigError(f"ctl {args.action} NAME")
        message = {"cmd": args.action, "name": args.args[0]}
    elif args.action == "learn":
        if len(args.args) != 1:
            raise ConfigError("ctl learn KEY")
        message = {"cmd": "learn", "key": args.args[0]}
    else:
        message = {"cmd": args.action}
    reply = request(args.endpoint, message, args.keys or "")
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def cmd_service(args) -> int:
    from livegen import service

    if args.action == "print":
        sys.stdout.write(service.unit_text(args.user, args.run_as))
        return 0
    unit, config, made = service.install(args.user, args.run_as)
    scope = "--user " if args.user else ""
    print(f"wrote {unit}")
    print(f"{'wrote' if made else 'settings in'} {config}{' (every setting commented out)' if made else ''}")
    print(f"start it now and at every {'login' if args.user else 'boot'}: systemctl {scope}daemon-reload && "
          f"systemctl {scope}enable --now livegen")
    print(f"its log: journalctl {scope}-u livegen -f")
    return 0


def cmd_watch(args) -> int:
    import json

    from livegen.control import describe, watch

    print(f"watching {args.endpoint} (Ctrl-C stops)", file=sys.stderr, flush=True)
    for event in watch(args.endpoint, args.keys or "", args.count):
        print(json.dumps(event) if args.json else describe(event), flush=True)
    return 0


class JournalFormatter(logging.Formatter):
    """Under systemd (its journal on stdout): each line starts with its syslog level, <3>
    error to <7> debug, so `journalctl -p warning` finds the warnings; the journal adds the time."""

    LEVELS = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.LEVELS.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if os.environ.get("JOURNAL_STREAM"):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JournalFormatter("%(message)s"))
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format="%(asctime)s livegen: %(message)s", datefmt="%H:%M:%S")


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
    render.add_argument("--png", help="also draw the player's notes and the generated voices as a piano roll "
                                      "(needs matplotlib: pip install 'livegen[plot]')")
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
    ctl.add_argument("action", choices=["status", "set", "reload", "panic", "learn", "preset", "save-preset"])
    ctl.add_argument("args", nargs="*", help="set: KEY VALUE; learn: KEY; preset, save-preset: NAME")
    ctl.add_argument("--keys", help="CURVE key folder (client.key_secret, server.key)")
    watch = sub.add_parser("watch", help="print a running daemon's telemetry, a line per phrase")
    watch.add_argument("endpoint", help="its --telemetry address, e.g. tcp://127.0.0.1:5556")
    watch.add_argument("--json", action="store_true", help="the messages as they come, JSON per line")
    watch.add_argument("--count", type=int, default=0, help="stop after N messages (default: never)")
    watch.add_argument("--keys", help="CURVE key folder (client.key_secret, server.key)")
    service = sub.add_parser("service", help="run livegen under systemd: print or install its unit")
    service.add_argument("action", choices=["print", "install"])
    service.add_argument("--user", action="store_true", help="a user unit (starts at login) instead of a system one")
    service.add_argument("--run-as", help="system unit: the user it runs as (default: you)")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return {"ports": cmd_ports, "run": cmd_run, "render": cmd_render, "keys": cmd_keys,
                "ctl": cmd_ctl, "worker": cmd_worker, "watch": cmd_watch, "service": cmd_service}[args.command](args)
    except LivegenError as err:
        print(f"livegen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
