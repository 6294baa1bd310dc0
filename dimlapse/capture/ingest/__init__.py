"""Checkpoint series into run stores: :func:`ingest`.

- ``_sources``: the checkpoint formats (``torch.save`` state dicts, safetensors files, Hugging
  Face ``save_pretrained`` folders, ``torch.distributed.checkpoint`` directories), read one
  tensor at a time (:func:`open_checkpoint`, :func:`step_from_name`);
- ``_ingest``: the series into a run store, content hashes and ``duplicate_snapshots``,
  activations through ``replay`` (:func:`ingest`).
"""

from ._ingest import HASH, ingest
from ._sources import Checkpoint, open_checkpoint, step_from_name

__all__ = ["HASH", "Checkpoint", "ingest", "open_checkpoint", "step_from_name"]
