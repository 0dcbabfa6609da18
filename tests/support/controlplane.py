"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

The binaries are the upstream ones, built from source by ``tests/cluster/build.sh`` at the
versions pinned in ``tests/cluster/go.mod`` (as controller-runtime's envtest runs a real etcd and
apiserver). They run here as plain processes on loopback, with certificates made for the run:

- one CA signs the apiserver's serving certificate and the client certificates of the admin
  (group ``system:masters``) and of the controller-manager (``system:kube-controller-manager``,
  which RBAC's bootstrap policy already binds);
- a service-account key pair signs and checks service-account tokens, so the controller-manager
  creates each namespace's ``default`` ServiceAccount and the ServiceAccount admission plugin
  mounts tokens into pods as it does in a real cluster;
- the admission plugins a kubeadm cluster enables, webhooks included.

Every process runs in its own process group with ``PR_SET_PDEATHSIG`` set, and ``running()``
stops them in a ``finally``: a failing test, or a test run killed outright, leaves none behind.
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecarkit.webhook import certificates
from tests.support import webhooks

ASSETS_ENV: Final = "SIDECARKIT_CLUSTER_ASSETS"
CACHE_ENV: Final = "SIDECARKIT_CLUSTER_CACHE"
BINARIES: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
MODULE: Final = Path(__file__).resolve().parents[1] / "cluster"
KUBERNETES_VERSION: Final = "v1.37.2"
"""What ``/version`` answers: the k8s.io/kubernetes version pinned in tests/cluster/go.mod."""
SERVICE_RANGE: Final = "10.0.0.0/24"
ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
# kube-apiserver v1.37's default set plus NodeRestriction, as kubeadm runs it. Named here so a
# default that upstream drops one day fails the start-up instead of silently thinning the tests.
ADMISSION_PLUGINS: Final = (
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "NodeRestriction",
    "TaintNodesByCondition",
    "PodSecurity",
    "Priority",
    "DefaultTolerationSeconds",
    "DefaultStorageClass",
    "StorageObjectInUseProtection",
    "PodGroupProtection",
    "PersistentVolumeClaimResize",
    "RuntimeClass",
    "CertificateApproval",
    "CertificateSigning",
    "ClusterTrustBundleAttest",
    "CertificateSubjectRestriction",
    "DefaultIngressClass",
    "PodTopologyLabels",
    "NodeDeclaredFeatureValidator",
    "PodResizeValidator",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
    "ResourceQuota",
)
HOW_TO_GET: Final = (
    "the control-plane binaries (etcd, kube-apiserver, kube-controller-manager) are not built; "
    "run `make cluster` (needs Go 1.26; 10 to 15 minutes the first time on two cores, "
    f"cached after) or set {ASSETS_ENV}=DIR to a folder that holds them. See docs/testing.md."
)


class AssetsMissing(LookupError):
    """The binaries are neither built nor pointed at."""


def cache_key() -> str:
    """The folder name ``build.sh`` uses: the start of sha256(go.mod + go.sum + build.sh)."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "build.sh"):
        digest.update((MODULE / name).read_bytes())
    return digest.hexdigest()[:16]


def assets() -> Path:
    """The folder with the binaries: ``$SIDECARKIT_CLUSTER_ASSETS``, else build.sh's cache."""
    pointed = os.environ.get(ASSETS_ENV)
    if pointed:
        folder = Path(pointed)
        missing = [name for name in BINARIES if not os.access(folder / name, os.X_OK)]
        if missing:
            raise AssetsMissing(f"{ASSETS_ENV}={pointed} lacks {', '.join(missing)}; {HOW_TO_GET}")
        return folder
    cache_root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sidecarkit", "cluster"
    )
    folder = Path(cache_root) / cache_key()
    if all(os.access(folder / name, os.X_OK) for name in BINARIES):
        return folder
    raise AssetsMissing(HOW_TO_GET)


