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
    text = str(key)
    if "~" in text or "/" in text:
        text = text.replace("~", "~0").replace("/", "~1")
    return "/" + text


def _same_type(a: Any, b: Any) -> bool:
    # bool is an int in Python but not in JSON: true must not equal 1.
    return type(a) is type(b) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    )


_ABSENT: Any = object()


def _diff(old: Any, new: Any, path: str, ops: list[Operation]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        if not old.keys() <= new.keys():
            for key in old:
                if key not in new:
                    ops.append({"op": "remove", "path": path + _key(key)})
        for key, value in new.items():
            before = old.get(key, _ABSENT)
            if before is _ABSENT:
                ops.append({"op": "add", "path": path + _key(key), "value": value})
            # Most of a pod is unchanged: one comparison in C skips the whole subtree.
            elif before is not value and (type(before) is not type(value) or before != value):
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
    # Injection shares what it leaves alone, so identity settles most elements at once.
    while prefix < limit and (old[prefix] is new[prefix] or _equal(old[prefix], new[prefix])):
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and (
        old[-1 - suffix] is new[-1 - suffix] or _equal(old[-1 - suffix], new[-1 - suffix])
    ):
        suffix += 1
    old_mid = len(old) - suffix - prefix
    new_mid = len(new) - suffix - prefix
    common = min(old_mid, new_mid)
    for i in range(prefix, prefix + common):
        _diff(old[i], new[i], f"{path}/{i}", ops)
    for i in reversed(range(prefix + common, prefix + old_mid)):
        ops.append({"op": "remove", "path": f"{path}/{i}"})
    for i in range(prefix + common, prefix + new_mid):
        ops.append({"op": "add", "path": f"{path}/{i}", "value": new[i]})


def _equal(a: Any, b: Any) -> bool:
    if type(a) is type(b):
        return bool(a == b)
    return _same_type(a, b) and a == b
