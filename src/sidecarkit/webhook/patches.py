"""RFC 6902 JSON Patch by diffing two JSON documents.

The webhook renders the final pod with the same core the CLI uses and sends the difference; no
operation is built by hand, so CLI and webhook cannot drift. Lists are diffed by their common
prefix and suffix, which is exact and minimal for what injection does (insert at the front of
``initContainers`` or ``containers``, append to ``volumes``, mounts and env) and correct, if not
minimal, for anything else. Keys are escaped as RFC 6901 says (``~`` as ``~0``, ``/`` as ``~1``).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = ["Operation", "diff", "pointer"]


class Operation(TypedDict):
    op: Literal["add", "remove", "replace"]
    path: str
    value: NotRequired[Any]


def pointer(parts: list[str | int]) -> str:
    """An RFC 6901 JSON pointer to ``parts``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def diff(old: Any, new: Any) -> list[Operation]:
    """The operations that turn ``old`` into ``new``."""
    ops: list[Operation] = []
    _diff(old, new, "", ops)
    return ops


def _key(key: object) -> str:
    return "/" + str(key).replace("~", "~0").replace("/", "~1")


def _same_type(a: Any, b: Any) -> bool:
    # bool is an int in Python but not in JSON: true must not equal 1.
    return type(a) is type(b) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    )


def _diff(old: Any, new: Any, path: str, ops: list[Operation]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": path + _key(key)})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": path + _key(key), "value": value})
                continue
            before = old[key]
            # Most of a pod is unchanged: one comparison in C skips the whole subtree.
            if before is value or (type(before) is type(value) and before == value):
                continue
            _diff(before, value, path + _key(key), ops)
        return
    if isinstance(old, list) and isinstance(new, list):
        _diff_list(old, new, path, ops)
        return
    if not _same_type(old, new) or old != new:
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_list(old: list[Any], new: list[Any], path: str, ops: list[Operation]) -> None:
    prefix = 0
    limit = min(len(old), len(new))
    while prefix < limit and _equal(old[prefix], new[prefix]):
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and _equal(old[-1 - suffix], new[-1 - suffix]):
        suffix += 1
    old_mid = old[prefix : len(old) - suffix]
    new_mid = new[prefix : len(new) - suffix]
    common = min(len(old_mid), len(new_mid))
    for i in range(common):
        _diff(old_mid[i], new_mid[i], f"{path}/{prefix + i}", ops)
    for i in reversed(range(common, len(old_mid))):
        ops.append({"op": "remove", "path": f"{path}/{prefix + i}"})
    for i in range(common, len(new_mid)):
        ops.append({"op": "add", "path": f"{path}/{prefix + i}", "value": new_mid[i]})


def _equal(a: Any, b: Any) -> bool:
    return _same_type(a, b) and a == b
