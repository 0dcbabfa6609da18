"""Small steps against a real API server through lightkube: namespaces, pods, webhooks.

The MutatingWebhookConfiguration the tests register is the one ``sidecarkit install --url``
prints for a webhook running outside the cluster: here a process on loopback.
"""

from __future__ import annotations

import base64
import http.server
import itertools
import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from lightkube import ApiError, Client
from lightkube.core.dictmixin import DictMixin
from lightkube.core.resource_registry import resource_registry
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.core_v1 import Namespace, Pod, ServiceAccount
from lightkube.types import PatchType
from ruamel.yaml import YAML

from sidecarkit.injection import policy
from tests.support.webhooks import Tls

Json = Any
_serial = itertools.count(1)
T = TypeVar("T", bound=DictMixin)


def typed(cls: type[T], obj: Json) -> T:
    """``obj`` as lightkube's model ``cls``, for creating well-known kinds."""
    return cast(T, cls.from_dict(obj))


def unique(prefix: str) -> str:
    """A name no other test in this session uses (namespaces outlive their tests)."""
    return f"{prefix}-{next(_serial)}-{int(time.time() * 1000) % 100000}"


def wait_for(what: str, check: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Poll ``check`` every 0.1 s until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def namespace(kube: Client, prefix: str, *, labels: dict[str, str] | None = None) -> str:
    """A new namespace, returned once its default ServiceAccount exists (pods need it)."""
    name = unique(prefix)
    kube.create(Namespace(metadata=ObjectMeta(name=name, labels=labels or {})))

    def has_account() -> bool:
        try:
            kube.get(ServiceAccount, "default", namespace=name)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        return True

    wait_for(f"ServiceAccount default in {name}", has_account)
    return name


def pod_dict(
    name: str, *, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> Json:
    """A one-container pod as a user would write it."""
    metadata: dict[str, Json] = {"name": name, "labels": labels or {}}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]},
    }


def create_pod(kube: Client, namespace: str, pod: Json, *, dry_run: bool = False) -> Json:
    """Create ``pod`` and answer the object the API server stored (or would store)."""
    created = kube.create(typed(Pod, pod), namespace=namespace, dry_run=dry_run)
    return created.to_dict()


def injected(pod: Json) -> bool:
    """Whether sidecarkit's status annotation is on the pod the API server answered."""
    annotations = pod.get("metadata", {}).get("annotations") or {}
    return policy.STATUS_ANNOTATION in annotations


def names_of_containers(pod: Json) -> list[str]:
    spec = pod["spec"]
    return [c["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]]


def url_mode(tls: Tls, port: int, *, name: str, failure_policy: str = "Fail") -> Json:
    """``sidecarkit install --url https://127.0.0.1:PORT --tls-dir DIR``'s configuration."""
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecarkit",
            "install",
            "--url",
            f"https://127.0.0.1:{port}",
            "--tls-dir",
            str(tls.directory),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (config,) = [doc for doc in YAML(typ="safe").load_all(printed) if doc]
    assert config["kind"] == "MutatingWebhookConfiguration", config["kind"]
    config["metadata"]["name"] = name
    for webhook in config["webhooks"]:
        webhook["failurePolicy"] = failure_policy
    return config


@contextmanager
def registered(kube: Client, config: Json, *, probe_namespace: str) -> Iterator[None]:
    """``config`` created, in force when entered, deleted and out of force when left.

    The API server picks webhook configurations up from a watch, a moment after the write; a
    dry-run create of an opted-in pod in ``probe_namespace`` (labelled for injection) shows when
    they are in force, so no test runs against the previous set.
    """
    name = config["metadata"]["name"]
    kube.create(typed(MutatingWebhookConfiguration, config))
    try:
        wait_for(
            f"webhook configuration {name} in force",
            lambda: _probe(kube, probe_namespace) != "plain",
        )
        yield
    finally:
        kube.delete(MutatingWebhookConfiguration, name)
        wait_for(
            f"webhook configuration {name} out of force",
            lambda: _probe(kube, probe_namespace) == "plain",
        )


def _probe(kube: Client, namespace: str) -> str:
    try:
        pod = create_pod(kube, namespace, pod_dict(unique("probe")), dry_run=True)
    except ApiError:
        return "rejected"
    return "injected" if injected(pod) else "plain"


def apply_dry_run(kube: Client, obj: Any) -> None:
    """Server-side apply of ``obj`` as given, validated strictly, stored nowhere."""
    resource = resource_registry.load(obj["apiVersion"], obj["kind"])
    metadata = obj["metadata"]
    kube.patch(
        resource,
        metadata["name"],
        obj,
        namespace=metadata.get("namespace"),
        patch_type=PatchType.APPLY,
        field_manager="sidecarkit-test",
        force=True,
        dry_run=True,
    )


@contextmanager
def another_injector(cert: Path, key: Path, *, container: str) -> Iterator[int]:
    """A second mutating webhook, as another project's injector would be: a local HTTPS server
    implementing the AdmissionReview v1 API that appends ``container`` to a pod's containers
    unless it is there already (idempotent, as the API asks of reinvocable webhooks).
    Yields its port on 127.0.0.1."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            request = review["request"]
            names = [c["name"] for c in request["object"]["spec"]["containers"]]
            response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
            if container not in names:
                patch = [
                    {
                        "op": "add",
                        "path": "/spec/containers/-",
                        "value": {"name": container, "image": "registry.example/other:1"},
                    }
                ]
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
            body = json.dumps({**review, "response": response}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="another-injector", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
