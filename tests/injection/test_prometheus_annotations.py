"""The metrics profile reads ``prometheus.io/scrape|port|path`` already on the pod."""

from __future__ import annotations

from typing import Any

from sidecarkit.injection import Code, Config, Facts, inject


def _pod(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "labels": {"sidecarkit.io/inject": "true"},
            "annotations": {"sidecarkit.io/profiles": "metrics", **annotations},
        },
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    }


def _targets(pod: dict[str, Any]) -> str:
    new, _ = inject(pod, Config(), Facts())
    (agent,) = new["spec"]["initContainers"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    return str(env["SIDECARKIT_METRICS_TARGETS"])


def test_port_and_path_annotations_say_what_the_sidecar_scrapes() -> None:
    pod = _pod({"prometheus.io/port": "9102", "prometheus.io/path": "/stats"})
    assert _targets(pod) == "http://127.0.0.1:9102/stats"


def test_scrape_false_turns_scraping_off() -> None:
    assert _targets(_pod({"prometheus.io/scrape": "false"})) == ""


def test_our_own_setting_wins_over_the_prometheus_annotation() -> None:
    pod = _pod({"prometheus.io/port": "9102", "sidecarkit.io/metrics.port": "9000"})
    assert _targets(pod) == "http://127.0.0.1:9000/metrics"


def test_without_annotations_the_defaults_apply() -> None:
    assert _targets(_pod({})) == "http://127.0.0.1:8080/metrics"


def test_a_port_that_is_not_a_number_is_ignored_with_a_warning() -> None:
    pod = _pod({"prometheus.io/port": "http"})
    assert _targets(pod) == "http://127.0.0.1:8080/metrics"
    _, report = inject(pod, Config(), Facts())
    assert Code.PROMETHEUS_ANNOTATION_IGNORED in report.decisions[0].codes
    assert Code.PROMETHEUS_ANNOTATION_IGNORED.is_warning


def test_two_pods_differing_only_in_the_port_annotation_get_different_sidecars() -> None:
    assert _targets(_pod({"prometheus.io/port": "9001"})) != _targets(
        _pod({"prometheus.io/port": "9002"})
    )


def test_the_sidecar_reads_the_pods_annotations_as_they_change() -> None:
    # prometheus.io/scheme, and annotations changed after injection, reach the agent through
    # the Downward API file the profile mounts.
    new, _ = inject(_pod({"prometheus.io/scheme": "https"}), Config(), Facts())
    (agent,) = new["spec"]["initContainers"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    path = env["SIDECARKIT_METRICS_ANNOTATIONS_FILE"]
    (mount,) = [m for m in agent["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in new["spec"]["volumes"] if v["name"] == mount["name"]]
    items = {i["path"]: i["fieldRef"]["fieldPath"] for i in volume["downwardAPI"]["items"]}
    assert items[path.rsplit("/", 1)[1]] == "metadata.annotations"
