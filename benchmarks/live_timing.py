"""Timing of generated notes over real JACK ports, idle CPU and memory of the daemon.

    python benchmarks/live_timing.py [--seconds 120] [--bpm 120] [--mode loop] [--model accompany]
                                     [--device cpu|cuda|auto] [--jsb PATH] [--web]

Starts a JACK dummy server of its own, runs `livegen run` as a subprocess, plays the soprano
lines of JSB test chorales into it in time, listens to its output, and prints a table:
- error of each generated note-on against its grid time as the player defines it (first
  note = step 0; includes both JACK hops, about 1.3 ms each, as a musician would hear it),
- the same with the constant latency taken out (jitter around the daemon's own grid),
- notes dropped as late, CPU use of the daemon while idle (no one playing) and while the music
  plays, resident memory.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.jackmidi import Daemon, Listener, Player  # noqa: E402

JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


def start_jack() -> subprocess.Popen:
    name = f"lgbench-{uuid.uuid4().hex[:6]}"
    os.environ["JACK_DEFAULT_SERVER"] = name
    os.environ["JACK_NO_START_SERVER"] = "1"
    log = open(f"/tmp/{name}.log", "w+")
    proc = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "64"],
                            stdout=log, stderr=subprocess.STDOUT)
    for _ in range(150):
        if subprocess.run(["jack_lsp"], capture_output=True).returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    log.seek(0)
    raise SystemExit("jackd did not start:\n" + log.read()[-3000:])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def melody(seconds: float, step: float, jsb: Path = JSB, voices=(0,)) -> list[tuple[int, int, int]]:
    """Soprano lines of JSB test chorales (with `voices` (0, 3): and their bass lines), one
    after another, as (pitch, start, end) steps."""
    test = json.loads(jsb.read_text())["test"]
    notes, offset, total = [], 0, int(seconds / step)
    for chorale in test:
        for v in voices:
            line = [s[v] for s in chorale]
            t = 0
            while t < len(line):
                p, s = line[t], t
                while t < len(line) and line[t] == p:
                    t += 1
                if p >= 0 and offset + s < total - 40:
                    notes.append((p, offset + s, offset + t))
        offset += len(chorale)
        if offset >= total - 40:
            break
    return notes


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PageOpen:
    """What a phone with the control page open asks of the daemon: its live stream, read as
    it comes, and (more than the page does) its status 4 times a second."""

    def __init__(self, address: str):
        import threading
        import urllib.request

        self.halt, self.events, self.polls = threading.Event(), 0, 0
        self.stream = urllib.request.urlopen(f"http://{address}/api/events", timeout=10)

        def read():
            while not self.halt.is_set():
                if not self.stream.readline():
                    break
                self.events += 1

        def poll():
            while not self.halt.wait(0.25):
                urllib.request.urlopen(f"http://{address}/api/status", timeout=10).read()
                self.polls += 1

        self.threads = [threading.Thread(target=read, daemon=True), threading.Thread(target=poll, daemon=True)]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.halt.set()
        self.threads[1].join(2)
        print(f"control page: {self.events} stream lines read, {self.polls} status requests", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--bpm", type=float, default=120)
    ap.add_argument("--model", default="accompany")
    ap.add_argument("--mode", default="loop", choices=["loop", "respond", "follow"])
    ap.add_argument("--hands", action="store_true", help="play the chorales' bass lines too (both hands: "
                    "respond + continue decodes an answer step again when a key struck on it does not fit it)")
    ap.add_argument("--idle-seconds", type=float, default=10)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="the daemon's inference device")
    ap.add_argument("--jsb", default=str(JSB), help="the JSB chorales JSON (its test sopranos are played)")
    ap.add_argument("--web", action="store_true", help="with the control page open the whole time (its live "
                                                         "stream read, its status asked for 4 times a second)")
    args = ap.parse_args()
    jack = start_jack()
    step = 60 / (args.bpm * 4)
    try:
        web = f"127.0.0.1:{free_port()}"
        d = Daemon("lgbench", "--model", args.model, "--mode", args.mode, "--bpm", str(args.bpm), "--seed", "1",
                   "--device", args.device, "--backend", "jack", *(["--web", web] if args.web else []),
                   *(["-v"] if os.environ.get("LGBENCH_VERBOSE") else []))
        player, listener = Player(d.in_port, "bench-player"), Listener(d.out_port, "bench-listener")
        page = PageOpen(web) if args.web else None
        pid = d.proc.pid
        c0 = cpu_seconds(pid)
        time.sleep(args.idle_seconds)
        idle_cpu = (cpu_seconds(pid) - c0) / args.idle_seconds * 100
        notes = melody(args.seconds, step, Path(args.jsb), (0, 3) if args.hands else (0,))
        events = []
        for p, s, e in notes:
            events += [(s * step, [0x90, p, 90]), (e * step - 0.005, [0x80, p, 0])]
        t0 = time.perf_counter() + 0.5
        c1 = cpu_seconds(pid)
        sent_ons = []
        for dt, msg in sorted(events, key=lambda x: x[0]):
            t_sent = player.at(t0 + dt, msg)
            if msg[0] == 0x90:
                sent_ons.append(t_sent)
        time.sleep(t0 + (notes[-1][2] + 2 * 32) * step - time.perf_counter())
        playing_cpu = (cpu_seconds(pid) - c1) / (time.perf_counter() - t0 + 0.5) * 100
        rss = rss_mib(pid)
        if page is not None:
            page.close()
        d.stop()
        out = d.output()
        ons = listener.note_ons()
        player.close()
        listener.close()
    finally:
        jack.terminate()
        jack.wait(10)
    pos = np.array([(t - t0) / step for t, *_ in ons])
    err_ms = (pos - np.round(pos)) * step * 1000
    jitter = err_ms - np.median(err_ms)
    provider = next((line.split(" on ")[-1].split(",")[0] for line in out.splitlines() if "warm-up pass" in line), "?")
    inference = f"inference on {provider} ({os.cpu_count()} cores)"
    late = next((int(x.split()[1]) for x in out.split(", ") if x.startswith("late_dropped")), -1)

    def row(name, e):
        a = np.abs(e)
        return f"| {name} | {len(e)} | {np.percentile(a, 50):.2f} | {np.percentile(a, 99):.2f} | {a.max():.2f} |"

    if args.mode == "follow":   # how long after the player's note its harmony is heard
        heard = np.array(sorted(t for t, *_ in ons))
        delays = []
        for ts in sent_ons:
            i = np.searchsorted(heard, ts)
            if i < len(heard) and heard[i] - ts < 0.1:
                delays.append((heard[i] - ts) * 1000)
        delays = np.array(delays)
        inside = "; ".join(line.split("livegen: ")[1] for line in out.splitlines() if "livegen: follow:" in line) or "?"
        print(f"\nlivegen follow mode: {args.seconds:.0f} s at {args.bpm:g} BPM, model {args.model}, "
              f"{len(sent_ons)} player notes, {len(delays)} answered, {inference}")
        print("| delay of the harmony behind the player's note | p50 ms | p99 ms | max ms |\n|---|---|---|---|")
        print(f"| end to end (2 JACK hops) | {np.percentile(delays, 50):.2f} | {np.percentile(delays, 99):.2f} | "
              f"{delays.max():.2f} |")
        print("\n| every harmony note-on vs the player's grid (also voices moving under a held note) | notes | "
              "p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
        print(f"| signed error, late > 0 | {len(err_ms)} | {np.percentile(err_ms, 50):.2f} | {np.percentile(err_ms, 99):.2f}"
              f" | {err_ms.max():.2f} |")
        print(f"\n| measure | value |\n|---|---|\n| daemon's own measure | {inside} |")
        print(f"| daemon CPU while idle ({args.idle_seconds:g} s) | {idle_cpu:.2f} % of one core |")
        print(f"| daemon CPU while the music plays | {playing_cpu:.1f} % of one core |")
        print(f"| daemon resident memory after the session | {rss:.0f} MiB |")
        return 0
    print(f"\nlivegen live timing ({args.mode}): {args.seconds:.0f} s at {args.bpm:g} BPM, model {args.model}, "
          f"{len(notes)} player notes{' (soprano and bass)' if args.hands else ''}, {inference}"
          f"{', control page open' if args.web else ''}")
    print("| generated note-ons vs grid | notes | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    print(row("player's grid (end to end, 2 JACK hops)", err_ms))
    print(row("daemon's grid (median latency removed)", jitter))
    print(f"\n| measure | value |\n|---|---|\n| median latency (2 JACK hops + scheduling) | {np.median(err_ms):.2f} ms |")
    print(f"| notes dropped as late | {late} |")
    redone = next((line.split("them: ")[1] for line in out.splitlines() if "answer steps decoded again" in line), None)
    if redone is not None:
        print(f"| answer steps decoded again for a key struck on them | {redone} |")
    taken = next((int(x.split()[1]) for x in out.split(", ") if x.startswith("answer_notes_taken_back")), 0)
    if taken:
        print(f"| notes of an answer made at the cut ended for a key that they did not fit | {taken} |")
    sent = next((line.split("livegen: ")[1] for line in out.splitlines() if "after their deadline" in line), "?")
    print(f"| daemon's own send error | {sent} |")
    print(f"| daemon CPU while idle ({args.idle_seconds:g} s) | {idle_cpu:.2f} % of one core |")
    print(f"| daemon CPU while the music plays | {playing_cpu:.1f} % of one core |")
    print(f"| daemon resident memory after the session | {rss:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
