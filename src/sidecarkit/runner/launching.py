"""``sidecarkit run``: plan the pod, run it, show its output and events, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sidecarkit.runner import containing, expanding, planning, processes, running

__all__ = ["launch"]

_COLOURS: Final = (36, 33, 35, 32, 34, 31, 96, 93)


def _write(stream: Any, text: str) -> None:
    """Write and flush; once the reader is gone (``| head``), drop output and run on.

    The pod must not fail because nobody reads its output any more; the stream is pointed at
    /dev/null so that later writes, and the interpreter's last flush, cost nothing and raise
    nothing.
    """
    try:
        stream.write(text)
        stream.flush()
    except (BrokenPipeError, OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


def _sink(names: Sequence[str], view: list[Any]) -> processes.Sink:
    width = max((len(n) for n in names), default=4)
    colour = {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)}
    tty = sys.stdout.isatty()

    def write(name: str, stream: str, line: str, partial: bool) -> None:
        # A part of a line longer than processes.MAX_LINE is marked "P" where "|" would be.
        bar = "P" if partial else "|"
        if view:  # the live status view owns the terminal: print above its table
            view[0].print(f"{name:<{width}} {bar} {line}")
            return
        label = f"{name:<{width}} {bar}"
        if tty:
            label = f"\033[{colour.get(name, 37)}m{label}\033[0m"
        _write(sys.stdout, f"{label} {line}\n")

    return write


def _events(fmt: str) -> running.Events:
    def emit(event: Mapping[str, Any]) -> None:
        if fmt == "json":
            _write(sys.stderr, json.dumps(dict(event)) + "\n")
        elif fmt == "text":
            details = " ".join(
                f"{k}={v}" for k, v in event.items() if k not in ("t", "container", "event")
            )
            _write(
                sys.stderr,
                f"[{event['t']:8.3f}] {event['container']}: {event['event']}"
                f"{' ' + details if details else ''}\n",
            )

    return emit


def _host() -> expanding.Host:
    memory = 1 << 30
    with contextlib.suppress(ValueError, OSError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return expanding.Host(
        node_name=socket.gethostname(), cpus=float(os.cpu_count() or 1), memory=memory
    )


def _pod_directory() -> str:
    """A new private directory for the pod's volumes, where ``tempfile.mkdtemp`` puts one.

    ``tempfile`` itself only when this cannot make it: it imports ``shutil``, ``random`` and
    the compressors, milliseconds of start-up before the first container.
    """
    base = next((os.environ[v] for v in ("TMPDIR", "TEMP", "TMP") if os.environ.get(v)), "/tmp")
    for _ in range(10):
        path = os.path.join(base, f"sidecarkit-pod-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        except OSError:
            break  # tempfile tries the next place: /var/tmp, /usr/tmp, the working directory
        return path
    import tempfile  # noqa: PLC0415

    return tempfile.mkdtemp(prefix="sidecarkit-pod-")


def launch(
    documents: Sequence[Any],
    *,
    commands: Mapping[str, Sequence[str]],
    backoff_scale: float,
    grace: float | None,
    events_format: str | None,
    keep: bool,
    status: str = "auto",
    lenient: bool = False,
) -> int:
    """Run the pod in ``documents`` to its end; the runner's exit code.

    ``events_format`` None means text, or none when the live status table shows; the table
    shows on a terminal (``status`` auto) only when events were not asked for explicitly.
    """
    root = _pod_directory()
    try:
        plan = planning.plan(documents, root=root, commands=commands, host=_host(), lenient=lenient)
        for field in plan.pod.ignored:
            sys.stderr.write(f"sidecarkit: warning: ignored {field}\n")
        names = [c.name for c in (*plan.pod.init_containers, *plan.pod.containers)]
        view: list[Any] = []
        show = status == "on" or (
            status == "auto" and sys.stderr.isatty() and events_format is None
        )
        events_format = events_format or ("none" if show else "text")
        containment = containing.Containment(
            cgroups=os.environ.get("SIDECARKIT_RUN_CGROUPS", "on") != "off"
        )
        try:
            pod = running.PodRun(
                plan.pod,
                plan.launches,
                sink=_sink(names, view),
                events=_events(events_format),
                backoff_scale=backoff_scale,
                grace=grace,
                containment=containment,
            )
            _pidfd_watcher()
            if not show:
                return asyncio.run(_main(pod))
            from sidecarkit.runner import viewing  # noqa: PLC0415 - rich only for terminals

            with viewing.StatusView(pod.snapshot, f"pod {plan.pod.name}") as live:
                view.append(live)
                return asyncio.run(_main(pod))
        finally:
            containment.close()
    finally:
        if keep:
            sys.stderr.write(f"volumes kept in {root}\n")
        else:
            import shutil  # noqa: PLC0415 - at the end, not before the first container

            shutil.rmtree(root, ignore_errors=True)


def _pidfd_watcher() -> None:
    """Python 3.11 waits for each child process in a thread of its own; a pidfd costs none.

    Exec probes start a process every period, so this is most of an idle runner's CPU.
    Python 3.12 chooses the pidfd watcher by itself.
    """
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError, AttributeError):
            os.close(os.pidfd_open(os.getpid()))
            asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


async def _main(pod: running.PodRun) -> int:
    loop = asyncio.get_running_loop()
    interrupts = 0

    def interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            pod.stop()
        else:
            pod.force()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    return await pod.run()
