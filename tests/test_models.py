from pathlib import Path

import numpy as np
import pytest

from livegen.cli import main
from livegen.errors import ModelError
from livegen.models import Model, bundled_path
from tests import tinymodels


def test_shift_model_follows_the_contract(shift_model):
    m = Model(str(shift_model), device="cpu")
    assert (m.info.kind, m.info.window_steps, m.info.tracks) == ("accompany", 32, ["alto", "tenor", "bass"])
    assert m.provider == "CPUExecutionProvider"
    melody = np.zeros((1, 32, 46), np.float32)
    melody[0, 0, 40] = 1
    probs = m.run({"melody": melody, "z": np.zeros((1, 4), np.float32)})["probs"]
    assert probs[0, 0, 0, 37] == 1 and probs[0, 1, 0, 28] == 1 and probs[0, 2, 0, 16] == 1


@pytest.mark.parametrize("name, kind", [("accompany", "accompany"), ("edit", "edit"), ("continue", "continue"),
                                        ("harmonise", "harmonise")])
def test_bundled_models_carry_the_contract(name, kind):
    path = bundled_path(name)
    assert path is not None and path.stat().st_size < 20 * 2 ** 20
    m = Model(name, device="cpu")
    i = m.info
    assert i.kind == kind and i.meta["livegen.contract"] == ("2" if kind == "harmonise" else "1")
    assert (i.steps_per_beat, i.beats_per_bar, i.pitch_low, i.pitch_count) == (4, 4, 36, 46)
    assert i.meta["livegen.training_data"] and i.meta["livegen.description"]
    if kind == "continue":
        assert i.meta["livegen.tokenizer"] == "satb16-v1" and i.vocab_size == 48 and i.max_context == 512
    elif kind == "harmonise":
        assert i.meta["livegen.tokenizer"] == "satb16-v1" and i.vocab_size == 47 and len(i.state_shape) == 2
    else:
        assert i.window_steps == 32
    m.warm_up(1)


def broken(tmp_path, **changes):
    meta = tinymodels.accompany_meta(["alto", "tenor", "bass"])
    for k, v in changes.items():
        key = "livegen." + k
        if v is None:
            meta.pop(key)
        else:
            meta[key] = v
    return tinymodels.shift_accompany(tmp_path / "broken.onnx", meta=meta)


@pytest.mark.parametrize("changes, message", [
    ({"kind": None}, "livegen.kind is missing"),
    ({"contract": "3"}, "livegen.contract is '3'; this livegen reads versions 1 and 2"),
    ({"kind": "harmonise"}, "kind harmonise needs livegen.contract \"2\""),
    ({"kind": "harmonise", "contract": "2"}, "livegen.tokenizer must be satb16-v1, not None"),
    ({"kind": "harmonise", "contract": "2", "tokenizer": "satb16-v1", "vocab_size": "47"},
     "harmonise model needs input `chord`"),
    ({"kind": "dance"}, "livegen.kind is 'dance'"),
    ({"window_steps": "x"}, "livegen.window_steps must be an integer"),
    ({"window_steps": "64"}, "axis 1 is 32, metadata says 64"),
    ({"tracks": "alto,tenor"}, "axis 1 is 3, metadata says 2"),
    ({"pitch_low": "100"}, "outside 0..127"),
    ({"voice_ranges": "53-74,48-69"}, "one LOW-HIGH (MIDI, LOW <= HIGH) for each of the 3 tracks"),
    ({"voice_ranges": "alto"}, "livegen.voice_ranges must be LOW-HIGH per track"),
    ({"parallel_penalty": "-1"}, "livegen.parallel_penalty -1 lies outside 0..20"),
])
def test_contract_violations_name_the_file_and_field(tmp_path, changes, message):
    path = broken(tmp_path, **changes)
    with pytest.raises(ModelError) as err:
        Model(str(path))
    assert str(path) in str(err.value) and message in str(err.value)


def test_not_onnx_and_missing_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model at all" * 10)
    with pytest.raises(ModelError, match="junk.onnx: not a loadable ONNX model"):
        Model(str(junk))
    with pytest.raises(ModelError, match="no such model file"):
        Model(str(tmp_path / "missing.onnx"))


def test_wrong_kind_for_the_inputs(tmp_path):
    path = tinymodels.edit_identity(tmp_path / "e.onnx")
    m = Model(str(path))
    assert m.info.kind == "edit"


