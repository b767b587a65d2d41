"""Temporarily change torch's intra-op thread count (a process-wide setting)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count.

    Small per-frame linear algebra (landmark fitting, tracking) gains nothing from more threads,
    and on shared cores the extra threads only spin, which made fits several times slower.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
