"""Capture says what it does: one line at start and one at close, seen without configuring logging,
silenced by the logging level; the same through the callbacks' Recorder."""

import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from dimlapse.capture import CaptureOptions, Recorder

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import torch
    from dimlapse.capture import CaptureOptions, Recorder

    if sys.argv[2] == "quiet":
        logging.getLogger("dimlapse.capture").setLevel(logging.WARNING)
    if sys.argv[2] == "configured":
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="USER %(message)s")
    model = torch.nn.Linear(4, 3)
    opts = CaptureOptions(total_steps=10)
    with Recorder(model, sys.argv[1], every=5, probe=torch.randn(8, 4), options=opts) as rec:
        for _ in range(10):
            rec.step(loss=0.5)
    """
)


def _run(tmp_path, how):
    script = tmp_path / "user.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    store = tmp_path / f"{how}.zarr"
    out = subprocess.run([sys.executable, str(script), str(store), how], env=env,
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return store, out


def test_a_plain_script_sees_one_line_at_start_and_one_at_close(tmp_path):
    store, out = _run(tmp_path, "plain")
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("dimlapse:")]
    assert len(lines) == 2, out.stderr
    start, close = lines
    assert f"recording into {store}" in start and "(mode weights, codec lz4" in start
    assert "per snapshot" in start and "for 3 snapshots" in start  # total_steps=10, every=5
    assert f"{store} complete: 10 steps, 3 snapshots" in close
    assert "written" in close and "compression" in close and "writer CPU" in close


def test_the_logging_level_silences_them(tmp_path):
    _, out = _run(tmp_path, "quiet")
    assert "dimlapse:" not in out.stderr and "dimlapse:" not in out.stdout


def test_configured_logging_gets_them_once(tmp_path):
    _, out = _run(tmp_path, "configured")
    assert "dimlapse:" not in out.stderr  # not twice: the fallback stays quiet
    ours = [ln for ln in out.stdout.splitlines() if ln.startswith("USER dimlapse:")]
    assert len(ours) == 2, out.stdout


def test_start_line_without_total_steps_says_per_run_is_unknown(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dimlapse.capture")
    model = nn.Linear(4, 3)
    rec = Recorder(model, tmp_path / "r.zarr", every=1, options=CaptureOptions(mode="weights"))
    rec.step(loss=1.0)
    rec.close()
    msgs = [r.getMessage() for r in caplog.records if r.name == "dimlapse.capture"]
    starts = [m for m in msgs if "recording into" in m]
    closes = [m for m in msgs if " complete: " in m]
    assert len(starts) == 1 and "per run: unknown" in starts[0]
    assert len(closes) == 1 and "1 steps, 2 snapshots" in closes[0]


def test_a_degraded_close_says_degraded(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dimlapse.capture")
    store = tmp_path / "r.zarr"
    rec = Recorder(nn.Linear(4, 3), store, every=1, options=CaptureOptions(mode="weights"))
    os.kill(rec._session.handle.process.pid, 9)
    rec._session.handle.process.join(10)
    for _ in range(3):
        rec.step(loss=1.0)
    rec.close()
    closes = [r.getMessage() for r in caplog.records if f"{store} degraded:" in r.getMessage()]
    assert len(closes) == 1


def test_the_lightning_callback_says_the_same_two_lines(tmp_path, caplog):
    pl = pytest.importorskip("lightning.pytorch")
    from dimlapse.capture.integrations.lightning import DimlapseCallback

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    caplog.set_level(logging.INFO, logger="dimlapse.capture")
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(2, (32,)))
    store = tmp_path / "run.zarr"
    cb = DimlapseCallback(store, every=2, probe=torch.randn(8, 4))
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=[cb])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on dataloader workers
        trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
    del trainer
    msgs = [r.getMessage() for r in caplog.records if r.name == "dimlapse.capture"]
    assert sum(f"recording into {store}" in m for m in msgs) == 1, msgs
    assert sum(f"{store} complete: 6 steps" in m for m in msgs) == 1, msgs


def test_lightning_logs_in_a_checkout_are_ignored():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["git", "check-ignore", "-q", "lightning_logs/version_0/x"], cwd=root)
    assert out.returncode == 0
