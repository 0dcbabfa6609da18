"""Running a pod: the kubelet's sidecar lifecycle, for processes on one machine.

Theory of operation (rule numbers from the lifecycle research):

1. **Initialize.** Init entries run in spec order. A regular init container runs to
   completion; exit 0 moves on (R7); a failure fails the pod under ``Never`` and is retried
   with backoff otherwise (R14). A sidecar is started and gates the next entry only until it
   is *started*: its postStart hook done and its startupProbe passed (R8). From then on a
   supervisor restarts it after any exit, with backoff, whatever the pod's policy (R4, R16).
2. **Run.** Main containers start one after another, each after the previous one's postStart
   hook (R11). Each is restarted per the pod's policy (R22). Readiness and liveness probes run
   on started containers; a liveness failure kills the container, and its policy decides.
3. **Complete.** When every main container has finished and none will restart (R35), or on
   SIGINT/SIGTERM, the pod terminates.
4. **Terminate** (R37-R41). preStop hooks of every running container start at once; each main
   container gets SIGTERM after its own hook; once all main containers are gone, sidecars are
   stopped one at a time in reverse order. One grace budget is shared: a container's stop
   signal comes with ``max(remaining, 2 s)`` before SIGKILL; when the budget runs out, all that
   remain get SIGTERM together and SIGKILL 2 s later. Nothing restarts once this began (R44).
5. **Phase.** From main containers only (R42): Succeeded when all exited 0, else Failed.

Crash-loop backoff (R17): the first restart at once, then 10 s doubling to 300 s, forgotten
after 10 minutes of running; ``backoff_scale`` shrinks all three for tests and demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from sidecarkit.runner import containing, probing, processes, specs

__all__ = ["Launch", "PodRun"]

_FLOOR: Final = 2.0  # seconds every stop signal gets before SIGKILL (R39)
Events = Callable[[Mapping[str, Any]], None]


class Launch(NamedTuple):
    """How to run one container here: argv, environment, working directory (a NamedTuple, as
    in ``specs``, for start-up)."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str | None = None


class _State:
    """One container of the run: its spec, launch recipe, process and lifecycle flags.

    A plain class, not a dataclass: it is mutable state, compared by identity, and a dataclass
    would compile its generated methods at start-up.
    """

    __slots__ = (
        "backoff",
        "exit_code",
        "finished",
        "kind",
        "last_start",
        "launch",
        "probes",
        "process",
        "ready",
        "restarts",
        "spec",
        "started",
    )

    def __init__(self, spec: specs.ContainerSpec, kind: str, launch: Launch) -> None:
        self.spec = spec
        self.kind = kind
        """``init``, ``sidecar`` or ``main``."""
        self.launch = launch
        self.process: processes.Process | None = None
        self.restarts = 0
        self.started = asyncio.Event()
        self.finished = False
        self.ready = False
        self.exit_code: int | None = None
        self.backoff = 0.0
        self.last_start = 0.0
        self.probes: dict[str, asyncio.Task[None]] = {}
        """The running readiness and liveness loops, by kind."""


