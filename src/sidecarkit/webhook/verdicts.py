"""A bounded cache of verdicts for byte-identical objects (the pods of one ReplicaSet)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from sidecarkit.injection import configs, facts
from sidecarkit.webhook import admitting

__all__ = ["Verdicts"]


class Verdicts:
    """Recent verdicts by (config, facts, operation, object bytes): a bounded LRU.

    The pods of one ReplicaSet are created from one template, so a rollout or a scale-up sends
    byte-identical objects (no name yet, same generateName); each is decided once. The config
    is part of the key by identity, so a reload starts afresh. Verdicts with an unexpected
    error are not kept, nor objects over ``max_object`` bytes, so the cache stays a few MiB.
    """

    def __init__(self, size: int = 128, max_object: int = 32 * 1024) -> None:
        self.size = size
        self.max_object = max_object
        self.entries: OrderedDict[tuple[object, ...], admitting.Verdict] = OrderedDict()
        self.config: configs.Config | None = None

    def get(
        self,
        request: dict[str, Any],
        config: configs.Config,
        cluster: facts.Facts,
        *,
        body: bytes | None = None,
    ) -> admitting.Verdict:
        """The verdict on ``request``, decided now or earlier.

        With ``body``, the review's bytes, the key is those bytes less the review's own uid,
        which is cheaper than encoding the object again and identifies it as well. A body that
        does not spell the uid as the API server does (compact JSON) is keyed by its object.
        """
        if config is not self.config:
            self.entries.clear()
            self.config = config
        operation = request.get("operation")
        if not isinstance(operation, str):  # the key must hash; decide() answers it anyway
            return admitting.decide(request, config, cluster)
        marker = b'"uid":"' + str(request.get("uid")).encode() + b'"'
        if body is not None and marker in body:
            obj = body.replace(marker, b"", 1)
        else:
            try:
                obj = orjson.dumps(request.get("object"))
            except TypeError:  # not JSON-encodable after all: decide without caching
                return admitting.decide(request, config, cluster)
        if len(obj) > self.max_object:  # pods are a few KiB; keep memory bounded
            return admitting.decide(request, config, cluster)
        key = (
            operation,
            cluster.kubernetes_version,
            tuple(sorted(cluster.namespace_labels.items())),
            obj,
        )
        verdict = self.entries.get(key)
        if verdict is not None:
            self.entries.move_to_end(key)
            return verdict
        verdict = admitting.decide(request, config, cluster)
        if verdict.error is None:
            self.entries[key] = verdict
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return verdict
