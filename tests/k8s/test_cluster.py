"""Finding a cluster's credentials: kubectl's order, and errors that say what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecarkit import errors
from sidecarkit.k8s import cluster


def write_kubeconfig(path: Path, *, contexts: dict[str, str], current: str | None) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": s}} for n, s in contexts.items()],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "me"}} for n in contexts],
    }
    if current is not None:
        config["current-context"] = current
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_the_current_context_is_the_default(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        contexts={"a": "https://a.invalid:6443", "b": "https://b.invalid"},
        current="b",
    )

    single = cluster.load(cluster.Target(kubeconfig=path))

    assert single.cluster.server == "https://b.invalid"


def test_a_named_context_wins_over_the_current_one(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        contexts={"a": "https://a.invalid:6443", "b": "https://b.invalid"},
        current="b",
    )

    single = cluster.load(cluster.Target(kubeconfig=path, context="a"))

    assert single.cluster.server == "https://a.invalid:6443"


def test_kubeconfig_lists_are_searched_for_the_first_file_that_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_kubeconfig(tmp_path / "second", contexts={"a": "https://a.invalid"}, current="a")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{path}")

    single = cluster.load(cluster.Target())

    assert single.cluster.server == "https://a.invalid"


def test_a_missing_kubeconfig_names_where_it_looked_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    with pytest.raises(errors.ConfigError) as caught:
        cluster.load(cluster.Target())

    message = str(caught.value)
    assert str(tmp_path / "nowhere") in message
    assert "--kubeconfig" in message


def test_an_unknown_context_is_named_with_the_fix(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", contexts={"a": "https://a.invalid"}, current="a")

    with pytest.raises(errors.ConfigError) as caught:
        cluster.load(cluster.Target(kubeconfig=path, context="prod"))

    assert str(path) in str(caught.value)
    assert "prod" in str(caught.value)
    assert "--context" in str(caught.value)


def test_no_current_context_asks_for_one(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", contexts={"a": "https://a.invalid"}, current=None)

    with pytest.raises(errors.ConfigError, match="--context NAME"):
        cluster.load(cluster.Target(kubeconfig=path))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clusters: [\n  - {name: a\n", ":2:3"),
        ("just a string\n", "no `contexts:` list"),
        (
            "contexts: [{name: a, context: {cluster: gone, user: me}}]\nclusters: []\ncurrent-context: a\n",
            "not a kubeconfig",
        ),
    ],
    ids=["bad-yaml", "not-a-mapping", "dangling-cluster"],
)
def test_a_file_that_is_not_a_kubeconfig_says_where_and_how_to_check_it(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "config"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(errors.ConfigError) as caught:
        cluster.load(cluster.Target(kubeconfig=path))

    assert str(path) in str(caught.value)
    assert expected in str(caught.value)
