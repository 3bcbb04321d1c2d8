"""ONNX model files: load, check the livegen contract (versions 1 and 2), choose providers, warm up."""
from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import stat
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from livegen.errors import ModelError

log = logging.getLogger(__name__)

KINDS = ("accompany", "edit", "continue", "harmonise")
CONTRACTS = ("1", "2")        # version 2 adds the kind `harmonise`; version 1 files load as before
REQUIRED = ("livegen.contract", "livegen.kind", "livegen.steps_per_beat", "livegen.beats_per_bar",
            "livegen.pitch_low", "livegen.pitch_count", "livegen.tracks")
BUNDLED = {"accompany": "accompany.onnx", "edit": "edit.onnx", "continue": "continue.onnx",
           "harmonise": "harmonise.onnx"}
MAX_MODEL_BYTES = 1 << 30     # (the bundled models are 12-14 MiB)


@dataclass
class ModelInfo:
    """The contract fields of one model file, typed."""
    path: str
    kind: str
    steps_per_beat: int
    beats_per_bar: int
    pitch_low: int
    pitch_count: int
    tracks: list[str]
    window_steps: int = 0
    threshold: float = 0.5
    max_polyphony: int = 0
    z_dim: int = 0
    has_onsets: bool = False
    vocab_size: int = 0
    bos_id: int | None = None
    max_context: int = 0
    past_shape: tuple = ()       # (layers, 2, heads, head_dim) for `continue`
    state_shape: tuple = ()      # (layers, hidden) for `harmonise`
    temperature: float = 0.9     # continue, harmonise: sampling, where the player sets none
    top_p: float = 0.95
    key_penalty: float = 0.0     # continue: nats a voice's pitch outside the key costs (generate.continue_.KeyPull)
    voice_ranges: list | None = None     # accompany: (low, high) MIDI pitch per track, for the decoder;
    #                                     continue: per track, for `range_penalty`
    range_penalty: float = 0.0    # continue: nats a voice's pitch outside its range costs (continue_.RangePull)
    parallel_penalty: float = 3.0        # accompany: nats the decoder charges a parallel fifth or octave;
    #                                     continue: nats a voice's parallel costs, where not `parallels_banned`
    parallels_banned: bool = True        # continue: parallels banned (the chorales'), unless the file charges them
    meta: dict = field(default_factory=dict)


def bundled_path(name: str) -> Path | None:
    """Path of a model shipped inside the package, by kind name, or None."""
    fname = BUNDLED.get(name)
    if not fname:
        return None
    p = Path(str(resources.files("livegen") / "models" / fname))
    return p if p.exists() else None


def resolve(spec: str) -> Path:
    """A model given as a path or as a bundled name (accompany, edit, continue): a regular
    file under MAX_MODEL_BYTES (never a device, a FIFO or a folder: reading one could block
    or fill the memory)."""
    if not isinstance(spec, str) or not spec.strip() or "\0" in spec:
        raise ModelError(f"{spec!r}: not a model name or path")
    p = Path(spec).expanduser()
    try:
        st = p.stat()
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise ModelError(f"{spec[:200]}: cannot use this path ({err.strerror})") from None
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"{p}: not a regular file (a model is an .onnx file)")
        if st.st_size > MAX_MODEL_BYTES:
            raise ModelError(f"{p}: {st.st_size / 2**20:.0f} MiB, larger than a model may be "
                             f"({MAX_MODEL_BYTES // 2**20} MiB)")
        return p
    bundled = bundled_path(spec)
    if bundled:
        return bundled
    if spec in BUNDLED:
        raise ModelError(f"{spec}: the bundled model is missing from this installation; reinstall livegen")
    raise ModelError(f"{spec[:200]}: no such model file (give a path to an .onnx file, or one of "
                     f"{', '.join(BUNDLED)})")


def _int(meta: dict, key: str, path: str, default: int | None = None) -> int:
    if key not in meta:
        if default is not None:
            return default
        raise ModelError(f"{path}: metadata field {key} is missing")
    try:
        return int(meta[key])
    except ValueError:
        raise ModelError(f"{path}: metadata field {key} must be an integer, not {meta[key]!r}") from None


