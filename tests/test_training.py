"""Training side: data loaders, a few real training steps per model, resume, export parity,
and a 2-process torchrun run. Small configs so the whole file runs in about a minute."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training extra (torch) is not installed")

from training import data as D  # noqa: E402
from training.train import RunConfig, fit, load_checkpoint, transformer_of  # noqa: E402

TINY = {
    "gan": {"width": 8, "critic_width": 8, "critic_steps": 2, "z_dim": 4},
    "arcnn": {"width": 8, "levels": 2},
    "transformer": {"layers": 1, "d_model": 32, "heads": 2, "max_context": 64, "dropout": 0.0},
    "chordrnn": {"embed": 16, "hidden": 24, "layers": 2, "head": 16, "crop_steps": 32, "dropout": 0.0},
}


def write_midi(path, voices_by_channel):
    """A track per part, on its own channel; notes (pitch, start step, end step) may overlap."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    for ch, notes in enumerate(voices_by_channel):
        tr = mido.MidiTrack()
        mid.tracks.append(tr)
        events = sorted([(end * 120, 0, pitch) for pitch, _, end in notes] +
                        [(start * 120, 1, pitch) for pitch, start, _ in notes])
        now = 0
        for t, on, pitch in events:
            tr.append(mido.Message("note_on" if on else "note_off", channel=ch, note=pitch, velocity=80 if on else 0,
                                   time=t - now))
            now = t
    mid.save(path)


def test_midi_folder_becomes_four_voices_on_the_grid(tmp_path):
    write_midi(tmp_path / "a.mid", [[(72, 0, 4), (74, 4, 8)], [(60, 0, 8)], [(55, 0, 8)], [(43, 0, 4)]])
    (tmp_path / "broken.mid").write_bytes(b"MThd junk")
    arr = D.load_midi_file(tmp_path / "a.mid")
    assert arr.shape == (8, 4)
    assert arr[0].tolist() == [72, 60, 55, 43]
    assert arr[5].tolist() == [74, 60, 55, -1] or arr[5].tolist()[0] == 74
    splits = D.load_midi_folder(tmp_path)       # the broken file is skipped, not fatal
    assert len(splits.train) == 1 and splits.train[0].shape == (8, 4)


def test_jsb_loader_and_transpositions(jsb_path):
    s = D.load_jsb(jsb_path)
    assert (len(s.train), len(s.valid), len(s.test)) == (229, 76, 77)
    c = s.train[0]
    keys = D.transpositions(c)
    assert 1 < len(keys) <= 12
    for k in keys:
        sounding = k[k >= 0]
        assert sounding.min() >= D.PITCH_LOW and sounding.max() < D.PITCH_LOW + D.PITCH_COUNT
    with pytest.raises(D.DataError, match="cannot read"):
        D.load_jsb(jsb_path.parent / "nope.json")


def test_music21_chorales_are_read_once_and_cached(tmp_path, jsb_path):
    s = D.load_music21(tmp_path, limit=4)
    total = len(s.train) + len(s.valid) + len(s.test)
    assert 1 <= total <= 4 and all(c.shape[1] == 4 for c in s.train + s.valid + s.test)
    assert (tmp_path / "music21-bach.npz").exists()
    again = D.load_music21(tmp_path)             # from the cache: same chorales
    assert len(again.train) + len(again.valid) + len(again.test) == total


def run_steps(model, tmp_path, jsb_path, steps, **kw):
    run = RunConfig(model=model, data=f"jsb:{jsb_path}", out=str(tmp_path / model), steps=steps, batch_size=8,
                    lr=3e-3, warmup=2, valid_every=steps, max_chorales=6, **kw)
    return fit(run, TINY[model], show_progress=False)


@pytest.mark.parametrize("model", ["gan", "arcnn", "transformer", "chordrnn"])
def test_a_few_steps_lower_the_loss_and_checkpoints_resume(model, tmp_path, jsb_path):
    result = run_steps(model, tmp_path, jsb_path, 40)
    out = tmp_path / model
    ckpt = load_checkpoint(out / "last.pt")
    losses = [h["loss"] for h in ckpt["history"] if "loss" in h]
    assert np.mean(losses[-2:]) < losses[0], losses
    assert ckpt["config"] == {**ckpt["config"], **TINY[model]} and ckpt["schema"] == 1
    assert (out / "loss.png").stat().st_size > 1000 and list(out.glob("sample-*.png"))
    resumed = run_steps(model, tmp_path, jsb_path, 45)
    assert resumed["step"] == 45 and load_checkpoint(out / "last.pt")["step"] == 45
    assert result["step"] == 40


