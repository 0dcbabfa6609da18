"""How the logs agent batches, bounds what it holds, retries and saves: ``Tuning``.

Every field is a key of the agent's YAML config (``settings``); ``shipping`` explains how the
bounds work together.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Tuning"]


@dataclass(frozen=True, slots=True)
class Tuning:
    batch_bytes: int = 512 << 10
    """A batch is sent once it carries this many bytes of input..."""
    batch_wait: float = 1.0
    """...or once its first line waited this many seconds."""
    max_inflight: int = 2 << 20
    """Bytes read but not yet confirmed by every sink; reading pauses above it. Four batches:
    one being sent, the next ones ready; more only costs memory (about 2.5 times the bytes, as
    Python objects)."""
    max_lead: int = 8 << 20
    """Bytes reading may run ahead of the committed offsets (at least ``max_inflight``): how far
    the other sinks get while one sink stalls, and at most what a crash replays to them."""
    poll: float = 0.25
    """Seconds between looks at the files when there was nothing new."""
    retry_initial: float = 0.5
    retry_max: float = 30.0
    max_retries: int | None = None
    """Give up on a batch after this many retries (counted as dropped); ``None``: never."""
    checkpoint_interval: float = 1.0
    spool_max: int = 256 << 20
    """Bytes of batches spooled to disk per sink that holds the others back (``spooling``);
    0 turns spooling off."""
    spool_after: float = 5.0
    """Seconds a sink must hold the others back before its batches are spooled."""