def check_contract(path: str, meta: dict, inputs: dict, outputs: dict) -> ModelInfo:
    """Typed contract fields, or ModelError naming the file and the missing or wrong field."""
    for key in REQUIRED:
        if key not in meta:
            raise ModelError(f"{path}: metadata field {key} is missing (not a livegen model?)")
    if meta["livegen.contract"] not in CONTRACTS:
        raise ModelError(f"{path}: livegen.contract is {meta['livegen.contract']!r}; this livegen reads "
                         f"versions {' and '.join(CONTRACTS)}")
    kind = meta["livegen.kind"]
    if kind not in KINDS:
        raise ModelError(f"{path}: livegen.kind is {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "harmonise" and meta["livegen.contract"] == "1":
        raise ModelError(f"{path}: kind harmonise needs livegen.contract \"2\"")
    info = ModelInfo(path=path, kind=kind, steps_per_beat=_int(meta, "livegen.steps_per_beat", path),
                     beats_per_bar=_int(meta, "livegen.beats_per_bar", path),
                     pitch_low=_int(meta, "livegen.pitch_low", path), pitch_count=_int(meta, "livegen.pitch_count", path),
                     tracks=[t.strip() for t in meta["livegen.tracks"].split(",") if t.strip()], meta=dict(meta))
    if not info.tracks:
        raise ModelError(f"{path}: livegen.tracks names no track")
    if info.pitch_count <= 0 or not 0 <= info.pitch_low < 128 or info.pitch_low + info.pitch_count > 128:
        raise ModelError(f"{path}: livegen.pitch_low/pitch_count give pitches outside 0..127")

    def need(names: dict, name: str, rank: int, what: str):
        if name not in names:
            raise ModelError(f"{path}: {kind} model needs {what} `{name}`; it has {', '.join(names) or 'none'}")
        shape = names[name]
        if len(shape) != rank:
            raise ModelError(f"{path}: {what} `{name}` has rank {len(shape)}, the contract says {rank}")
        return shape

    if kind in ("accompany", "edit"):
        info.window_steps = _int(meta, "livegen.window_steps", path)
    if kind == "accompany":
        shape = need(inputs, "melody", 3, "input")
        _fixed(path, "melody", shape, {1: info.window_steps, 2: info.pitch_count})
        out = need(outputs, "probs", 4, "output")
        _fixed(path, "probs", out, {1: len(info.tracks), 2: info.window_steps, 3: info.pitch_count})
        if "z" in inputs:
            info.z_dim = _int(meta, "livegen.z_dim", path)
        info.has_onsets = "onset_probs" in outputs
        try:
            info.threshold = float(meta.get("livegen.threshold", "0.5"))
        except ValueError:
            raise ModelError(f"{path}: livegen.threshold must be a number") from None
        info.max_polyphony = _int(meta, "livegen.max_polyphony", path, default=0)
        _decoder_rules(path, info, meta)
    elif kind == "edit":
        _fixed(path, "roll", need(inputs, "roll", 4, "input"), {1: 1, 2: info.window_steps, 3: info.pitch_count})
        _fixed(path, "logits", need(outputs, "logits", 4, "output"), {1: 1, 2: info.window_steps, 3: info.pitch_count})
    elif kind == "harmonise":
        _harmonise_contract(path, info, meta, need, inputs, outputs)
    else:
        if meta.get("livegen.tokenizer") != "satb16-v1":
            raise ModelError(f"{path}: livegen.tokenizer must be satb16-v1, not {meta.get('livegen.tokenizer')!r}")
        info.vocab_size = _int(meta, "livegen.vocab_size", path)
        info.max_context = _int(meta, "livegen.max_context", path)
        info.bos_id = _int(meta, "livegen.bos_id", path) if "livegen.bos_id" in meta else None
        need(inputs, "input_ids", 2, "input")
        past = need(inputs, "past", 6, "input")
        need(outputs, "logits", 3, "output")
        need(outputs, "present", 6, "output")
        fixed = [past[0], past[1], past[3], past[5]]
        if not all(isinstance(d, int) for d in fixed):
            raise ModelError(f"{path}: input `past` must have fixed layers, 2, heads and head_dim axes")
        info.past_shape = tuple(fixed)
    if kind in ("continue", "harmonise"):
        _sampling(path, info, meta)
    if kind == "continue":
        _voice_ranges(path, info, meta)
        penalty = _nats(path, meta, "parallel_penalty")
        if penalty is not None:
            info.parallel_penalty, info.parallels_banned = penalty, False
    return info


def _decoder_rules(path: str, info: ModelInfo, meta: dict) -> None:
    """accompany, optional: `livegen.voice_ranges` ("53-74,48-69,40-64", a MIDI range per
    track, for a melody whose middle lies near 70) and `livegen.parallel_penalty` (nats, 0 to
    20): the voice-leading decoder's rules where the chorale ones (the choral ranges, 3
    nats) do not fit the music the model was fine-tuned on."""
    _voice_ranges(path, info, meta)
    penalty = _nats(path, meta, "parallel_penalty")
    if penalty is not None:
        info.parallel_penalty = penalty


def _nats(path: str, meta: dict, key: str) -> float | None:
    """`livegen.KEY`, a charge in nats (0 to 20), or None where the file has none."""
    text = meta.get(f"livegen.{key}")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ModelError(f"{path}: livegen.{key} must be a number, not {text!r}") from None
    if not 0 <= value <= 20:
        raise ModelError(f"{path}: livegen.{key} {text} lies outside 0..20")
    return value


def _voice_ranges(path: str, info: ModelInfo, meta: dict) -> None:
    """`livegen.voice_ranges`: a MIDI range (LOW-HIGH) per track; for continue also
    `livegen.range_penalty` (0..20 nats a voice's pitch outside its range costs)."""
    text = meta.get("livegen.voice_ranges")
    if text is not None:
        try:
            ranges = [tuple(int(x) for x in part.split("-")) for part in text.split(",")]
        except ValueError:
            raise ModelError(f"{path}: livegen.voice_ranges must be LOW-HIGH per track, e.g. 53-74,48-69, "
                             f"not {text!r}") from None
        if len(ranges) != len(info.tracks) or not all(len(r) == 2 and 0 <= r[0] <= r[1] <= 127 for r in ranges):
            raise ModelError(f"{path}: livegen.voice_ranges {text!r}: one LOW-HIGH (MIDI, LOW <= HIGH) for "
                             f"each of the {len(info.tracks)} tracks")
        info.voice_ranges = ranges
    penalty = _nats(path, meta, "range_penalty") if info.kind == "continue" else None
    if penalty is not None:
        info.range_penalty = penalty
        if penalty and info.voice_ranges is None:
            raise ModelError(f"{path}: livegen.range_penalty needs livegen.voice_ranges")


def _sampling(path: str, info: ModelInfo, meta: dict) -> None:
    """Optional `livegen.temperature` (0..2), `livegen.top_p` (above 0, up to 1) and, for
    continue, `livegen.key_penalty` (0..20 nats): the sampling the model plays with where the
    player sets none (a fine-tune writes them)."""
    for key, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("key_penalty", 0.0, 20.0)):
        text = meta.get(f"livegen.{key}")
        if text is None or (key == "key_penalty" and info.kind != "continue"):
            continue
        try:
            value = float(text)
        except ValueError:
            raise ModelError(f"{path}: livegen.{key} must be a number, not {text!r}") from None
        if not (low <= value <= high and (key != "top_p" or value > 0)):
            raise ModelError(f"{path}: livegen.{key} {value:g} lies outside {low:g}..{high:g}")
        setattr(info, key, value)


