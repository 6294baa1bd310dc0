"""The writer side of capture: ring -> writer (process or thread) -> chunked Zarr store.

- ``_ring``: the shared-memory ring of snapshot slots (:class:`Ring`, :class:`SlotLayout`,
  :func:`slot_count`), bounded in bytes;
- ``_handle``: starting the writer (:func:`start_writer`) and the training thread's
  :class:`WriterHandle` (free slots, messages, failure flag, close);
- ``_serve``: the writer's loop, its message grammar and failure policy;
- ``_work``: what the writer does with one slot (:class:`WorkSpec`, probe forward, spectra);
- ``_sink``, ``_chunks``: rows into whole chunks of the store groups (:class:`SnapshotSink`),
  the codecs (:func:`parse_codec`) and the crash rule (the ``step`` index written last);
- ``_shards``: sharded runs, each rank writing its blocks of the same arrays
  (:class:`ShardSpec`, :func:`declare_sharded`);
- ``_encode``: whole chunks encoded and written without zarr's pipeline (zarr reads them back
  as its own; :func:`zarr_writes` turns it off, for a control).

The writer opens the store through :mod:`dimlapse.capture.store` and is told how to run the
probe (``WorkSpec.forward``): it imports nothing else from ``capture``.
"""

from ._chunks import DEFAULT_CODEC, parse_codec, quiet_numcodecs
from ._encode import zarr_writes
from ._handle import WriterHandle, start_writer
from ._ring import DEFAULT_MAX_BUFFER_BYTES, Ring, SlotLayout, slot_count
from ._shards import Block, ShardSpec, block_of, declare_sharded
from ._sink import SnapshotSink, owner
from ._work import SlotValue, WorkSpec, host

__all__ = [
    "DEFAULT_CODEC",
    "DEFAULT_MAX_BUFFER_BYTES",
    "Block",
    "Ring",
    "ShardSpec",
    "SlotLayout",
    "SlotValue",
    "SnapshotSink",
    "WorkSpec",
    "WriterHandle",
    "block_of",
    "declare_sharded",
    "host",
    "owner",
    "parse_codec",
    "quiet_numcodecs",
    "slot_count",
    "start_writer",
    "zarr_writes",
]
