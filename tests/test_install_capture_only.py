"""`pip install dimlapse` is the capture side only: its dependencies, and a run recorded in a
fresh virtual environment that holds nothing else."""

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dimlapse"  # the import package (capture/, analyze/, pipelines/ inside it)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CAPTURE_DEPS = {"torch", "numpy", "zarr", "numcodecs", "fsspec", "google_crc32c"}
# distribution name -> import name where they differ
IMPORT_NAME = {"scikit-learn": "sklearn", "google-crc32c": "google_crc32c"}


def _names(requirements: list[str]) -> set[str]:
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}
    return {IMPORT_NAME.get(n, n) for n in names if n != "dimlapse"}


def _third_party_imports(folder: Path, *, skip: tuple[str, ...] = ()) -> set[str]:
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        if set(skip) & set(path.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"dimlapse", "__future__"}


def test_core_dependencies_are_the_capture_side_and_cover_its_imports():
    project = PYPROJECT["project"]
    assert _names(project["dependencies"]) == CAPTURE_DEPS
    capture = PKG / "capture"
    extras = project["optional-dependencies"]
    assert _third_party_imports(capture, skip=("integrations", "ingest")) <= CAPTURE_DEPS
    assert _third_party_imports(capture / "ingest") <= CAPTURE_DEPS | _names(extras["ingest"])
    assert {"analyze", "recipes", "integrations", "export", "dev", "all"} <= set(extras)
    analyze_side = CAPTURE_DEPS | _names(extras["analyze"])
    assert _third_party_imports(PKG / "analyze", skip=("exports",)) <= analyze_side
    export_side = analyze_side | _names(extras["export"])
    assert _third_party_imports(PKG / "analyze" / "exports") <= export_side
    assert {"tensorboard", "pyarrow"} <= export_side - analyze_side  # extras, not the core
    integrations = _third_party_imports(PKG / "capture" / "integrations")
    assert integrations <= CAPTURE_DEPS | _names(extras["integrations"])
    assert "dimlapse[analyze,recipes,integrations]" in extras["all"]
    assert "dimlapse[export,ingest]" in extras["all"]
    make_setup = (ROOT / "Makefile").read_text()
    assert ".[all,dev,ndtracker]" in make_setup  # make setup still installs everything


RUN_IN_FRESH_ENV = """
import importlib.util, sys
import torch, zarr
from dimlapse.capture import Recorder, every_n
from dimlapse.capture import CaptureOptions  # the options of the Recorder and both callbacks
import dimlapse.capture.integrations  # importable without the frameworks

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
with Recorder(model, sys.argv[1], every=every_n(2), probe=x[:8]) as rec:
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.step(loss.detach())
torch.save(model.state_dict(), sys.argv[2])
assert zarr.open_group(sys.argv[1], mode="r").attrs["status"] == "complete"
absent = ["xarray", "dask", "distributed", "scipy", "matplotlib", "transformers", "lightning"]
assert [m for m in absent if importlib.util.find_spec(m) is not None] == [], "not capture-only"
try:
    import dimlapse.capture.integrations.huggingface  # noqa: F401
except ImportError as e:
    assert "pip install 'dimlapse[integrations]'" in str(e), e
else:
    raise AssertionError("the Hugging Face callback imported without transformers")
print("recorded")
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fresh_capture_only_environment_records_a_run(tmp_path):
    """A fresh venv (not --system-site-packages): torch from the local wheels the way
    ``make setup`` installs it, then this repository without extras; a run recorded there
    opens in the analysis environment. About 3-4 minutes on the 2-core machine."""
    from dimlapse.analyze import open_run

    src = tmp_path / "src"  # a copy, so the build leaves nothing in the working tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PKG, src / "dimlapse", ignore=ignore)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    torch_version = __import__("torch").__version__.split("+")[0]
    subprocess.run([*pip, f"torch=={torch_version}"], check=True, env=env)
    subprocess.run([*pip, "--no-build-isolation", str(src)], check=True, env=env)
    t_install = time.perf_counter() - t0
    store, weights = tmp_path / "run.zarr", tmp_path / "final.pt"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", textwrap.dedent(RUN_IN_FRESH_ENV), store, weights],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "recorded" in out.stdout
    run = open_run(store)  # the analysis side reads what the capture-only side wrote
    assert run.attrs["status"] == "complete"
    assert run.weights.step.values.tolist() == [0, 2, 4, 6]
    final = __import__("torch").load(weights)
    np.testing.assert_array_equal(run.weights["2.weight"].values[-1], final["2.weight"].numpy())
    assert run.activations["2"].shape == (4, 8, 2)
    print(f"fresh capture-only environment installed in {t_install:.0f} s")
