"""Checkpoints as ``ingest`` reads them: names, shapes and dtypes first, then one tensor at a time.

Formats (:func:`open_checkpoint` tells them apart):

- a ``torch.save``d state dict (a file): loaded with ``mmap=True``, so a tensor's bytes are
  paged in from the file when it is read, never the whole checkpoint; the state dict may be
  wrapped (``{"model": ..., "step": ...}``, also ``state_dict``, ``model_state_dict``,
  ``module``), the optimizer's tensors beside it are never read;
- a safetensors file, read per tensor with ``safe_open``;
- a Hugging Face ``save_pretrained`` folder: ``model.safetensors``, or its shards listed in
  ``model.safetensors.index.json``, or ``pytorch_model.bin`` (and its index);
- a ``torch.distributed.checkpoint`` directory (a ``.metadata`` file): each tensor loaded on
  its own with ``dcp.load`` into a tensor of its size.

A checkpoint's step comes from its metadata (``step``, ``global_step`` or ``iteration``
beside the state dict, in the safetensors metadata or the DCP checkpoint, ``global_step`` of
a Hugging Face folder's ``trainer_state.json``), else from its name (``step_1000.pt``,
``checkpoint-500``, ``model_300.safetensors``), else from the caller.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

STEP_KEYS = ("step", "global_step", "iteration")
WRAPPERS = ("model", "state_dict", "model_state_dict", "module")
_NAMED_STEP = re.compile(r"(?:global_step|step|iteration|iter|checkpoint|ckpt)[-_=]?(\d+)$")
_TRAILING = re.compile(r"[-_.](\d+)$")
_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def step_from_name(path: str) -> int | None:
    """The step a file or folder name carries (``step_1000.pt``, ``checkpoint-500``,
    ``model_300.safetensors``, ``step1000``), or None."""
    name = os.path.basename(os.path.normpath(path))
    for suffix in _SUFFIXES:
        name = name.removesuffix(suffix)
    m = _NAMED_STEP.search(name) or _TRAILING.search(name)
    return int(m.group(1)) if m else None


def _as_step(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


class Checkpoint:
    """One checkpoint of a series: its tensors' shapes and dtypes, and a reader per tensor.

    Attributes
    ----------
    source : str
        The path it was opened from.
    kind : str
        ``torch``, ``safetensors``, ``huggingface`` or ``dcp``.
    step : int or None
        The step its metadata or name carries.
    """

    kind = ""

    def __init__(self, source: str) -> None:
        self.source = source
        self.step: int | None = None
        self.specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}

    def read(self, name: str) -> torch.Tensor:
        """One tensor, on the CPU (possibly memory-mapped)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop open files and memory maps; :meth:`read` opens them again when needed."""


class TorchCheckpoint(Checkpoint):
    """A ``torch.save``d state dict, memory-mapped (``torch.load(..., mmap=True)``)."""

    kind = "torch"

    def __init__(self, source: str, files: list[str] | None = None) -> None:
        super().__init__(source)
        self.files = files or [source]
        self.tensors: dict[str, torch.Tensor] = {}
        for path in self.files:
            self._load(path)
        self.specs = {n: (tuple(t.shape), t.dtype) for n, t in self.tensors.items()}

    def _load(self, path: str) -> None:
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"Could not read {path!r} as a torch.save state dict: it is not in torch.save's "
                "zip format (a legacy-format file cannot be memory-mapped: re-save it with "
                "torch.save); the other formats are .safetensors files, Hugging Face "
                "save_pretrained folders and torch.distributed.checkpoint directories"
            )
        try:
            obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # torch raises several types; each becomes one clear refusal
            raise ValueError(
                f"Could not read {path!r} as a torch.save state dict ({type(exc).__name__}: "
                f"{str(exc)[:200]}); expected a torch.save file, a .safetensors file, a Hugging "
                "Face save_pretrained folder or a torch.distributed.checkpoint directory"
            ) from exc
        if not isinstance(obj, dict):
            raise ValueError(
                f"Expected {path!r} to hold a state dict (a dict of tensors), got "
                f"{type(obj).__name__}"
            )
        for key in STEP_KEYS:
            if self.step is None and key in obj:
                self.step = _as_step(obj[key])
        sd = obj
        for key in WRAPPERS:
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                sd = inner
                break
        tensors = {
            k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)
        }
        if not tensors:
            raise ValueError(
                f"Expected {path!r} to hold a state dict of tensors (or one under "
                f"{', '.join(map(repr, WRAPPERS))}), found keys {sorted(map(str, obj))[:8]}"
            )
        self.tensors.update(tensors)

    def read(self, name: str) -> torch.Tensor:
        if not self.tensors:  # closed after its names were read: map it again
            for path in self.files:
                self._load(path)
        return self.tensors[name]

    def close(self) -> None:
        self.tensors.clear()  # the last reference to the memory map


class SafetensorsCheckpoint(Checkpoint):
    """One or more safetensors files (a sharded folder: one handle per shard, opened lazily)."""

    kind = "safetensors"

    def __init__(self, source: str, weight_map: dict[str, str] | None = None) -> None:
        super().__init__(source)
        from safetensors import safe_open

        self._open = safe_open
        files = sorted(set(weight_map.values())) if weight_map else [source]
        self.file_of: dict[str, str] = {}
        self.handles: dict[str, Any] = {}
        for path in files:
            f = self._handle(path)
            meta = f.metadata() or {}
            for key in STEP_KEYS:
                if self.step is None and key in meta:
                    self.step = _as_step(meta[key])
            for name in f.keys():
                piece = f.get_slice(name)
                self.specs[name] = (tuple(piece.get_shape()), _DTYPES[piece.get_dtype()])
                self.file_of[name] = path

    def _handle(self, path: str) -> Any:
        if path not in self.handles:
            self.handles[path] = self._open(path, framework="pt", device="cpu")
        return self.handles[path]

    def read(self, name: str) -> torch.Tensor:
        return self._handle(self.file_of[name]).get_tensor(name)

    def close(self) -> None:
        self.handles.clear()


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class DCPCheckpoint(Checkpoint):
    """A ``torch.distributed.checkpoint`` directory; each tensor loaded on its own."""

    kind = "dcp"

    def __init__(self, source: str) -> None:
        super().__init__(source)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        self._dcp = dcp
        meta = dcp.FileSystemReader(source).read_metadata().state_dict_metadata
        tensors = {
            fqn: (tuple(m.size), m.properties.dtype)
            for fqn, m in meta.items()
            if isinstance(m, TensorStorageMetadata)
        }
        self.fqn: dict[str, str] = {}
        for wrapper in WRAPPERS:  # {"model": sd, "optimizer": ...} is saved as "model.<name>"
            inner = {f: s for f, s in tensors.items() if f.startswith(f"{wrapper}.")}
            if inner:
                tensors = inner
                self.fqn = {f.removeprefix(f"{wrapper}."): f for f in inner}
                break
        else:
            self.fqn = {f: f for f in tensors}
        self.specs = {name: tensors[f] for name, f in self.fqn.items()}
        steps = [k for k in STEP_KEYS if k in meta and k not in tensors]
        if steps:
            holder: dict[str, Any] = {steps[0]: 0}
            self._load(holder)
            self.step = _as_step(holder[steps[0]])

    def _load(self, state: dict[str, Any]) -> None:
        import torch.distributed as dist

        single = not (dist.is_available() and dist.is_initialized())
        reader = self._dcp.FileSystemReader(self.source)
        with warnings.catch_warnings():  # said on every single-process load, even when asked
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            self._dcp.load(state, storage_reader=reader, no_dist=single)

    def read(self, name: str) -> torch.Tensor:
        shape, dtype = self.specs[name]
        out = {self.fqn[name]: torch.empty(shape, dtype=dtype)}
        self._load(out)
        return out[self.fqn[name]]


def _huggingface(path: Path) -> Checkpoint:
    """A ``save_pretrained`` folder: safetensors (single or sharded) or pytorch_model.bin."""
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = path / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            weight_map = {k: str(path / v) for k, v in weight_map.items()}
            if single.endswith(".safetensors"):
                ckpt: Checkpoint = SafetensorsCheckpoint(str(path), weight_map)
            else:
                ckpt = TorchCheckpoint(str(path), sorted(set(weight_map.values())))
            break
        if (path / single).is_file():
            if single.endswith(".safetensors"):
                ckpt = SafetensorsCheckpoint(str(path / single))
            else:
                ckpt = TorchCheckpoint(str(path / single))
            ckpt.source = str(path)
            break
    else:
        raise ValueError(f"{str(path)!r} holds no model weights")
    ckpt.kind = "huggingface"
    state = path / "trainer_state.json"
    if ckpt.step is None and state.is_file():
        ckpt.step = _as_step(json.loads(state.read_text()).get("global_step"))
    return ckpt


def open_checkpoint(source: str | os.PathLike[str]) -> Checkpoint:
    """Open one checkpoint of any supported format (see the module docstring).

    Raises
    ------
    FileNotFoundError
        When ``source`` does not exist.
    ValueError
        When it is none of the supported formats.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"Expected a checkpoint at {str(source)!r}, found nothing there")
    if path.is_dir():
        if (path / ".metadata").is_file():
            ckpt: Checkpoint = DCPCheckpoint(str(path))
        elif any((path / n).is_file() for n in _HF_FILES):
            ckpt = _huggingface(path)
        else:
            raise ValueError(
                f"Expected {str(source)!r} to be a Hugging Face save_pretrained folder (with "
                f"{' or '.join(_HF_FILES[:2])}) or a torch.distributed.checkpoint directory "
                "(with .metadata), found neither"
            )
    elif path.suffix == ".safetensors":
        ckpt = SafetensorsCheckpoint(str(path))
    else:
        ckpt = TorchCheckpoint(str(path))
    if ckpt.step is None:
        ckpt.step = step_from_name(str(path))
    return ckpt


_HF_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
