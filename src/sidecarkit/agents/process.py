"""Running an agent as the process's main job: until SIGTERM or SIGINT, on uvloop if present."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

__all__ = ["run_agent"]


def run_agent(instance: Any) -> None:
    """Run ``instance.run()`` until SIGTERM or SIGINT calls ``instance.stop()``."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, instance.stop)
        await instance.run()

    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
