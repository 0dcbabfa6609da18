"""Field names and types of a pod template, checked as the API server would check them.

``kubectl apply`` refuses a manifest whose fields have the wrong type, and (with the default
strict field validation) one with a field the schema does not know, such as
``livenessProbes`` or ``restartPolicyy``. The runner does the same before it reads the spec,
so a typo is an error that names the field and the fix instead of a silent no-op or a
traceback. The field table, ``podfields.json``, is generated from the Kubernetes 1.33 OpenAPI
schema (``tests/runner/test_podfields.py`` keeps it in step); it covers ``ObjectMeta`` and
``PodSpec`` and everything they hold.

Types in the table: ``string``, ``integer``, ``number``, ``boolean``, ``int-or-string``,
``quantity``, ``any``; ``[T]`` a list of T; ``{T}`` a map of T; a capitalised name is an object
type of the table. A leading ``!`` marks a required field. ``null`` is accepted anywhere, as
"not set".
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["Findings", "check_template"]

_FIXES: Final = {
    "string": "write text (quote it if it looks like a number or true/false)",
    "integer": "write a whole number, e.g. 30",
    "number": "write a number",
    "boolean": "write true or false",
    "int-or-string": "write a number or a name, e.g. 8080 or http",
    "quantity": "write a quantity, e.g. 250m, 1 or 128Mi",
}


class Findings:
    """What the check found: errors always stop the run; unknown fields unless lenient."""

    __slots__ = ("errors", "unknown")

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.unknown: list[str] = []


@functools.cache
def _types() -> Mapping[str, Mapping[str, str]]:
    with open(os.path.join(os.path.dirname(__file__), "podfields.json"), encoding="utf-8") as f:
        table = json.load(f)
    return dict(table["types"])


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _what(kind: str) -> str:
    if kind.startswith("["):
        return "a list"
    if kind.startswith("{"):
        return "a mapping"
    if kind[0].isupper():
        return f"a mapping (a {kind})"
    return {"int-or-string": "a number or a string", "quantity": "a quantity"}.get(
        kind, f"a {kind}" if kind != "integer" else "an integer"
    )


def _fix(kind: str) -> str:
    if kind.startswith("["):
        return "write a list: one '- item' per line, or [a, b]"
    if kind.startswith("{"):
        return "write key: value pairs"
    if kind[0].isupper():
        return "write its fields as key: value pairs"
    return _FIXES.get(kind, "")


def _matches(value: Any, kind: str) -> bool:
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float)
    if kind in ("int-or-string", "quantity"):
        return isinstance(value, str | int | float)
    if kind.startswith("["):
        return isinstance(value, list)
    return isinstance(value, dict)


class _Checker:
    def __init__(self, explain: str) -> None:
        self.found = Findings()
        self.explain = explain
        """``kubectl explain`` path of the template, e.g. ``deployment.spec.template``."""

    def value(self, value: Any, kind: str, path: str, explain: str) -> None:
        if value is None:
            return
        if not _matches(value, kind):
            self.found.errors.append(
                f"{path}: must be {_what(kind)}, got {_show(value)}; {_fix(kind)}"
            )
            return
        if kind.startswith("["):
            for i, item in enumerate(value):
                self.value(item, kind[1:-1], f"{path}[{i}]", explain)
        elif kind.startswith("{"):
            for key, item in value.items():
                self.value(item, kind[1:-1], f"{path}.{key}", explain)
        elif kind[0].isupper():
            self.object(value, kind, path, explain)

    def object(self, value: Mapping[str, Any], kind: str, path: str, explain: str) -> None:
        fields = _types()[kind]
        for name, declared in fields.items():
            if declared.startswith("!") and value.get(name) is None:
                self.found.errors.append(f"{path}.{name}: is required in a {kind}; add it")
        for name, item in value.items():
            kind_of = fields.get(str(name))
            if kind_of is None:
                import difflib  # noqa: PLC0415 - only for a manifest with a typo

                close = difflib.get_close_matches(str(name), list(fields), n=1, cutoff=0.75)
                hint = f"did you mean {close[0]}? " if close else ""
                self.found.unknown.append(
                    f"{path}.{name}: unknown field of {kind}; {hint}remove or rename it "
                    f"(`kubectl explain {explain}` lists the fields)"
                )
                continue
            self.value(item, kind_of.lstrip("!"), f"{path}.{name}", f"{explain}.{name}")


def check_template(
    metadata: Any, spec: Any, *, metadata_path: str, spec_path: str, explain: str
) -> Findings:
    """Type and field-name problems of a pod template's ``metadata`` and ``spec``.

    ``explain`` is the ``kubectl explain`` path of the template, e.g. ``pod`` or
    ``deployment.spec.template``; problems point users to the fields listed there.
    """
    checker = _Checker(explain)
    checker.value(metadata, "ObjectMeta", metadata_path, f"{explain}.metadata")
    checker.value(spec, "PodSpec", spec_path, f"{explain}.spec")
    return checker.found
