"""The agents' process setup: freed batch-sized buffers are reused, not faulted in anew."""

from __future__ import annotations

import subprocess
import sys

_CHURN = """
import resource, sys
from sidecarkit.agents import process
took = process.keep_freed_memory() if sys.argv[1] == "on" else None
block = b"x" * (3 << 19)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    copy = bytes(bytearray(block))  # 1.5 MiB allocated, written, freed: a batch's life
    del copy
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_batch_sized_buffers_are_reused_instead_of_faulted_in_each_time() -> None:
    took, faults = _faults("on")
    _, default = _faults("off")
    print(f"page faults for 200 buffers of 1.5 MiB: {faults} kept, {default} by default")
    assert took == "True", "glibc took the allocator settings"
    # 200 fresh 1.5 MiB buffers would fault in 200 * 384 pages; reused ones only the first few.
    assert faults < 3 * 384, f"{faults} page faults: freed buffers are not being reused"
