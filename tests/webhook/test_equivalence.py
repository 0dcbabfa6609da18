"""The webhook gives exactly what ``sidecarkit inject`` gives.

Every successful golden case and every input of the injection corpus: each pod template is
wrapped as a v1 Pod CREATE review and sent over HTTPS to a running server configured as the CLI
was (config, mode, cluster version, and the route that says whether the namespace opted in);
the returned JSONPatch, applied with an RFC 6902 library, must give the pod template the CLI
printed.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from click.testing import CliRunner

from sidecarkit import cli, configfiles
from sidecarkit.injection import policy
from sidecarkit.k8s import manifests, workloads
from sidecarkit.webhook import serving
from tests.support import pods, webhooks
from tests.webhook.conftest import CORPUS

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
INJECTION = CORPUS / "injection"


class Servers:
    """One in-thread server per distinct (config, cluster version), started on first use."""

    def __init__(self, tls: webhooks.Tls, directory: Path, stack: ExitStack) -> None:
        self.tls, self.directory, self.stack = tls, directory, stack
        self.running: dict[tuple[str, str | None], webhooks.Client] = {}

    def client(self, config_text: str, version: str | None) -> webhooks.Client:
        key = (config_text, version)
        if key not in self.running:
            path = self.directory / f"config-{len(self.running)}.yaml"
            path.write_text(config_text)
            settings = serving.Settings(
                tls_cert=self.tls.cert,
                tls_key=self.tls.key,
                config=path,
                host="127.0.0.1",
                port=0,
                reload_interval=3600,
                kubernetes_version=None if version is None else _version(version),
            )
            server = self.stack.enter_context(webhooks.in_thread(settings))
            assert server.port is not None
            client = webhooks.Client(server.port, self.tls)
            self.stack.callback(client.close)
            self.running[key] = client
        return self.running[key]


def _version(text: str) -> tuple[int, int]:
    from sidecarkit.injection import facts  # noqa: PLC0415

    return facts.parse_version(text)


@pytest.fixture(scope="module")
def servers(tls: webhooks.Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with ExitStack() as stack:
        yield Servers(tls, tmp_path_factory.mktemp("configs"), stack)


def _cli_setup(args: list[str], base: Path) -> tuple[str, str | None, bool]:
    """(config text, kubernetes version, namespace opted in) that the CLI arguments amount to."""
    config_text, mode, version, opted_in = "", None, None, False
    it = iter(args)
    for arg in it:
        if arg == "--config":
            config_text = (base / next(it)).read_text()
        elif arg == "--mode":
            mode = next(it)
        elif arg == "--kubernetes-version":
            version = next(it)
        elif arg == "--namespace-labels":
            opted_in = f"{policy.INJECT_LABEL}=true" in next(it)
        elif arg == "--facts":
            found = configfiles.load_facts(str(base / next(it)))
            opted_in = found.namespace_labels.get(policy.INJECT_LABEL) == "true"
            if found.kubernetes_version:
                version = "{}.{}".format(*found.kubernetes_version)
    if mode:
        config_text += f"\nmode: {mode}\n"
    return config_text, version, opted_in


def _templates(document: Any) -> list[Any]:
    objects = (
        document.get("items")
        if isinstance(document, dict) and document.get("kind") == "List"
        else [document]
    )
    found = []
    for obj in objects or ():
        if isinstance(obj, dict) and workloads.pod_template(obj) is not None:
            found.append(obj)
    return found


def _as_pod(obj: Any) -> Any:
    """The pod an object's controller would create, as far as injection is concerned."""
    if obj.get("kind") == "Pod":
        return copy.deepcopy(obj)
    template = workloads.pod_template(obj)
    assert template is not None
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod"}
    if "metadata" in template:
        pod["metadata"] = copy.deepcopy(template["metadata"])
    pod["spec"] = copy.deepcopy(template["spec"])
    return pod


def _check(
    servers: Servers, source: str, text: str, cli_out: str, args: list[str], base: Path
) -> int:
    config_text, version, opted_in = _cli_setup(args, base)
    client = servers.client(config_text, version)
    route = "/inject/namespace" if opted_in else "/inject"
    inputs = manifests.load_stream(text, source=source)
    outputs = manifests.load_stream(cli_out, source="cli")
    assert len(inputs) == len(outputs)
    checked = 0
    for before_doc, after_doc in zip(inputs, outputs, strict=True):
        before_objs = _templates(pods.plain(before_doc.data))
        after_objs = _templates(pods.plain(after_doc.data))
        for before, after in zip(before_objs, after_objs, strict=True):
            pod = _as_pod(before)
            answer = client.review(webhooks.review_for(pod), route)
            assert answer["response"]["allowed"] is True, answer
            patched = jsonpatch.apply_patch(pod, webhooks.patch_of(answer))
            assert patched == _as_pod(after), f"{source}: webhook and CLI differ"
            checked += 1
    return checked


def _golden_cases() -> list[str]:
    cases = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        if path.name.endswith(".injected.yaml"):
            continue
        case = path.name[: -len(".yaml")]
        args_file = GOLDEN / f"{case}.args"
        args = shlex.split(args_file.read_text()) if args_file.exists() else ["inject"]
        report = GOLDEN / f"{case}.report"
        if args[0] == "inject" and report.exists() and report.read_text().startswith("exit: 0"):
            cases.append(case)
    return cases


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_case(case: str, servers: Servers) -> None:
    args_file = GOLDEN / f"{case}.args"
    args = shlex.split(args_file.read_text()) if args_file.exists() else ["inject"]
    text = (GOLDEN / f"{case}.yaml").read_text()
    cli_out = (GOLDEN / f"{case}.injected.yaml").read_text()
    _check(servers, case, text, cli_out, args, GOLDEN)


INDEX = json.loads((INJECTION / "index.json").read_text()) if INJECTION.exists() else []


@pytest.mark.skipif(not INDEX, reason="../shared/corpus is not next to the repository")
@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_injection_corpus_input(entry: dict[str, Any], servers: Servers) -> None:
    path = INJECTION / entry["file"]
    args = ["inject", "--namespace-labels", f"{policy.INJECT_LABEL}=true"]
    result = CliRunner().invoke(cli.cli, [*args, "-f", str(path), "--report", "none"])
    assert result.exit_code == 0, result.stderr
    _check(servers, entry["file"], path.read_text(), result.stdout, args, INJECTION)


def test_enough_pods_were_compared() -> None:
    assert len(_golden_cases()) >= 25
