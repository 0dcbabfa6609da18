"""The built-in ``mtls`` and ``auth`` profiles: the proxy sidecar in front of the app's port,
speaking mTLS, or checking end users against a policy.

The proxy gets its workload certificate from ``sidecarkit ca serve`` with a projected
ServiceAccount token (audience ``audience``, rotated by the kubelet) and trusts the root in a
ConfigMap (``bundle``). Other sidecars reach the app on ``inbound-port``; with
``mtls: permissive`` plaintext clients still can, which is how a namespace migrates.

``auth`` is the proxy in explicit-port mode with a required ``policy`` ConfigMap (JWT, API
keys, rules, rate limits) and an optional ``secret`` the policy names files in. Both run the
container ``sidecarkit-proxy``, so one pod takes one of them; ``mtls`` has the same ``policy``
and ``secret`` settings for a pod that wants both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sidecarkit.injection import profiles as p
from sidecarkit.injection import settings as _settings

__all__ = ["IDENTITY_DIR", "auth_profile", "mtls_profile"]

IDENTITY_DIR: Final = "/var/run/secrets/sidecarkit"
"""Where the ``mtls`` profile mounts the projected token (``token/``) and the bundle (``ca/``)."""


def _render_mtls(values: Mapping[str, str], ctx: p.Context) -> p.Parts:
    """The proxy in front of the app's port, with a workload certificate from ``sidecarkit ca``:
    the token is a projected ServiceAccount token for the CA's audience (the kubelet rotates
    it), the trust bundle a ConfigMap. Clients reach the app through ``inbound-port``."""
    env = [
        {"name": "SIDECARKIT_PROXY_MTLS", "value": values["mtls"]},
        {"name": "SIDECARKIT_PROXY_IDENTITY_CA", "value": values["ca"]},
        {"name": "SIDECARKIT_PROXY_IDENTITY_TOKEN", "value": f"{IDENTITY_DIR}/token/token"},
        {"name": "SIDECARKIT_PROXY_TRUST_BUNDLE", "value": f"{IDENTITY_DIR}/ca/root.crt"},
        {"name": "SIDECARKIT_PROXY_TRUST_DOMAIN", "value": values["trust-domain"]},
    ]
    inbound = int(values["inbound-port"])
    ports = [{"name": "sk-inbound", "containerPort": inbound, "protocol": "TCP"}]
    mounts = [
        {
            "name": "sidecarkit-identity-token",
            "mountPath": f"{IDENTITY_DIR}/token",
            "readOnly": True,
        },
        {"name": "sidecarkit-trust-bundle", "mountPath": f"{IDENTITY_DIR}/ca", "readOnly": True},
    ]
    policy_env, policy_mounts, policy_volumes = p.policy_parts(values)
    env += policy_env
    mounts += policy_mounts
    container = p._agent_container("proxy", values, ctx, env=env, ports=ports, mounts=mounts)
    container["args"] = [
        "--inbound", f"0.0.0.0:{inbound}", "--app", f"127.0.0.1:{values['port']}",
        "--admin", f"0.0.0.0:{values['admin-port']}",
    ]  # fmt: skip
    token = {
        "name": "sidecarkit-identity-token",
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": values["audience"],
                        "expirationSeconds": 3600,
                        "path": "token",
                    }
                }
            ]
        },
    }
    bundle = {"name": "sidecarkit-trust-bundle", "configMap": {"name": values["bundle"]}}
    volumes = (token, bundle, p._PODINFO_VOLUME, *policy_volumes)
    return p.Parts(sidecars=(container,), volumes=volumes)


def mtls_profile(image: str) -> p.Profile:
    K = _settings.Kind
    return p.Profile(
        name="mtls",
        description="Fronts the app's port with the proxy speaking mTLS (a SPIFFE identity "
        "from `sidecarkit ca`).",
        settings=(
            *p.COMMON_SETTINGS,
            p._image_setting(image),
            _settings.Setting("port", K.PORT, "8080", "The app's port the proxy fronts."),
            _settings.Setting(
                "inbound-port", K.PORT, "15006", "Port clients (other sidecars) connect to."
            ),
            _settings.Setting(
                "mtls",
                K.CHOICE,
                "permissive",
                "permissive takes plaintext too (to migrate); strict refuses it.",
                ("permissive", "strict"),
            ),
            _settings.Setting(
                "ca",
                K.STRING,
                "https://sidecarkit-ca.sidecarkit.svc:15443",
                "URL of `sidecarkit ca serve`.",
            ),
            _settings.Setting("trust-domain", K.STRING, "cluster.local", "Of the SPIFFE IDs."),
            _settings.Setting(
                "bundle",
                K.NAME,
                "sidecarkit-ca-bundle",
                "ConfigMap in the pod's namespace holding root.crt, the trust bundle.",
            ),
            _settings.Setting(
                "audience",
                K.STRING,
                "sidecarkit-ca",
                "Audience of the ServiceAccount token sent to the CA (its --audience).",
            ),
            _settings.Setting(
                "admin-port", K.PORT, "15102", "Port of /healthz, /ready and /metrics of the proxy."
            ),
            p.policy_setting(),
            p.secret_setting(),
            *p._resource_settings("10m", "32Mi", "128Mi"),
        ),
        render=_render_mtls,
        builtin=True,
    )


def auth_profile(image: str) -> p.Profile:
    """The ``proxy`` profile's explicit-port proxy, reduced to guarding the app: the policy is
    what the profile is for, so it has no default and a pod without one is refused."""
    K = _settings.Kind
    policy = p.policy_setting()
    return p.Profile(
        name="auth",
        description="Fronts the app's port with the proxy checking end users (JWT, API keys), "
        "allow/deny rules and rate limits from a policy ConfigMap.",
        settings=(
            *p.COMMON_SETTINGS,
            p._image_setting(image),
            _settings.Setting("port", K.PORT, "8080", "The app's port the proxy fronts."),
            _settings.Setting(
                "inbound-port",
                K.PORT,
                "15006",
                "Port the proxy listens on for the app's clients; point the Service here.",
            ),
            _settings.Setting(policy.name, policy.kind, None, policy.description, required=True),
            p.secret_setting(),
            _settings.Setting(
                "admin-port", K.PORT, "15102", "Port of /healthz, /ready and /metrics of the proxy."
            ),
            *p._resource_settings("50m", "32Mi", "128Mi"),
        ),
        render=p._render_proxy,
        builtin=True,
    )
