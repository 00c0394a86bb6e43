"""Batch images from loader workers through shared memory instead of the result pipe.

A DataLoader worker's batch travels through a pipe, pickled: on a small VM that costs more
than decoding it (a 541 KB batch of 8 pairs at 128×88: 2.7 ms, against 0.06 ms for a 1 KB
message; ``multiprocessing.Queue`` measured alone). So the images go into a ring of slots in
one shared-memory tensor made before the workers start, and the pipe carries only the slot's
address with the small fields (names, keypoints, boxes); the consumer copies the images out.

Small batches travel ``chunk`` at a time (one message for several batches): a message has a
fixed cost (~1.7 ms of CPU between worker and consumer here) as large as making a batch of 8
pairs at 128×88. Slot reuse needs no lock: a worker is given a new message to make only when
the consumer has taken one of its earlier ones (the DataLoader keeps at most
``prefetch_factor`` messages per worker in flight, and the consumer copies every batch of a
message before it asks for the next), so with ``(prefetch_factor + 1) · chunk`` slots per
worker a slot is never rewritten before it was read.
Each slot also carries the sequence number of the batch in it, checked before and after the
copy: a violation of that rule is an error, never silently mixed images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

_HEADER = 64  # bytes before each slot's images: the int64 sequence number, then padding
log = logging.getLogger("attnflow.data")


@dataclass(frozen=True)
class Layout:
    """Which image arrays a batch holds, each uint8 [B, H, W, C]."""

    fields: tuple[tuple[str, tuple[int, int, int]], ...]  # (name, (H, W, C))
    batch: int

    def field_bytes(self, hwc: tuple[int, int, int]) -> int:
        return self.batch * hwc[0] * hwc[1] * hwc[2]

    @property
    def slot_bytes(self) -> int:
        return _HEADER + sum(self.field_bytes(hwc) for _, hwc in self.fields)


class SlotRing:
    """``workers × slots`` batch slots in shared memory (see module doc)."""

    def __init__(self, layout: Layout, workers: int, messages: int, chunk: int = 1) -> None:
        # A pipe message carries `chunk` batches; `messages` may be in flight per worker.
        self.layout, self.workers, self.chunk = layout, workers, chunk
        self.slots = messages * chunk
        # A torch tensor in shared memory: pickled to spawned workers by handle, inherited by
        # forked ones, freed with its last reference (no named segment to leak or unlink).
        self.memory = torch.zeros((workers, self.slots, layout.slot_bytes), dtype=torch.uint8).share_memory_()
        self.sent = [0] * workers  # worker side: batches written by each worker id

    def _views(self, worker: int, slot: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raw = self.memory[worker, slot].numpy()
        seq = raw[:8].view(np.int64)
        arrays, offset = {}, _HEADER
        for name, hwc in self.layout.fields:
            size = self.layout.field_bytes(hwc)
            arrays[name] = raw[offset : offset + size].reshape(self.layout.batch, *hwc)
            offset += size
        return seq, arrays

    def put(
        self, worker: int, images: Mapping[str, np.ndarray | list[np.ndarray]]
    ) -> tuple[int, int, int, int]:
        """Write a batch's uint8 images (NHWC stacks, or lists of HWC images stacked straight into
        the slot); returns the address for the pipe."""
        n = self.sent[worker]
        self.sent[worker] += 1
        slot = n % self.slots
        seq, arrays = self._views(worker, slot)
        count = 0
        for name, stack in images.items():
            count = len(stack)
            if count > self.layout.batch:
                raise ValueError(f"batch of {count} does not fit slots of {self.layout.batch}")
            if isinstance(stack, list):
                np.stack(stack, out=arrays[name][:count])
            else:
                np.copyto(arrays[name][:count], stack)
        seq[0] = n
        return worker, slot, n, count

    def take(self, address: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
        """Copy a batch's images out of its slot (the consumer side)."""
        worker, slot, n, count = address
        seq, arrays = self._views(worker, slot)
        before = int(seq[0])
        out = {name: a[:count].copy() for name, a in arrays.items()}
        if before != n or int(seq[0]) != n:
            raise RuntimeError(
                f"loader worker {worker} rewrote shared-memory slot {slot} (batch {n}, found "
                f"{before} then {int(seq[0])}) before it was read: more batches in flight "
                f"than the ring's {self.slots} slots"
            )
        return out


def shm_free_bytes(path: str = "/dev/shm") -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


MESSAGE_BYTES = 4 << 20  # images per pipe message, about: what amortises a message's fixed cost
MAX_CHUNK = 8


def chunk_for(layout: Layout) -> int:
    """Batches per pipe message: small batches travel several at a time (a message's fixed cost,
    ~1.7 ms of CPU between worker and consumer here, was as much as making a 541 KB batch)."""
    return max(1, min(MAX_CHUNK, MESSAGE_BYTES // layout.slot_bytes))


def make_ring(layout: Layout, workers: int, messages: int, chunked: bool = True) -> SlotRing | None:
    """A ring when shared memory has room for it (at most half of what is free), else None: the
    batches then go through the pipe. A full tmpfs would kill a worker with SIGBUS mid-write
    (containers often mount a 64 MB /dev/shm), so this is checked before anything is written.
    ``chunked=False`` sends one batch per message: what an in-order loader needs, whose batches
    the DataLoader's round-robin over workers puts back in sequence one message at a time."""
    chunk = chunk_for(layout) if chunked else 1
    slots = messages * chunk
    need = workers * slots * layout.slot_bytes
    free = shm_free_bytes()
    if free is not None and need > free // 2:
        log.warning(
            "loader: %d MB of batch slots would not fit in /dev/shm (%d MB free); sending batches "
            "through the worker pipes instead (slower; give the container more shared memory)",
            need >> 20,
            free >> 20,
        )
        return None
    return SlotRing(layout, workers, messages, chunk)