@pytest.mark.parametrize("model", ["gan", "arcnn", "transformer", "chordrnn"])
def test_export_matches_torch_and_carries_the_contract(model, tmp_path, jsb_path):
    from export.onnx_export import export
    from livegen.models import Model

    run_steps(model, tmp_path, jsb_path, 3)
    report = export(tmp_path / model / "best.pt", tmp_path / f"{model}.onnx")
    assert report["max_abs_diff"] < 1e-4
    if model == "transformer":
        assert report["cache_max_abs_diff"] < 1e-4
    if model == "chordrnn":      # step by step through the state = one pass over the steps
        assert report["state_max_abs_diff"] < 1e-4
    m = Model(str(tmp_path / f"{model}.onnx"))     # the runtime accepts it
    assert m.info.kind == {"gan": "accompany", "arcnn": "edit", "transformer": "continue", "chordrnn": "harmonise"}[model]
    assert m.info.meta["livegen.contract"] == ("2" if model == "chordrnn" else "1")


def rendered_in_respond(tmp_path, model) -> list:
    """The note-ons `livegen render --mode respond` plays with this model for a 16-note tune
    (the tune's own among them)."""
    import mido

    song = mido.MidiFile(ticks_per_beat=480)
    song.tracks.append(mido.MidiTrack([mido.Message("note_on", note=n, velocity=90, time=0 if i == 0 else 240)
                                       for i, n in enumerate([67, 69, 71, 72] * 4)]
                                      + [mido.Message("note_off", note=72, time=240)]))
    song.save(tmp_path / "in.mid")
    r = subprocess.run([sys.executable, "-m", "livegen", "render", str(tmp_path / "in.mid"), str(tmp_path / "out.mid"),
                        "--model", str(model), "--mode", "respond"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return [m for t in mido.MidiFile(tmp_path / "out.mid").tracks for m in t if m.type == "note_on" and m.velocity]


def test_an_ensemble_of_transformers_plays_as_one_continue_model(tmp_path, jsb_path):
    """`python -m export A.pt B.pt --with ...`: one contract file whose next-token
    probabilities are the mean of its members' (token by token through the packed cache as in
    one pass), which the runtime plays and `render` renders, and which a fine-tune refuses to
    read back by name."""
    from export.onnx_export import export
    from livegen.models import Model
    from training.from_onnx import ReadBackError, checkpoint_from_onnx

    run_steps("transformer", tmp_path, jsb_path, 3)
    other = RunConfig(model="transformer", data=f"jsb:{jsb_path}", out=str(tmp_path / "wider"), steps=3,
                      batch_size=8, lr=3e-3, warmup=2, valid_every=3, max_chorales=6, seed=5)
    fit(other, {**TINY["transformer"], "layers": 2, "d_model": 48, "heads": 3}, show_progress=False)
    members = [tmp_path / "transformer" / "best.pt", tmp_path / "wider" / "best.pt"]
    r = subprocess.run([sys.executable, "-m", "export", str(members[0]), str(tmp_path / "both.onnx"),
                        "--with", str(members[1])], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["max_abs_diff"] < 1e-4 and report["cache_max_abs_diff"] < 1e-4
    both = Model(str(tmp_path / "both.onnx"))
    assert both.info.kind == "continue" and both.info.meta["livegen.ensemble"] == "2"
    assert both.info.past_shape == (3, 2, 3, 16)       # layers 1 + 2; heads 2 and 3; head_dim 16 both
    alone = [Model(str(export(m, tmp_path / f"{i}.onnx")["file"])) for i, m in enumerate(members)]
    ids = np.array([[both.info.bos_id, 5, 9, 12, 20, 46, 7]], np.int64)

    def probs(model):
        layers, two, heads, head_dim = model.info.past_shape
        out = model.run({"input_ids": ids, "past": np.zeros((layers, two, 1, heads, 0, head_dim), np.float32)})
        e = np.exp(out["logits"][0] - out["logits"][0].max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    assert np.abs(probs(both) - (probs(alone[0]) + probs(alone[1])) / 2).max() < 1e-5
    assert len(rendered_in_respond(tmp_path, tmp_path / "both.onnx")) > 16     # the player's notes and the answer
    with pytest.raises(ReadBackError, match="an ensemble of 2 Transformers"):
        checkpoint_from_onnx(tmp_path / "both.onnx")
    run_steps("arcnn", tmp_path, jsb_path, 2)
    r = subprocess.run([sys.executable, "-m", "export", str(members[0]), str(tmp_path / "x.onnx"),
                        "--with", str(tmp_path / "arcnn" / "best.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "continue checkpoints only, not continue, edit" in r.stderr


def test_a_transformer_heard_in_several_keys_plays_as_one_continue_model(tmp_path, jsb_path):
    """`python -m training transposed CKPT --shifts ...` chooses the logits' temperature on the
    valid split (the best of its table) and the exporter makes one contract file of it: its
    next-token probabilities are the mean of the copies' (each run on the tokens moved, its
    logits moved back) at that temperature, token by token through the cache as in one pass;
    the runtime renders with it, a fine-tune reads back the one set of weights, and shifts
    without 0 or not numbers are refused by name."""
    from export.onnx_export import export
    from livegen.models import Model
    from training.from_onnx import checkpoint_from_onnx

    run_steps("transformer", tmp_path, jsb_path, 3)
    best = tmp_path / "transformer" / "best.pt"
    r = subprocess.run([sys.executable, "-m", "training", "transposed", str(best), "--data", str(jsb_path),
                        "--shifts=-1,0,2", "--limit", "4", "--out", str(tmp_path / "keys.pt")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [re.match(r"\| (\d\.\d\d)( \*\*\(chosen\)\*\*)? \| (\d\.\d+) \| (\d\.\d+) \|", line)
            for line in r.stdout.splitlines()]
    rows = [m for m in rows if m]
    chosen = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(rows) == 17 and [m.group(1) for m in rows if m.group(2)] == [f"{chosen['temperature']:.2f}"]
    assert chosen["valid_nll"] == pytest.approx(min(float(m.group(3)) for m in rows), abs=1e-4)
    report = export(tmp_path / "keys.pt", tmp_path / "keys.onnx")
    assert report["max_abs_diff"] < 1e-4 and report["cache_max_abs_diff"] < 1e-4
    keys, alone = Model(str(tmp_path / "keys.onnx")), Model(str(export(best, tmp_path / "one.onnx")["file"]))
    assert keys.info.meta["livegen.transpositions"] == "-1,0,2" and keys.info.past_shape == (1, 2, 6, 16)
    p, v = keys.info.pitch_count, keys.info.vocab_size
    ids = np.array([[keys.info.bos_id, 0, 9, 12, 44, 45, p, 7]], np.int64)

    def logits(model, tokens):
        layers, two, heads, head_dim = model.info.past_shape
        return model.run({"input_ids": tokens, "past": np.zeros((layers, two, 1, heads, 0, head_dim), np.float32)})["logits"][0]

    want = np.zeros((ids.shape[1], v))
    for s in (-1, 0, 2):
        moved = np.where(ids < p, ids + s, ids)
        moved = np.where((ids < p) & (moved < 0), moved + 12, np.where((ids < p) & (moved >= p), moved - 12, moved))
        z = logits(alone, moved) / chosen["temperature"]
        back = np.full((ids.shape[1], v), -np.inf)
        back[:, p:] = z[:, p:]                                   # rest and BOS stay where they are
        lo, hi = max(0, -s), min(p, p - s)                       # pitch j is the copy's j + s
        back[:, lo:hi] = z[:, lo + s:hi + s]
        e = np.exp(back - back.max(-1, keepdims=True))
        want += e / e.sum(-1, keepdims=True) / 3
    assert np.abs(np.exp(logits(keys, ids)) - want).max() < 1e-5
    assert len(rendered_in_respond(tmp_path, tmp_path / "keys.onnx")) > 16     # the player's notes and the answer
    back = checkpoint_from_onnx(tmp_path / "keys.onnx")
    mine = load_checkpoint(best)["modules"]["transformer"]
    assert all(torch.equal(mine[k].float(), back["modules"]["transformer"][k].float()) for k in mine)
    with torch.no_grad():      # a teacher (--teacher keys.onnx) is the file as it plays, all its keys
        taught, _ = transformer_of(back).eval()(torch.from_numpy(ids))
    assert np.abs(taught[0].numpy() - logits(keys, ids)).max() < 1e-4
    for bad, said in (("1,2", "0 (the tokens' own key) must be one of them"), ("a,0", "semitones, comma-separated"),
                      ("0,12", "distinct shifts of less than an octave")):
        r = subprocess.run([sys.executable, "-m", "training", "transposed", str(best), "--data", str(jsb_path),
                            f"--shifts={bad}", "--limit", "1", "--out", str(tmp_path / "x.pt")],
                           capture_output=True, text=True)
        assert r.returncode == 2 and said in r.stderr, r.stderr[-2000:]


def test_the_bundled_continue_model_predicts_the_chorales_better_in_five_keys_than_in_one(tmp_path, jsb_path):
    """The shipped `continue.onnx` is one Transformer heard in five keys: on JSB test chorales,
    through the evaluation's own measure, it gives the real next notes more probability than
    its weights give them in the tokens' own key alone."""
    from export.onnx_export import export
    from livegen.models import Model, resolve
    from training.evaluate import continue_nll
    from training.from_onnx import checkpoint_from_onnx

    keys = Model("continue")
    assert keys.info.meta["livegen.transpositions"] == "-2,-1,0,1,2"
    one = checkpoint_from_onnx(resolve("continue"))
    assert one.pop("calibration") == {"shifts": [-2, -1, 0, 1, 2], "temperature": 1.1}
    torch.save(one, tmp_path / "one.pt")
    alone = Model(str(export(tmp_path / "one.pt", tmp_path / "one.onnx")["file"]))
    pieces = D.load_jsb(jsb_path).test[:6]
    (in_keys, count), (in_one, _) = continue_nll(keys, pieces), continue_nll(alone, pieces)
    assert count > 5000 and in_keys < in_one - 0.015, (in_keys, in_one)


def test_a_transformer_learns_its_teachers_probabilities(tmp_path, jsb_path):
    """`--teacher A,B`: the model is trained towards the mean of its teachers' next-token
    probabilities (the KL to them falls); a teacher of another kind or a share outside 0..1
    is refused by name."""
    run_steps("transformer", tmp_path, jsb_path, 30)
    teacher = str(tmp_path / "transformer" / "best.pt")
    run = RunConfig(model="transformer", data=f"jsb:{jsb_path}", out=str(tmp_path / "student"), steps=30,
                    batch_size=8, lr=3e-3, warmup=2, valid_every=30, max_chorales=6, seed=3,
                    teacher=f"{teacher},{teacher}", distill=1.0)
    fit(run, TINY["transformer"], show_progress=False)
    kls = [h["kl"] for h in load_checkpoint(tmp_path / "student" / "last.pt")["history"] if "kl" in h]
    assert len(kls) >= 3 and np.mean(kls[-2:]) < 0.5 * kls[0], kls
    run_steps("arcnn", tmp_path, jsb_path, 2)
    wrong = RunConfig(model="transformer", data=f"jsb:{jsb_path}", out=str(tmp_path / "x"), steps=1,
                      max_chorales=4, teacher=str(tmp_path / "arcnn" / "best.pt"))
    with pytest.raises(ValueError, match="arcnn weights, not a Transformer.s"):
        fit(wrong, TINY["transformer"], show_progress=False)
    r = subprocess.run([sys.executable, "-m", "training", "transformer", "--data", f"jsb:{jsb_path}", "--out",
                        str(tmp_path / "y"), "--teacher", teacher, "--distill", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and "--distill 2.0: a share from 0 to 1" in r.stderr


def test_bfloat16_autocast_trains_the_transformer(tmp_path, jsb_path):
    result = run_steps("transformer", tmp_path, jsb_path, 30, bf16=True)
    losses = [h["loss"] for h in load_checkpoint(tmp_path / "transformer" / "last.pt")["history"] if "loss" in h]
    assert result["step"] == 30 and np.mean(losses[-2:]) < losses[0], losses


def test_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"hello": torch.zeros(1)}, bad)
    r = subprocess.run([sys.executable, "-m", "export", str(bad), str(tmp_path / "x.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a livegen checkpoint" in r.stderr


@pytest.mark.parametrize("flag", ["--init", "--teacher"])
def test_training_refuses_a_missing_or_broken_start_by_name(flag, tmp_path, jsb_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 cut short")
    for path, says in [(tmp_path / "missing.pt", "missing.pt: no such checkpoint file"),
                       (garbage, "garbage.pt: not a livegen checkpoint")]:
        r = subprocess.run([sys.executable, "-m", "training", "transformer", "--data", f"jsb:{jsb_path}",
                            "--out", str(tmp_path / "run"), "--steps", "1", flag, str(path)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]


def test_torchrun_two_processes_on_gloo(tmp_path, jsb_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "training", "arcnn", "--data", f"jsb:{jsb_path}", "--out", str(out), "--steps", "6",
           "--batch-size", "8", "--valid-every", "6", "--max-chorales", "4", "--config", json.dumps(TINY["arcnn"])]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    assert load_checkpoint(out / "last.pt")["step"] == 6


def test_best_of_k_scores_the_draw_closest_to_the_real_voices():
    from training.gan import best_of_k_cross_entropy

    targets = torch.tensor([[[0, 1]], [[1, 0]]])                 # 2 melodies, 1 track, 2 steps, 3 classes
    right = torch.nn.functional.one_hot(targets, 3).float() * 20
    wrong = torch.nn.functional.one_hot(1 - targets, 3).float() * 20
    # draw 0 sings melody 0 right and melody 1 wrong, draw 1 the other way round
    logits = torch.cat([torch.stack([right[0], wrong[1]]), torch.stack([wrong[0], right[1]])])
    assert best_of_k_cross_entropy(logits, targets, 2).item() < 1e-6
    assert best_of_k_cross_entropy(logits[:2], targets, 1).item() > 9


def test_a_gan_fine_tunes_from_a_checkpoint_with_its_architecture(tmp_path, jsb_path):
    run_steps("gan", tmp_path, jsb_path, 3)
    start = tmp_path / "gan" / "best.pt"
    run = RunConfig(model="gan", data=f"jsb:{jsb_path}", out=str(tmp_path / "tuned"), steps=3, batch_size=8,
                    lr=3e-3, warmup=2, valid_every=3, max_chorales=6, init=str(start))
    fit(run, {"variety_k": 3}, show_progress=False)
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned["config"] == {**load_checkpoint(start)["config"], "variety_k": 3}
    wrong = RunConfig(model="arcnn", data=f"jsb:{jsb_path}", out=str(tmp_path / "x"), steps=1, init=str(start))
    with pytest.raises(ValueError, match="is a gan checkpoint, not arcnn"):
        fit(wrong, show_progress=False)


@pytest.mark.parametrize("model", ["gan", "arcnn", "transformer"])
def test_the_weights_are_read_back_from_an_exported_file(model, tmp_path, jsb_path):
    """A fine-tune can start from any exported model: its weights read back from the ONNX
    file are the checkpoint's own (names, shapes and values), the architecture too."""
    from export.onnx_export import export
    from training.from_onnx import MODULE_OF_KIND, checkpoint_from_onnx

    run_steps(model, tmp_path, jsb_path, 3)
    ckpt = load_checkpoint(tmp_path / model / "best.pt")
    export(tmp_path / model / "best.pt", tmp_path / f"{model}.onnx")
    back = checkpoint_from_onnx(tmp_path / f"{model}.onnx")
    assert back["model"] == model and back["read_back"]["max_abs_diff"] < 1e-4
    assert {k: v for k, v in ckpt["config"].items() if k in back["config"]} == back["config"]
    mine, theirs = ckpt["modules"][MODULE_OF_KIND[back["kind"]]], back["modules"][MODULE_OF_KIND[back["kind"]]]
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k].float(), theirs[k].float()) for k in mine)


def test_a_fine_tune_starts_from_a_bundled_model_and_a_broken_file_is_refused(tmp_path, jsb_path):
    from training.from_onnx import ReadBackError
    from training.train import load_start

    for name in ("accompany", "edit", "continue"):
        assert load_start(name)["read_back"]["max_abs_diff"] < 1e-4
    run = RunConfig(model="transformer", data=f"jsb:{jsb_path}", out=str(tmp_path / "tuned"), steps=2, batch_size=4,
                    lr=1e-4, warmup=1, valid_every=2, max_chorales=4, init="continue")
    fit(run, show_progress=False)
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned["config"]["layers"] == load_start("continue")["config"]["layers"] and tuned["step"] == 2
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ReadBackError, match="not an ONNX file"):
        load_start(str(broken))


def test_a_folder_of_your_own_midi_says_what_it_used_and_why_it_skipped_the_rest(tmp_path):
    """Parts become voices; a piano part is split by pitch; drums are left out; another meter,
    notes off the 16th grid, a broken file are skipped, each with its reason."""
    import mido

    quartet = tmp_path / "quartet.mid"          # four parts, given bottom first, the viola (2nd) with a double stop
    write_midi(quartet, [[(43, 0, 16)], [(55, 0, 16), (59, 0, 8)], [(64, 0, 16)], [(72, 0, 8), (76, 8, 16)]])
    piano = mido.MidiFile(ticks_per_beat=480)   # one track: melody and chords together, and a drum part
    track = mido.MidiTrack()
    piano.tracks.append(track)
    for note in (48, 55, 64, 79):
        track.append(mido.Message("note_on", channel=0, note=note, velocity=80, time=0))
    track.append(mido.Message("note_on", channel=9, note=36, velocity=100, time=0))     # a kick drum
    track.append(mido.Message("note_off", channel=0, note=79, time=480 * 4))
    for note in (48, 55, 64):
        track.append(mido.Message("note_off", channel=0, note=note, time=0))
    track.append(mido.Message("note_off", channel=9, note=36, time=0))
    piano.save(tmp_path / "piano.mid")
    waltz = mido.MidiFile(ticks_per_beat=480)
    waltz.tracks.append(mido.MidiTrack([mido.MetaMessage("time_signature", numerator=3, denominator=4),
                                        mido.Message("note_on", note=60, velocity=80, time=0),
                                        mido.Message("note_off", note=60, time=480)]))
    waltz.save(tmp_path / "waltz.mid")
    swung = mido.MidiFile(ticks_per_beat=480)   # triplet eighths: 160 ticks apart
    swung.tracks.append(mido.MidiTrack([m for k in range(12) for m in (
        mido.Message("note_on", note=60 + k, velocity=80, time=0 if k == 0 else 0),
        mido.Message("note_off", note=60 + k, time=160))]))
    swung.save(tmp_path / "swung.mid")
    (tmp_path / "broken.mid").write_bytes(b"MThd junk")

    arr, how = D.read_midi(quartet)
    assert arr[0].tolist() == [72, 64, 59, 43] and "4 parts" in how     # the viola's top note as the tenor
    arr, how = D.read_midi(tmp_path / "piano.mid")
    assert arr[0].tolist() == [79, 64, 55, 48] and "split by pitch" in how    # no drum note among them
    summary: list[str] = []
    splits = D.load_midi_folder(tmp_path, summary)
    lines = dict(line.split(": ", 1) for line in summary if not line.startswith("("))   # (not a split's note)
    assert set(lines) == {"used    quartet.mid", "used    piano.mid", "skipped waltz.mid", "skipped swung.mid",
                          "skipped broken.mid"}, summary
    assert lines["skipped waltz.mid"].startswith("in 3/4") and "off the 16th grid" in lines["skipped swung.mid"]
    assert "not a readable MIDI file" in lines["skipped broken.mid"]
    assert lines["used    quartet.mid"].startswith("1 bars")
    assert sum(len(splits[s]) for s in ("train", "valid", "test")) >= 2
    for name in ("quartet.mid", "piano.mid"):
        (tmp_path / name).unlink()
    with pytest.raises(D.DataError, match="none of the 3 MIDI files can be used"):
        D.load_midi_folder(tmp_path)



def test_a_quartet_wider_than_the_models_window_keeps_its_soprano_on_top(tmp_path):
    """A first violin up to A6 and a cello down to C2 (wider than the models' 36-81): the
    voices move together and only the notes still outside fold by octaves, so the soprano
    stays above the alto (moving each voice by itself put the first violin an octave under
    the second for the whole piece); the summary says what was moved."""
    violin1 = [(84 + k % 10, 2 * k, 2 * k + 2) for k in range(16)]          # C6 .. A6
    violin2 = [(76, 0, 32)]
    viola = [(64, 0, 32)]
    cello = [(36, 0, 16), (48, 16, 32)]
    write_midi(tmp_path / "wide.mid", [cello, viola, violin2, violin1])
    arr, _ = D.read_midi(tmp_path / "wide.mid")
    fitted, moved = D.fit_range(arr)
    assert fitted.min() >= D.PITCH_LOW and fitted.max() <= D.PITCH_LOW + D.PITCH_COUNT - 1
    assert (fitted[:, 0] > fitted[:, 1]).mean() >= 0.75        # the first violin above the second
    assert (fitted % 12 == arr % 12).all()                     # every note kept, by pitch class
    assert "folded" in moved
    summary: list[str] = []
    D.load_midi_folder(tmp_path, summary)
    assert "folded into 36-81 by octaves" in summary[0]
    jsb_like = np.array([[72, 67, 64, 48]] * 16, np.int16)     # inside already: left as it is
    assert D.fit_range(jsb_like)[0].tolist() == jsb_like.tolist() and D.fit_range(jsb_like)[1] == ""

def test_holding_out_each_files_last_bars_measures_music_like_the_whole_folder(tmp_path):
    """`hold_out="tail"` (finetune's default): the last bars of every file long enough are
    the held-out part, never trained on; by file name, a folder of three may hold out none of
    one kind of piece. Every bar is used once, and the summary says which were held out."""
    lengths = {"long.mid": 40, "mid.mid": 20, "short.mid": 8}         # bars
    for k, (name, bars) in enumerate(lengths.items()):
        write_midi(tmp_path / name, [[(48 + k, 16 * b, 16 * b + 16) for b in range(bars)],
                                     [(60 + k, 16 * b, 16 * b + 8) for b in range(bars)],
                                     [(64 + k, 16 * b, 16 * b + 16) for b in range(bars)],
                                     [(72 + (b % 5), 16 * b, 16 * b + 4) for b in range(bars)]])
    summary: list[str] = []
    splits = D.load_midi_folder(tmp_path, summary, hold_out="tail")
    held = sorted(len(a) // 16 for a in splits.valid)
    assert held == [4, 6], held         # 15 % of 40 bars; at least 4 of 20; none of 8 (trained on whole)
    assert splits.test == [] and sorted(len(a) // 16 for a in splits.train) == [8, 16, 34]
    for name, bars in lengths.items():
        whole = D.fit_range(D.read_midi(tmp_path / name)[0])[0]
        head = next(a for a in splits.train if len(a) <= len(whole) and np.array_equal(a, whole[:len(a)]))
        tail = [a for a in splits.valid if np.array_equal(a, whole[len(head):])]
        assert len(head) + sum(len(a) for a in tail) == len(whole) == 16 * bars     # each bar once
    lines = {line.split(": ")[0].split()[-1]: line for line in summary}
    assert "bars 1-34 trained on, 35-40 held out" in lines["long.mid"]
    assert "too short to hold bars out" in lines["short.mid"]
    files = D.load_midi_folder(tmp_path, hold_out="files")      # the other way: whole files
    assert sorted(len(a) // 16 for a in files.train + files.valid + files.test) == [8, 20, 40]
    with pytest.raises(D.DataError, match="'files' or 'tail'"):
        D.load_midi_folder(tmp_path, hold_out="middle")


def test_a_fine_tune_can_rehearse_the_chorales_in_a_share_of_its_steps(jsb_path):
    """`--rehearse 0.25`: about a quarter of the training steps are JSB chorales (drawn in a
    seeded order), the rest the player's music."""
    chorales = D.load_jsb(jsb_path).train
    music = [np.zeros((16 * 300, 4), np.int16)]                     # 300 bars of "my music"
    picked = D.rehearsal(chorales, 0.25, music, seed=0)
    steps = sum(len(c) for c in picked)
    assert 0.25 <= steps / (steps + len(music[0])) < 0.27
    assert [len(c) for c in picked] == [len(c) for c in D.rehearsal(chorales, 0.25, music, seed=0)]
    assert D.rehearsal(chorales, 0.0, music) == []
    with pytest.raises(D.DataError, match="share from 0 to under 1"):
        D.rehearsal(chorales, 1.0, music)


def test_short_crops_of_a_long_piece_do_not_dwell_on_its_first_bars(tmp_path):
    """The Transformer's crops begin a piece a quarter of the time where a crop is a good part
    of it (a chorale in its whole context: BOS and the first step matter); 2-bar crops of a
    movement of 100 bars begin it no more often than any other of its steps (a quarter of the
    time taught 2 of the 100 bars as often as the rest together)."""
    from training.train import TransformerTask

    rng = np.random.default_rng(0)
    long_piece = np.stack([rng.integers(48, 80, 1600)] * 4, axis=1).astype(np.int16)    # 100 bars
    splits = D.Splits(train=[long_piece], valid=[long_piece[:64]], test=[], source="test")

    def share_at_start(crop_steps: int, steps: int) -> float:
        run = RunConfig(model="transformer", data="", out=str(tmp_path), augment=False, crop_steps=crop_steps)
        task = TransformerTask(run, splits, torch.device("cpu"), 0, 1, model_config=TINY["transformer"] |
                               {"max_context": 512})
        return float(np.mean([task.crop_start(steps) == 0 for _ in range(4000)]))

    assert share_at_start(32, 1600) < 0.04            # about 32 / 1600 plus the uniform draw's share
    assert 0.2 < share_at_start(0, 200) < 0.3          # a chorale in its whole context: as before


def test_finetune_is_one_command_from_a_bundled_model_to_a_file_livegen_plays(tmp_path, capsys, jsb_path):
    from livegen.models import Model
    from training.finetune import main as finetune

    folder = tmp_path / "my band"
    folder.mkdir()
    for k in range(3):                    # three four-part pieces, each a different tune
        write_midi(folder / f"piece{k}.mid", [[(43 + k + (s % 2) * 5, s * 4, s * 4 + 4) for s in range(16)],
                                              [(55 + k, 0, 64)], [(64 + k, 0, 64)],
                                              [(72 + k + (s % 3) * 2, s * 4, s * 4 + 4) for s in range(16)]])
    (folder / "waltz.mid").write_bytes(b"MThd junk")
    out = tmp_path / "out"
    code = finetune(["--from", "edit", "--data", str(folder), "--minutes", "0.05", "--valid-every", "2",
                     "--batch-size", "4", "--out", str(out), "--jsb-limit", "2", "--jsb", str(jsb_path)])
    assert code == 0
    card = (out / "my band.md").read_text()
    assert "held-out loss" in card and "before" in card and "skipped waltz.mid" in card, card
    assert re.search(r"\| JSB test \(2\) \| F1 \| 0\.\d+ \| 0\.\d+ \|", card), card      # before and after
    # and beside the held-out part's own figures, the whole folder's (the style it learns)
    assert re.search(r"\| held out of the folder \(\d\) \| in-scale rate \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|",
                     card), card
    assert Model(str(out / "my band.onnx")).info.kind == "edit"
    # `livegen render` plays it at once, as `livegen run --model FILE` does
    song = tmp_path / "tune.mid"
    write_midi(song, [[(67 + s % 5, s * 4, s * 4 + 4) for s in range(16)]])
    r = subprocess.run([sys.executable, "-m", "livegen", "render", str(song), str(tmp_path / "played.mid"),
                        "--model", str(out / "my band.onnx"), "--mode", "loop"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    import mido
    sent = [m for tr in mido.MidiFile(tmp_path / "played.mid").tracks[1:] for m in tr if m.type == "note_on"]
    assert sent, "the fine-tuned model played nothing"
    first = load_checkpoint(out / "last.pt")
    again = finetune(["--from", "edit", "--data", str(folder), "--minutes", "0.1", "--valid-every", "2",
                      "--batch-size", "4", "--out", str(out), "--jsb", ""])          # the same command again: it resumes
    resumed = load_checkpoint(out / "last.pt")
    assert again == 0 and resumed["step"] > first["step"]
    assert [h for h in resumed["history"] if h["step"] == 0] == [h for h in first["history"] if h["step"] == 0]
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "a.mid").write_bytes(b"junk")
    assert finetune(["--from", "edit", "--data", str(empty), "--out", str(tmp_path / "x")]) == 2
    assert "none of the 1 MIDI files can be used" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["accompany", "continue"])
def test_a_finetune_sets_how_it_is_played_from_the_music(tmp_path, kind):
    """accompany: the exported threshold is the one (of THRESHOLDS) whose notes per bar come
    nearest the folder's own; continue: the temperature and top-p (of SAMPLINGS), which the
    runtime then plays with unless the player sets others, the pull towards the key (of
    KEY_PENALTIES) whose in-scale rate comes nearest, the music's voice ranges with the pull
    into them (of RANGE_PENALTIES) whose notes outside the choral ranges come nearest, and
    parallels banned or charged (of CONTINUE_PARALLELS) by parallels per move. The card says
    which."""
    import onnx

    from livegen.models import Model
    from training.finetune import (CONTINUE_PARALLELS, KEY_PENALTIES, PENALTIES, RANGE_PENALTIES, SAMPLINGS, THRESHOLDS,
                                   music_ranges, own_ranges)
    from training.finetune import main as finetune

    def D_ranges(folder):
        return music_ranges(D.load_midi_folder(folder).train)

    folder = tmp_path / "band"
    folder.mkdir()
    for k in range(2):
        write_midi(folder / f"p{k}.mid", [[(43 + k, s * 4, s * 4 + 4) for s in range(16)], [(55 + k, 0, 64)],
                                          [(64 + k, 0, 64)], [(72 + k + (s % 3) * 2, s * 4, s * 4 + 4) for s in range(16)]])
    out = tmp_path / "out"
    assert finetune(["--from", kind, "--data", str(folder), "--minutes", "0.03", "--valid-every", "2",
                     "--batch-size", "4", "--out", str(out), "--jsb", ""]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out / "band.onnx")).metadata_props}
    card = (out / "band.md").read_text()
    if kind == "accompany":
        assert float(meta["livegen.threshold"]) in THRESHOLDS
        assert f"threshold {meta['livegen.threshold']}:" in card
        assert float(meta["livegen.parallel_penalty"]) in PENALTIES
        assert f"parallel_penalty {meta['livegen.parallel_penalty']}:" in card
        info = Model(str(out / "band.onnx"), "cpu").info      # the decoder's ranges are the music's
        assert info.voice_ranges == D_ranges(folder) and info.parallel_penalty == float(meta["livegen.parallel_penalty"])
        return
    chosen = (float(meta["livegen.temperature"]), float(meta["livegen.top_p"]))
    assert chosen in SAMPLINGS
    assert f"temperature {meta['livegen.temperature']}, top_p {meta['livegen.top_p']}:" in card
    assert float(meta["livegen.key_penalty"]) in KEY_PENALTIES
    assert f"key_penalty {meta['livegen.key_penalty']}:" in card
    info = Model(str(out / "band.onnx"), "cpu").info
    assert (info.temperature, info.top_p, info.key_penalty) == chosen + (float(meta["livegen.key_penalty"]),)
    # the voices' own ranges (of the first training pieces, soprano to bass) and the pull into them
    assert info.voice_ranges == own_ranges([c[:256] for c in D.load_midi_folder(folder).train[:6]])
    assert info.range_penalty == float(meta["livegen.range_penalty"]) and info.range_penalty in RANGE_PENALTIES
    assert f"range_penalty {meta['livegen.range_penalty']}:" in card
    # parallels banned as in the chorales, or charged where that comes nearer the music's
    if "livegen.parallel_penalty" in meta:
        charge = float(meta["livegen.parallel_penalty"])
        assert charge in CONTINUE_PARALLELS and f"parallels charged {meta['livegen.parallel_penalty']}:" in card
        assert not info.parallels_banned and info.parallel_penalty == charge
    else:
        assert "parallels banned:" in card and info.parallels_banned
    from livegen.session import played_with       # the start-up line says so

    assert (f"temperature {meta['livegen.temperature']}, top p {meta['livegen.top_p']}, "
            f"key penalty {meta['livegen.key_penalty']}") in played_with(info.meta)
