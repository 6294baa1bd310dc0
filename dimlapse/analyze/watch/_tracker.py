"""Follow a run store while it is written: read only new complete snapshots, update metrics.

The reader trusts only what a group's ``step`` index (written last at each flush) says is
complete, and re-opens the store at every poll (Zarr caches array metadata, so a long-lived
array object never sees appends): :func:`dimlapse.analyze.open_run` does both. Each poll
reads rows ``[seen, complete)`` of each group, so every snapshot is read and reduced once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import xarray as xr

from .._metrics import SPECTRAL_METRICS, DegenerateSpectrumWarning
from .._run import Run, open_run
from .._spectra import spectra

__all__ = ["NewSnapshots", "Trajectories", "follow_metrics"]

DEFAULT_METRICS = ("stable_rank", "participation_ratio")
_SCALARS = ("loss", "grad_norm")  # checked for non-finite values
_CONTEXT = ("lr", "test_accuracy")  # read too, to name the training event of an alert
SPECTRA_BATCH = 8  # snapshots per spectra call: a whole 64-snapshot flush in float64 is big


@dataclass
class NewSnapshots:
    """What one poll found: new complete snapshots of one kind, and new scalar rows.

    ``steps`` are the new capture steps ``(k,)``; ``nonfinite`` maps an array (layer or
    scalar name) to the new steps at which it held NaN or Inf; ``kind`` says which matrices
    the metrics describe (``activation`` or ``weight``; ``auto`` while a run has not said).
    """

    steps: np.ndarray
    metrics: dict[str, dict[str, np.ndarray]]  # layer -> metric -> (k,)
    nonfinite: dict[str, list[int]] = field(default_factory=dict)
    scalar_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scalars: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (m,)
    kind: str = "auto"


def follow_metrics(s: np.ndarray, metrics: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Metrics ``(k,)`` of spectra ``s`` ``(k, rank)``; degenerate spectra give NaN quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateSpectrumWarning)
        return {m: np.asarray(SPECTRAL_METRICS[m](s), dtype=np.float64) for m in metrics}


class Trajectories:
    """Per-layer dimensionality of a run, extended incrementally as snapshots complete.

    Parameters
    ----------
    path : str, os.PathLike or zarr store
        The run store (it may still be written).
    metrics : tuple of str
        Names in :data:`dimlapse.analyze.SPECTRAL_METRICS` (default stable rank and
        participation ratio).
    kind : {"auto", "activation", "weight"}
        Which matrices: probe activations (sample-centred), weight matrices (not centred),
        or ``auto``: activations when the run records them, else weights.
    max_batch : int
        Most snapshots read by one :meth:`poll` (bounds memory when a watch starts late on a
        long run); :attr:`backlog` says how many complete snapshots remain unread.

    Attributes
    ----------
    steps : numpy.ndarray, shape (t,)
        Capture steps read so far.
    values : dict
        ``layer -> metric -> (t,)`` float64 trajectories, layers in the model's order.
    widths : dict
        ``layer -> min(rows, columns)``, the largest possible rank of the layer's matrices.
    """

    def __init__(
        self,
        path: Any,
        *,
        metrics: tuple[str, ...] = DEFAULT_METRICS,
        kind: str = "auto",
        max_batch: int = 64,
    ) -> None:
        unknown = [m for m in metrics if m not in SPECTRAL_METRICS]
        if not metrics or unknown:
            raise ValueError(
                f"Expected `metrics` to name entries of SPECTRAL_METRICS "
                f"({', '.join(SPECTRAL_METRICS)}), got {metrics!r}"
            )
        if kind not in ("auto", "activation", "weight"):
            raise ValueError(
                f"Expected `kind` to be 'auto', 'activation' or 'weight', got {kind!r}"
            )
        self.run: Run = open_run(path)
        self.metrics = tuple(metrics)
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"Expected `max_batch` to be a positive int, got {max_batch!r}")
        self.max_batch = max_batch
        self.backlog = 0  # complete snapshots not read yet (more than max_batch were new)
        self.requested_kind = kind
        self.kind = kind
        self.steps = np.zeros(0, np.int64)
        self.values: dict[str, dict[str, np.ndarray]] = {}
        self.widths: dict[str, int] = {}
        self.scalar_steps = np.zeros(0, np.int64)
        self.scalars: dict[str, np.ndarray] = {}
        self._seen = 0
        self._seen_scalars = 0

    @property
    def layers(self) -> list[str]:
        """Layers in the model's order (the run's ``modules`` attr), then any others."""
        return list(self.values)

    def _order(self, names: list[str]) -> list[str]:
        order = {m: i for i, m in enumerate(self.run.attrs.get("modules") or [])}
        return sorted(names, key=lambda n: (order.get(n, len(order)), n))

    def _group(self) -> xr.Dataset:
        if self.kind == "auto":
            attrs = self.run.attrs
            flag = attrs.get("activations")  # whether the Recorder captures activations
            if flag is None:  # an older store: decide from what is there
                flag = bool(self.run.activations.data_vars) or None
                if flag is None and attrs.get("status") != "running":
                    flag = False
            if flag is None:
                return xr.Dataset(coords={"step": np.zeros(0, np.int64)})  # decide later
            self.kind = "activation" if flag else "weight"
        return self.run.activations if self.kind == "activation" else self.run.weights

    def poll(self) -> NewSnapshots:
        """Read the snapshots completed since the last poll and extend the trajectories."""
        with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
            # a live store can hold an array folder whose metadata is not written yet; the
            # step index, written last, keeps its rows out of what is read
            warnings.filterwarnings("ignore", message=".*not recognized as a component")
            return self._poll()

    def _poll(self) -> NewSnapshots:
        ds = self._group()
        complete = ds.sizes.get("step", 0)
        new = ds.isel(step=slice(self._seen, self._seen + self.max_batch))
        self.backlog = max(0, complete - self._seen - new.sizes.get("step", 0))
        steps = np.asarray(new["step"].values, dtype=np.int64)  # (k,)
        out: dict[str, dict[str, np.ndarray]] = {}
        nonfinite: dict[str, list[int]] = {}
        names = self._order([str(n) for n in new.data_vars])
        for name in names:
            shape = new[name].shape  # (k, n, d...)
            self.widths.setdefault(name, min(int(shape[1]), int(np.prod(shape[2:]))))
            if not steps.size:
                continue
            arr = new[name].load()  # (k, n, d...) only the new rows
            flat = arr.values.reshape(arr.shape[0], arr.shape[1], -1)  # (k, n, d)
            bad = ~np.isfinite(flat).all(axis=(1, 2))  # (k,)
            if bad.any():
                nonfinite[name] = [int(s) for s in steps[bad]]
            parts = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DegenerateSpectrumWarning)
                for i in range(0, arr.shape[0], SPECTRA_BATCH):  # bounds the float64 copies
                    part = arr.isel({arr.dims[0]: slice(i, i + SPECTRA_BATCH)})
                    parts.append(spectra(part, center=self.kind == "activation").values)
            out[name] = follow_metrics(np.concatenate(parts), self.metrics)  # (k, rank) -> (k,)
        self._seen += steps.size
        self.steps = np.concatenate([self.steps, steps])
        for name, got in out.items():
            layer = self.values.setdefault(name, {m: np.zeros(0) for m in self.metrics})
            for m, v in got.items():
                layer[m] = np.concatenate([layer[m], v])
        scalar_steps, scalars = self._poll_scalars(nonfinite)
        return NewSnapshots(steps, out, nonfinite, scalar_steps, scalars, kind=self.kind)

    def _poll_scalars(self, nonfinite: dict[str, list[int]]) -> tuple[np.ndarray, dict]:
        ds = self.run.scalars.isel(step=slice(self._seen_scalars, None))
        steps = np.asarray(ds["step"].values, dtype=np.int64)  # (m,)
        got = {}
        for name in _SCALARS + _CONTEXT:
            if name in ds.data_vars:
                v = np.asarray(ds[name].values, dtype=np.float64)  # (m,)
                got[name] = v
                bad = ~np.isfinite(v)
                if name in _SCALARS and bad.any():  # test_accuracy is NaN between evaluations
                    nonfinite[name] = [int(s) for s in steps[bad]]
                self.scalars[name] = np.concatenate([self.scalars.get(name, np.zeros(0)), v])
        self._seen_scalars += steps.size
        self.scalar_steps = np.concatenate([self.scalar_steps, steps])
        return steps, got

    def to_dataset(self) -> xr.Dataset:
        """The trajectories so far: one ``(step, layer)`` variable per metric."""
        layers = self.layers
        data = {
            m: (
                ("step", "layer"),
                np.stack([self.values[ly][m] for ly in layers], axis=1)
                if layers
                else np.zeros((self.steps.size, 0)),
                {"long_name": m.replace("_", " "), "units": "1"},
            )
            for m in self.metrics
        }
        return xr.Dataset(
            data,
            coords={"step": self.steps, "layer": np.array(layers, dtype=object)},
            attrs={"kind": self.kind, "run": str(self.run.path)},
        )
