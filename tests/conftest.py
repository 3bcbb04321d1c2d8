"""Session fixtures: a JACK server of our own (dummy driver), and the tiny test models."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from livegen.ports import JACK_DUMMY_ARGS
from tests import tinymodels
from tests.jackmidi import Daemon, stop_jackd

ROOT = Path(__file__).resolve().parent.parent
JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


@pytest.fixture(scope="session")
def jack_server():
    """A JACK server under a unique name, used through JACK_DEFAULT_SERVER by every client."""
    if shutil.which("jackd") is None:
        pytest.fail("jackd is not installed (apt-get install --no-install-recommends jackd2): "
                    "the MIDI port tests need a JACK server")
    name = f"lgtest-{uuid.uuid4().hex[:8]}"
    old = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    os.environ["JACK_NO_START_SERVER"] = "1"
    log = open(f"/tmp/{name}.log", "w+")
    proc = subprocess.Popen(["jackd", "-n", name, *JACK_DUMMY_ARGS],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while subprocess.run(["jack_lsp"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            log.seek(0)
            said = log.read()[-600:]
            hint = ("\n(JACK's registry in /dev/shm holds servers that were killed: with no jackd running, "
                    "`rm -rf /dev/shm/jack*` clears it)" if "Too many servers" in said else "")
            pytest.fail(f"could not start jackd -d dummy:\n{said}{hint}")
        time.sleep(0.1)
    time.sleep(1.0)   # let the new server settle before the first clients connect
    yield name
    stop_jackd(proc)
    log.close()
    if old is None:
        os.environ.pop("JACK_DEFAULT_SERVER", None)
    else:
        os.environ["JACK_DEFAULT_SERVER"] = old


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def shift_model(models_dir) -> Path:
    """alto = melody - 3, tenor = melody - 12, bass = melody - 24 semitones."""
    return tinymodels.shift_accompany(models_dir / "shift.onnx")


@pytest.fixture(scope="session")
def one_key_continue(models_dir) -> Path:
    """The bundled `continue` model's Transformer in one key, as it was shipped before it was
    heard in five (its weights read back and exported alone): for the tests of follow mode's
    rules that decode thousands of steps with guesses, at a fifth of the five keys' cost."""
    torch = pytest.importorskip("torch", reason="the training extra (torch) makes the one-key file")
    from export.onnx_export import export
    from livegen.models import resolve
    from training.from_onnx import checkpoint_from_onnx

    weights = checkpoint_from_onnx(resolve("continue"))
    weights.pop("calibration", None)
    torch.save(weights, models_dir / "one-key.pt")
    return Path(export(models_dir / "one-key.pt", models_dir / "one-key.onnx")["file"])


@pytest.fixture(scope="session")
def jsb_path() -> Path:
    if not JSB.exists():
        pytest.fail(f"{JSB} is missing: the JSB benchmark data lives in ../shared/data/jsb beside the project")
    return JSB


@pytest.fixture(autouse=True)
def daemon_logs():
    """After each test, the log of every daemon it started (pytest shows it when the test
    failed: how a daemon that crashed or answered wrongly got there)."""
    Daemon.started.clear()
    yield
    for d in Daemon.started:
        print(f"---- livegen {d.client}: exit {d.proc.poll()}, log {d.log_path}")
        print(d.output())
    Daemon.started.clear()
