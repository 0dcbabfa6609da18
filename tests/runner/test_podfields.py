"""The runner's built-in Pod field table is the Kubernetes 1.33 schema, no more, no less.

The table (``src/sidecarkit/runner/podfields.json``) is generated here from the strict JSON
schema that ``kubernetes-validate`` ships, so the runner checks types and field names the way
``kubectl apply --dry-run=server`` would without carrying 100 MB of schemas or jsonschema.
``SIDECARKIT_REFRESH_GOLDEN=1`` rewrites it after a schema upgrade.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from sidecarkit.runner import podschema

VERSION = "1.33.0"
TABLE = Path(podschema.__file__).with_name("podfields.json")
REFRESH = os.environ.get("SIDECARKIT_REFRESH_GOLDEN") == "1"
_PRIMITIVES = {"string", "integer", "number", "boolean"}
_SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "int-or-string",
    "io.k8s.apimachinery.pkg.api.resource.Quantity": "quantity",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": "string",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": "string",
}


def _definitions() -> dict[str, Any]:
    ref = resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{VERSION}-local-strict/_definitions.json"
    )
    return dict(json.loads(ref.read_text())["$defs"])


def generate() -> dict[str, Any]:
    """The table: {"root": {...}, "types": {name: {field: type}}} from the schema."""
    defs = _definitions()
    types: dict[str, dict[str, str]] = {}

    def short(ref: str) -> str:
        return ref.rsplit(".", 1)[-1]

    def kind(schema: dict[str, Any]) -> str:
        ref = schema.get("$ref")
        if ref:
            full = ref.split("/")[-1]
            if full in _SPECIAL:
                return _SPECIAL[full]
            visit(full)
            return short(full)
        declared = schema.get("type")
        names = [t for t in (declared if isinstance(declared, list) else [declared]) if t]
        names = [t for t in names if t != "null"]
        if not names:
            return "any"
        name = names[0]
        if name == "array":
            return f"[{kind(schema.get('items') or {})}]"
        if name == "object":
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                return "{" + kind(extra) + "}"
            return "any"
        assert name in _PRIMITIVES, name
        return str(name)

    seen: dict[str, str] = {}

    def visit(full: str) -> None:
        name = short(full)
        assert seen.setdefault(name, full) == full, f"two types named {name}"
        if name in types:
            return
        schema = defs[full]
        fields: dict[str, str] = {}
        types[name] = fields
        required = set(schema.get("required") or ())
        for field, sub in sorted((schema.get("properties") or {}).items()):
            fields[field] = ("!" if field in required else "") + kind(sub)

    visit("io.k8s.api.core.v1.PodSpec")
    visit("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    return {"version": VERSION, "types": dict(sorted(types.items()))}


def test_the_field_table_is_the_kubernetes_schema() -> None:
    expected = generate()
    if REFRESH:
        TABLE.write_text(json.dumps(expected, separators=(",", ":"), sort_keys=True) + "\n")
    assert json.loads(TABLE.read_text()) == expected, (
        "podfields.json is stale: SIDECARKIT_REFRESH_GOLDEN=1 rewrites it"
    )
