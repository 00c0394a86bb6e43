"""Output buffers reused from batch to batch on a CPU training device.

A fresh float32 batch of a few MB costs its page faults every time on a small VM (each new
allocation of that size is a fresh mapping): more than filling it. So the CPU expansion
(:mod:`datasets.pose.cpu_render`, :mod:`datasets.shards.cpu_images`) writes into buffers
kept here, handed out as tensors that view them.

A buffer is handed out again only when nothing outside the pool still references its memory
(a batch the consumer kept, or any view of it); otherwise a new one is allocated. The check
reads the storage's reference count (``torch._C._storage_Use_Count``, the same check torch's
own CUDA-graph pool relies on); without it the pool never reuses and stays correct.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

MAX_POOLED = 4  # buffers kept per shape; a consumer holding more batches gets fresh ones


def use_count(t: torch.Tensor) -> int | None:
    counter = getattr(torch._C, "_storage_Use_Count", None)
    return None if counter is None else int(counter(t.untyped_storage()._cdata))


class Buffer:
    """One float32 array, its tensor, and what its last user left in it (``state``)."""

    def __init__(self, shape: tuple[int, ...], zeroed: bool) -> None:
        self.array = np.zeros(shape, np.float32) if zeroed else np.empty(shape, np.float32)
        self.tensor = torch.from_numpy(self.array)
        self.idle = use_count(self.tensor)  # the count with only the pool holding it
        self.state: Any = None

    def free(self) -> bool:
        return self.idle is not None and use_count(self.tensor) == self.idle

    def view(self) -> torch.Tensor:
        """What to hand out: a view, so that while it (or any view of it) lives the buffer is busy."""
        return self.tensor.view(self.array.shape)


class BufferPool:
    """Free buffers by shape; ``zeroed`` pools start their buffers at zero."""

    def __init__(self, zeroed: bool = False) -> None:
        self.zeroed = zeroed
        self.buffers: list[Buffer] = []

    def take(self, shape: tuple[int, ...]) -> Buffer:
        for buf in self.buffers:
            if buf.array.shape == shape and buf.free():
                return buf
        buf = Buffer(shape, self.zeroed)
        if sum(b.array.shape == shape for b in self.buffers) < MAX_POOLED:
            self.buffers.append(buf)
        return buf
