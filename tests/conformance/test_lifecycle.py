"""Upstream e2e scenarios (``../shared`` lifecycle research S*, P*, H*) through ``sidecarkit run``.

Each test names its scenario id and checks what the upstream test checks, observed from the
timestamps the containers write themselves. After every scenario no process of the pod remains.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import FOREVER, Pod, done, no_process_left


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    yield Pod(tmp_path)
    assert no_process_left(str(tmp_path)), "a process of the pod outlived the run"


def test_s1_init_containers_run_serially_before_the_main_container(pod: Pod) -> None:
    for i in (1, 2, 3):
        pod.init(f"init-{i}", f"sleep 0.2; {done()}")
    pod.main("main-1", f"sleep 0.2; {done()}")
    r = pod.run()
    assert r.code == 0
    order = ["init-1", "init-2", "init-3", "main-1"]
    for a, b in itertools.pairwise(order):
        assert r.first(a, "exit 0") <= r.first(b, "start")


def test_s2_a_failing_init_container_fails_the_pod_and_nothing_else_starts(pod: Pod) -> None:
    pod.init("init-1", f"sleep 0.1; {done(3)}")
    pod.main("main-1", done())
    r = pod.run()
    assert r.code == 3
    assert r.count("init-1", "start") == 1
    assert r.count("main-1", "start") == 0
    assert "failed" in r.pod_events()


def test_s3_init_completes_before_the_main_post_start_which_overlaps_the_main(pod: Pod) -> None:
    pod.init("init-1", f"sleep 0.2; {done()}")
    pod.main(
        "main-1",
        f"sleep 1; {done()}",
        lifecycle={"postStart": pod.hook("hook", "L start; sleep 0.3; L end")},
    )
    r = pod.run()
    assert r.code == 0
    assert r.first("init-1", "exit 0") <= r.first("hook", "start")
    assert r.first("main-1", "start") < r.first("hook", "end") < r.first("main-1", "exit 0")


def test_s4_a_failing_main_container_is_restarted_under_always(pod: Pod) -> None:
    pod.restart_policy = "Always"
    pod.main("main-1", f"sleep 0.05; {done(1)}")
    r = pod.run(stop_after=3.0)
    assert r.count("main-1", "start") >= 4
    starts = r.times("main-1", "start")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[1] > gaps[0] - 0.05, "backoff grows after the first, immediate restart"


def test_s5_the_second_main_container_waits_for_the_first_ones_post_start(pod: Pod) -> None:
    pod.main(
        "main-1",
        f"sleep 1; {done()}",
        lifecycle={"postStart": pod.hook("hook", "L start; sleep 0.5; L end")},
    )
    pod.main("main-2", f"sleep 0.1; {done()}")
    r = pod.run()
    assert r.code == 0
    assert r.first("hook", "end") <= r.first("main-2", "start")


def test_s6_an_init_container_that_cannot_start_fails_the_pod_under_never(pod: Pod) -> None:
    pod.init_containers.append(
        {"name": "init-1", "image": "busybox", "command": ["/nonexistent/program"]}
    )
    pod.main("main-1", done())
    r = pod.run()
    assert r.code != 0
    assert r.event("init-1", "failed-to-start")
    assert r.count("main-1", "start") == 0


def test_s7_init_containers_do_not_run_again_when_the_main_restarts(pod: Pod) -> None:
    pod.restart_policy = "Always"
    for i in (1, 2):
        pod.init(f"init-{i}", done())
    pod.main("main-1", f"sleep 0.05; {done(1)}")
    r = pod.run(stop_after=2.5)
    assert r.count("main-1", "start") >= 3
    assert r.count("init-1", "start") == 1
    assert r.count("init-2", "start") == 1


def test_s8_a_main_container_that_ignores_sigterm_is_killed_at_the_grace_deadline(
    pod: Pod,
) -> None:
    pod.grace = 1
    pod.main("main-1", "trap '' TERM; L ignoring; while :; do sleep 0.05; done")
    r = pod.run(stop_after=1.0, timeout=20)
    assert r.event("main-1", "sigkill")
    terminating = r.event("pod", "terminating")[0]["t"]
    killed = r.event("main-1", "sigkill")[0]["t"]
    assert 1.9 <= killed - terminating <= 3.0, "SIGKILL after max(grace, 2 s)"


def test_s9_a_failing_startup_probe_runs_pre_stop_and_stops_the_main(pod: Pod) -> None:
    pod.main(
        "main-1",
        "trap 'L term; exit 0' TERM; while :; do sleep 0.05; done",
        startupProbe={
            "exec": {"command": ["false"]},
            "initialDelaySeconds": 1,  # the first probe comes at once; let the trap be set
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        lifecycle={"preStop": pod.hook("main-1", "L prestop")},
    )
    r = pod.run(timeout=20)
    assert r.first("main-1", "prestop") < r.first("main-1", "term")
    assert r.code == 0, "it exited 0 on SIGTERM, and Never means no restart"


def test_s10_a_failing_liveness_probe_runs_pre_stop_and_stops_the_main(pod: Pod) -> None:
    pod.main(
        "main-1",
        "trap 'L term; exit 0' TERM; while :; do sleep 0.05; done",
        # A first probe comes at once, as the kubelet's does: give the shell time to set
        # its trap.
        livenessProbe={
            "exec": {"command": ["false"]},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        lifecycle={"preStop": pod.hook("main-1", "L prestop")},
    )
    r = pod.run(timeout=20)
    assert r.event("main-1", "liveness-probe-failed")
    assert r.first("main-1", "prestop") < r.first("main-1", "term")


def test_s17_sidecars_run_alongside_later_init_containers_and_stop_after_the_main(
    pod: Pod,
) -> None:
    pod.init("init-1", done())
    pod.sidecar("sidecar-1")
    pod.init("init-2", f"sleep 0.2; {done()}")
    pod.sidecar("sidecar-2")
    pod.init("init-3", done())
    pod.main("main-1", f"sleep 0.3; {done()}")
    r = pod.run()
    assert r.code == 0
    assert r.first("init-1", "exit 0") <= r.first("sidecar-1", "start")
    # Runner events, not self-written times: a started sidecar and the next init container race.
    assert r.event("sidecar-1", "started")[0]["t"] <= r.event("init-2", "started")[0]["t"]
    assert r.first("init-2", "exit 0") <= r.first("sidecar-2", "start")
    assert r.first("init-3", "exit 0") <= r.first("main-1", "start")
    assert r.first("main-1", "exit 0") <= r.first("sidecar-2", "term")
    assert r.first("sidecar-2", "term") <= r.first("sidecar-1", "term")


def test_s20_a_sidecar_that_cannot_start_blocks_everything(pod: Pod) -> None:
    pod.init_containers.append(
        {
            "name": "sidecar-1",
            "image": "busybox",
            "restartPolicy": "Always",
            "command": ["/nonexistent/program"],
        }
    )
    pod.main("main-1", done())
    r = pod.run(stop_after=1.5)
    assert len(r.event("sidecar-1", "failed-to-start")) >= 2, "retried with backoff"
    assert r.count("main-1", "start") == 0
    assert "initialized" not in r.pod_events()


@pytest.mark.parametrize("code", [0, 1])
def test_s21_s22_a_sidecar_exiting_is_restarted_and_the_pod_still_succeeds(
    pod: Pod,
    code: int,
) -> None:
    pod.sidecar("sidecar-1", f"sleep 0.1; {done(code)}")
    pod.main("main-1", f"sleep 1; {done()}")
    r = pod.run()
    assert r.code == 0, "sidecar exit codes never decide the phase (R42)"
    assert r.count("sidecar-1", "start") >= 2
    # The order of starts comes from the runner's own events: the containers' self-written
    # timestamps race each other (two shells started a few microseconds apart, as on a node).
    starts = [e["t"] for e in r.event("sidecar-1", "started")]
    main_started = r.event("main-1", "started")[0]["t"]
    assert starts[0] <= main_started < starts[-1], "restarted before and after"


def test_s23_an_init_container_before_a_sidecar_fails(pod: Pod) -> None:
    pod.init("init-1", done(1))
    pod.sidecar("sidecar-1")
    pod.main("main-1", done())
    r = pod.run()
    assert r.code == 1
    assert r.count("sidecar-1", "start") == 0
    assert r.count("main-1", "start") == 0


def test_s24_an_init_container_after_a_sidecar_fails_and_the_sidecar_stops_after_it(
    pod: Pod,
) -> None:
    pod.sidecar("sidecar-1")
    pod.init("init-1", f"sleep 0.5; {done(1)}")  # time for the sidecar to set its trap
    pod.main("main-1", done())
    r = pod.run()
    assert r.code == 1
    assert r.first("init-1", "exit 1") <= r.first("sidecar-1", "term")
    assert r.count("main-1", "start") == 0


def test_s25_onfailure_retries_a_failing_init_container(pod: Pod) -> None:
    pod.restart_policy = "OnFailure"
    marker = pod.tmp / "second-try"
    pod.init("init-1", f"if [ -f {marker} ]; then {done()}; fi; touch {marker}; {done(1)}")
    pod.main("main-1", done())
    r = pod.run()
    assert r.code == 0
    assert r.count("init-1", "start") == 2
    assert r.first("init-1", "exit 0") <= r.first("main-1", "start")


def test_s27_startup_probes_gate_the_next_entry(pod: Pod) -> None:
    ready = pod.tmp / "ready-1"
    pod.sidecar(
        "sidecar-1",
        f"sleep 0.5; touch {ready}; {FOREVER}",
        startupProbe={
            "exec": {"command": ["test", "-f", str(ready)]},
            "periodSeconds": 1,
            "failureThreshold": 10,
        },
    )
    pod.sidecar("sidecar-2")
    pod.main("main-1", done())
    r = pod.run()
    assert r.code == 0
    assert r.first("sidecar-2", "start") - r.first("sidecar-1", "start") >= 0.5


def test_s29_a_sidecar_failing_its_startup_probe_is_restarted_and_blocks_the_pod(
    pod: Pod,
) -> None:
    pod.sidecar(
        "sidecar-1",
        startupProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1},
        lifecycle={"preStop": pod.hook("sidecar-1", "L prestop")},
    )
    pod.main("main-1", done())
    r = pod.run(stop_after=3.0)
    assert r.count("sidecar-1", "start") >= 2
    assert r.first("sidecar-1", "prestop") < r.first("sidecar-1", "term")
    assert r.count("main-1", "start") == 0


def test_s30_a_sidecar_failing_liveness_is_restarted_but_does_not_block(pod: Pod) -> None:
    pod.sidecar(
        "sidecar-1",
        # A first probe comes at once, as the kubelet's does: give the shell time to set
        # its trap.
        livenessProbe={
            "exec": {"command": ["false"]},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        lifecycle={"preStop": pod.hook("sidecar-1", "L prestop")},
    )
    pod.main("main-1", f"sleep 4; {done()}")
    r = pod.run(timeout=30)
    assert r.code == 0
    assert r.first("main-1", "start") < r.first("sidecar-1", "prestop")
    assert r.count("sidecar-1", "start") >= 2


def test_s32_sidecars_stop_in_reverse_order_after_all_main_containers(pod: Pod) -> None:
    for i in (1, 2, 3):
        pod.sidecar(
            f"sidecar-{i}", "trap 'sleep 0.2; L term; exit 0' TERM; while :; do sleep 0.02; done"
        )
    pod.main("main-1", f"sleep 0.2; {done()}")
    pod.main("main-2", f"sleep 0.4; {done()}")
    r = pod.run()
    assert r.code == 0
    last_main = max(r.first("main-1", "exit 0"), r.first("main-2", "exit 0"))
    assert last_main <= r.first("sidecar-3", "term")
    assert r.first("sidecar-3", "term") <= r.first("sidecar-2", "term")
    assert r.first("sidecar-2", "term") <= r.first("sidecar-1", "term")


def test_s35_sidecar_pre_stop_hooks_start_together(pod: Pod) -> None:
    for i in (1, 2, 3):
        pod.sidecar(
            f"sidecar-{i}", lifecycle={"preStop": pod.hook(f"sidecar-{i}", "L prestop; sleep 0.3")}
        )
    pod.main("main-1", f"sleep 0.2; {done()}")
    r = pod.run()
    starts = [r.first(f"sidecar-{i}", "prestop") for i in (1, 2, 3)]
    assert max(starts) - min(starts) < 1.0


def test_s36_termination_during_initialization_does_not_hang(pod: Pod) -> None:
    pod.sidecar("sidecar-1")
    pod.init("init-1", "sleep 30")
    pod.main("main-1", done())
    r = pod.run(stop_after=1.0, timeout=20)
    assert r.count("main-1", "start") == 0
    assert r.first("sidecar-1", "term")
    assert "terminating" in r.pod_events()


def test_s38_a_sidecar_exiting_non_zero_on_sigterm_leaves_the_pod_succeeded(pod: Pod) -> None:
    pod.sidecar("sidecar-1", "trap 'L term; exit 1' TERM; while :; do sleep 0.02; done")
    pod.main("main-1", f"sleep 0.2; {done()}")
    r = pod.run()
    assert r.code == 0
    assert r.event("sidecar-1", "exited")[-1]["code"] == 1


def test_s39_a_failing_pre_stop_does_not_change_the_exit_code(pod: Pod) -> None:
    pod.sidecar("sidecar-1", lifecycle={"preStop": pod.hook("sidecar-1", "L prestop; exit 1")})
    pod.main("main-1", f"sleep 0.2; {done()}")
    r = pod.run()
    assert r.code == 0
    assert r.event("sidecar-1", "pre-stop-failed")
    assert r.event("sidecar-1", "exited")[-1]["code"] == 0


def test_s40_a_main_container_past_the_grace_period_fails_the_pod(pod: Pod) -> None:
    pod.grace = 1
    pod.sidecar("sidecar-1")
    pod.main("main-1", "trap '' TERM; while :; do sleep 0.05; done")
    r = pod.run(stop_after=1.0, timeout=20)
    assert r.event("main-1", "exited")[-1]["code"] == 137
    assert r.event("sidecar-1", "exited")[-1]["code"] == 0
    assert r.code != 0


def test_s41_a_sidecar_past_the_grace_period_leaves_a_completed_pod_succeeded(pod: Pod) -> None:
    pod.grace = 1
    pod.sidecar("sidecar-1", "trap '' TERM; while :; do sleep 0.05; done")
    pod.main("main-1", f"sleep 0.2; {done()}")
    r = pod.run(timeout=20)
    assert r.event("sidecar-1", "exited")[-1]["code"] == 137
    assert r.code == 0


def test_h1_a_sidecar_post_start_hook_gates_the_next_container(pod: Pod) -> None:
    pod.sidecar("sidecar-1", lifecycle={"postStart": pod.hook("hook", "sleep 0.4; L end")})
    pod.main("main-1", done())
    r = pod.run()
    assert r.code == 0
    assert r.first("hook", "end") <= r.first("main-1", "start")


def test_h_sleep_pre_stop_delays_the_stop_signal(pod: Pod) -> None:
    pod.sidecar("sidecar-1", lifecycle={"preStop": {"sleep": {"seconds": 1}}})
    pod.main("main-1", f"sleep 0.1; {done()}")
    r = pod.run()
    assert r.first("sidecar-1", "term") - r.first("main-1", "exit 0") >= 0.9


def test_p_http_and_tcp_probes_on_a_sidecar(pod: Pod) -> None:
    server = (
        'python3 -c "import http.server as h; '
        "h.HTTPServer(('127.0.0.1', 18777), h.SimpleHTTPRequestHandler).serve_forever()\""
    )
    pod.sidecar(
        "web",
        f"{server}",
        startupProbe={"tcpSocket": {"port": 18777}, "periodSeconds": 1, "failureThreshold": 20},
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        ports=[{"name": "http", "containerPort": 18777}],
    )
    pod.main("main-1", f"sleep 1.5; {done()}")
    r = pod.run(timeout=30)
    assert r.code == 0
    assert r.event("web", "startup-probe-passed")
    assert r.event("web", "ready")


# -- more lifecycle scenarios ------------------------------------------------------------------


def test_s26_under_always_the_main_restarts_and_the_sidecar_keeps_running(pod: Pod) -> None:
    pod.restart_policy = "Always"
    pod.sidecar("sidecar-1")
    pod.main("main-1", f"sleep 0.1; {done()}")
    r = pod.run(stop_after=2.5)
    assert r.count("main-1", "start") >= 2
    assert r.count("sidecar-1", "start") == 1


def test_s34_pre_stop_hooks_that_never_end_are_cut_off_together(pod: Pod) -> None:
    pod.grace = 2
    for i in (1, 2, 3):
        pod.sidecar(
            f"sidecar-{i}",
            "trap '' TERM; while :; do sleep 0.05; done",
            lifecycle={"preStop": pod.hook(f"sidecar-{i}", "while :; do sleep 0.1; done")},
        )
    pod.main("main-1", f"sleep 0.2; {done()}")
    r = pod.run(timeout=30)
    assert r.code == 0
    codes = [r.event(f"sidecar-{i}", "exited")[-1]["code"] for i in (1, 2, 3)]
    assert codes == [137, 137, 137]
    kills = [r.event(f"sidecar-{i}", "sigkill")[-1]["t"] for i in (1, 2, 3)]
    assert max(kills) - min(kills) < 1.0, "stopped together once the budget ran out"


def test_s37_a_sidecar_that_never_started_is_stopped_promptly(pod: Pod) -> None:
    pod.grace = 30
    pod.init("init-1", done())
    pod.sidecar(
        "sidecar-2",
        startupProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 600},
    )
    pod.sidecar("sidecar-3")
    pod.main("main-1", done())
    r = pod.run(stop_after=1.5, timeout=30)
    assert r.first("sidecar-2", "term")
    assert r.count("sidecar-3", "start") == 0
    assert r.event("pod", "failed")[0]["t"] < 10, "stopped before its main ran: Failed"
    assert r.code == 1


def test_s42_a_main_pre_stop_past_the_grace_period_fails_the_pod(pod: Pod) -> None:
    pod.grace = 1
    pod.sidecar("sidecar-1")
    pod.main(
        "main-1",
        "trap '' TERM; while :; do sleep 0.05; done",
        lifecycle={"preStop": pod.hook("main-1", "L prestop; sleep 20")},
    )
    r = pod.run(stop_after=1.0, timeout=30)
    assert r.event("main-1", "exited")[-1]["code"] == 137
    assert r.event("sidecar-1", "exited")[-1]["code"] == 0
    assert r.code != 0


def test_s43_a_sidecar_pre_stop_past_the_grace_period_leaves_the_pod_succeeded(
    pod: Pod,
) -> None:
    pod.grace = 1
    pod.sidecar("sidecar-1")
    pod.sidecar(
        "sidecar-2",
        "trap '' TERM; while :; do sleep 0.05; done",
        lifecycle={"preStop": pod.hook("sidecar-2", "sleep 20")},
    )
    pod.sidecar("sidecar-3")
    pod.main("main-1", f"sleep 0.2; {done()}")
    r = pod.run(timeout=30)
    assert r.code == 0
    assert r.event("sidecar-2", "exited")[-1]["code"] == 137
    assert r.event("sidecar-1", "exited")[-1]["code"] == 0
    assert r.event("sidecar-3", "exited")[-1]["code"] == 0


def test_s44_a_sidecar_that_fails_at_first_then_recovers_lets_the_main_start(pod: Pod) -> None:
    marker = pod.tmp / "first-run"
    pod.sidecar(
        "sidecar-1",
        f"if [ ! -f {marker} ]; then touch {marker}; {done(1)}; fi; {FOREVER}",
        startupProbe={
            "exec": {"command": ["true"]},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 10,
        },
    )
    pod.main("main-1", f"sleep 0.2; {done()}")
    r = pod.run(timeout=30)
    assert r.code == 0
    assert r.count("sidecar-1", "start") >= 2
    assert r.first("main-1", "start") > r.times("sidecar-1", "start")[1]


# -- probe scenarios on a sidecar (P*) ---------------------------------------------------------


def _with_probe(pod: Pod, body: str = FOREVER, **probes: object) -> None:
    pod.sidecar("sidecar-1", body, **probes)


def test_p1_readiness_waits_for_the_initial_delay_and_never_restarts(pod: Pod) -> None:
    _with_probe(
        pod,
        readinessProbe={
            "exec": {"command": ["true"]},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
        },
    )
    pod.main("main-1", f"sleep 2; {done()}")
    r = pod.run(timeout=30)
    ready = r.event("sidecar-1", "ready")[0]["t"]
    started = r.event("sidecar-1", "started")[0]["t"]
    assert ready - started >= 1.0
    assert r.count("sidecar-1", "start") == 1


def test_p2_a_failing_readiness_probe_never_makes_it_ready_nor_restarts_it(pod: Pod) -> None:
    _with_probe(pod, readinessProbe={"exec": {"command": ["false"]}, "periodSeconds": 1})
    pod.main("main-1", f"sleep 1.5; {done()}")
    r = pod.run(timeout=30)
    assert not r.event("sidecar-1", "ready")
    assert r.count("sidecar-1", "start") == 1


def test_p3_p4_exec_liveness_restarts_only_when_the_file_goes(pod: Pod) -> None:
    health = pod.tmp / "health"
    pod.sidecar(
        "sidecar-1",
        f"touch {health}; {FOREVER}",
        livenessProbe={
            "exec": {"command": ["cat", str(health)]},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    keep = pod.tmp / "health-keep"
    pod.sidecar(
        "sidecar-2",
        f"touch {keep}; {FOREVER}",
        livenessProbe={
            "exec": {"command": ["cat", str(keep)]},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    pod.main("main-1", f"sleep 1; rm {health}; sleep 2.5; {done()}")
    r = pod.run(timeout=30)
    assert r.count("sidecar-1", "start") >= 2
    assert r.count("sidecar-2", "start") == 1


def _server(port: int, *, fail_after: float | None = None) -> str:
    fail = f"time.time() - t0 > {fail_after}" if fail_after is not None else "False"
    return (
        'python3 -c "import http.server, time\n'
        "t0 = time.time()\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        f"        self.send_response(500 if {fail} else 200)\n"
        "        self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\""
    )


def test_p5_p6_http_liveness_restarts_when_it_fails_and_tcp_does_not(pod: Pod) -> None:
    pod.sidecar(
        "sidecar-1",
        _server(18781, fail_after=1.0),
        livenessProbe={
            "httpGet": {"path": "/healthz", "port": 18781},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    pod.sidecar(
        "sidecar-2",
        _server(18782, fail_after=0.0),
        livenessProbe={
            "tcpSocket": {"port": 18782},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    pod.main("main-1", f"sleep 3.5; {done()}")
    r = pod.run(timeout=30)
    assert r.event("sidecar-1", "liveness-probe-failed")
    assert r.count("sidecar-1", "start") >= 2
    assert r.count("sidecar-2", "start") == 1


def _redirecting_server(port: int, location: str, *, fail_after: float) -> str:
    """``_server``, plus ``/redirect`` answering 302 to ``location``."""
    return (
        'python3 -c "import http.server, time\n'
        "t0 = time.time()\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        if self.path == '/redirect':\n"
        "            self.send_response(302)\n"
        f"            self.send_header('Location', '{location}')\n"
        "        else:\n"
        f"            self.send_response(500 if time.time() - t0 > {fail_after} else 200)\n"
        "        self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\""
    )


def test_p12_p13_http_probes_follow_local_redirects_only(pod: Pod) -> None:
    liveness = {"initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 1}
    pod.sidecar(
        "local",
        _redirecting_server(18783, "/healthz", fail_after=1.0),
        livenessProbe={"httpGet": {"path": "/redirect", "port": 18783}, **liveness},
    )
    # Another host name (127.0.0.2 is loopback too): not followed, so its failing /healthz
    # never counts; the redirect itself is a success with a warning.
    pod.sidecar(
        "remote",
        _redirecting_server(18784, "http://127.0.0.2:18784/healthz", fail_after=0.0),
        livenessProbe={"httpGet": {"path": "/redirect", "port": 18784}, **liveness},
    )
    pod.main("main-1", f"sleep 3.5; {done()}")
    r = pod.run(timeout=30)
    assert "after 1 redirect" in r.event("local", "liveness-probe-failed")[0]["detail"]
    assert r.count("local", "start") >= 2, "P12: the followed redirect failed, so a restart"
    assert r.count("remote", "start") == 1, "P13: a redirect to another host is not followed"
    assert "another host (127.0.0.2)" in r.event("remote", "probe-warning")[0]["detail"]


def test_p9_p10_probes_that_time_out_fail(pod: Pod) -> None:
    pod.sidecar(
        "sidecar-1",
        livenessProbe={
            "exec": {"command": ["sleep", "5"]},
            "timeoutSeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    pod.sidecar(
        "sidecar-2",
        readinessProbe={
            "exec": {"command": ["sleep", "5"]},
            "timeoutSeconds": 1,
            "periodSeconds": 1,
        },
    )
    pod.main("main-1", f"sleep 3; {done()}")
    r = pod.run(timeout=30)
    assert "timed out" in r.event("sidecar-1", "liveness-probe-failed")[0]["detail"]
    assert not r.event("sidecar-2", "ready")


def test_p14_a_failing_startup_probe_restarts_the_sidecar(pod: Pod) -> None:
    _with_probe(
        pod,
        startupProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2},
        livenessProbe={"exec": {"command": ["true"]}, "periodSeconds": 1},
    )
    pod.main("main-1", done())
    r = pod.run(stop_after=3.0, timeout=30)
    assert r.count("sidecar-1", "start") >= 2


def test_p15_p16_liveness_waits_for_the_startup_probe(pod: Pod) -> None:
    gate = pod.tmp / "started"
    pod.sidecar(
        "sidecar-1",
        f"sleep 1; touch {gate}; {FOREVER}",
        startupProbe={
            "exec": {"command": ["test", "-f", str(gate)]},
            "periodSeconds": 1,
            "failureThreshold": 10,
        },
        livenessProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1},
    )
    pod.main("main-1", f"sleep 0.5; {done()}")
    r = pod.run(timeout=30)
    passed = r.event("sidecar-1", "startup-probe-passed")[0]["t"]
    failed = r.event("sidecar-1", "liveness-probe-failed")[0]["t"]
    assert failed >= passed, "no liveness before startup succeeded (P15), then it acts (P16)"


def test_p17_ready_right_after_the_startup_probe(pod: Pod) -> None:
    _with_probe(
        pod,
        startupProbe={"exec": {"command": ["true"]}, "periodSeconds": 1},
        readinessProbe={"exec": {"command": ["true"]}, "periodSeconds": 30},
    )
    pod.main("main-1", f"sleep 0.5; {done()}")
    r = pod.run(timeout=30)
    passed = r.event("sidecar-1", "startup-probe-passed")[0]["t"]
    ready = r.event("sidecar-1", "ready")[0]["t"]
    assert ready - passed < 1.0


def test_p18_the_probe_grace_period_overrides_the_pods(pod: Pod) -> None:
    pod.grace = 60
    stubborn = pod.tmp / "stubborn-once"
    # Ignores SIGTERM on its first run only, so the pod's own 60 s grace never comes into play.
    pod.sidecar(
        "sidecar-1",
        f"if [ -f {stubborn} ]; then {FOREVER}; fi; touch {stubborn}; "
        "trap '' TERM; while :; do sleep 0.05; done",
        livenessProbe={
            "exec": {"command": ["false"]},
            "initialDelaySeconds": 1,  # the first probe comes at once; let the trap be set
            "periodSeconds": 1,
            "failureThreshold": 1,
            "terminationGracePeriodSeconds": 1,
        },
    )
    pod.main("main-1", f"sleep 5; {done()}")
    r = pod.run(timeout=60)
    failed = r.event("sidecar-1", "liveness-probe-failed")[0]["t"]
    killed = r.event("sidecar-1", "sigkill")[0]["t"]
    assert killed - failed < 4, "killed after the probe's grace, not the pod's 60 s"


# -- hook scenarios (H*) -------------------------------------------------------------------------


def test_h2_pre_stop_exec_hook_runs(pod: Pod) -> None:
    pod.sidecar("sidecar-1", lifecycle={"preStop": pod.hook("hook", "L prestop")})
    pod.main("main-1", f"sleep 0.2; {done()}")
    r = pod.run()
    assert r.first("hook", "prestop") <= r.first("sidecar-1", "term")


def test_h3_h5_http_hooks_reach_their_handler(pod: Pod, tmp_path: Path) -> None:
    import http.server  # noqa: PLC0415
    import threading  # noqa: PLC0415

    seen: list[str] = []

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        pod.sidecar(
            "sidecar-1",
            lifecycle={
                "postStart": {"httpGet": {"path": "/echo?msg=poststart", "port": port}},
                "preStop": {"httpGet": {"path": "/echo?msg=prestop", "port": port}},
            },
        )
        pod.main("main-1", f"sleep 0.2; {done()}")
        r = pod.run()
    finally:
        server.shutdown()
        server.server_close()
    assert r.code == 0
    assert seen == ["/echo?msg=poststart", "/echo?msg=prestop"]


GRPC_SERVER = (
    "import sys, grpc\n"
    "from concurrent import futures\n"
    "from grpc_health.v1 import health, health_pb2, health_pb2_grpc\n"
    "server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))\n"
    "servicer = health.HealthServicer()\n"
    "servicer.set('', health_pb2.HealthCheckResponse.SERVING)\n"
    "health_pb2_grpc.add_HealthServicer_to_server(servicer, server)\n"
    "server.add_insecure_port('127.0.0.1:' + sys.argv[1])\n"
    "server.start()\n"
    "server.wait_for_termination()\n"
)


def test_p20_p21_grpc_liveness_passes_on_serving_and_restarts_on_a_wrong_port(
    pod: Pod,
) -> None:
    pytest.importorskip("grpc_health.v1.health")
    script = pod.tmp / "grpc_server.py"
    script.write_text(GRPC_SERVER)
    import sys  # noqa: PLC0415

    server = f"exec {sys.executable} {script} 18791"
    pod.sidecar(
        "good",
        server,
        # The server is a Python program that takes its time to start on a busy machine.
        startupProbe={"grpc": {"port": 18791}, "periodSeconds": 1, "failureThreshold": 60},
        # A new gRPC channel per probe takes its time on a starved CPU: room for it.
        livenessProbe={
            "grpc": {"port": 18791},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    )
    pod.sidecar(
        "wrong",
        f"exec {sys.executable} {script} 18792",
        livenessProbe={
            "grpc": {"port": 18799},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    pod.main("main-1", f"sleep 3.5; {done()}")
    r = pod.run(timeout=60)
    assert r.code == 0
    assert not r.event("good", "liveness-probe-failed")
    assert r.event("wrong", "liveness-probe-failed")


def test_s11_readiness_probes_run_during_pre_stop_but_liveness_probes_do_not(pod: Pod) -> None:
    # Upstream: "a pod is terminating because its liveness probe fails > should execute
    # readiness probe while in preStop, but not liveness" (container_probe e2e).
    failed = pod.tmp / "failed"
    pod.main(
        "main-1",
        "trap 'L term; exit 0' TERM; while :; do sleep 0.05; done",
        readinessProbe={**pod.hook("readiness", "L probe"), "periodSeconds": 1},
        livenessProbe={
            **pod.hook("liveness", f"L probe; ! test -f {failed}"),
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        lifecycle={"preStop": pod.hook("main-1", "L prestop; sleep 3; L prestop-done")},
    )
    failed.touch()
    r = pod.run(timeout=40)
    began, ended = r.first("main-1", "prestop"), r.first("main-1", "prestop-done")
    assert [t for t in r.times("readiness", "probe") if began < t < ended], "no readiness run"
    late = [t for t in r.times("liveness", "probe") if t > began + 1.0]
    assert not late, "a liveness probe ran after the preStop began"


def test_p22_p23_readiness_turns_false_during_termination_and_liveness_stops(pod: Pod) -> None:
    # Upstream: "should mark readiness on pods to false [and disable liveness probes] while
    # pod is in progress of terminating" (container_probe e2e, the pod-deletion case).
    ready = pod.tmp / "ready"
    pod.main(
        "main-1",
        f"trap 'rm -f {ready}; L term; sleep 3; L exit 0; exit 0' TERM; touch {ready}; "
        "while :; do sleep 0.05; done",
        readinessProbe={
            "exec": {"command": ["test", "-f", str(ready)]},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        livenessProbe={
            "exec": {"command": ["test", "-f", str(ready)]},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    r = pod.run(stop_after=2.5, timeout=40)
    terminating = r.event("pod", "terminating")[0]["t"]
    assert [e for e in r.event("main-1", "ready") if e["t"] < terminating]
    assert [e for e in r.event("main-1", "not-ready") if e["t"] > terminating], (
        "readiness probes stopped with the termination"
    )
    assert not r.event("main-1", "liveness-probe-failed")
    assert r.code == 0, "exited 0 on SIGTERM: Succeeded"


def test_r8_waiting_for_a_startup_probe_ends_when_the_container_exits(pod: Pod) -> None:
    # The kubelet's probe workers stop with their container: an exited container is not
    # probed until a long initialDelaySeconds has passed.
    pod.main(
        "main-1",
        f"sleep 0.3; {done(3)}",
        startupProbe={"exec": {"command": ["true"]}, "initialDelaySeconds": 60},
    )
    r = pod.run(timeout=45)
    assert r.code == 3
    assert r.event("pod", "failed")[0]["t"] < 20


def test_r8_waiting_for_a_startup_probe_ends_when_the_pod_terminates(pod: Pod) -> None:
    pod.sidecar(
        "sidecar-1",
        startupProbe={"exec": {"command": ["false"]}, "periodSeconds": 60, "failureThreshold": 5},
    )
    pod.main("main-1", done())
    r = pod.run(stop_after=1.0, timeout=45)
    assert r.count("main-1", "start") == 0
    assert r.event("pod", "failed")[0]["t"] < 20


def test_r37_sigterm_goes_to_the_main_process_only(pod: Pod) -> None:
    # Pod termination: "the container runtime sends a TERM signal to the main process in each
    # container" (kubernetes.io, Termination of Pods); the rest dies with it at its exit.
    pod.main(
        "main-1",
        "(trap 'L child-term; exit 0' TERM; while :; do sleep 0.05; done) & "
        "trap 'L term; sleep 0.3; L exit 0; exit 0' TERM; while :; do sleep 0.05; done",
    )
    r = pod.run(stop_after=1.0, timeout=30)
    assert r.count("main-1", "term") == 1
    assert r.count("main-1", "child-term") == 0, "SIGTERM reached a child of the main process"
    assert r.code == 0, "the main container exited 0 on SIGTERM: Succeeded"


def test_r42_after_sigterm_a_main_killed_by_the_signal_fails_the_pod(pod: Pod) -> None:
    pod.main("main-1", "while :; do sleep 0.05; done")
    r = pod.run(stop_after=1.0, timeout=30)
    assert r.event("main-1", "exited")[-1]["code"] == 143
    assert r.code == 143, "Failed, with the code the kubelet reports (128 + SIGTERM)"
    assert "failed" in r.pod_events()


def test_long_lines_reach_the_output_whole_in_marked_parts(pod: Pod) -> None:
    # The CRI logger splits lines at 16 KiB and tags the parts P(artial) and F(ull).
    pod.main(
        "main-1",
        "head -c 200000 /dev/zero | tr '\\0' x; echo; "
        "head -c 100000 /dev/zero | tr '\\0' x | sed 's/x/é/g'; echo; echo after; " + done(),
    )
    r = pod.run(timeout=30)
    assert r.code == 0
    lines, current = [], ""
    for line in r.stdout.splitlines():
        name, tag, text = line[:6], line[7], line[9:]
        assert name == "main-1"
        current += text
        if tag == "|":
            lines.append(current)
            current = ""
        else:
            assert tag == "P"
            assert len(text.encode()) <= 16384
    assert lines == ["x" * 200_000, "é" * 100_000, "after"]


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Two busy processes (one per core here), bounded to 60 s, stopped after the test."""
    hog = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(2)]
    try:
        yield
    finally:
        for proc in hogs:
            proc.kill()
            proc.wait()


