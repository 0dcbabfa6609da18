"""YAML built to hurt a parser: alias bombs, cycles, deep nesting. Each gets a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sidecarkit import errors
from sidecarkit.k8s import manifests

SIDECARKIT = [sys.executable, "-m", "sidecarkit"]


def _bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return (
        "apiVersion: v1\nkind: Pod\n"
        "metadata: {name: bomb, labels: {sidecarkit.io/inject: 'true'}}\n"
        "spec:\n  containers: [{name: app, image: nginx}]\n"
        + "".join(f"  {line}\n" for line in lines)
    )


def _nested(depth: int) -> str:
    return (
        "apiVersion: v1\nkind: Pod\n"
        "metadata: {name: deep, labels: {sidecarkit.io/inject: 'true'}}\n"
        "spec:\n  containers: [{name: app, image: nginx}]\n"
        "  deep: " + "[" * depth + "]" * depth + "\n"
    )


def test_an_alias_bomb_is_refused_with_an_error_that_names_the_document() -> None:
    with pytest.raises(errors.ManifestError, match=r"bomb\.yaml:1: .*alias"):
        manifests.load_stream(_bomb(), source="bomb.yaml")


def test_the_command_refuses_an_alias_bomb_instead_of_hanging() -> None:
    result = subprocess.run(
        [*SIDECARKIT, "inject"],
        input="kind: Service\n---\n" + _bomb(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "<stdin> document 2" in result.stderr
    assert "expand" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_few_aliases_that_expand_modestly_are_accepted() -> None:
    (doc,) = manifests.load_stream(_bomb(levels=3, width=5), source="t")
    assert len(doc.data["spec"]["a3"]) == 5


def test_an_alias_to_the_collection_that_contains_it_is_refused() -> None:
    with pytest.raises(errors.ManifestError, match="contains itself"):
        manifests.load_stream("&pod {kind: Pod, spec: *pod}\n", source="t")


@pytest.mark.parametrize("depth", [150, 400, 5000, 200_000])
def test_deep_nesting_is_refused_with_the_place_and_no_traceback(depth: int) -> None:
    with pytest.raises(errors.ManifestError, match=r"deep\.yaml:\d+.*nest"):
        manifests.load_stream(_nested(depth), source="deep.yaml")


def test_the_command_refuses_deep_nesting_without_a_traceback() -> None:
    result = subprocess.run(
        [*SIDECARKIT, "inject"],
        input=_nested(400),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "nest" in result.stderr
    assert "Traceback" not in result.stderr


def test_nesting_that_real_manifests_use_is_accepted() -> None:
    (doc,) = manifests.load_stream(_nested(60), source="t")
    assert doc.data["spec"]["deep"] is not None


def test_brackets_inside_quotes_and_comments_do_not_count_as_nesting() -> None:
    text = 'a: "' + "[" * 600 + '"\nb: x  # ' + "{" * 600 + "\nc: [1, {x: y}]\n"
    (doc,) = manifests.load_stream(text, source="t")
    assert doc.data["c"] == [1, {"x": "y"}]
