"""The CPU memory arena of the float32 CPU eval forwards (``csrc/cpu/inference_arena.cpp``).

glibc gives large freed blocks back to the kernel, so each forward page-faulted every intermediate
again (batch 256: 1019 ms against 808 ms when glibc was told to keep them; issue 17). Inside
``scope()`` the CPU allocator is the arena, which keeps freed blocks by size and hands them out again:
after the first call, a forward of the same shapes takes nothing from the system.

* ``scope()``: a context manager; a no-op where the extension is not built or another allocator
  with a higher priority is installed. While it is open, every CPU allocation of the process goes
  through the (thread-safe) arena.
* ``release()``: returns every cached block to the system; the bytes freed.
* ``stats()``: ``ArenaStats(cached_bytes, live_blocks, hits, misses)``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

import torch

from . import mbconv_op


class ArenaStats(NamedTuple):
    cached_bytes: int   # freed blocks kept for reuse
    live_blocks: int    # blocks handed out and not freed yet
    hits: int           # allocations served from the cache (since the process started)
    misses: int         # allocations taken from the system


def available() -> bool:
    """Whether the extension with the arena ops is built and loads here."""
    return mbconv_op.available() and hasattr(torch.ops.yyfast, "arena_enter")


@contextlib.contextmanager
def scope() -> Iterator[bool]:
    """Allocate CPU tensors from the arena inside the ``with`` block; yields whether it is in use."""
    entered = available() and bool(torch.ops.yyfast.arena_enter())
    try:
        yield entered
    finally:
        if entered:
            torch.ops.yyfast.arena_exit()


def release() -> int:
    """Return the arena's cached blocks to the system; the number of bytes freed (0 without the extension)."""
    return int(torch.ops.yyfast.arena_release()) if available() else 0


def stats() -> ArenaStats:
    """The arena's counters (all 0 without the extension)."""
    return ArenaStats(*torch.ops.yyfast.arena_stats()) if available() else ArenaStats(0, 0, 0, 0)
