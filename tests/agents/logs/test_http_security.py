"""Every HTTP sink over TLS with a custom CA, a client certificate and gzip; secrets from files.

The receivers are the local API servers of ``tests/support/receivers`` behind a real TLS
server context that requires a client certificate signed by the test's CA.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.agents.logs import records, sinks
from sidecarkit.webhook import certificates
from tests.agents.logs.test_http_sinks import make_batch, run, send_all, spec
from tests.support.controlplane import _client_cert
from tests.support.receivers.base import Receiver
from tests.support.receivers.elasticsearch import ElasticsearchReceiver
from tests.support.receivers.loki import LokiReceiver
from tests.support.receivers.ndjson import NdjsonReceiver
from tests.support.receivers.otlp import OtlpReceiver
from tests.support.webhooks import Tls, make_tls

KINDS: dict[str, tuple[type[Receiver], str]] = {
    "loki": (LokiReceiver, ""),
    "elasticsearch": (ElasticsearchReceiver, ""),
    "otlp": (OtlpReceiver, ""),
    "http": (NdjsonReceiver, "/ingest"),
}


def _mutual(tls: Tls) -> ssl.SSLContext:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca_file))
    server.load_cert_chain(str(tls.cert), str(tls.key))
    server.verify_mode = ssl.CERT_REQUIRED
    return server


def _client_pair(tls: Tls, folder: Path) -> tuple[Path, Path]:
    pair = _client_cert(tls.ca, user="log-agent")
    certificates.write_pair(pair, folder, stem="client")
    return folder / "client.crt", folder / "client.key"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_http_sink_presents_its_client_certificate_and_checks_the_custom_ca(
    kind: str, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    cert, key = _client_pair(tls, tmp_path)
    receiver_type, path = KINDS[kind]
    with receiver_type(ssl_context=_mutual(tls)) as receiver:
        url = receiver.url + path
        with_cert = sinks.create(
            spec(
                kind,
                url,
                ca_file=str(tls.ca_file),
                cert_file=str(cert),
                key_file=str(key),
                gzip=True,
            )
        )
        assert run(send_all(with_cert, make_batch())) == [records.Outcome()]
        assert receiver.requests == 1
        assert receiver.gzipped == 1, "the body went gzipped, and the receiver took it"
        without = sinks.create(spec(kind, url, ca_file=str(tls.ca_file)))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            run(send_all(without, make_batch()))
        assert receiver.requests == 1, "a client without a certificate never gets a request in"
        other_ca = make_tls(tmp_path / "other")
        wrong_ca = sinks.create(
            spec(kind, url, ca_file=str(other_ca.ca_file), cert_file=str(cert), key_file=str(key))
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            run(send_all(wrong_ca, make_batch()))


def _mount(folder: Path, files: dict[str, str]) -> None:
    """Write ``files`` the way the kubelet updates a mounted secret: a new timestamped folder,
    then an atomic swap of the ``..data`` symlink that the visible names point through."""
    folder.mkdir(exist_ok=True)
    version = folder / f"..{len(list(folder.glob('..*_2026')))}_2026"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)
    temp = folder / "..data_tmp"
    temp.symlink_to(version.name)
    os.replace(temp, folder / "..data")


def test_headers_from_mounted_secrets_are_read_again_when_the_secret_changes(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret"
    _mount(secret, {"api-key": "first-key\n", "tenant": "team-a"})
    with NdjsonReceiver() as receiver, ElasticsearchReceiver() as es:
        http = sinks.create(
            spec(
                "http",
                receiver.url + "/ingest",
                header_files={
                    "X-Api-Key": str(secret / "api-key"),
                    "X-Tenant": str(secret / "tenant"),
                },
            )
        )
        elastic = sinks.create(spec("elasticsearch", es.url, api_key_file=str(secret / "api-key")))

        async def rotate() -> list[dict[str, Any]]:
            seen = []
            for _ in range(2):
                await http.send(make_batch())
                await elastic.send(make_batch())
                seen.append({**receiver.last_headers, "es": es.last_headers["Authorization"]})
            _mount(secret, {"api-key": "second-key\n", "tenant": "team-a"})
            await http.send(make_batch())
            await elastic.send(make_batch())
            seen.append({**receiver.last_headers, "es": es.last_headers["Authorization"]})
            await http.close()
            await elastic.close()
            return seen

        seen = run(rotate())
    assert [s["X-Api-Key"] for s in seen] == ["first-key", "first-key", "second-key"]
    assert [s["es"] for s in seen] == ["ApiKey first-key", "ApiKey first-key", "ApiKey second-key"]
    assert {s["X-Tenant"] for s in seen} == {"team-a"}


def test_a_secret_file_that_vanishes_keeps_its_last_value(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("kept")
    with NdjsonReceiver() as receiver:
        sink = sinks.create(spec("http", receiver.url + "/ingest", bearer_token_file=str(token)))

        async def main() -> None:
            await sink.send(make_batch())
            token.unlink()
            await sink.send(make_batch())
            await sink.close()

        run(main())
        assert receiver.requests == 2
        assert receiver.last_headers["Authorization"] == "Bearer kept"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key_file": "CERT"}, "option 'key_file' needs 'cert_file'"),
        ({"cert_file": "CA"}, "options 'cert_file'/'key_file': .* are not a PEM certificate"),
        (
            {"header_files": {"X-Key": "/nonexistent"}},
            "option 'header_files.X-Key': '/nonexistent'",
        ),
        ({"header_files": ["x"]}, "option 'header_files' must be a mapping"),
        ({"api_key": "a", "api_key_file": "CERT"}, "set one of 'api_key', 'api_key_file'"),
    ],
)
def test_bad_tls_and_secret_options_name_the_option(
    options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    paths = {"CERT": str(tls.cert), "CA": str(tls.ca_file)}
    given = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ValueError, match=message):
        sinks.create(spec("elasticsearch", "https://es:9200", **given))