def test_run_with_a_broken_model_exits_2_naming_the_file(tmp_path, capsys):
    path = broken(tmp_path, contract=None)
    rc = main(["render", "in.mid", "out.mid", "--model", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and "broken.onnx" in err and "livegen.contract is missing" in err


def test_cuda_request_without_cuda_is_refused_clearly(shift_model):
    from livegen.models import cuda_usable

    if cuda_usable():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelError, match="--device cuda"):
        Model(str(shift_model), device="cuda")


@pytest.mark.parametrize("field, value, message", [
    ("temperature", "hot", "livegen.temperature must be a number, not 'hot'"),
    ("temperature", "3", "livegen.temperature 3 lies outside 0..2"),
    ("key_penalty", "-1", "livegen.key_penalty -1 lies outside 0..20"),
    ("key_penalty", "nan", "livegen.key_penalty nan lies outside 0..20"),
    ("range_penalty", "21", "livegen.range_penalty 21 lies outside 0..20"),
    ("voice_ranges", "55-72", "one LOW-HIGH (MIDI, LOW <= HIGH) for each of the 4 tracks"),
    ("voice_ranges", None, "livegen.range_penalty needs livegen.voice_ranges"),
    ("parallel_penalty", "x", "livegen.parallel_penalty must be a number, not 'x'"),
    (None, None, "")])
def test_a_model_carries_how_it_is_sampled(tmp_path, field, value, message):
    """A fine-tuned Transformer's `livegen.temperature`, `livegen.top_p`,
    `livegen.key_penalty`, its voices' ranges with `livegen.range_penalty` and what a parallel
    costs (`livegen.parallel_penalty`; banned without it) are what it plays with where the
    player sets none; a bad one is refused naming the file and the field."""
    import onnx

    from livegen.generate.continue_ import SamplingSettings

    proto = onnx.load(str(Model("continue").info.path))
    meta = {"temperature": "1.1", "top_p": "1", "key_penalty": "1.5", "voice_ranges": "60-79,55-72,50-69,40-62",
            "range_penalty": "2", "parallel_penalty": "1.5"} | ({field: value} if field else {})
    for key, v in meta.items():
        if v is None:
            continue
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"livegen.{key}", v
    path = tmp_path / "tuned.onnx"
    onnx.save(proto, str(path))
    if message:
        with pytest.raises(ModelError) as err:
            Model(str(path))
        assert str(path) in str(err.value) and message in str(err.value)
        return
    info = Model(str(path)).info
    assert SamplingSettings().of(info) == SamplingSettings(1.1, 1.0, 1.5)
    assert SamplingSettings(0.5, None, 0.0).of(info) == SamplingSettings(0.5, 1.0, 0.0)      # the player's wins
    assert info.voice_ranges == [(60, 79), (55, 72), (50, 69), (40, 62)] and info.range_penalty == 2.0
    assert not info.parallels_banned and info.parallel_penalty == 1.5
    bundled = Model("continue").info
    assert SamplingSettings().of(bundled) == SamplingSettings(0.9, 0.95, 0.0) and bundled.parallels_banned


def test_the_decoder_plays_by_the_models_own_rules():
    """A fine-tuned accompany model's parallel penalty and voice ranges are what the decoder
    keeps: without the penalty parallel fifths and octaves come back, and a bass range high
    up keeps the bass there."""
    import json as _json

    from training.evaluate import estimate_key, generate_voices, voice_metrics

    jsb = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"
    tunes = [np.array(c, np.int16)[:64] for c in _json.loads(jsb.read_text())["test"][:6]]
    model = Model("accompany")

    def played():
        made = [generate_voices(model, c, np.random.default_rng(0)) for c in tunes]
        return [voice_metrics(v, estimate_key(c)) | {"voices": v} for v, c in zip(made, tunes)]

    chorale = played()
    model.info.parallel_penalty = 0.0
    free = played()
    assert sum(m["parallels"] for m in free) > sum(m["parallels"] for m in chorale)
    model.info.parallel_penalty = 3.0
    model.info.voice_ranges = [(53, 74), (48, 69), (55, 64)]
    high = played()
    low_bass = lambda ms: sum(int(((m["voices"][:, 3] >= 0) & (m["voices"][:, 3] < 55)).sum()) for m in ms)  # noqa: E731
    assert low_bass(high) < 0.5 * low_bass(chorale)