def _harmonise_contract(path: str, info: ModelInfo, meta: dict, need, inputs: dict, outputs: dict) -> None:
    """Contract version 2, kind harmonise: `chord` [B, T, 4] int64 (soprano of the step, alto,
    tenor and bass of the step before), `beat_step` [B, T] int64, `state` [layers, B, hidden]
    in; `alto` [B, T, V], `tenor` [B, T, V, V] (a row per alto), `bass` [B, T, V, V] (a row per
    tenor), `state_out` out; V = pitch_count + 1 (the rest)."""
    if meta.get("livegen.tokenizer") != "satb16-v1":
        raise ModelError(f"{path}: livegen.tokenizer must be satb16-v1, not {meta.get('livegen.tokenizer')!r}")
    info.vocab_size = _int(meta, "livegen.vocab_size", path)
    if info.vocab_size != info.pitch_count + 1:
        raise ModelError(f"{path}: livegen.vocab_size must be pitch_count + 1 (the rest) for harmonise")
    _fixed(path, "chord", need(inputs, "chord", 3, "input"), {2: 4})
    need(inputs, "beat_step", 2, "input")
    state = need(inputs, "state", 3, "input")
    v = info.vocab_size
    _fixed(path, "alto", need(outputs, "alto", 3, "output"), {2: v})
    _fixed(path, "tenor", need(outputs, "tenor", 4, "output"), {2: v, 3: v})
    _fixed(path, "bass", need(outputs, "bass", 4, "output"), {2: v, 3: v})
    need(outputs, "state_out", 3, "output")
    if not isinstance(state[0], int) or not isinstance(state[2], int):
        raise ModelError(f"{path}: input `state` must have fixed layers and hidden axes")
    info.state_shape = (state[0], state[2])


