"""Left alone for an hour: every way of listening under MIDI clock, side by side.

    python benchmarks/soak.py [--minutes 60] [--ways loop/accompany,...] [--png benchmarks/soak.png]

Each way of listening (mode and bundled model, as in reliability.py) gets a JACK dummy server of
its own (own process), a `livegen run --clock midi` on it, a player that is the clock master
(Start, then 24 ticks a quarter at 120 BPM) and plays a melody, transposed each time, in every
other 32-step phrase, and a listener (own process) that hears everything. Every 30 s the
daemon's resident memory and CPU time are read from /proc. At the end: resident memory after
the warm-up (5 min) and at the end, its growth per hour (least squares over the samples after
the warm-up), CPU per way (% of one core), notes heard, the daemon's own counts (late notes
dropped, worker errors, phrases) and how late its note-ons left, notes left sounding at the
listener. Prints one JSON line per way, a Markdown table, and draws resident memory over time.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

BPM = 120
TICK = 60 / (BPM * 24)
STEP_TICKS = 6                 # a 16th note
PHRASE = 32
WARM_UP_S = 300
SAMPLE_S = 30


def proc_figures(pid: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")      # utime + stime
    return rss_kib / 1024, cpu


def events_of_cycle(rng: random.Random) -> dict[int, list[list[int]]]:
    """tick -> messages of one two-phrase cycle: the melody, transposed, then a phrase of rest."""
    from tests.virtual import MELODY

    shift = rng.randint(-5, 6)
    out: dict[int, list[list[int]]] = {}
    for pitch, start, end in MELODY:
        out.setdefault(start * STEP_TICKS, []).append([0x90, pitch + shift, 90])
        out.setdefault(end * STEP_TICKS - 1, []).append([0x80, pitch + shift, 0])
    return out


def parse_log(text: str) -> dict:
    counts = {}
    found = re.findall(r"stopped: (.*)", text)
    if found:
        counts = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", found[-1])}
    late = re.findall(r"note-ons sent after their deadline: p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms", text)
    if late:
        counts |= {"sent_late_p50_ms": float(late[-1][0]), "sent_late_p99_ms": float(late[-1][1]),
                   "sent_late_max_ms": float(late[-1][2])}
    return counts


def drive(index: int, mode: str, model: str, minutes: float, results) -> None:
    """One way of listening for `minutes`, in a process of its own (its own JACK server)."""
    from reliability import start_jack
    from tests.jackmidi import Daemon, Listener, Player

    time.sleep(8 * index)      # (JACK servers started at the same moment failed to open clients)
    jack = start_jack()
    name = f"lgsoak{index}"
    d = Daemon(name, "--model", model, "--mode", mode, "--clock", "midi", "--seed", "1")
    player, listener = Player(d.in_port, f"{name}-player"), Listener(d.out_port, f"{name}-listener")
    rng = random.Random(index)
    cycle_ticks = 2 * PHRASE * STEP_TICKS
    cycle = events_of_cycle(rng)
    samples, died = [], ""
    start = time.perf_counter() + 0.2
    end = start + minutes * 60
    next_sample = start
    tick = 0
    try:
        time.sleep(max(0.0, start - time.perf_counter()))
        player.send([0xFA])
        while True:
            at = start + tick * TICK
            if at >= end:
                break
            time.sleep(max(0.0, at - time.perf_counter()))
            player.send([0xF8])
            for msg in cycle.get(tick % cycle_ticks, ()):
                player.send(msg)
            tick += 1
            if tick % cycle_ticks == 0:
                cycle = events_of_cycle(rng)
            if at >= next_sample:
                if d.proc.poll() is not None:     # it died: what it said last is in its log
                    died = f"exit {d.proc.returncode} after {(at - start) / 60:.1f} min"
                    break
                rss, cpu = proc_figures(d.proc.pid)
                samples.append((at - start, rss, cpu))
                next_sample += SAMPLE_S
                if len(samples) % 10 == 1:
                    print(f"soak {mode}/{model}: {(at - start) / 60:.0f}/{minutes:g} min, "
                          f"resident {rss:.1f} MiB", file=sys.stderr, flush=True)
        player.send([0xFC])                      # Stop: every note ends
        time.sleep(1.0)
        if not died:
            rss, cpu = proc_figures(d.proc.pid)
            samples.append((time.perf_counter() - start, rss, cpu))
        code = d.stop()
        heard = len(listener.note_ons())
        left = len(listener.sounding_after())
        results.put({"mode": mode, "model": model, "samples": samples, "exit": died or code, "heard": heard,
                     "left_sounding": left, "log": parse_log(d.output()), "clock_ticks": tick,
                     "log_path": d.log_path})
    finally:
        d.stop()
        listener.close()
        player.close()
        player.out.delete()          # (before the server goes)
        jack.terminate()
        jack.wait(10)


def summary(r: dict) -> dict:
    import numpy as np

    s = np.array(r["samples"]) if len(r["samples"]) > 1 else np.zeros((2, 3))
    after = s[s[:, 0] >= min(WARM_UP_S, s[-1, 0] / 2)]
    slope = float(np.polyfit(after[:, 0] / 3600, after[:, 1], 1)[0]) if len(after) > 2 else float("nan")
    late = s[s[:, 0] >= 1200]        # (follow's arena grows for its first quarter of an hour)
    slope_20 = float(np.polyfit(late[:, 0] / 3600, late[:, 1], 1)[0]) if len(late) > 2 else float("nan")
    log = r["log"]
    return {"way": f"{r['mode']}, {r['model']}", "minutes": round(s[-1, 0] / 60, 1),
            "rss_after_warm_up_mib": round(float(after[0, 1]), 1), "rss_end_mib": round(float(s[-1, 1]), 1),
            "rss_growth_mib_per_hour": round(slope, 2), "rss_growth_from_20_min": round(slope_20, 2),
            "cpu_percent": round(100 * float(s[-1, 2] - s[0, 2]) / float(s[-1, 0] - s[0, 0]), 1),
            "notes_heard": r["heard"], "left_sounding": r["left_sounding"], "exit": r["exit"],
            "phrases": log.get("phrases"), "worker_errors": log.get("worker_errors"),
            "late_dropped": log.get("late_dropped"), "sent_late_p99_ms": log.get("sent_late_p99_ms"),
            "sent_late_max_ms": log.get("sent_late_max_ms"), "malformed": log.get("malformed")}


def draw(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        t = [x[0] / 60 for x in r["samples"]]
        ax.plot(t, [x[1] for x in r["samples"]], label=f"{r['mode']}, {r['model']}")
    ax.axvline(WARM_UP_S / 60, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("minutes")
    ax.set_ylabel("resident memory, MiB")
    ax.set_title(f"livegen run --clock midi, {BPM} BPM, each way on its own JACK server")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> int:
    from reliability import WAYS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--ways", default=",".join(f"{m}/{k}" for m, k in WAYS), help="mode/model,...")
    ap.add_argument("--png", help="draw resident memory over time into this file")
    ap.add_argument("--json", help="write every way's samples and counts into this file")
    args = ap.parse_args()
    ways = [tuple(w.split("/")) for w in args.ways.split(",")]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=drive, args=(i, mode, model, args.minutes, results)) for i, (mode, model) in enumerate(ways)]
    for p in procs:
        p.start()
    got = []
    while len(got) < len(procs):
        try:
            got.append(results.get(timeout=60))
        except Exception:      # queue.Empty: still running, unless every driver is gone
            if not any(p.is_alive() for p in procs):
                break
    for p in procs:
        p.join(30)
    rows = [summary(r) for r in sorted(got, key=lambda r: ways.index((r["mode"], r["model"])))]
    for row in rows:
        print(json.dumps(row), flush=True)
    cols = ["way", "minutes", "rss_after_warm_up_mib", "rss_end_mib", "rss_growth_mib_per_hour",
            "rss_growth_from_20_min", "cpu_percent",
            "notes_heard", "late_dropped", "sent_late_max_ms", "worker_errors", "left_sounding", "exit"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(got))
    if args.png and got:
        draw(got, args.png)
    return 0 if len(rows) == len(ways) else 1


if __name__ == "__main__":
    sys.exit(main())
