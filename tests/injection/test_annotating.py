"""``--annotate-only``: the opt-in label and nothing else, for the webhook to act on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate

from sidecarkit.injection import Code
from sidecarkit.injection.annotating import annotate
from sidecarkit.k8s import manifests

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

SELECTOR_ALIAS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: &labels
      app: web
  template:
    metadata:
      labels: *labels
    spec:
      containers:
        - name: web
          image: nginx
"""


def test_a_workload_gets_the_label_and_stays_valid() -> None:
    (doc,) = manifests.load_stream(SELECTOR_ALIAS, source="t")
    new, report = annotate(doc.data)
    assert report.decisions[0].codes == (Code.ANNOTATED,)
    plain = manifests.to_plain(new)
    assert plain["spec"]["template"]["metadata"]["labels"] == {
        "app": "web",
        "sidecarkit.io/inject": "true",
    }
    kubernetes_validate.validate(plain, "1.33", strict=True)


def test_a_selector_that_aliases_the_template_labels_is_left_alone() -> None:
    (doc,) = manifests.load_stream(SELECTOR_ALIAS, source="t")
    new, _ = annotate(doc.data, owned=True)
    assert dict(new["spec"]["selector"]["matchLabels"]) == {"app": "web"}
    text = manifests.dump(doc, new, changed=True)
    again = manifests.load_stream(text, source="out")[0].data
    assert dict(again["spec"]["selector"]["matchLabels"]) == {"app": "web"}


def test_opted_out_and_already_opted_in_templates_are_kept() -> None:
    out = SELECTOR_ALIAS.replace("labels: *labels", 'labels: {sidecarkit.io/inject: "false"}')
    (doc,) = manifests.load_stream(out, source="t")
    new, report = annotate(doc.data)
    assert new is doc.data
    assert report.decisions[0].codes == (Code.SKIPPED_OPTED_OUT,)
    (doc,) = manifests.load_stream((GOLDEN / "pod.injected.yaml").read_text(), source="t")
    new, report = annotate(doc.data)
    assert new is doc.data
    assert report.decisions[0].codes == (Code.UP_TO_DATE,)


def test_the_command_adds_only_the_label() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "inject", "--annotate-only"],
        input=SELECTOR_ALIAS + "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "initContainers" not in result.stdout
    assert 'sidecarkit.io/inject: "true"' in result.stdout or (
        "sidecarkit.io/inject: 'true'" in result.stdout
    )
    assert "annotated" in result.stderr
