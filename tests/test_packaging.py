import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_the_models_and_the_console_script(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("livegen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for model in ("accompany", "edit", "continue", "harmonise"):
        assert f"livegen/models/{model}.onnx" in names
    assert "livegen/models/README.md" in names
    assert any(n.startswith("training/") for n in names) and any(n.startswith("export/") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "livegen = livegen.cli:main" in entry


def test_runtime_never_imports_torch():
    code = ("import sys, livegen.cli, livegen.engine, livegen.render, livegen.models, livegen.generate.edit, "
            "livegen.generate.harmonise; "
            "assert 'torch' not in sys.modules, 'livegen imported torch'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