@pytest.mark.usefixtures("cpu_load")
def test_r8_without_startup_probes_each_entry_starts_after_the_previous_sidecar_under_load(
    pod: Pod,
) -> None:
    # The kubelet starts the next init entry once the previous sidecar's process has
    # started (no startupProbe, no postStart): the order is fixed, however busy the node.
    order = ["sidecar-1", "init-1", "sidecar-2", "sidecar-3", "main-1", "main-2"]
    pod.sidecar("sidecar-1")
    pod.init("init-1", done())
    pod.sidecar("sidecar-2")
    pod.sidecar("sidecar-3")
    pod.main("main-1", f"sleep 0.5; {done()}")
    pod.main("main-2", f"sleep 0.5; {done()}")
    for _ in range(3):
        pod.log_path.write_text("")
        r = pod.run(timeout=60)
        assert r.code == 0
        started = [e["container"] for e in r.events if e["event"] == "started"]
        assert started == order
        assert r.first("init-1", "exit 0") <= r.first("sidecar-2", "start")
        for name in order:
            assert r.count(name, "start") == 1


def test_p19_the_startup_probe_grace_period_overrides_the_pods(pod: Pod) -> None:
    pod.grace = 60
    pod.main(
        "main-1",
        "trap '' TERM; while :; do sleep 0.05; done",
        startupProbe={
            "exec": {"command": ["false"]},
            "initialDelaySeconds": 1,  # the first probe comes at once; let the trap be set
            "periodSeconds": 1,
            "failureThreshold": 1,
            "terminationGracePeriodSeconds": 1,
        },
    )
    r = pod.run(timeout=40)
    failed = r.event("main-1", "startup-probe-failed")[0]["t"]
    killed = r.event("main-1", "sigkill")[0]["t"]
    assert killed - failed < 4, "killed after the probe's grace, not the pod's 60 s"


def test_s12_sidecar_liveness_probes_stop_and_sidecars_do_not_restart_during_pre_stop(
    pod: Pod,
) -> None:
    pod.sidecar(
        "sidecar-1",
        livenessProbe={
            **pod.hook("sc-liveness", "L probe; false"),
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    pod.main(
        "main-1",
        "trap 'L term; exit 0' TERM; while :; do sleep 0.05; done",
        lifecycle={"preStop": pod.hook("main-1", "L prestop; sleep 3; L prestop-done")},
    )
    r = pod.run(stop_after=2.0, timeout=40)
    began = r.first("main-1", "prestop")
    assert not [t for t in r.times("sc-liveness", "probe") if t > began + 1.0]
    terminating = r.event("pod", "terminating")[0]["t"]
    assert not [e for e in r.event("sidecar-1", "started") if e["t"] > terminating]
