"""failurePolicy as the real API server applies it when the webhook is down.

Its own module, so no other sidecarkit webhook configuration is in force meanwhile: the probe
that shows when a configuration takes effect must see only this one.
"""

from __future__ import annotations

import pytest
from lightkube import ApiError, Client

from sidecarkit.injection import policy
from tests.support import kube as k
from tests.support import webhooks


@pytest.mark.parametrize(("failure_policy", "admitted"), [("Fail", False), ("Ignore", True)])
def test_with_the_webhook_stopped_the_failure_policy_decides(
    kube: Client, tls: webhooks.Tls, probe_namespace: str, failure_policy: str, admitted: bool
) -> None:
    namespace = k.namespace(
        kube, f"down-{failure_policy.lower()}", labels={policy.INJECT_LABEL: "true"}
    )
    with webhooks.process(tls) as (proc, port):
        config = k.url_mode(tls, port, name=k.unique("down"), failure_policy=failure_policy)
        with k.registered(kube, config, probe_namespace=probe_namespace):
            proc.terminate()
            proc.wait(timeout=30)

            if admitted:
                pod = k.create_pod(kube, namespace, k.pod_dict("app"))
                assert not k.injected(pod)
            else:
                with pytest.raises(ApiError) as caught:
                    k.create_pod(kube, namespace, k.pod_dict("app"))
                assert "failed calling webhook" in str(caught.value.status.message)