@dataclass
class ControlPlane:
    """A running control plane: where it listens and how to reach it."""

    directory: Path
    server: str
    kubeconfig: Path
    ca_file: Path
    started_in: float
    """Seconds from the first process started to /readyz answering ok (and the SA controller)."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def admin_context(self) -> ssl.SSLContext:
        """TLS as the admin: trusts the cluster CA, presents the admin's client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        pki = self.directory / "pki"
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        return context

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` from the apiserver as the admin: status and body."""
        port = int(self.server.rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, context=self.admin_context(), timeout=5
        )
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _client_cert(
    ca: certificates.Pair, *, user: str, groups: tuple[str, ...] = ()
) -> certificates.Pair:
    """A client certificate the apiserver maps to ``user`` in ``groups`` (CN and O)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificates.Pair(cert.public_bytes(serialization.Encoding.PEM), pem)


def _kubeconfig(path: Path, *, server: str, ca: bytes, user: certificates.Pair) -> None:
    """A kubeconfig with everything inline (JSON is YAML, and kubectl reads either)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {
                "name": "test",
                "user": {
                    "client-certificate-data": b64(user.cert),
                    "client-key-data": b64(user.key),
                },
            }
        ],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    path.chmod(0o600)


def _die_with_parent() -> None:
    """Run in the child before exec: SIGKILL it when the test process dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _start(plane: ControlPlane, name: str, argv: list[str]) -> None:
    with plane.log(name).open("wb") as log:
        plane.processes[name] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
        )


def _stop(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM, wait, SIGKILL the whole group: nothing it started may outlive it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _stop_all(plane: ControlPlane) -> None:
    """Stop in reverse order of start: controllers, then the apiserver, then etcd."""
    for proc in reversed(plane.processes.values()):
        _stop(proc)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _check_alive(plane: ControlPlane) -> None:
    for name, proc in plane.processes.items():
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {proc.returncode} during start-up; its log "
                f"({plane.log(name)}) ends:\n{_tail(plane.log(name))}"
            )


def _wait(plane: ControlPlane, what: str, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        _check_alive(plane)
        try:
            status, body = plane.get(path)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status}: {body[:300]!r}"
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s ({path}: {last})")


@contextmanager
def running(
    binaries: Path, directory: Path, *, controller_manager: bool = True, timeout: float = 120.0
) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver and (by default) kube-controller-manager, ready, then stopped."""
    pki = directory / "pki"
    ca = certificates.new_ca(common_name="sidecarkit-test-cluster-ca")
    certificates.write_pair(ca, pki, stem="ca")
    serving = certificates.issue(
        ca,
        names=[
            "127.0.0.1",
            "localhost",
            "10.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        days=2,
    )
    certificates.write_pair(serving, pki, stem="apiserver")
    account_key = ec.generate_private_key(ec.SECP256R1())
    (pki / "sa.key").write_bytes(
        account_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (pki / "sa.pub").write_bytes(
        account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    etcd_port, peer_port, api_port = (webhooks.free_port() for _ in range(3))
    server = f"https://127.0.0.1:{api_port}"
    plane = ControlPlane(
        directory=directory,
        server=server,
        kubeconfig=directory / "admin.kubeconfig",
        ca_file=pki / "ca.crt",
        started_in=0.0,
    )
    admin = _client_cert(ca, user="sidecarkit-test-admin", groups=("system:masters",))
    _kubeconfig(plane.kubeconfig, server=server, ca=ca.cert, user=admin)
    manager_config = directory / "controller-manager.kubeconfig"
    _kubeconfig(
        manager_config,
        server=server,
        ca=ca.cert,
        user=_client_cert(ca, user="system:kube-controller-manager"),
    )
    certificates.write_pair(admin, pki, stem="admin")

    with ExitStack() as stack:
        stack.callback(_stop_all, plane)
        started = time.monotonic()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        _start(
            plane,
            "etcd",
            [
                str(binaries / "etcd"),
                "--name=default",
                f"--data-dir={directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",  # a test cluster loses nothing worth a disk flush
                "--log-level=warn",
            ],
        )
        _start(
            plane,
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The reconciler refuses a loopback address for the kubernetes Service's
                # endpoints; nothing here runs in a pod that would dial it.
                "--endpoint-reconciler-type=none",
                f"--secure-port={api_port}",
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        _wait(plane, "kube-apiserver", "/readyz", timeout)
        if controller_manager:
            _start(
                plane,
                "kube-controller-manager",
                [
                    str(binaries / "kube-controller-manager"),
                    f"--kubeconfig={manager_config}",
                    f"--authentication-kubeconfig={manager_config}",
                    f"--authorization-kubeconfig={manager_config}",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                    "--leader-elect=false",
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    f"--service-cluster-ip-range={SERVICE_RANGE}",
                    f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                    f"--cluster-signing-key-file={pki / 'ca.key'}",
                ],
            )
            # Pods need their namespace's default ServiceAccount, which this controller makes.
            _wait(
                plane,
                "kube-controller-manager",
                "/api/v1/namespaces/default/serviceaccounts/default",
                timeout,
            )
        plane.started_in = time.monotonic() - started
        yield plane
