"""``sidecarkit ca``: a real CA process over HTTPS, issuing only identities callers proved."""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import random
import ssl
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from ruamel.yaml import YAML

from sidecarkit.security import authority, spiffe, workload
from tests.security.support import (
    init_ca,
    key_and_csr,
    new_token,
    post_csr,
    running_ca,
    sidecarkit,
)
from tests.support import schema


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = init_ca(tmp_path_factory.mktemp("ca") / "ca")
    return directory


def test_a_bootstrap_token_gets_a_24_hour_certificate_for_the_identity_it_proves(
    ca_dir: Path,
) -> None:
    token = new_token(ca_dir, "shop", "web")
    with running_ca(ca_dir) as ca:
        _, csr = key_and_csr()
        status, answer = post_csr(ca, csr, token)
    assert status == 200, answer
    leaf = x509.load_pem_x509_certificate(answer["certificate_chain"].encode())
    assert spiffe.from_certificate(leaf) == spiffe.Identity("cluster.local", "shop", "web")
    assert answer["spiffe_id"] == "spiffe://cluster.local/ns/shop/sa/web"
    life = leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=23, minutes=58) < life <= datetime.timedelta(hours=24)
    root = x509.load_pem_x509_certificate(answer["trust_bundle"].encode())
    chain = x509.load_pem_x509_certificates(answer["certificate_chain"].encode())
    assert len(chain) == 2  # leaf then intermediate: what a peer needs to reach the root
    chain[0].verify_directly_issued_by(chain[1])
    chain[1].verify_directly_issued_by(root)


def test_a_csr_asking_for_another_identity_than_the_token_proves_is_refused(ca_dir: Path) -> None:
    token = new_token(ca_dir, "shop", "web")
    with running_ca(ca_dir) as ca:
        _, csr = key_and_csr(spiffe.Identity("cluster.local", "kube-system", "admin"))
        status, answer = post_csr(ca, csr, token)
        metrics_ok = "sidecarkit_ca_requests_refused_total 1" in _metrics(ca)
    assert status == 403
    assert "spiffe://cluster.local/ns/shop/sa/web" in answer["error"]
    assert "certificate_chain" not in answer
    assert metrics_ok


def test_a_csr_for_the_proven_identity_is_signed(ca_dir: Path) -> None:
    token = new_token(ca_dir, "shop", "api")
    with running_ca(ca_dir) as ca:
        _, csr = key_and_csr(spiffe.Identity("cluster.local", "shop", "api"))
        status, answer = post_csr(ca, csr, token)
    assert status == 200
    assert answer["spiffe_id"] == "spiffe://cluster.local/ns/shop/sa/api"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "Authorization: Bearer"),
        ("not-a-granted-token", "not in the tokens file"),
        ("", "Authorization: Bearer"),
    ],
)
def test_a_caller_without_a_granted_token_gets_401_and_no_certificate(
    ca_dir: Path, token: str | None, reason: str
) -> None:
    with running_ca(ca_dir) as ca:
        _, csr = key_and_csr()
        status, answer = post_csr(ca, csr, token)
        log = ca.stop()
    assert status == 401
    assert reason in answer["error"]
    assert "issued" not in log
    assert "refused 127.0.0.1" in log or token is None or not token


