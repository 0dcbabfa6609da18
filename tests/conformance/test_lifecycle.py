"""Upstream e2e scenarios (``../shared`` lifecycle research S*, P*, H*) through ``sidecarkit run``.

Each test names its scenario id and checks what the upstream test checks, observed from the
timestamps the containers write themselves. After every scenario no process of the pod remains.
"""

from __future__ import annotations

import itertools
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
        startupProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1},
        lifecycle={"preStop": pod.hook("main-1", "L prestop")},
    )
    r = pod.run(timeout=20)
    assert r.first("main-1", "prestop") < r.first("main-1", "term")
    assert r.code == 0, "it exited 0 on SIGTERM, and Never means no restart"


def test_s10_a_failing_liveness_probe_runs_pre_stop_and_stops_the_main(pod: Pod) -> None:
    pod.main(
        "main-1",
        "trap 'L term; exit 0' TERM; while :; do sleep 0.05; done",
        livenessProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1},
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
    assert r.first("sidecar-1", "start") <= r.first("init-2", "start")
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
    starts = r.times("sidecar-1", "start")
    assert len(starts) >= 2
    assert starts[0] < r.first("main-1", "start") < starts[-1], "restarted before and after"


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
    pod.init("init-1", f"sleep 0.1; {done(1)}")
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
        livenessProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1},
        lifecycle={"preStop": pod.hook("sidecar-1", "L prestop")},
    )
    pod.main("main-1", f"sleep 2.5; {done()}")
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
