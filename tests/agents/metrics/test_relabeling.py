"""Relabelling with Prometheus semantics, and enrichment with the pod's identity."""

from __future__ import annotations

import pytest

from sidecarkit.agents.metrics import exposition, relabeling


def _family(*samples: tuple[str, tuple[tuple[str, str], ...]]) -> exposition.Family:
    return exposition.Family(
        "http", "gauge", None, None, [exposition.Sample(n, labels, 1.0) for n, labels in samples]
    )


def _rules(*data: dict[str, object]) -> list[relabeling.Rule]:
    return [relabeling.rule_from(d, where=f"rules[{i}]") for i, d in enumerate(data)]


def test_keep_drop_replace_labelmap_labeldrop() -> None:
    family = _family(
        ("http_requests", (("code", "200"), ("le_tmp", "x"))),
        ("http_requests", (("code", "500"),)),
        ("go_threads", ()),
    )
    rules = _rules(
        {"action": "drop", "source_labels": ["__name__"], "regex": "go_.*"},
        {
            "action": "replace",
            "source_labels": ["code"],
            "regex": "(5)..",
            "target_label": "class",
            "replacement": "${1}xx",
        },
        {"action": "labelmap", "regex": "le_(.*)", "replacement": "moved_$1"},
        {"action": "labeldrop", "regex": "le_.*"},
    )
    (out,) = relabeling.apply([family], rules)
    assert [(s.name, dict(s.labels)) for s in out.samples] == [
        ("http_requests", {"code": "200", "moved_tmp": "x"}),
        ("http_requests", {"code": "500", "class": "5xx"}),
    ]


def test_keep_on_name_and_rename_a_metric() -> None:
    family = _family(("a", ()), ("b", ()))
    rules = _rules(
        {"action": "keep", "source_labels": ["__name__"], "regex": "a"},
        {
            "source_labels": ["__name__"],
            "regex": "a",
            "target_label": "__name__",
            "replacement": "app_a",
        },
    )
    (out,) = relabeling.apply([family], rules)
    assert [s.name for s in out.samples] == ["app_a"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "explode"}, "action 'explode' is not one of"),
        ({"regex": "("}, "regex does not compile"),
        ({"action": "replace", "source_labels": ["a"]}, "needs target_label"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_bad_rules_say_where_and_what(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=rf"rules\[0\]: .*{message}"):
        relabeling.rule_from(data, where="rules[0]")


def test_enrichment_keeps_the_apps_own_label_as_exported() -> None:
    family = _family(("x", (("pod", "from-app"), ("a", "1"))))
    (out,) = relabeling.enrich([family], [("pod", "web-1"), ("namespace", "shop")])
    assert dict(out.samples[0].labels) == {
        "exported_pod": "from-app",
        "a": "1",
        "pod": "web-1",
        "namespace": "shop",
    }


@pytest.mark.parametrize("honor", [False, True])
def test_enrichment_kept_across_scrapes_gives_what_a_fresh_one_gives(honor: bool) -> None:
    extra = (("pod", "web"), ("instance", "a:1"))
    clash = (("pod", "from-app"), ("route", "/"))
    plain = (("route", "/items"),)
    cache: dict[int, tuple[relabeling.Labels, relabeling.Labels]] = {}

    def enriched(
        family: exposition.Family,
        cache: dict[int, tuple[relabeling.Labels, relabeling.Labels]] | None = None,
    ) -> list[relabeling.Labels]:
        out = relabeling.enrich([family], extra, in_place=True, honor=honor, cache=cache)
        return [s.labels for f in out for s in f.samples]

    fresh = enriched(_family(("x", clash), ("x", plain)))
    first = enriched(_family(("x", clash), ("x", plain)), cache=cache)
    # The next scrape gives the same labels tuples (the parser keeps them): the same result,
    # the very same enriched tuples.
    second = enriched(_family(("x", clash), ("x", plain)), cache=cache)
    assert first == second == fresh
    assert all(a is b for a, b in zip(first, second, strict=True))
    # A tuple equal to a cached one but not it (its parser started afresh) is enriched anew.
    equal = tuple(pair for pair in clash)
    assert equal is not clash
    third = enriched(_family(("x", equal), ("x", (("route", "/other"),))), cache=cache)
    assert third[0] == fresh[0]
    assert third[1] == (("route", "/other"), *extra)
