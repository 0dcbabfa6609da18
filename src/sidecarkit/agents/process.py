"""Running an agent as the process's main job: until SIGTERM or SIGINT, on uvloop if present."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
from typing import Any

__all__ = ["keep_freed_memory", "run_agent"]

log = logging.getLogger("sidecarkit.agent")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 4 << 20
"""Blocks up to this size come from the heap, not from a fresh ``mmap`` each."""
TRIM_THRESHOLD = 4 << 20
"""Free memory at the top of the heap kept for reuse, up to this much."""


def keep_freed_memory() -> bool:
    """Have glibc's allocator reuse freed blocks of a few hundred KiB instead of returning
    them to the kernel at once; True if the allocator took the settings.

    An agent allocates and frees a batch-sized buffer (0.5-2 MiB) many times a second. By
    default glibc serves such blocks with ``mmap`` (or trims the heap after them) and the next
    one starts as untouched pages, each faulted in again: a copy of 1 MiB then costs ten times
    what it should. Keeping up to ``TRIM_THRESHOLD`` free at the top of the heap bounds the
    memory this holds; on other C libraries nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_took: int = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trim_took: int = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return mmap_took == 1 and trim_took == 1


def run_agent(instance: Any) -> None:
    """Run ``instance.run()`` until SIGTERM or SIGINT calls ``instance.stop()``, on uvloop
    unless it is missing or ``SIDECARKIT_LOOP=asyncio`` asks for the stdlib loop."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, instance.stop)
        await instance.run()

    if not keep_freed_memory():
        log.debug("the C library has no mallopt: allocator left at its defaults")
    if os.environ.get("SIDECARKIT_LOOP") == "asyncio":  # the stdlib loop, e.g. to compare
        asyncio.run(main())
        return
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
