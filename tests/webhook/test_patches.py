"""The JSON Patch diff: applying diff(a, b) to a, with an RFC 6902 library, gives b."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecarkit.webhook import patches

keys = st.sampled_from(["a", "b", "c", "x/y", "t~1", "~", "/", ""])
values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.floats(allow_nan=False),
        st.text(max_size=3),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(values, values)
def test_applying_the_diff_gives_the_target(old: Any, new: Any) -> None:
    ops = patches.diff(old, new)
    assert jsonpatch.apply_patch(copy.deepcopy(old), ops) == new
    if old == new and type(old) is type(new):
        assert ops == [] or all(op["op"] == "replace" for op in ops)


def test_keys_are_escaped_per_rfc_6901() -> None:
    ops = patches.diff(
        {"metadata": {}}, {"metadata": {"annotations": {"sidecarkit.io/status": "x"}}}
    )
    assert ops == [
        {"op": "add", "path": "/metadata/annotations", "value": {"sidecarkit.io/status": "x"}}
    ]
    ops = patches.diff({"a": {"k/~": 1}}, {"a": {"k/~": 2}})
    assert ops == [{"op": "replace", "path": "/a/k~1~0", "value": 2}]


def test_insertion_at_the_front_is_a_few_adds() -> None:
    old = {"spec": {"initContainers": [{"name": "user"}]}}
    new = {"spec": {"initContainers": [{"name": "sk-a"}, {"name": "sk-b"}, {"name": "user"}]}}
    assert patches.diff(old, new) == [
        {"op": "add", "path": "/spec/initContainers/0", "value": {"name": "sk-a"}},
        {"op": "add", "path": "/spec/initContainers/1", "value": {"name": "sk-b"}},
    ]


def test_true_is_not_one() -> None:
    assert patches.diff({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