class PodRun:
    """One pod, from Pending to its end."""

    def __init__(
        self,
        pod: specs.PodSpec,
        launches: Mapping[str, Launch],
        *,
        sink: processes.Sink,
        events: Events,
        backoff_scale: float = 1.0,
        grace: float | None = None,
        containment: containing.Containment | None = None,
    ) -> None:
        self.pod = pod
        self.sink = sink
        self.events = events
        self.scale = backoff_scale
        self.grace = pod.termination_grace if grace is None else grace
        self.containment = containment
        self.states = [
            _State(c, "sidecar" if c.sidecar else "init", launches[c.name])
            for c in pod.init_containers
        ] + [_State(c, "main", launches[c.name]) for c in pod.containers]
        self.terminating = False
        self.interrupted = False
        self.forced = False
        self._handlers: dict[asyncio.Task[tuple[bool, str]], str] = {}
        """Probe and hook runs in flight, by kind (startup, liveness, readiness, hook)."""
        self.failed_init: _State | None = None
        self._stop = asyncio.Event()
        self._mains_done = asyncio.Event()
        self._supervisors: list[asyncio.Task[None]] = []
        self._t0 = time.monotonic()

    # -- events ----------------------------------------------------------------------------

    def emit(self, container: str, event: str, **details: Any) -> None:
        self.events(
            {
                "t": round(time.monotonic() - self._t0, 3),
                "container": container,
                "event": event,
                **details,
            }
        )

    # -- processes -------------------------------------------------------------------------

    async def _spawn(self, state: _State) -> bool:
        """Start the container's process; False when it cannot be started at all."""
        launch = state.launch
        state.last_start = time.monotonic()  # also for a failed start: backoff counts from it
        try:
            state.process = await processes.Process.start(
                state.spec.name,
                launch.argv,
                env=launch.env,
                cwd=launch.cwd,
                sink=self.sink,
                containment=self.containment,
            )
        except OSError as exc:
            self.emit(state.spec.name, "failed-to-start", reason=str(exc))
            state.process = None
            return False
        self.emit(state.spec.name, "started", pid=state.process.pid, restarts=state.restarts)
        return True

    async def _handler(
        self, state: _State, handler: specs.Handler, timeout: float, kind: str
    ) -> tuple[bool, str]:
        """Run a probe or hook handler as if inside ``state``'s container.

        The run is a task of its own, so that termination can cancel startup and liveness
        probes and a second interrupt every hook, without cancelling whoever waits for it.
        """
        task = asyncio.create_task(
            probing.run_handler(
                handler,
                env=state.launch.env,
                cwd=state.launch.cwd,
                ports=state.spec.port_names,
                timeout=timeout,
                container=state.spec.name,
                containment=self.containment,
            ),
            name=f"{state.spec.name} {kind}",
        )
        self._handlers[task] = kind
        task.add_done_callback(self._handlers.pop)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.cancelled():
            return False, "cancelled"
        ok, detail = task.result()
        if ok and detail.startswith(probing.PROBE_WARNING):
            self.emit(state.spec.name, "probe-warning", detail=detail[len(probing.PROBE_WARNING) :])
        return ok, detail

    async def _post_start(self, state: _State) -> bool:
        hook = state.spec.post_start
        if hook is None:
            return True
        # Kubernetes gives postStart no timeout; ten grace periods keep a stuck hook finite.
        ok, detail = await self._handler(state, hook, max(self.grace, 1.0) * 10, "hook")
        self.emit(state.spec.name, "post-start-done" if ok else "post-start-failed", detail=detail)
        return ok

    def _probe_deadline(self, probe: specs.Probe | None) -> float:
        """When a kill for a failed liveness or startup probe turns to SIGKILL (R28)."""
        grace = self.grace
        if probe is not None and probe.termination_grace is not None:
            grace = probe.termination_grace
        return asyncio.get_running_loop().time() + grace

    async def _pause(self, state: _State, seconds: float) -> None:
        """Sleep, but wake as soon as the container exits or the pod terminates."""
        if seconds <= 0:
            return
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(self._stop.wait())]
        if state.process is not None:
            waits.append(asyncio.create_task(state.process.proc.wait()))
        _, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def _startup_probe(self, state: _State) -> bool:
        probe = state.spec.startup
        if probe is None:
            return True
        await self._pause(state, probe.initial_delay)
        failures = 0
        while not self.terminating:
            assert state.process is not None
            if not state.process.running:
                return False
            ok, detail = await self._handler(state, probe.handler, probe.timeout, "startup")
            if ok:
                self.emit(state.spec.name, "startup-probe-passed")
                return True
            failures += 1
            if failures >= probe.failure_threshold:
                self.emit(state.spec.name, "startup-probe-failed", detail=detail)
                return False
            await self._pause(state, probe.period)
        return False

    async def _probe_loop(self, state: _State, probe: specs.Probe, kind: str) -> None:
        """Readiness or liveness until the container exits.

        Termination stops liveness (and startup) probes only: readiness goes on through preStop
        until the container is gone, as the kubelet's does.
        """
        await asyncio.sleep(probe.initial_delay)
        successes = failures = 0
        while state.process is not None and state.process.running:
            if kind == "liveness" and self.terminating:
                return
            ok, detail = await self._handler(state, probe.handler, probe.timeout, kind)
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
            if kind == "readiness":
                if not state.ready and successes >= probe.success_threshold:
                    state.ready = True
                    self.emit(state.spec.name, "ready")
                elif state.ready and failures >= probe.failure_threshold:
                    state.ready = False
                    self.emit(state.spec.name, "not-ready", detail=detail)
            elif failures >= probe.failure_threshold and not self.terminating:
                self.emit(state.spec.name, "liveness-probe-failed", detail=detail)
                await self._kill(state, deadline=self._probe_deadline(probe))
                return
            await asyncio.sleep(probe.period)

    def _start_probes(self, state: _State) -> None:
        if state.spec.readiness is None:
            state.ready = True
        for probe, kind in ((state.spec.readiness, "readiness"), (state.spec.liveness, "liveness")):
            if probe is not None:
                state.probes[kind] = asyncio.create_task(
                    self._probe_loop(state, probe, kind), name=f"{state.spec.name} {kind} loop"
                )

    def _stop_probes(
        self, state: _State, *, kinds: tuple[str, ...] = ("readiness", "liveness")
    ) -> None:
        for kind in kinds:
            task = state.probes.pop(kind, None)
            if task is not None:
                task.cancel()
        if "readiness" in kinds:
            state.ready = False

    async def _backoff(self, state: _State) -> None:
        """Crash-loop backoff before a restart (R17)."""
        ran = time.monotonic() - state.last_start
        if ran > 600 * self.scale:
            state.backoff = 0.0
        delay = state.backoff
        state.backoff = min(max(10 * self.scale, state.backoff * 2), 300 * self.scale)
        if delay > 0:
            self.emit(state.spec.name, "back-off", seconds=round(delay, 3))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        state.restarts += 1

    # -- the phases ------------------------------------------------------------------------

    async def _supervise_sidecar(self, state: _State) -> None:
        while not self.terminating:
            if not await self._spawn(state):
                await self._backoff(state)  # R13: keep trying, the pod stays Pending
                continue
            assert state.process is not None
            started = await self._post_start(state) and await self._startup_probe(state)
            if started and not self.terminating:
                state.started.set()
                self.emit(state.spec.name, "sidecar-started")
                self._start_probes(state)
            elif state.process.running and not self.terminating:
                await self._kill(state, deadline=self._probe_deadline(state.spec.startup))
            code = await state.process.wait()
            self._stop_probes(state)
            state.exit_code = code
            self.emit(state.spec.name, "exited", code=code)
            if self.terminating:
                return
            await self._backoff(state)

    async def _run_init(self, state: _State) -> bool:
        """A regular init container to completion; False when the pod cannot go on."""
        while not self.terminating:
            if not await self._spawn(state):
                code = 128
            else:
                assert state.process is not None
                code = await state.process.wait()
                self.emit(state.spec.name, "exited", code=code)
            state.exit_code = code
            if self.terminating:
                return False
            if code == 0:
                state.finished = True
                return True
            if self.pod.restart_policy == "Never":
                self.failed_init = state
                return False
            await self._backoff(state)
        return False

    async def _initialize(self) -> bool:
        for state in self.states:
            if state.kind == "main":
                break
            if self.terminating:
                return False
            if state.kind == "init":
                if not await self._run_init(state):
                    return False
                continue
            self._supervisors.append(
                asyncio.create_task(
                    self._supervise_sidecar(state), name=f"sidecar {state.spec.name}"
                )
            )
            waiter = asyncio.create_task(state.started.wait())
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if not state.started.is_set():
                return False
        return True

    async def _supervise_main(self, state: _State, first: asyncio.Event) -> None:
        while not self.terminating:
            if not await self._spawn(state):
                first.set()
                code = 128
            else:
                assert state.process is not None
                post_start = await self._post_start(state)
                first.set()  # R11: the next main container waits for this postStart only
                if not post_start and state.process.running:
                    await self._kill(state, deadline=asyncio.get_running_loop().time() + 2)
                elif await self._startup_probe(state):
                    state.started.set()
                    self._start_probes(state)
                elif state.process.running and not self.terminating:
                    # A failed startup probe: preStop, stop, then the pod's policy decides.
                    await self._kill(state, deadline=self._probe_deadline(state.spec.startup))
                code = await state.process.wait()
                self._stop_probes(state)
                self.emit(state.spec.name, "exited", code=code)
            state.exit_code = code
            if self.terminating:
                return
            policy = self.pod.restart_policy
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                state.finished = True
                if all(s.finished for s in self.states if s.kind == "main"):
                    self._mains_done.set()
                return
            await self._backoff(state)

    async def _run_mains(self) -> None:
        for state in self.states:
            if state.kind != "main" or self.terminating:
                continue
            first = asyncio.Event()
            self._supervisors.append(
                asyncio.create_task(
                    self._supervise_main(state, first), name=f"main {state.spec.name}"
                )
            )
            await first.wait()  # R11: the next main container waits for this postStart
        self.emit("pod", "running")
        done = asyncio.create_task(self._mains_done.wait())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({done, stop}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        stop.cancel()

    # -- termination -----------------------------------------------------------------------

    async def _kill(self, state: _State, *, deadline: float) -> None:
        """preStop, SIGTERM, and SIGKILL at the deadline (at least 2 s after SIGTERM)."""
        await self._pre_stop(state, deadline)
        await self._signal_and_wait(state, deadline)

    async def _pre_stop(self, state: _State, deadline: float) -> None:
        hook = state.spec.pre_stop
        if hook is None or state.process is None or not state.process.running or self.forced:
            return
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return
        ok, detail = await self._handler(state, hook, remaining, "hook")
        self.emit(state.spec.name, "pre-stop-done" if ok else "pre-stop-failed", detail=detail)

    async def _signal_and_wait(self, state: _State, deadline: float) -> None:
        process = state.process
        if process is None or not process.running:
            return
        loop = asyncio.get_running_loop()
        process.terminate()
        self.emit(state.spec.name, "sigterm")
        allowed = max(deadline - loop.time(), _FLOOR)
        try:
            await asyncio.wait_for(asyncio.shield(process.proc.wait()), allowed)
        except TimeoutError:
            process.kill()
            self.emit(state.spec.name, "sigkill")
            await process.proc.wait()

    async def _terminate(self) -> None:
        self.terminating = True
        self._stop.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        self.emit("pod", "terminating", grace=self.grace)
        for state in self.states:
            self._stop_probes(state, kinds=("liveness",))
        for task, kind in list(self._handlers.items()):
            if kind in ("startup", "liveness"):
                task.cancel()
        running = [s for s in self.states if s.process is not None and s.process.running]
        hooks = {id(s): asyncio.create_task(self._pre_stop(s, deadline)) for s in running}

        async def stop(state: _State) -> None:
            hook = hooks[id(state)]
            remaining = deadline - loop.time()
            if remaining > 0:
                await asyncio.wait({hook}, timeout=remaining)
            await self._signal_and_wait(state, deadline)

        firsts = [s for s in running if s.kind in ("main", "init")]
        await asyncio.gather(*(stop(s) for s in firsts))
        sidecars = [s for s in reversed(running) if s.kind == "sidecar"]
        for index, state in enumerate(sidecars):
            remaining = deadline - loop.time()
            if remaining > 0:
                await asyncio.wait({hooks[id(state)]}, timeout=remaining)
            if loop.time() >= deadline:
                # R40: the budget is spent: every sidecar left, this one included, gets SIGTERM
                # together and SIGKILL 2 s later.
                rest = [s for s in sidecars[index:] if s.process and s.process.running]
                await asyncio.gather(*(self._signal_and_wait(s, deadline) for s in rest))
                break
            await self._signal_and_wait(state, deadline)
        for hook in hooks.values():
            hook.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)

    # -- the whole run ---------------------------------------------------------------------

    async def _flow(self) -> None:
        if await self._initialize():
            self.emit("pod", "initialized")
            await self._run_mains()

    async def run(self) -> int:
        """Run the pod to its end; the exit code is 0 when it Succeeded."""
        self.emit("pod", "pending")
        flow = asyncio.create_task(self._flow(), name="pod flow")
        stop = asyncio.create_task(self._stop.wait(), name="pod stop")
        try:
            await asyncio.wait({flow, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            await self._terminate()
            await asyncio.gather(flow, return_exceptions=True)
        return self._result()

    def _result(self) -> int:
        if self.failed_init is not None:
            self.emit(
                "pod",
                "failed",
                reason=f"init container {self.failed_init.spec.name} "
                f"exited {self.failed_init.exit_code}",
            )
            return self.failed_init.exit_code or 1
        mains = [s for s in self.states if s.kind == "main"]
        codes = [s.exit_code for s in mains]
        if codes and all(code == 0 for code in codes):
            self.emit("pod", "succeeded")
            return 0
        first = next((c for c in codes if c not in (0, None)), 1)
        self.emit("pod", "failed", codes={s.spec.name: s.exit_code for s in mains})
        return first or 1

    def snapshot(self) -> list[dict[str, Any]]:
        """Each container's state now, for a status view."""
        now = time.monotonic()
        rows = []
        for state in self.states:
            process = state.process
            if process is not None and process.running:
                what = "running" if state.started.is_set() or state.kind == "init" else "starting"
            elif state.finished:
                what = "completed" if state.exit_code == 0 else f"error ({state.exit_code})"
            elif state.exit_code is not None:
                what = "terminated" if self.terminating else f"exited ({state.exit_code})"
            else:
                what = "waiting"
            rows.append(
                {
                    "name": state.spec.name,
                    "kind": state.kind,
                    "state": what,
                    "ready": state.ready and process is not None and process.running,
                    "restarts": state.restarts,
                    "age": now - state.last_start if state.last_start else 0.0,
                }
            )
        return rows

    def stop(self) -> None:
        """Begin termination (a signal handler calls this)."""
        self.interrupted = True
        self._stop.set()

    def force(self) -> None:
        """A second interrupt: cancel every probe and hook, SIGKILL every container now."""
        self.forced = True
        self._stop.set()
        for task in list(self._handlers):
            task.cancel()
        for state in self.states:
            if state.process is not None and state.process.running:
                state.process.kill()
