"""The webhook server's lifecycle: reloads, probes, metrics, graceful shutdown, namespace lookup."""

from __future__ import annotations

import http.server
import json
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sidecarkit.webhook import certificates, namespaces, serving
from tests.support import webhooks

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "web-", "labels": {"sidecarkit.io/inject": "true"}},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def _added_containers(answer: dict[str, Any]) -> list[str]:
    return [
        op["value"]["name"]
        for op in webhooks.patch_of(answer)
        if op["path"].startswith("/spec/initContainers") and isinstance(op["value"], dict)
    ] + [
        c["name"]
        for op in webhooks.patch_of(answer)
        if op["path"] == "/spec/initContainers"
        for c in op["value"]
    ]


def _wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole, by rename, as a ConfigMap update does: written in place, the
    server (polling every 50 ms, in this process) could read it truncated and count one
    reload more than the test expects."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    temp.replace(path)


def test_config_reloads_and_a_bad_one_is_refused(
    tls: webhooks.Tls, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("defaultProfiles: [logs]\n")
    settings = serving.Settings(
        tls_cert=tls.cert,
        tls_key=tls.key,
        config=config,
        host="127.0.0.1",
        port=0,
        reload_interval=0.05,
    )
    with caplog.at_level(logging.INFO), webhooks.in_thread(settings) as server:
        assert server.port is not None
        client = webhooks.Client(server.port, tls)
        assert _added_containers(client.review(webhooks.review_for(POD))) == ["sidecarkit-logs"]

        _replace(config, "defaultProfiles: [metrics]\n")
        assert _wait_for(
            lambda: (
                _added_containers(client.review(webhooks.review_for(POD))) == ["sidecarkit-metrics"]
            )
        )

        _replace(config, "defaultProfiles: [metrics]\nmode: sometimes\n")
        assert _wait_for(lambda: "new config refused" in caplog.text)
        assert "mode: must be one of native, legacy, auto" in caplog.text
        assert _added_containers(client.review(webhooks.review_for(POD))) == ["sidecarkit-metrics"]

        status, metrics = client.request("GET", "/metrics")
        assert status == 200
        text = metrics.decode()
        assert 'sidecarkit_webhook_reloads_total{what="config",result="error"} 1' in text
        assert 'sidecarkit_webhook_reloads_total{what="config",result="ok"} 2' in text
        client.close()


def test_probes_and_metrics(tls: webhooks.Tls, client: webhooks.Client) -> None:
    assert client.request("GET", "/healthz") == (200, b"ok\n")
    assert client.request("GET", "/readyz") == (200, b"ready\n")
    client.review(webhooks.review_for(POD), "/inject")
    client.request("POST", "/inject", b"not json")
    status, body = client.request("GET", "/metrics")
    text = body.decode()
    assert status == 200
    assert 'sidecarkit_webhook_admissions_total{decision="patched",reason="injected"}' in text
    assert 'sidecarkit_webhook_admissions_total{decision="invalid",reason="bad-review"}' in text
    assert 'sidecarkit_webhook_admission_duration_seconds_bucket{le="+Inf"}' in text
    expiry = certificates.expiry(tls.cert.read_bytes())
    line = next(
        ln for ln in text.splitlines() if ln.startswith("sidecarkit_webhook_certificate_expiry")
    )
    assert abs(float(line.split()[-1]) - expiry) < 1


def test_a_pod_with_a_conflict_is_denied_with_the_reason(client: webhooks.Client) -> None:
    pod = json.loads(json.dumps(POD))
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 15100}]
    answer = client.review(webhooks.review_for(pod))
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 400
    assert "port 15100/TCP" in answer["response"]["status"]["message"]


def test_warnings_carry_defaulted_and_skipped_reasons(client: webhooks.Client) -> None:
    pod = json.loads(json.dumps(POD))
    pod["spec"]["hostNetwork"] = True
    answer = client.review(webhooks.review_for(pod))
    warnings = answer["response"]["warnings"]
    assert any("profiles-defaulted" in w for w in warnings)
    assert any("skipped-host-network" in w for w in warnings)
    assert "patch" not in answer["response"]


