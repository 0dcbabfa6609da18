"""10,000 malformed or hostile bodies against a real ``sidecarkit webhook`` process.

Wrong types everywhere, huge strings, deep nesting, bytes that are not UTF-8 or not JSON,
missing fields, and well-formed reviews carrying hostile pods. The server must answer every one
with 200 (a review echoing the uid) or 400, never 5xx; must stay up; and its memory must stay
bounded.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support import webhooks

EXAMPLES = 10_000
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


def nested(depth: int) -> str:
    """JSON text nesting ``depth`` levels (built as text: too deep for json.dumps)."""
    return '{"a":[' * (depth // 2) + '"x"' + "]}" * (depth // 2)


@st.composite
def hostile_pods(draw: st.DrawFn) -> Any:
    container = st.fixed_dictionaries(
        {"name": st.one_of(st.text(max_size=20), json_values), "image": json_values},
        optional={
            "ports": st.one_of(
                json_values,
                st.lists(
                    st.fixed_dictionaries(
                        {"containerPort": st.one_of(st.integers(-5, 70000), st.text(max_size=5))}
                    )
                ),
            ),
            "env": json_values,
            "volumeMounts": json_values,
            "command": json_values,
        },
    )
    annotations = st.dictionaries(
        st.sampled_from(
            [
                "sidecarkit.io/profiles",
                "sidecarkit.io/mode",
                "sidecarkit.io/status",
                "sidecarkit.io/logs.dir",
                "sidecarkit.io/metrics.port",
                "sidecarkit.io/x",
                "sidecarkit.io/logs.nope",
                "other",
            ]
        ),
        st.one_of(st.text(max_size=30), json_values, st.just('{"version":1}')),
        max_size=4,
    )
    return {
        "apiVersion": "v1",
        "kind": draw(st.sampled_from(["Pod", "Deployment", "List", "CronJob", 7, None])),
        "metadata": draw(
            st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {
                        "labels": st.one_of(json_values, st.just({"sidecarkit.io/inject": "true"})),
                        "annotations": st.one_of(annotations, json_values),
                    }
                ),
            )
        ),
        "spec": draw(
            st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {
                        "containers": st.one_of(st.lists(container, max_size=3), json_values),
                        "initContainers": st.one_of(st.lists(container, max_size=2), json_values),
                        "volumes": json_values,
                        "hostNetwork": json_values,
                        "restartPolicy": st.one_of(
                            st.sampled_from(["Never", "Always"]), json_values
                        ),
                    }
                ),
            )
        ),
    }


@st.composite
def reviews(draw: st.DrawFn) -> Any:
    request = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "uid": st.one_of(
                    st.uuids().map(str), json_values, st.text(min_size=129, max_size=140)
                ),
                "operation": st.one_of(
                    st.sampled_from(["CREATE", "UPDATE", "DELETE"]), json_values
                ),
                "namespace": st.one_of(st.text(max_size=20), json_values),
                "object": st.one_of(hostile_pods(), json_values),
                "dryRun": json_values,
                "kind": json_values,
            },
        )
    )
    return {
        "apiVersion": draw(
            st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1", "v1", 3])
        ),
        "kind": draw(st.sampled_from(["AdmissionReview", "Pod", None])),
        "request": draw(st.one_of(st.just(request), json_values)),
    }


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 99))
    if choice < 55:
        return json.dumps(draw(reviews())).encode()
    if choice < 70:
        return json.dumps(draw(json_values)).encode()
    if choice < 80:
        return draw(st.binary(max_size=200))
    if choice < 85:
        text = json.dumps(draw(reviews()))
        return text[: draw(st.integers(0, len(text)))].encode()
    if choice < 92:
        head = '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":'
        opening = head + '{"uid":"u","operation":"CREATE","object":'
        return (opening + nested(draw(st.integers(50, 3000))) + "}}").encode()
    if choice < 96:
        big = "x" * draw(st.integers(100_000, 1_500_000))
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": big[:36],
                "operation": "CREATE",
                "object": {
                    "kind": "Pod",
                    "metadata": {
                        "labels": {"sidecarkit.io/inject": "true"},
                        "annotations": {"sidecarkit.io/logs.dir": "/" + big},
                    },
                    "spec": {"containers": [{"name": "a", "image": big}]},
                },
            },
        }
        return json.dumps(review).encode()
    # Something that looks like a review with a base64 patch of garbage in it.
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u", "object": None},
            "response": {"patch": draw(st.text(max_size=30))},
        }
    ).encode()


def test_hostile_bodies_never_get_a_5xx_nor_crash_nor_grow_memory(tls: webhooks.Tls) -> None:
    with webhooks.process(tls) as (proc, port):
        client = webhooks.Client(port, tls)
        seen = {"count": 0, "rss_after_warmup": 0}

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            phases=[Phase.generate],
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(bodies())
        def send(body: bytes) -> None:
            status, raw = client.request("POST", "/inject/namespace", body)
            if status not in (200, 400, 413):
                log = webhooks.log_path(tls, port).read_text()[-3000:]
                raise AssertionError(f"HTTP {status} for {body[:300]!r}; server log:\n{log}")
            if status == 200:
                answer = json.loads(raw)
                assert answer["kind"] == "AdmissionReview"
                assert isinstance(answer["response"]["allowed"], bool)
                assert answer["response"]["uid"] == json.loads(body)["request"]["uid"]
            seen["count"] += 1
            if seen["count"] == 1000:
                seen["rss_after_warmup"] = webhooks.rss_kib(proc.pid)

        send()
        client.close()
        assert seen["count"] >= EXAMPLES
        assert proc.poll() is None, "the webhook died"
        growth = webhooks.rss_kib(proc.pid) - seen["rss_after_warmup"]
        assert growth < 64 * 1024, f"RSS grew by {growth} KiB after warm-up"
