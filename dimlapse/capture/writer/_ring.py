"""A preallocated ring of snapshot slots in shared memory, bounded in bytes.

The training thread copies a snapshot (every parameter and buffer, plus pending scalar values)
into a free slot with one batched copy (``torch._foreach_copy_``: no allocation, no Python per
value); the writer reads the slot in place and frees it. Slots are used and freed in ring
order, so one counting semaphore of free slots is the whole protocol.

Layout of one slot (bytes, each tensor 64-byte aligned, in its own dtype)::

    [tensor 0][tensor 1]...[tensor T-1][scalar area: float64 x scalar_capacity]

The memory is one ``torch.uint8`` tensor moved to shared memory (``share_memory_``), so a
forked or spawned writer process maps the same pages. On CUDA the ring is page-locked
(``cudaHostRegister``) so device-to-host copies run asynchronously on a side stream.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

log = logging.getLogger("dimlapse.capture")

ALIGN = 64
MIN_SLOTS, MAX_SLOTS = 2, 128
# 256 MiB: a small fraction of any training host's memory; at the study MLP's ~0.2 MB per
# snapshot it holds the 128-slot cap (a queue of 64-128 snapshots kept the training thread's
# p99 wait under 10 ms), and a ~30M-parameter model still gets two slots.
DEFAULT_MAX_BUFFER_BYTES = 256 * 2**20


@dataclass(frozen=True)
class SlotLayout:
    """Where each tensor of a snapshot lives inside a slot (picklable; sent to the writer)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    offsets: tuple[int, ...]
    scalar_offset: int
    scalar_capacity: int
    slot_bytes: int

    @classmethod
    def of(cls, named: list[tuple[str, torch.Tensor]], *, scalar_capacity: int) -> SlotLayout:
        offsets, at = [], 0
        for _, t in named:
            offsets.append(at)
            at += _aligned(t.numel() * t.element_size())
        scalar_offset = at
        at += _aligned(8 * scalar_capacity)
        return cls(
            names=tuple(n for n, _ in named),
            shapes=tuple(tuple(t.shape) for _, t in named),
            dtypes=tuple(t.dtype for _, t in named),
            offsets=tuple(offsets),
            scalar_offset=scalar_offset,
            scalar_capacity=scalar_capacity,
            slot_bytes=at,
        )


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def slot_count(layout: SlotLayout, max_buffer_bytes: int) -> int:
    """Slots that fit ``max_buffer_bytes``, clamped to [2, 128] (two are needed to overlap)."""
    fit = max_buffer_bytes // max(layout.slot_bytes, 1)
    if fit < MIN_SLOTS:
        log.warning(
            "dimlapse: max_buffer_bytes=%d holds fewer than 2 snapshots of %d bytes; using 2 "
            "slots (%d bytes). Raise max_buffer_bytes, or record fewer parameters.",
            max_buffer_bytes,
            layout.slot_bytes,
            2 * layout.slot_bytes,
        )
    return max(MIN_SLOTS, min(MAX_SLOTS, fit))


class Ring:
    """The shared memory and per-slot views (built once; the hot path only indexes them)."""

    def __init__(self, layout: SlotLayout, n_slots: int, *, memory: torch.Tensor | None = None):
        self.layout = layout
        self.n_slots = n_slots
        if memory is None:
            memory = torch.empty(n_slots * layout.slot_bytes, dtype=torch.uint8).share_memory_()
            memory.zero_()  # fault every page in now, at start-up, not on the first captures
        self.memory = memory  # (n_slots * slot_bytes,) uint8, shared
        self.views: list[list[torch.Tensor]] = []  # [slot][tensor]
        self.scalars: list[torch.Tensor] = []  # [slot] (scalar_capacity,) float64
        for i in range(n_slots):
            base = i * layout.slot_bytes
            views = []
            for shape, dtype, off in zip(layout.shapes, layout.dtypes, layout.offsets, strict=True):
                nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
                raw = memory[base + off : base + off + nbytes]
                views.append(raw.view(dtype).view(shape))
            self.views.append(views)
            off = base + layout.scalar_offset
            self.scalars.append(memory[off : off + 8 * layout.scalar_capacity].view(torch.float64))
        self.pinned = False

    def pin(self) -> None:
        """Page-lock the ring for asynchronous device-to-host copies (CUDA only)."""
        cudart = torch.cuda.cudart()
        err = cudart.cudaHostRegister(self.memory.data_ptr(), self.memory.numel(), 0)
        if int(err) != 0:
            log.warning("dimlapse: could not page-lock the ring (cuda error %s)", err)
            return
        self.pinned = True

    def unpin(self) -> None:
        if self.pinned:
            torch.cuda.cudart().cudaHostUnregister(self.memory.data_ptr())
            self.pinned = False

    def release(self) -> None:
        """Drop this process's references to the shared memory (after the writer stopped),
        so it is freed even while the Recorder object stays referenced."""
        self.unpin()
        self.memory = torch.empty(0, dtype=torch.uint8)
        self.views, self.scalars = [], []

    @property
    def nbytes(self) -> int:
        return self.n_slots * self.layout.slot_bytes
