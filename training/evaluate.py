"""Evaluate an exported model (ONNX, through the runtime's own code) on the JSB test split.

    python -m training.evaluate MODEL.onnx --jsb ../shared/data/jsb/Jsb16thSeparated.json

`continue`: note-wise NLL in nats per token beside the Music Transformer paper.
`accompany`: MuseGAN-style metrics of the generated alto/tenor/bass against the real voices
and a simple baseline. `edit`: F1 of restoring half-removed chorales, the project's sampler
beside DeepComposer's one-flip-per-pass procedure.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from livegen import roll as R
from livegen.generate.accompany import accompany
from livegen.generate.edit import EditSettings, edit_rolls
from livegen.models import Model
from training import data as D

PUBLISHED_NLL = {"Music Transformer, baseline Transformer": 0.417, "Music Transformer, relative attention": 0.335}
# Conventional SATB ranges (MIDI), for range violations
VOICE_RANGES = {"soprano": (60, 81), "alto": (53, 74), "tenor": (48, 69), "bass": (40, 64)}
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


# --------------------------------------------------------------------------- continue

def continue_nll(model: Model, chorales: list[np.ndarray], stride_steps: int | None = None) -> tuple[float, int]:
    """Mean NLL (nats/token) over whole test chorales, in sliding windows of max_context."""
    info = model.info
    layers, two, heads, head_dim = info.past_shape
    empty = np.zeros((layers, two, 1, heads, 0, head_dim), np.float32)
    total, count = 0.0, 0
    for chorale in chorales:
        tokens = voices_to_tokens(chorale, info)
        for start, end, first in D.scoring_windows(len(tokens), info.max_context, stride_steps and stride_steps * 4):
            ids = np.concatenate([[info.bos_id], tokens[start:end]])[None].astype(np.int64)
            logits = model.run({"input_ids": ids[:, :-1], "past": empty})["logits"][0].astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            nll = -logp[np.arange(end - start), ids[0, 1:]]
            total += float(nll[first:].sum())
            count += len(nll) - first
    return total / count, count


def harmonise_nll(model: Model, chorales: list[np.ndarray]) -> tuple[float, int]:
    """A `harmonise` model's mean NLL (nats per voice-step) of Bach's alto, tenor (given his
    alto) and bass (given his tenor) under his soprano, each chorale in one pass from a
    zero state, as follow mode starts (the training loss's measure)."""
    from training.chordrnn import model_inputs

    info = model.info
    layers, hidden = info.state_shape
    total, count = 0.0, 0
    for chorale in chorales:
        tokens = voices_to_tokens(chorale, info).reshape(-1, 4)
        chord, beat, target = model_inputs(tokens, info.pitch_count)
        out = model.run({"chord": chord[None], "beat_step": beat[None] % info.steps_per_beat,
                         "state": np.zeros((layers, 1, hidden), np.float32)})
        steps = np.arange(len(tokens))
        rows = [out["alto"][0], out["tenor"][0][steps, target[:, 0]], out["bass"][0][steps, target[:, 1]]]
        for k, logits in enumerate(rows):
            z = logits.astype(np.float64)
            z -= z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            total -= float(logp[steps, target[:, k]].sum())
            count += len(steps)
    return total / count, count


def voices_to_tokens(voices: np.ndarray, info) -> np.ndarray:
    ids = voices.astype(np.int64) - info.pitch_low
    ids[(voices < 0) | (ids < 0) | (ids >= info.pitch_count)] = info.pitch_count
    return ids.reshape(-1)


# --------------------------------------------------------------------------- accompany metrics

def estimate_key(voices: np.ndarray) -> set[int]:
    """Pitch classes of the best-correlating major or minor scale (Krumhansl-Schmuckler)."""
    hist = np.zeros(12)
    for p in voices[voices >= 0]:
        hist[p % 12] += 1
    best, scale = -2.0, set()
    for tonic in range(12):
        for profile, steps in ((MAJOR, (0, 2, 4, 5, 7, 9, 11)), (MINOR, (0, 2, 3, 5, 7, 8, 10, 11))):
            r = np.corrcoef(hist, np.roll(profile, tonic))[0, 1]
            if r > best:
                best, scale = r, {(tonic + s) % 12 for s in steps}
    return scale


def tonal_centroid(chroma: np.ndarray) -> np.ndarray:
    """Harte et al. (2006) 6-D tonal centroid of a 12-bin chroma vector."""
    if chroma.sum() == 0:
        return np.zeros(6)
    k = np.arange(12)
    phi = np.stack([np.sin(k * 7 * np.pi / 6), np.cos(k * 7 * np.pi / 6),
                    np.sin(k * 3 * np.pi / 2), np.cos(k * 3 * np.pi / 2),
                    0.5 * np.sin(k * 2 * np.pi / 3), 0.5 * np.cos(k * 2 * np.pi / 3)])
    return phi @ (chroma / chroma.sum())


def bar_chroma(col: np.ndarray) -> np.ndarray:
    c = np.zeros(12)
    for p in col[col >= 0]:
        c[p % 12] += 1
    return c


def voice_metrics(voices: np.ndarray, scale: set[int], bar: int = 16) -> dict[str, float]:
    """Metrics of alto, tenor, bass (columns 1..3) of one chorale (steps, 4), summed for averaging."""
    bars = len(voices) // bar
    out = {"bars": bars * 3, "empty_bars": 0, "pitch_classes": 0, "notes": 0, "in_scale": 0,
           "range_violations": 0, "tonal_distance": 0.0}
    for v in (1, 2, 3):
        col = voices[: bars * bar, v]
        onsets = [t for t in range(len(col)) if col[t] >= 0 and (t == 0 or col[t] != col[t - 1])]
        out["notes"] += len(onsets)
        out["in_scale"] += sum(col[t] % 12 in scale for t in onsets)
        lo, hi = VOICE_RANGES[D.VOICES[v]]
        out["range_violations"] += sum(not lo <= col[t] <= hi for t in onsets)
        for b in range(bars):
            seg = col[b * bar:(b + 1) * bar]
            sounding = seg[seg >= 0]
            out["empty_bars"] += sounding.size == 0
            out["pitch_classes"] += len({p % 12 for p in sounding})
            mel = voices[b * bar:(b + 1) * bar, 0]
            out["tonal_distance"] += float(np.linalg.norm(tonal_centroid(bar_chroma(mel)) - tonal_centroid(bar_chroma(seg))))
    moves = parallels = 0
    for a in range(4):
        for b in range(a + 1, 4):
            x, y = voices[:, a], voices[:, b]
            for t in range(1, len(voices)):
                if min(x[t - 1], y[t - 1], x[t], y[t]) < 0 or x[t] == x[t - 1] or y[t] == y[t - 1]:
                    continue
                moves += 1
                i0, i1 = (x[t - 1] - y[t - 1]) % 12, (x[t] - y[t]) % 12
                if i0 == i1 and i0 in (0, 7) and np.sign(x[t] - x[t - 1]) == np.sign(y[t] - y[t - 1]):
                    parallels += 1
    out["moves"], out["parallels"] = moves, parallels
    return out


def summarise(sums: dict[str, float]) -> dict[str, float]:
    notes = max(sums["notes"], 1)
    return {
        "empty-bar rate": sums["empty_bars"] / sums["bars"],
        "pitch classes per bar": sums["pitch_classes"] / sums["bars"],
        "in-scale rate": sums["in_scale"] / notes,
        "notes per bar": sums["notes"] / sums["bars"],
        "tonal distance to melody": sums["tonal_distance"] / sums["bars"],
        "range violations per note": sums["range_violations"] / notes,
        "parallel 5ths/8ves per move": sums["parallels"] / max(sums["moves"], 1),
    }


def generate_voices(model: Model, chorale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Alto, tenor and bass generated for the chorale's soprano by the runtime's own code, (steps, 4)."""
    w = model.info.window_steps
    steps = len(chorale) // w * w
    sop = chorale[:steps, 0]
    notes = [R.Note(int(p), t, t + 1) for t, p in enumerate(sop) if p >= 0]
    out = np.full((steps, 4), -1, np.int16)
    out[:, 0] = sop
    for n in accompany(model, notes, 0, steps, rng):
        out[n.start:n.end, 1 + n.track] = n.pitch
    return out


def baseline_voices(chorale: np.ndarray) -> np.ndarray:
    """A simple baseline: alto a major third, tenor an octave, bass two octaves under the melody."""
    out = chorale.copy()
    sop = chorale[:, 0]
    for v, interval in ((1, 4), (2, 12), (3, 24)):
        out[:, v] = np.where(sop >= 0, sop - interval, -1)
    return out


VARIETY = "voice-steps changed by the noise"


def evaluate_accompany(model: Model, chorales: list[np.ndarray], seed: int = 0) -> dict[str, dict]:
    """The metrics of the real, generated and baseline voices, and how much of the generated
    voices (voice-steps, rests included) a second draw of the noise changes: what a performer
    hears change with the seed."""
    rng, other = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    sums = {"real voices": None, "model": None, "baseline (3rd, 8ve, 2 8ves below)": None}
    changed = cells = 0
    for chorale in chorales:
        scale = estimate_key(chorale)
        w = model.info.window_steps
        steps = len(chorale) // w * w
        if steps == 0:
            continue
        versions = {"real voices": chorale[:steps], "model": generate_voices(model, chorale, rng),
                    "baseline (3rd, 8ve, 2 8ves below)": baseline_voices(chorale[:steps])}
        again = generate_voices(model, chorale, other)
        changed += int((again[:, 1:] != versions["model"][:, 1:]).sum())
        cells += again[:, 1:].size
        for name, voices in versions.items():
            m = voice_metrics(voices, scale)
            sums[name] = m if sums[name] is None else {k: sums[name][k] + m[k] for k in m}
    rows = {name: summarise(s) for name, s in sums.items()}
    for name in rows:
        rows[name][VARIETY] = changed / max(cells, 1) if name == "model" else "-"
    return rows


# --------------------------------------------------------------------------- edit

def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float((pred * truth).sum())
    if tp == 0:
        return 0.0
    precision, recall = tp / pred.sum(), tp / truth.sum()
    return 2 * precision * recall / (precision + recall)


def corrupted_windows(chorales: list[np.ndarray], window: int, per_chorale: int, seed: int = 0):
    """Original and corrupted rolls: half the notes removed, 1% of the empty cells added."""
    rng = np.random.default_rng(seed)
    originals = []
    for c in chorales:
        for k in range(min(per_chorale, len(c) // window)):
            originals.append(D.piano_roll(c[k * window:(k + 1) * window]).max(axis=0))
    originals = np.stack(originals)
    corrupted = originals.copy()
    for r in corrupted:
        on, off = np.argwhere(r > 0), np.argwhere(r == 0)
        for t, p in on[rng.choice(len(on), len(on) // 2, replace=False)]:
            r[t, p] = 0
        for t, p in off[rng.choice(len(off), int(round(0.01 * len(off))), replace=False)]:
            r[t, p] = 1
    return originals, corrupted


def evaluate_edit(model: Model, chorales: list[np.ndarray], per_chorale: int = 2, seed: int = 0,
                  settings: EditSettings | None = None, deepcomposer: bool = True) -> dict[str, dict[str, float]]:
    originals, corrupted = corrupted_windows(chorales, model.info.window_steps, per_chorale, seed)

    def logits_fn(rolls: np.ndarray) -> np.ndarray:
        return model.run({"roll": rolls.astype(np.float32)})["logits"]

    procedures = {
        "DeepComposer (1 flip per pass)": EditSettings(temperature=1.0, passes=100, edits_per_pass=1,
                                                        max_remove_share=1.0, max_add=10 ** 6,
                                                        keep_player=False, no_repeat=False),
        "livegen sampler": settings or EditSettings(max_remove_share=0.5, max_add=10 ** 6, keep_player=False),
    }
    if not deepcomposer:
        del procedures["DeepComposer (1 flip per pass)"]
    table = {"corrupted input": {"F1": float(np.mean([f1(c, o) for c, o in zip(corrupted, originals)])),
                                 "network passes": 0, "seconds": 0.0}}
    for name, s in procedures.items():
        t = time.perf_counter()
        edited, passes = edit_rolls(logits_fn, corrupted, s, np.random.default_rng(seed))
        table[name] = {"F1": float(np.mean([f1(e, o) for e, o in zip(edited, originals)])),
                       "network passes": passes, "seconds": time.perf_counter() - t}
    table["_windows"] = {"count": len(originals)}
    return table


def roll_stats(rolls: np.ndarray, scales: list[set[int]], pitch_low: int) -> dict[str, float]:
    """Notes per bar (a note: a run of a pitch's active steps) and the share of them in the
    key of (B, T, P) rolls, each with its own key."""
    notes = in_key = 0
    for roll, scale in zip(rolls, scales):
        starts = (roll > 0) & np.vstack([np.zeros((1, roll.shape[1]), bool), ~(roll[:-1] > 0)])
        _, pitches = np.nonzero(starts)
        notes += len(pitches)
        in_key += sum((p + pitch_low) % 12 in scale for p in pitches)
    bars = rolls.shape[0] * rolls.shape[1] / 16
    return {"notes per bar": notes / max(bars, 1), "in-scale rate": in_key / max(notes, 1)}


def edit_stats(model: Model, chorales: list[np.ndarray], per_chorale: int = 2, seed: int = 0) -> tuple[dict, dict]:
    """(the restored windows' roll_stats, the original windows'): what the edit model writes
    beside what the music has."""
    originals, corrupted = corrupted_windows(chorales, model.info.window_steps, per_chorale, seed)
    scales = [estimate_key(c) for c in chorales for _ in range(min(per_chorale, len(c) // model.info.window_steps))]
    edited, _ = edit_rolls(lambda r: model.run({"roll": r.astype(np.float32)})["logits"], corrupted,
                           EditSettings(max_remove_share=0.5, max_add=10 ** 6, keep_player=False),
                           np.random.default_rng(seed))
    low = model.info.pitch_low
    return roll_stats(edited, scales, low), roll_stats(originals, scales, low)


def continue_voices(model: Model, chorales: list[np.ndarray], seed: int = 0) -> tuple[dict, dict]:
    """(summarised voice metrics of the alto, tenor and bass the model writes under each
    piece's soprano, step by step as follow mode does; the same of the piece's own voices)."""
    from livegen.generate.continue_ import Harmoniser, SamplingSettings

    rng = np.random.default_rng(seed)
    ours = theirs = None
    for chorale in chorales:
        h = Harmoniser(model, SamplingSettings(), rng)      # (the model's own sampling)
        voices = np.array([[s] + h.step(int(s) if s >= 0 else None) for s in chorale[:, 0]])
        scale = estimate_key(chorale)
        a, b = voice_metrics(voices, scale), voice_metrics(chorale, scale)
        ours = a if ours is None else {k: ours[k] + a[k] for k in a}
        theirs = b if theirs is None else {k: theirs[k] + b[k] for k in b}
    return summarise(ours), summarise(theirs)


# --------------------------------------------------------------------------- before and after

HEADLINE = {"continue": ["NLL (nats/token)", "notes per bar", "in-scale rate", "parallel 5ths/8ves per move",
                         "range violations per note"],
            "accompany": ["notes per bar", "in-scale rate", "parallel 5ths/8ves per move",
                          "range violations per note", "tonal distance to melody"],
            "edit": ["F1", "notes per bar", "in-scale rate"]}


EDIT_WINDOWS = 40     # edit's figures: windows per set of pieces, at least


def headline(model: Model, chorales: list[np.ndarray], seed: int = 0) -> tuple[dict, dict | None]:
    """(the model's figures, the music's own where there are any) on these chorales: continue's
    NLL and the statistics of the voices it writes under each soprano, accompany's voice
    statistics, edit's F1 of restoring them and the statistics of what it wrote; beside the
    music's own voices."""
    kind = model.info.kind
    if kind == "continue":
        ours, theirs = continue_voices(model, chorales, seed)
        pick = HEADLINE["accompany"][:4]
        return ({"NLL (nats/token)": continue_nll(model, chorales)[0]} | {k: ours[k] for k in pick},
                {"NLL (nats/token)": float("nan")} | {k: theirs[k] for k in pick})
    if kind == "accompany":
        rows = evaluate_accompany(model, chorales, seed)
        pick = HEADLINE["accompany"]
        return {k: rows["model"][k] for k in pick}, {k: rows["real voices"][k] for k in pick}
    per = max(2, -(-EDIT_WINDOWS // len(chorales)))     # (a folder's one held-out piece: 40 windows, not 2)
    rows = evaluate_edit(model, chorales, per_chorale=per, seed=seed, deepcomposer=False)
    ours, theirs = edit_stats(model, chorales, per_chorale=per, seed=seed)
    return {"F1": rows["livegen sampler"]["F1"]} | ours, {"F1": float("nan")} | theirs


def own_figures(kind: str, chorales: list[np.ndarray], window: int) -> dict[str, float]:
    """The music's own figures, measured as `headline` measures a model's output: the voices'
    statistics (accompany, continue), or those of its windows' rolls (edit)."""
    if kind == "edit":
        per = max(2, -(-EDIT_WINDOWS // len(chorales)))
        originals, _ = corrupted_windows(chorales, window, per)
        scales = [estimate_key(c) for c in chorales for _ in range(min(per, len(c) // window))]
        return roll_stats(originals, scales, D.PITCH_LOW)
    return voice_figures(chorales)


def voice_figures(pieces: list[np.ndarray]) -> dict[str, float]:
    """`summarise` of the alto, tenor and bass of (steps, 4) pieces, each in its own key."""
    sums = None
    for c in pieces:
        m = voice_metrics(c, estimate_key(c))
        sums = m if sums is None else {k: sums[k] + m[k] for k in m}
    return summarise(sums)


def before_after(before: Model, after: Model, sets: dict[str, list[np.ndarray]],
                 folder: list[np.ndarray] | None = None) -> str:
    """A markdown table: each set of chorales (the folder's held-out part, the JSB test split),
    the figures before and after a fine-tune, and the music's own where there are any; with
    `folder` (all its pieces), also the folder's own, the style the fine-tune learns."""
    whole = own_figures(after.info.kind, folder, after.info.window_steps) if folder else {}
    lines = ["| music | figure | before | after | the music's own |" + (" the folder's own |" if folder else ""),
             "|---|---|---|---|---|" + ("---|" if folder else "")]
    for name, chorales in sets.items():
        if not chorales:
            continue
        b, own = headline(before, chorales)
        a, _ = headline(after, chorales)
        for k in b:
            mine = f" {whole[k]:.4f} |" if k in whole and name != "JSB test" else " - |"
            lines.append(f"| {name} ({len(chorales)}) | {k} | {b[k]:.4f} | {a[k]:.4f} | "
                         f"{'-' if own is None or np.isnan(own[k]) else f'{own[k]:.4f}'} |" + (mine if folder else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    cols = [c for c in next(iter(rows.values()))]
    print(f"\n{title}")
    print("| | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join((f"{r[c]:.4f}" if abs(r[c]) < 0.1 else f"{r[c]:.3f}") if isinstance(r[c], float)
                                          else str(r[c]) for c in cols) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an .onnx file (or a bundled name: accompany, edit, continue, harmonise)")
    p.add_argument("--jsb", help="path to Jsb16thSeparated.json")
    p.add_argument("--data", help="another source instead: midi:FOLDER (your files), music21")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--limit", type=int, default=0, help="only the first N chorales (quick check)")
    p.add_argument("--per-chorale", type=int, default=2, help="edit: windows per chorale")
    p.add_argument("--json", help="also write the table as JSON here")
    p.add_argument("--heard", action="store_true",
                   help="also what a player hears, through livegen render (training.heard): the voices against "
                        "both hands; continue: follow mode's voice leading and cost per step")
    p.add_argument("--tunes", type=int, default=0, help="--heard, continue and harmonise: also N folk tunes never "
                   "in training")
    args = p.parse_args(argv)
    try:
        model = Model(args.model, device="cpu", threads=2)
        if not (args.jsb or args.data):
            raise ValueError("give --jsb FILE.json or --data SOURCE")
        source = D.load_jsb(args.jsb) if args.jsb else D.load_source(args.data)
        chorales = source[args.split][: args.limit or None]
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    kind = model.info.kind
    where = f"the JSB {args.split} split" if args.jsb else f"{args.data} ({args.split})"
    if kind == "continue":
        nll, tokens = continue_nll(model, chorales)
        rows = {"this model": {"NLL (nats/token)": nll, "tokens": tokens}}
        rows.update({k: {"NLL (nats/token)": v, "tokens": "-"} for k, v in PUBLISHED_NLL.items()})
        print_table(f"continue: note-wise NLL on {where} ({len(chorales)} pieces)", rows)
    elif kind == "harmonise":
        nll, count = harmonise_nll(model, chorales)
        rows = {"this model": {"NLL (nats/voice-step)": nll, "voice-steps": count}}
        print_table(f"harmonise: alto, tenor and bass under the sopranos of {where} ({len(chorales)} pieces)", rows)
    elif kind == "accompany":
        rows = evaluate_accompany(model, chorales)
        print_table(f"accompany: alto/tenor/bass for the melodies of {where} ({len(chorales)} pieces)", rows)
    else:
        rows = evaluate_edit(model, chorales, args.per_chorale)
        count = rows.pop("_windows")["count"]
        print_table(f"edit: restoring {count} windows of {where} "
                    "(half the notes removed, 1% random notes added)", rows)
    if args.heard:
        rows["heard"] = print_heard(model, chorales, where, args.tunes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "kind": kind, "split": args.split, "rows": rows}, f, indent=2)
    return 0


def print_heard(model: Model, chorales: list[np.ndarray], where: str, tunes: int = 0) -> dict:
    """The `training.heard` tables for this model, through livegen render."""
    from training import heard

    def progress(done, count):
        print(f"\r  {done}/{count}", end="", file=sys.stderr, flush=True)
    kind = model.info.kind
    ways = {"accompany": [("loop", kind)], "edit": [("loop", kind), ("respond", kind)],
            "continue": [("respond", kind), ("follow", kind)], "harmonise": [("follow", kind)]}[kind]
    out = {}
    hands = heard.hands({kind: model}, ways, chorales, tune_only=True, progress=progress)
    print(file=sys.stderr)
    print(f"\n### Both hands: soprano and bass of {where} ({len(chorales)} pieces), each 2-bar phrase twice, "
          "the answer measured against the repeat\n")
    print(heard.hands_table(hands))
    out["hands"] = hands
    if kind in ("continue", "harmonise"):
        sets = {"chorale sopranos": [c[:128].tolist() for c in chorales]}
        if tunes:
            sets["folk tunes"] = heard.folk_tunes(tunes, 128)
        # (one thread: the CPU time per step is then the work, not a thread pool's spinning)
        voices = heard.follow(Model(model.info.path, device="cpu", threads=1), sets, progress=progress)
        print(file=sys.stderr)
        print(f"\n### Follow mode: the sopranos of {where} (first 128 steps)"
              + (f" and {tunes} folk tunes never in training" if tunes else "") + ", rendered\n")
        print(heard.follow_table(voices))
        out["follow"] = voices
    return out


if __name__ == "__main__":
    sys.exit(main())