def test_sigterm_drains_in_flight_requests_and_stops_accepting(tls: webhooks.Tls) -> None:
    body = json.dumps(webhooks.review_for(POD)).encode()
    with webhooks.process(tls, "--grace", "10s") as (proc, port):
        raw = socket.create_connection(("127.0.0.1", port))
        conn = tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        head = (
            f"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        conn.sendall(head + body[:100])
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):  # no longer accepting
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        conn.sendall(body[100:])
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            response += chunk
        conn.close()
        assert response.startswith(b"HTTP/1.1 200")
        assert b'"patch"' in response
        assert proc.wait(timeout=15) == 0
        log = webhooks.log_path(tls, port).read_text()
    assert "draining 1 in-flight admission(s)" in log
    assert "webhook stopped" in log


class _FakeApiServer(http.server.BaseHTTPRequestHandler):
    """The namespaces endpoint of a kube-apiserver, as documented: GET /api/v1/namespaces/NAME
    with a bearer token answers the Namespace object or a 404 Status; anything else is 401/404."""

    token = "t0ken"
    namespaces: ClassVar[dict[str, dict[str, str]]] = {
        "quiet": {"sidecarkit.io/inject": "false"},
        "shop": {},
    }
    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self._send(
                401,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "Unauthorized",
                    "code": 401,
                },
            )
            return
        prefix = "/api/v1/namespaces/"
        name = self.path[len(prefix) :] if self.path.startswith(prefix) else None
        if name not in self.namespaces:
            self._send(
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                    "message": f'namespaces "{name}" not found',
                },
            )
            return
        self._send(
            200,
            {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/metadata.name": name, **self.namespaces[name]},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def api_server(tls: webhooks.Tls) -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiServer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="fake-apiserver", daemon=True)
    thread.start()
    _FakeApiServer.calls = 0
    yield f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_namespace_lookup_reads_labels_caches_and_survives_failure(
    tls: webhooks.Tls, tmp_path: Path, api_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "token"
    token.write_text(_FakeApiServer.token + "\n")
    lookup = namespaces.NamespaceLookup(base_url=api_server, token_path=token, ca_path=tls.ca_file)
    settings = serving.Settings(
        tls_cert=tls.cert,
        tls_key=tls.key,
        host="127.0.0.1",
        port=0,
        reload_interval=3600,
        namespace_lookup=True,
        lookup=lookup,
    )
    with caplog.at_level(logging.WARNING), webhooks.in_thread(settings) as server:
        assert server.port is not None
        client = webhooks.Client(server.port, tls)
        quiet = client.review(webhooks.review_for(POD, namespace="quiet"))
        assert "patch" not in quiet["response"], "the namespace's opt-out wins"
        shop = client.review(webhooks.review_for(POD, namespace="shop"))
        assert webhooks.patch_of(shop)
        client.review(webhooks.review_for(POD, namespace="shop"))
        assert _FakeApiServer.calls == 2, "answers are cached"
        missing = client.review(webhooks.review_for(POD, namespace="gone"))
        assert webhooks.patch_of(missing), "a failed lookup does not block admission"
        assert "namespace lookup of 'gone' failed" in caplog.text
        assert "HTTP 404" in caplog.text
        token.write_text("wrong")
        client.review(webhooks.review_for(POD, namespace="other"))
        assert "HTTP 401" in caplog.text
        client.close()


def test_identical_pods_are_decided_once_and_the_cache_stays_bounded() -> None:
    from sidecarkit.injection import Config, Facts  # noqa: PLC0415
    from sidecarkit.webhook import verdicts as cache  # noqa: PLC0415

    verdicts = cache.Verdicts(size=2, max_object=4096)
    config, cluster = Config(), Facts(namespace_labels={"sidecarkit.io/inject": "true"})
    request = webhooks.review_for(POD)["request"]
    first = verdicts.get(request, config, cluster)
    assert first.decision == "patched"
    assert verdicts.get(json.loads(json.dumps(request)), config, cluster) is first
    assert verdicts.get(request, Config(), cluster) is not first, "a new config starts afresh"
    for i in range(5):
        other = json.loads(json.dumps(request))
        other["object"]["metadata"]["generateName"] = f"web-{i}-"
        verdicts.get(other, config, cluster)
    assert len(verdicts.entries) <= 2
    big = json.loads(json.dumps(request))
    big["object"]["metadata"]["annotations"] = {"note": "x" * 5000}
    verdicts.get(big, config, cluster)
    assert all(len(key[-1]) <= 4096 for key in verdicts.entries)  # type: ignore[arg-type]
    odd = dict(request, operation={"not": "hashable"})
    assert verdicts.get(odd, config, cluster).decision == "allowed"
