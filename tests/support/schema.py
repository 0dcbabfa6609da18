"""Kubernetes OpenAPI schema checks through the JSON schemas ``kubernetes-validate`` ships.

``kubernetes_validate.validate`` stops at the first error; the corpus checks need every error
of the input and of the output to compare them, so this builds the same validator and iterates.
Strict schemas are used: an unknown field is an error, which catches typos in what we emit.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

import jsonschema
import referencing

VERSION = "1.33.0"
_DIR = f"v{VERSION}-local-strict"


def _load(name: str) -> Any | None:
    ref = resources.files("kubernetes_validate").joinpath(f"kubernetes-json-schema/{_DIR}/{name}")
    try:
        return json.loads(ref.read_text())
    except FileNotFoundError:
        return None


@functools.cache
def _validator(kind: str, api_version: str) -> Any | None:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = _load(f"{kind.lower()}-{group_version}.json")
    if schema is None:
        return None
    definitions = _load("_definitions.json")
    registry = referencing.Resource.from_contents(schema) @ referencing.Registry()
    registry = referencing.Resource.from_contents(definitions) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def has_schema(obj: Any) -> bool:
    return isinstance(obj, dict) and _validator_for(obj) is not None


def _validator_for(obj: dict[str, Any]) -> Any | None:
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return None
    return _validator(kind, api_version)


def errors(obj: dict[str, Any]) -> set[tuple[str, str]]:
    """Every schema error as (path with list indices as *, message without values)."""
    validator = _validator_for(obj)
    if validator is None:
        raise LookupError(f"no {VERSION} schema for {obj.get('apiVersion')} {obj.get('kind')}")
    found = set()
    for error in validator.iter_errors(obj):
        path = "/".join("*" if isinstance(p, int) else str(p) for p in error.absolute_path)
        found.add((path, error.validator))
    return found


def validate(obj: dict[str, Any]) -> None:
    """Raise AssertionError listing the schema errors of ``obj``."""
    problems = errors(obj)
    assert not problems, f"{obj.get('kind')}: {sorted(problems)}"
