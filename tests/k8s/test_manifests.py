"""YAML streams: cut into documents exactly, unchanged ones written back byte for byte."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from sidecarkit import errors
from sidecarkit.k8s import manifests

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "injection"


def _roundtrip(text: str) -> str:
    return "".join(manifests.dump(d, d.data) for d in manifests.load_stream(text, source="t"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a: 1\n",
        "a: 1",
        "---\na: 1\n---\nb: 2\n---\n",
        "# lead\n---\na: 1\n",
        "%YAML 1.2\n---\na: 1\n",
        "a: 1\n...\n---\nb: 2\n",
        "---\n---\n",
        "a: |\n  text\n  --- not a marker\n",
        "a: 1\n   \n",
        "--- {a: 1}\n--- [1, 2]\n",
    ],
)
def test_unchanged_streams_come_back_byte_for_byte(text: str) -> None:
    assert _roundtrip(text) == text


def test_every_corpus_file_comes_back_byte_for_byte() -> None:
    files = sorted(CORPUS.rglob("*.yaml")) if CORPUS.exists() else []
    if not files:
        pytest.skip("../shared/corpus is not next to the repository")
    for path in files:
        text = path.read_text()
        assert _roundtrip(text) == text, path.name


def test_comments_before_the_first_marker_belong_to_the_first_document() -> None:
    docs = manifests.load_stream("# only a comment\n---\nkind: Pod\n", source="t")
    assert [d.data for d in docs] == [{"kind": "Pod"}]
    assert docs[0].text.startswith("# only a comment")


def test_documents_are_numbered_and_located() -> None:
    docs = manifests.load_stream("a: 1\n---\nb: 2\n---\n", source="t")
    assert [(d.index, d.line) for d in docs] == [(1, 0), (2, 1), (3, 3)]
    assert docs[2].data is None


def test_malformed_yaml_names_file_line_and_column() -> None:
    text = "a: 1\n---\nkind: Pod\nmetadata:\n  labels: [x\nspec: {}\n"
    with pytest.raises(errors.ManifestError, match=r"^in\.yaml:6:\d+: .*fix the YAML"):
        manifests.load_stream(text, source="in.yaml")


def test_duplicate_keys_are_an_error_not_a_silent_choice() -> None:
    with pytest.raises(errors.ManifestError, match=r"in\.yaml:2:1"):
        manifests.load_stream("a: 1\na: 2\n", source="in.yaml")


def test_a_changed_document_keeps_comments_quotes_and_indentation() -> None:
    text = "---\n# head\nkind: Pod  # k\nspec:\n    containers:\n      - name: 'x'\n"
    doc = manifests.load_stream(text, source="t")[0]
    data = copy.deepcopy(doc.data)
    data["spec"]["containers"].append({"name": "y"})
    out = manifests.dump(doc, data)
    assert out == (
        "---\n# head\nkind: Pod  # k\nspec:\n    containers:\n      - name: 'x'\n      - name: y\n"
    )


def test_unindented_sequences_stay_unindented() -> None:
    text = "spec:\n  containers:\n  - name: x\n"
    doc = manifests.load_stream(text, source="t")[0]
    data = copy.deepcopy(doc.data)
    data["spec"]["containers"].append({"name": "y"})
    assert manifests.dump(doc, data) == "spec:\n  containers:\n  - name: x\n  - name: y\n"


def test_load_data_refuses_a_second_document() -> None:
    with pytest.raises(errors.ManifestError, match="expected one YAML document"):
        manifests.load_data("a: 1\n---\nb: 2\n", source="c.yaml")


def test_to_plain_drops_round_trip_types() -> None:
    data = manifests.load_stream("a: 'x'\nb: [1, 2.5, true, null]\n", source="t")[0].data
    plain = manifests.to_plain(data)
    assert plain == {"a": "x", "b": [1, 2.5, True, None]}
    assert type(plain) is dict
    assert type(plain["a"]) is str
