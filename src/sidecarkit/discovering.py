"""What the webhook would know, read from a live cluster, for ``sidecarkit inject --cluster``.

Besides the pod, the webhook decides with three inputs: the injection config it was installed
with (the ``config.yaml`` of the ``sidecarkit-config`` ConfigMap that ``sidecarkit install``
writes), the labels of the pod's namespace (its selectors match on them), and the kubelets'
version (which settles mode ``auto``). Reading the same three from the cluster makes the offline
answer the one the webhook would give. Each is read once per run; namespace labels once per
namespace.

Every failure is a ConfigError that names the API server, the context and the fix: a cluster
that cannot be reached, or RBAC that forbids a read, is the user's to sort out, and an offline
answer built on a guess would be worse than none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, TypeVar

import httpx2
from lightkube import ApiError, Client
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node, Pod

from sidecarkit import configfiles, errors
from sidecarkit.injection import configs, facts, injecting, profiles, reports
from sidecarkit.k8s import cluster

__all__ = [
    "CONFIG_KEY",
    "CONFIG_MAP",
    "INSTALL_NAMESPACE",
    "WEBHOOK_CONFIGURATION",
    "Cluster",
    "connect",
    "injector",
    "namespace_of",
]

CONFIG_MAP: Final = "sidecarkit-config"
"""The ConfigMap ``sidecarkit install`` ships the injection config in (installing.CONFIG_MAP)."""
CONFIG_KEY: Final = "config.yaml"
WEBHOOK_CONFIGURATION: Final = "sidecarkit"
"""The MutatingWebhookConfiguration ``sidecarkit install`` creates."""
INSTALL_NAMESPACE: Final = "sidecarkit-system"
"""Where ``sidecarkit install`` puts the webhook unless told otherwise."""

T = TypeVar("T")


@dataclass(slots=True)
class Cluster:
    """One cluster's answers, read lazily and kept for the run."""

    client: Client
    describe: str
    """The API server and context, for messages: ``https://...:6443 (context prod)``."""
    default_namespace: str = "default"
    """The context's namespace: where an object without ``metadata.namespace`` would go."""
    _labels: dict[str, Mapping[str, str] | None] = field(default_factory=dict, init=False)
    _streamed: dict[str, Mapping[str, str]] = field(default_factory=dict, init=False)

    def call(self, what: str, read: Callable[[], T], *, fix: str) -> T:
        """``read()``, with API and connection errors turned into a ConfigError that says
        ``what`` failed on which server and context, and ``fix``."""
        try:
            return read()
        except ApiError as exc:
            code = exc.status.code
            reason = "forbidden" if code == 403 else f"HTTP {code}: {exc.status.message}"
            raise errors.ConfigError(f"cannot {what} on {self.describe}: {reason}; {fix}") from exc
        except httpx2.HTTPError as exc:
            raise errors.ConfigError(
                f"cannot reach the API server {self.describe} to {what}: {exc}; "
                "check --kubeconfig and --context"
            ) from exc

    def config(self, *, namespace: str = INSTALL_NAMESPACE) -> configs.Config | None:
        """The installed injection config, or None when sidecarkit is not installed there."""
        source = f"ConfigMap {namespace}/{CONFIG_MAP} key {CONFIG_KEY}"

        def read() -> ConfigMap | None:
            try:
                return self.client.get(ConfigMap, CONFIG_MAP, namespace=namespace)
            except ApiError as exc:
                if exc.status.code == 404:
                    return None
                raise

        found = self.call(
            f"read {source}",
            read,
            fix="give --config FILE, or the RBAC to get configmaps there",
        )
        if found is None:
            return None
        text = (found.data or {}).get(CONFIG_KEY)
        if text is None:
            raise errors.ConfigError(
                f"{source} is missing on {self.describe}; reinstall with `sidecarkit install` "
                "or give --config FILE"
            )
        return configfiles.parse_config(text, source=source)

    def webhook_configuration(self) -> Any:
        """The installed MutatingWebhookConfiguration as JSON, or None when there is none."""

        def read() -> Any:
            try:
                found = self.client.get(MutatingWebhookConfiguration, WEBHOOK_CONFIGURATION)
            except ApiError as exc:
                if exc.status.code == 404:
                    return None
                raise
            return found.to_dict()

        return self.call(
            f"read MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}",
            read,
            fix="ask for the RBAC to get mutatingwebhookconfigurations",
        )

    def pod(self, name: str, *, namespace: str | None) -> Any:
        """Pod ``name`` as JSON, from ``namespace`` or the context's."""
        where = namespace or self.default_namespace

        def read() -> Any:
            try:
                return self.client.get(Pod, name, namespace=where).to_dict()
            except ApiError as exc:
                if exc.status.code == 404:
                    return None
                raise

        found = self.call(f"read pod {where}/{name}", read, fix="ask for the RBAC to get pods")
        if found is None:
            raise errors.InputError(
                f"no pod {name} in namespace {where} on {self.describe}; "
                "check the name, or give -n NAMESPACE"
            )
        return found

    def kubelet_version(self) -> tuple[int, int] | None:
        """The oldest kubelet's (major, minor): a pod may land on any node. None: no nodes."""
        nodes = self.call(
            "list nodes",
            lambda: list(self.client.list(Node)),
            fix="give --kubernetes-version, or the RBAC to list nodes",
        )
        versions = [
            facts.parse_version(node.status.nodeInfo.kubeletVersion)
            for node in nodes
            if node.status is not None
            and node.status.nodeInfo is not None
            and node.status.nodeInfo.kubeletVersion
        ]
        return min(versions) if versions else None

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        """The labels of namespace ``name``, or None when it does not exist (yet)."""
        if name not in self._labels:

            def read() -> Mapping[str, str] | None:
                try:
                    namespace = self.client.get(Namespace, name)
                except ApiError as exc:
                    if exc.status.code == 404:
                        return None
                    raise
                return dict((namespace.metadata and namespace.metadata.labels) or {})

            self._labels[name] = self.call(
                f"read namespace {name}",
                read,
                fix="give --namespace-labels, or the RBAC to get namespaces",
            )
        return self._labels[name]

    def facts_for(
        self,
        document: Any,
        *,
        kubernetes_version: tuple[int, int] | None,
        extra_labels: Mapping[str, str],
    ) -> facts.Facts:
        """The facts the webhook would have for ``document``'s pods.

        The namespace is the document's own, else the context's (as kubectl apply does). A
        namespace the cluster does not have yet takes its labels from a Namespace document seen
        earlier in the same input, which is how a stream that creates its namespace is applied.
        A ``kind: List`` is judged by the namespace of its first item.
        """
        if isinstance(document, Mapping) and document.get("kind") == "Namespace":
            metadata = document.get("metadata") or {}
            if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
                labels = metadata.get("labels") or {}
                self._streamed[metadata["name"]] = {str(k): str(v) for k, v in labels.items()}
        namespace = namespace_of(document) or self.default_namespace
        labels = self.namespace_labels(namespace)
        if labels is None:
            labels = self._streamed.get(namespace, {})
        return facts.Facts(
            kubernetes_version=kubernetes_version,
            namespace_labels=MappingProxyType({**labels, **extra_labels}),
        )


