"""Make variables reach the command quoted, never through the
shell. Run for real: the injected command would create a file."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("target", ["analyze", "report"])
def test_make_variables_are_not_run_by_the_shell(tmp_path, target):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        ["make", "-f", str(ROOT / "Makefile"), target, "RUN=x; touch f",
         f"DIMLAPSE={sys.executable} -m dimlapse"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert not (tmp_path / "f").exists(), "the shell ran the injected `touch f`"
    assert out.returncode != 0  # the run named 'x; touch f' does not exist
    assert "x; touch f" in out.stdout + out.stderr  # it reached the command as one argument