def test_a_tampered_csr_is_refused(ca_dir: Path) -> None:
    token = new_token(ca_dir, "shop", "web")
    _, csr = key_and_csr()
    der = bytearray(x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # a bit of the signature: it no longer matches the CSR's key
    pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(bytes(der))
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with running_ca(ca_dir) as ca:
        status, answer = post_csr(ca, pem, token)
        status2, answer2 = post_csr(ca, b"not a csr", token)
    assert status == 400, answer
    assert "signature" in answer["error"]
    assert status2 == 400
    assert "csr" in answer2["error"]


def test_keys_and_tokens_never_appear_in_the_cas_log(tmp_path: Path) -> None:
    directory = init_ca(tmp_path / "ca")
    token = new_token(directory, "shop", "web")
    secrets = [
        (directory / "intermediate.key").read_text(),
        (directory / "root.key").read_text(),
    ]
    with running_ca(directory) as ca:
        key, csr = key_and_csr()
        assert post_csr(ca, csr, token)[0] == 200
        assert post_csr(ca, csr, token + "x")[0] == 401
        _, other = key_and_csr(spiffe.Identity("cluster.local", "x", "y"))
        assert post_csr(ca, other, token)[0] == 403
        log = ca.stop()
    assert "issued spiffe://cluster.local/ns/shop/sa/web" in log
    assert token not in log
    assert token[:12] not in log
    for pem in [*secrets, authority.pem_key(key).decode()]:
        body = "".join(pem.splitlines()[1:-1])
        assert body[:24] not in log.replace("\n", "")
    assert "PRIVATE KEY" not in log


def test_the_workload_client_fetches_a_certificate_whose_key_never_left_it(ca_dir: Path) -> None:
    token = new_token(ca_dir, "shop", "web")
    token_file = ca_dir.parent / "web.token"
    token_file.write_text(token + "\n")
    with running_ca(ca_dir) as ca:
        issued = workload.fetch(ca.url, token_file, bundle=ca.bundle)
    assert issued.identity == spiffe.Identity("cluster.local", "shop", "web")
    assert issued.not_before < issued.renew_at < issued.not_after
    # half-life from when it came (not_before is set back a minute for clock skew)
    assert abs((issued.renew_at - issued.received) - (issued.not_after - issued.renew_at)) < 1
    assert 12 * 3600 - 120 < issued.renew_at - issued.received <= 12 * 3600


def test_a_ca_of_another_trust_domain_is_not_trusted_by_the_client(
    ca_dir: Path, tmp_path: Path
) -> None:
    other = init_ca(tmp_path / "other", "other.example")
    token = new_token(ca_dir, "shop", "web")
    token_file = tmp_path / "t"
    token_file.write_text(token)
    with running_ca(ca_dir) as ca, pytest.raises(workload.FetchError, match="cannot reach"):
        workload.fetch(ca.url, token_file, bundle=(other / "root.crt").read_bytes())


def test_init_makes_a_two_tier_ca_constrained_to_its_trust_domain(tmp_path: Path) -> None:
    directory = init_ca(tmp_path / "ca", "prod.example.com")
    root = x509.load_pem_x509_certificate((directory / "root.crt").read_bytes())
    inter = x509.load_pem_x509_certificate((directory / "intermediate.crt").read_bytes())
    inter.verify_directly_issued_by(root)
    constraints = inter.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    names = inter.extensions.get_extension_for_class(x509.NameConstraints).value
    assert names.permitted_subtrees == [x509.UniformResourceIdentifier("prod.example.com")]
    assert oct((directory / "intermediate.key").stat().st_mode & 0o777) == "0o600"
    assert oct((directory / "root.key").stat().st_mode & 0o777) == "0o600"


def test_init_refuses_to_replace_a_ca_without_force(ca_dir: Path) -> None:
    before = (ca_dir / "root.crt").read_bytes()
    done = sidecarkit("ca", "init", "--dir", str(ca_dir), check=False)
    assert done.returncode == 3
    assert "already holds a CA" in done.stderr
    assert "--force" in done.stderr
    assert "Traceback" not in done.stderr
    assert (ca_dir / "root.crt").read_bytes() == before


def test_init_secret_prints_the_intermediate_for_the_cluster_but_never_the_root_key(
    tmp_path: Path,
) -> None:
    done = sidecarkit("ca", "init", "--secret", "sidecarkit-ca", "--dir", str(tmp_path / "ca"))
    secret = YAML(typ="safe").load(done.stdout)
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "sidecarkit-ca"
    assert set(secret["data"]) == {"root.crt", "intermediate.crt", "intermediate.key"}
    key = base64.b64decode(secret["data"]["intermediate.key"])
    assert key == (tmp_path / "ca" / "intermediate.key").read_bytes()
    root_key = (tmp_path / "ca" / "root.key").read_text()
    assert "".join(root_key.splitlines()[1:-1])[:24] not in done.stdout
    assert base64.b64encode(root_key.encode()).decode() not in done.stdout.replace("\n", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ca", "init"], "--dir DIR"),
        (["ca", "init", "--dir", "x", "--trust-domain", "Bad Domain"], "not a trust domain"),
        (["ca", "serve", "--dir", "/nonexistent", "--tokens", "t"], "cannot read the CA"),
        (["ca", "token", "--tokens", "t", "--namespace", "Shop!", "--service-account", "a"],
         "not a Kubernetes namespace name"),
    ],
)  # fmt: skip
def test_bad_ca_commands_say_what_to_do_without_a_traceback(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = sidecarkit(*args, check=False)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_tokens_file_with_a_bad_line_names_the_line(ca_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "tokens"
    bad.write_text("# comment\nsha256:abc shop/web\n")
    done = sidecarkit("ca", "serve", "--dir", str(ca_dir), "--tokens", str(bad), check=False)
    assert done.returncode == 3
    assert f"{bad}:2" in done.stderr
    assert "sidecarkit ca token" in done.stderr


def _metrics(ca: object) -> str:
    url: str = getattr(ca, "url")  # noqa: B009
    bundle: bytes = getattr(ca, "bundle")  # noqa: B009
    context = ssl.create_default_context(cadata=bundle.decode())
    with urllib.request.urlopen(f"{url}/metrics", timeout=10, context=context) as r:
        return str(r.read().decode())


def test_hostile_requests_to_the_ca_get_4xx_never_5xx_and_never_a_certificate(
    ca_dir: Path,
) -> None:
    token = new_token(ca_dir, "shop", "web")
    _, csr = key_and_csr()
    rng = random.Random(18)

    def damaged_csr() -> bytes:
        # About one flip in 750 leaves a CSR that still reads and verifies (a changed
        # newline, the unused bits of the last base64 digit): that is not damage, so try again.
        while True:
            damaged = bytearray(csr)
            for _ in range(rng.randint(1, 6)):
                damaged[rng.randrange(len(damaged))] ^= rng.randrange(1, 256)
            try:
                if not x509.load_pem_x509_csr(bytes(damaged)).is_signature_valid:
                    return bytes(damaged)
            except (ValueError, UnsupportedAlgorithm):
                return bytes(damaged)

    def body() -> bytes:
        kind = rng.randrange(5)
        if kind == 0:
            return rng.randbytes(rng.randrange(200))
        if kind == 1:
            return json.dumps({"csr": rng.randbytes(40).hex()}).encode()
        if kind == 2:  # a real CSR with bytes flipped
            return json.dumps({"csr": damaged_csr().decode("latin-1")}).encode()
        if kind == 3:
            return json.dumps([1, {"csr": None}, "x" * rng.randrange(100)]).encode()
        return b'{"csr": ' + b"[" * rng.randrange(1, 2000) + b"}"

    statuses: dict[int, int] = {}
    dropped = 0
    with running_ca(ca_dir) as ca:
        context = ssl.create_default_context(cadata=ca.bundle.decode())
        conn = http.client.HTTPSConnection("127.0.0.1", ca.port, context=context, timeout=10)
        for i in range(1000):
            who = rng.choice(
                [token, token[:-1], "", "Bearer", rng.randbytes(30).hex(), token + " x"]
            )
            headers = {"Authorization": f"Bearer {who}", "Content-Type": "application/json"}
            if i % 7 == 0:
                headers["Authorization"] = rng.choice(["Basic abc", "bearer", "Bearer  "])
            try:
                conn.request("POST", "/v1/certificates", body=body(), headers=headers)
                answer = conn.getresponse()
                data = answer.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                # the server may close a connection after a refusal; the next one is fresh
                dropped += 1
                conn.close()
                conn = http.client.HTTPSConnection(
                    "127.0.0.1", ca.port, context=context, timeout=10
                )
                continue
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            assert answer.status < 500, data
            assert b"BEGIN CERTIFICATE" not in data
            if answer.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPSConnection(
                    "127.0.0.1", ca.port, context=context, timeout=10
                )
        conn.close()
        status, _ = post_csr(ca, csr, token)  # still serving
        log = ca.stop()
    assert status == 200
    assert set(statuses) <= {400, 401, 403, 413}
    assert sum(statuses.values()) > 900, (statuses, dropped)
    assert "Traceback" not in log


def test_install_prints_valid_objects_with_the_intermediate_but_never_the_root_key(
    ca_dir: Path,
) -> None:
    done = sidecarkit(
        "ca", "install", "--dir", str(ca_dir), "--namespace", "mesh",
        "--bundle-namespace", "shop", "--bundle-namespace", "web",
    )  # fmt: skip
    objects = list(YAML(typ="safe").load_all(done.stdout))
    kinds = [o["kind"] for o in objects]
    assert kinds == [
        "ServiceAccount", "ClusterRoleBinding", "Secret", "Deployment", "Service",
        "ConfigMap", "ConfigMap",
    ]  # fmt: skip
    for obj in objects:
        schema.validate(obj)
    secret = objects[2]
    assert set(secret["data"]) == {"root.crt", "intermediate.crt", "intermediate.key"}
    root_key = (ca_dir / "root.key").read_text()
    assert "".join(root_key.splitlines()[1:-1])[:24] not in done.stdout
    assert base64.b64encode(root_key.encode()).decode() not in done.stdout.replace("\n", "")
    command = objects[3]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--token-review" in command
    assert "sidecarkit-ca.mesh.svc" in command
    assert objects[1]["roleRef"]["name"] == "system:auth-delegator"
    bundle = objects[5]["data"]["root.crt"].encode()
    assert bundle == (ca_dir / "root.crt").read_bytes()


def test_a_token_granted_while_the_ca_runs_works_without_a_restart(tmp_path: Path) -> None:
    directory = init_ca(tmp_path / "ca")
    new_token(directory, "shop", "first")
    with running_ca(directory) as ca:
        later = new_token(directory, "shop", "later")
        _, csr = key_and_csr()
        status, answer = post_csr(ca, csr, later)
    assert status == 200, answer
    assert answer["spiffe_id"] == "spiffe://cluster.local/ns/shop/sa/later"


def test_serve_without_the_tokens_file_says_how_to_make_it(ca_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none"
    done = sidecarkit("ca", "serve", "--dir", str(ca_dir), "--tokens", str(missing), check=False)
    assert done.returncode == 3
    assert "sidecarkit ca token" in done.stderr
    assert "Traceback" not in done.stderr