def namespace_of(document: Any) -> str | None:
    """The namespace a document names for itself (a List: its first item's), or None."""
    if not isinstance(document, Mapping):
        return None
    if document.get("kind") == "List":
        items = [i for i in document.get("items") or [] if isinstance(i, Mapping)]
        return namespace_of(items[0]) if items else None
    metadata = document.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("namespace"), str):
        return str(metadata["namespace"])
    return None


def connect(target: cluster.Target) -> Cluster:
    """A Cluster for ``target``, with its kubeconfig checked before any request."""
    single = cluster.load(target)
    return Cluster(
        cluster.client(target),
        describe=f"{single.cluster.server} (context {single.context_name})",
        default_namespace=single.namespace,
    )


def injector(
    target: cluster.Target,
    *,
    config: configs.Config | None,
    mode: profiles.Mode | None,
    kubernetes_version: tuple[int, int] | None,
    namespace_labels: Mapping[str, str],
    install_namespace: str = INSTALL_NAMESPACE,
) -> Callable[[Any, str], tuple[Any, reports.Report]]:
    """``sidecarkit inject --cluster``: inject each document as the webhook would.

    Options given on the command line win over what the cluster says: ``config`` (from
    ``--config``) over the installed ConfigMap, ``kubernetes_version`` over the nodes', and
    ``namespace_labels`` over the namespace's own. With neither ``--config`` nor an installed
    config, the built-in profiles apply, as in the webhook.
    """
    live = connect(target)
    if config is None:
        config = live.config(namespace=install_namespace) or configs.Config()
    if mode is not None:
        config = replace(config, mode=mode)
    version = kubernetes_version or live.kubelet_version()
    chosen = config

    def transform(document: Any, where: str) -> tuple[Any, reports.Report]:
        cluster_facts = live.facts_for(
            document, kubernetes_version=version, extra_labels=namespace_labels
        )
        return injecting.inject(document, chosen, cluster_facts, location=where, owned=True)

    return transform
