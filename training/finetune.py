"""Fine-tune a bundled model on your own music, export it, and write its card.

    python -m training finetune --from continue --data midi:~/midi/my-band --minutes 10

`--from`: accompany, edit or continue (the bundled models, their weights read back from the
ONNX files), any contract ONNX file, or a training checkpoint. Prints what it used of the
folder (a line per file), trains for `--minutes` with a progress bar (a loss picture in the
output folder, checked every `--valid-every` steps on the held-out part of the folder; run
the same command again and it resumes), exports `OUT/NAME.onnx` and writes `OUT/NAME.md`:
the data, the steps and time, the held-out loss before and after, and `training.evaluate`'s
figures before and after on the folder's held-out part and on the JSB test chorales (are
they closer to the folder's own, and is the JSB quality kept?). The held-out part is the
last bars of every file (`--hold-out tail`, `training.data.load_midi_folder`), or whole files.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from training import data as D
from training.train import RunConfig, fit, load_checkpoint, load_start

log = logging.getLogger("training")

# Fine-tuning rates: a tenth or less of training from scratch, so the start is not forgotten
LR = {"gan": 1e-4, "arcnn": 1e-4, "transformer": 1e-4}
# The Transformer's crops: 2 bars, not its whole context of 8 (a step of 16 crops of 512 tokens
# took 12 s on one core of a 2-core machine: 25 steps in 5 minutes, too few to learn more of
# quartets than that their voices rest, so that the voices it wrote fell silent)
CROP_STEPS = {"transformer": 32}
# The share of a fine-tune's training steps taken from the JSB chorales (`--rehearse`)
REHEARSE: dict[str, float] = {}


JSB = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


THRESHOLDS = (0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05)
# continue: (temperature, top-p) pairs, the bundled default first
SAMPLINGS = ((0.9, 0.95), (1.0, 0.95), (1.0, 1.0), (1.1, 1.0), (1.2, 1.0), (1.3, 1.0))
# accompany: nats the decoder charges a parallel fifth or octave, the bundled 3 first
PENALTIES = (3.0, 1.0, 0.3, 0.0)
# continue: nats a voice's pitch outside the key heard costs (`livegen.key_penalty`), none first
KEY_PENALTIES = (0.0, 0.5, 1.0, 2.0)
# continue: nats a voice's pitch outside its music's range costs (`livegen.range_penalty`), none first
RANGE_PENALTIES = (0.0, 1.0, 2.0, 4.0)
# continue: nats a parallel fifth or octave costs (`livegen.parallel_penalty`); None: banned, as the chorales'
CONTINUE_PARALLELS = (None, 4.0, 2.0, 1.0, 0.0)


def figure(name: str):
    """A `measure` for `nearest`: this figure of `training.evaluate.voice_figures` (alto,
    tenor and bass) over pieces of (steps, 4) voices."""
    def measure(voices: list) -> float:
        from training.evaluate import voice_figures

        return voice_figures(voices)[name]

    return measure


density = figure("notes per bar")                       # per voice
in_scale = figure("in-scale rate")                      # in each piece's key
parallel_rate = figure("parallel 5ths/8ves per move")   # of two voices
range_rate = figure("range violations per note")        # outside the choral ranges


def music_ranges(chorales: list) -> list[tuple[int, int]]:
    """Alto, tenor and bass: the 2nd to 98th percentile of their pitches, each piece moved by
    the octaves the runtime moves its tune by (towards a middle of MELODY_TARGET)."""
    from livegen import roll as R
    from livegen.generate.accompany import MELODY_TARGET

    pitches: list[list[int]] = [[], [], []]
    for c in chorales:
        tune = [int(p) for p in c[:, 0] if p >= 0]
        shift = R.octave_shift(tune, D.PITCH_LOW, D.PITCH_COUNT, MELODY_TARGET)
        for v in range(3):
            pitches[v] += [int(p) + shift for p in c[:, v + 1] if p >= 0]
    return spans(pitches)


def own_ranges(chorales: list) -> list[tuple[int, int]]:
    """continue: soprano to bass, the 2nd to 98th percentile of each voice's pitches, where
    they are (the model learns them there, and the runtime leaves a tune in that register where
    it is: `livegen.generate.continue_.Placement`)."""
    return spans([[int(p) for c in chorales for p in c[:, v] if p >= 0] for v in range(4)])


def spans(pitches: list[list[int]]) -> list[tuple[int, int]]:
    """(2nd, 98th percentile) of each voice's pitches; the models' whole range for a voice with none."""
    import numpy as np

    return [(int(np.percentile(p, 2)), int(np.percentile(p, 98))) if p else (D.PITCH_LOW, D.PITCH_LOW + 45)
            for p in pitches]


def write_meta(onnx_path: Path, keys: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(onnx_path))
    props = {entry.key: entry for entry in proto.metadata_props}
    for key, value in keys.items():
        entry = props.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(onnx_path))


def nearest(onnx_path: Path, pieces: list, knob: str, values: tuple, measure, sampling=None) -> tuple:
    """(the value of `knob` whose voices, made by the runtime's code for the pieces' tunes,
    come nearest the pieces' own by `measure`; what they gave; the pieces' own). continue's
    knobs, "sampling" (temperature, top-p) and "key_penalty", change `sampling`;
    "range_penalty" is the file's, with the `livegen.voice_ranges` it has, and
    "parallel_penalty" (None: banned) too."""
    import dataclasses

    import numpy as np

    from livegen.generate.continue_ import Harmoniser, SamplingSettings
    from livegen.models import Model
    from training.evaluate import generate_voices

    model = Model(str(onnx_path), "cpu")
    sampling = sampling or SamplingSettings(key_penalty=0.0)
    want, found = measure(pieces), []
    for value in values:
        rng = np.random.default_rng(0)
        if model.info.kind == "continue":
            played = sampling
            if knob == "sampling":
                played = dataclasses.replace(sampling, temperature=value[0], top_p=value[1])
            elif knob == "key_penalty":
                played = dataclasses.replace(sampling, key_penalty=value)
            elif knob == "parallel_penalty":
                model.info.parallels_banned = value is None
                model.info.parallel_penalty = 0.0 if value is None else value
            else:
                model.info.range_penalty = value       # (read when a Harmoniser is made)
            made = []
            for c in pieces:
                h = Harmoniser(model, played, rng)
                made.append(np.array([[s] + h.step(int(s) if s >= 0 else None) for s in c[:, 0]]))
        else:
            setattr(model.info, knob, value)
            made = [generate_voices(model, c, rng) for c in pieces]
        got = measure(made)
        found.append((abs(got - want), value, got))
    _, best, got = min(found, key=lambda f: f[0])
    return best, got, want


def calibrate_sampling(onnx_path: Path, pieces: list) -> str:
    """continue: the temperature and top-p whose notes per bar come nearest the music's, then
    the pull towards the key whose in-scale rate does, then (the pull takes notes away: a
    pitch outside the key gives way to a held note) the sampling again, the same or hotter;
    then the pull into the music's own voice ranges (`livegen.voice_ranges`, 2nd to 98th
    percentile) whose share of notes outside the choral ranges comes nearest the music's
    (after fine-tuning on Palestrina, 1.3 % of the voices' notes against none in the music);
    last whether parallel fifths and octaves stay banned, as in the chorales, or cost some
    nats (`livegen.parallel_penalty`), by parallels per move (Palestrina's voices have some,
    0.014 a move; banned, the fine-tuned model's had none)."""
    from livegen.generate.continue_ import SamplingSettings

    (t, p), got, want = nearest(onnx_path, pieces, "sampling", SAMPLINGS, density)
    penalty, in_got, in_want = nearest(onnx_path, pieces, "key_penalty", KEY_PENALTIES, in_scale,
                                       SamplingSettings(t, p, 0.0))
    if penalty:
        hotter = SAMPLINGS[SAMPLINGS.index((t, p)):][:3]
        (t, p), got, want = nearest(onnx_path, pieces, "sampling", hotter, density, SamplingSettings(t, p, penalty))
    write_meta(onnx_path, {"livegen.temperature": f"{t:g}", "livegen.top_p": f"{p:g}",
                           "livegen.key_penalty": f"{penalty:g}"})
    ranges = own_ranges(pieces)
    write_meta(onnx_path, {"livegen.voice_ranges": ",".join(f"{lo}-{hi}" for lo, hi in ranges)})
    reach, out_got, out_want = nearest(onnx_path, pieces, "range_penalty", RANGE_PENALTIES, range_rate,
                                       SamplingSettings(t, p, penalty))
    write_meta(onnx_path, {"livegen.range_penalty": f"{reach:g}"})
    charge, par_got, par_want = nearest(onnx_path, pieces, "parallel_penalty", CONTINUE_PARALLELS, parallel_rate,
                                        SamplingSettings(t, p, penalty))
    if charge is not None:
        write_meta(onnx_path, {"livegen.parallel_penalty": f"{charge:g}"})
    return (f"temperature {t:g}, top_p {p:g}: {got:.2f} notes per bar on the training pieces, theirs {want:.2f}; "
            f"key_penalty {penalty:g}: {in_got:.3f} of the voices' notes in the key (at the first sampling), "
            f"theirs {in_want:.3f}; voice ranges " + ", ".join(f"{lo}-{hi}" for lo, hi in ranges) +
            f", range_penalty {reach:g}: {out_got:.4f} of the voices' notes outside the choral ranges, "
            f"theirs {out_want:.4f}; parallels " + ("banned" if charge is None else f"charged {charge:g}") +
            f": {par_got:.4f} per move, theirs {par_want:.4f}")


def calibrate(onnx_path: Path, chorales: list, kind: str, steps: int = 256) -> str:
    """Set how the model is played from the music it was fine-tuned on (written into the
    file, where the runtime takes it unless the player sets another; the first training
    pieces are the measure).

    accompany: the decoder's voice ranges (the music's own, not the choral ones), its
    threshold (the runtime plays a pitch where the generator's probability passes it: after
    fine-tuning on quartets the probabilities spread and the voices thinned from 4.9 to 1.2
    notes a bar at 0.3) by notes per bar, and what it charges a parallel fifth or octave (the
    chorales avoid them, string quartets double voices in octaves) by parallels per move.
    continue: the temperature and top-p by notes per bar (sampled at 0.9 and 0.95, a model
    fine-tuned on quartets held its notes and rests: 1.8 notes a bar against their 4.8), the
    pull towards the key by the in-scale rate, and the pull into the music's voice ranges by
    the share of notes outside the choral ones (`calibrate_sampling`)."""
    pieces = [c[:steps] for c in chorales[:6]]
    said = []
    if kind == "continue":
        return calibrate_sampling(onnx_path, pieces)
    ranges = music_ranges(chorales)
    write_meta(onnx_path, {"livegen.voice_ranges": ",".join(f"{lo}-{hi}" for lo, hi in ranges)})
    said.append("voice ranges " + ", ".join(f"{lo}-{hi}" for lo, hi in ranges))
    best, got, want = nearest(onnx_path, pieces, "threshold", THRESHOLDS, density)
    write_meta(onnx_path, {"livegen.threshold": f"{best:g}"})
    said.append(f"threshold {best:g}: {got:.2f} notes per bar on the training pieces, theirs {want:.2f}")
    best, got, want = nearest(onnx_path, pieces, "parallel_penalty", PENALTIES, parallel_rate)
    write_meta(onnx_path, {"livegen.parallel_penalty": f"{best:g}"})
    said.append(f"parallel_penalty {best:g}: {got:.4f} parallels per move on the training pieces, theirs {want:.4f}")
    return "; ".join(said)


def compare(source: str, onnx_path: Path, splits: D.Splits, jsb: str, limit: int) -> str:
    """The before/after table (`training.evaluate.before_after`): the folder's held-out part
    (its validation and test files) and the first `limit` JSB test chorales."""
    from livegen.models import BUNDLED, Model, resolve
    from training.evaluate import before_after

    sets = {"held out of the folder": splits.valid + splits.test}     # (its files, or its files' last bars)
    if jsb and Path(jsb).exists():
        sets["JSB test"] = D.load_jsb(jsb).test[:limit]
    start = source if source in BUNDLED or source.endswith(".onnx") else None
    if start is None:
        return "(the start was a checkpoint: no ONNX file to compare with)"
    folder = splits.train + splits.valid + splits.test if splits.source.startswith("midi:") else None
    return before_after(Model(str(resolve(start)), "cpu"), Model(str(onnx_path), "cpu"), sets, folder)


def card(path: Path, source: str, data: str, summary: list[str], result: dict, history: list[dict],
         report: dict, table: str) -> str:
    valids = [h for h in history if "valid" in h]
    before, after = valids[0]["valid"], min(h["valid"] for h in valids)
    lines = [f"# {path.stem}", "",
             f"Fine-tuned from `{source}` on `{data}` with `python -m training finetune` "
             f"({time.strftime('%Y-%m-%d')}).", "",
             f"- steps: {result['step']}, training time {result['seconds'] / 60:.1f} min",
             f"- held-out loss (the folder's validation part): {before:.4f} before, {after:.4f} after "
             f"({100 * (after - before) / before:+.1f} %)",
             f"- export: ONNX Runtime against torch, largest difference {report['max_abs_diff']:.1e}",
             *([f"- played with {report['played with']}"] if "played with" in report else []),
             "", "## Before and after", "", table, "", "## Data", "", *[f"    {line}" for line in summary or ["(not a MIDI folder)"]], "",
             f"Play it: `livegen run --model {path.with_suffix('.onnx')}`, or `livegen ctl ... set model "
             f"{path.with_suffix('.onnx')}` while livegen runs.", ""]
    return "\n".join(lines)


def rehearsing(share: float | None, model: str, jsb: str) -> str:
    """`RunConfig.rehearse` for a fine-tune: the share asked for, or the kind's default, of
    the JSB chorales' training split (none when the file is not there)."""
    share = REHEARSE.get(model, 0.0) if share is None else share
    if not share:
        return ""
    if not jsb or not Path(jsb).exists():
        log.warning("no JSB data at %s: the fine-tune does not rehearse the chorales", jsb)
        return ""
    return f"{share:g}:{jsb}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", required=True,
                   help="accompany, edit, continue, a contract ONNX file or a checkpoint")
    p.add_argument("--data", required=True, help="midi:FOLDER (your files), or jsb:FILE.json, music21")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--out", default="", help="output folder (default runs/finetune-FROM)")
    p.add_argument("--name", default="", help="name of the exported model (default: the folder's name)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.0, help="default: a fine-tuning rate for the kind of model")
    p.add_argument("--crop-steps", type=int, default=0,
                   help="continue: 16th steps per training crop (default 32, two bars; 128 is its whole context)")
    p.add_argument("--hold-out", choices=("tail", "files"), default="tail",
                   help="a MIDI folder: what is held out to measure the fine-tune: the last bars of every "
                        "file (default: like the folder as a whole) or whole files (never heard, but one or "
                        "two of a dozen, which may be unlike the rest)")
    p.add_argument("--rehearse", type=float, default=None,
                   help="share of the training steps taken from the JSB chorales the model learnt, so that "
                        "it keeps what they taught it (default: REHEARSE for its kind)")
    p.add_argument("--valid-every", type=int, default=25)
    p.add_argument("--config", default=None, help="JSON of training config fields to change, e.g. "
                   "'{\"adv_weight\": 0}'")
    p.add_argument("--jsb", default=str(JSB), help="the JSB data, to check the chorales are not forgotten")
    p.add_argument("--jsb-limit", type=int, default=20, help="JSB test chorales in the before/after table")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        start = load_start(args.source)
        data = args.data if ":" in args.data or Path(args.data).suffix == ".json" else f"midi:{args.data}"
        summary: list[str] = []
        if data.startswith("midi:"):
            folder = Path(data[5:]).expanduser()
            data = f"midi:{folder}"
            splits = D.load_midi_folder(folder, summary, args.hold_out)    # (its lines are logged as it reads)
        else:
            splits = D.load_source(data)
        model = start["model"]
        out = Path(args.out or f"runs/finetune-{Path(args.source).stem}")
        name = args.name or (Path(data[5:]).name if data.startswith("midi:") else f"{model}-finetuned")
        run = RunConfig(model=model, data=data, out=str(out), steps=10 ** 9, batch_size=args.batch_size,
                        lr=args.lr or LR[model], warmup=10, valid_every=args.valid_every, device=args.device,
                        minutes=args.minutes, init=args.source, crop_steps=args.crop_steps or CROP_STEPS.get(model, 0),
                        hold_out=args.hold_out, rehearse=rehearsing(args.rehearse, model, args.jsb))
        log.info("fine-tuning %s (%s) for %g minutes; progress below, the loss picture in %s",
                 args.source, model, args.minutes, out / "loss.png")
        result = fit(run, json.loads(args.config) if args.config else None)
        from export.onnx_export import export

        onnx_path = out / f"{name}.onnx"
        report = export(out / "best.pt", onnx_path)
        history = load_checkpoint(out / "last.pt")["history"]
        if start["kind"] in ("accompany", "continue"):
            report["played with"] = calibrate(onnx_path, splits.train, start["kind"])
            log.info("played with %s", report["played with"])
        log.info("comparing before and after (the folder's held-out part, %d JSB test chorales)", args.jsb_limit)
        table = compare(args.source, onnx_path, splits, args.jsb, args.jsb_limit)
        text = card(onnx_path.with_suffix(".md"), args.source, data, summary, result, history, report, table)
        onnx_path.with_suffix(".md").write_text(text)
        (out / "finetune.json").write_text(json.dumps({"result": result, "export": report}, indent=2))
        print(text)
    except (D.DataError, ValueError, OSError) as err:
        print(f"python -m training finetune: {err}", file=sys.stderr)
        return 2
    return 0