def _fixed(path: str, name: str, shape: list, want: dict[int, int]) -> None:
    for axis, size in want.items():
        if isinstance(shape[axis], int) and shape[axis] != size:
            raise ModelError(f"{path}: `{name}` axis {axis} is {shape[axis]}, metadata says {size}")


def cuda_usable() -> bool:
    """True when the CUDA libraries ONNX Runtime needs actually load (asking is not enough)."""
    for lib in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return False
    try:
        ctypes.CDLL("libcudnn.so.9")
    except OSError:
        return False
    return True


def choose_providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in available and cuda_usable()
    if device == "cuda" and not has_cuda:
        raise ModelError("--device cuda: the CUDA provider cannot run here (no CUDA 13 / cuDNN 9 libraries); "
                         "use --device cpu or auto")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if has_cuda else ["CPUExecutionProvider"]


class Model:
    """One ONNX session and its contract info. `run` is called from the worker thread only."""

    def __init__(self, spec: str, device: str = "auto", threads: int = 1):
        import onnxruntime as ort

        path = resolve(spec)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ModelError(f"{path}: cannot read model file ({err.strerror})") from err
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = choose_providers(device)
        try:
            # from the path, not the bytes: handing over bytes holds the GIL while they are copied
            # (13 ms for the Transformer), which would hold up the scheduler during a live switch
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as err:   # onnxruntime raises its own untyped errors for bad files
            raise ModelError(f"{path}: not a loadable ONNX model ({str(err).splitlines()[0][:200]})") from err
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = {i.name: list(i.shape) for i in self.session.get_inputs()}
        outputs = {o.name: list(o.shape) for o in self.session.get_outputs()}
        self.info = check_contract(str(path), meta, inputs, outputs)
        self.provider = self.session.get_providers()[0]
        self.sha256 = hashlib.sha256(data).hexdigest()   # names the model to a remote worker
        self.output_names = list(outputs)

    def run(self, feeds: dict[str, np.ndarray], options=None) -> dict[str, np.ndarray]:
        """One pass. With `options` (an onnxruntime.RunOptions), another thread may stop it
        by setting `options.terminate`; it then raises."""
        return dict(zip(self.output_names, self.session.run(None, feeds, options)))

    def example_feeds(self, batch: int = 1) -> dict[str, np.ndarray]:
        i = self.info
        if i.kind == "accompany":
            feeds = {"melody": np.zeros((batch, i.window_steps, i.pitch_count), np.float32)}
            if i.z_dim:
                feeds["z"] = np.zeros((batch, i.z_dim), np.float32)
            return feeds
        if i.kind == "edit":
            return {"roll": np.zeros((batch, 1, i.window_steps, i.pitch_count), np.float32)}
        if i.kind == "harmonise":
            layers, hidden = i.state_shape
            return {"chord": np.full((batch, 1, 4), i.pitch_count, np.int64), "beat_step": np.zeros((batch, 1), np.int64),
                    "state": np.zeros((layers, batch, hidden), np.float32)}
        layers, two, heads, head_dim = i.past_shape
        return {"input_ids": np.zeros((batch, 1), np.int64),
                "past": np.zeros((layers, two, batch, heads, 0, head_dim), np.float32)}

    def warm_up(self, runs: int = 3) -> float:
        """Run a few passes so the first phrase is not slow; returns the last pass in ms."""
        feeds = self.example_feeds()
        ms = 0.0
        for _ in range(runs):
            t = time.perf_counter()
            self.run(feeds)
            ms = (time.perf_counter() - t) * 1000
        return ms
