"""Golden files for ``sidecarkit inject``: every ``tests/golden/<case>.yaml`` is a case.

A case runs ``sidecarkit <args>`` where ``<case>.args`` holds the arguments (default
``inject -f {input}``), from inside ``tests/golden`` so that paths in reports are stable.
Its stdout must equal ``<case>.injected.yaml`` and ``exit: N`` plus its stderr ``<case>.report``.

``SIDECARKIT_REFRESH_GOLDEN=1 make test`` rewrites the golden files from the current output;
review the diff before committing. A golden file without its input fails the suite, so
renamed or removed cases leave nothing stale behind.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecarkit import cli

GOLDEN = Path(__file__).parent / "golden"
REFRESH = os.environ.get("SIDECARKIT_REFRESH_GOLDEN") == "1"
OUTPUT_SUFFIXES = (".injected.yaml", ".report", ".args")


def _cases() -> list[str]:
    return sorted(
        p.name[: -len(".yaml")]
        for p in GOLDEN.glob("*.yaml")
        if not p.name.endswith(".injected.yaml")
    )


def _run(case: str, monkeypatch: pytest.MonkeyPatch, *extra: str) -> tuple[str, str]:
    args_file = GOLDEN / f"{case}.args"
    line = args_file.read_text().strip() if args_file.exists() else "inject -f {input}"
    args = [a.replace("{input}", f"{case}.yaml") for a in shlex.split(line)] + list(extra)
    monkeypatch.chdir(GOLDEN)
    result = CliRunner().invoke(cli.cli, args, catch_exceptions=False)
    return result.stdout, f"exit: {result.exit_code}\n{result.stderr}"


def test_there_are_enough_cases() -> None:
    assert len(_cases()) >= 25


@pytest.mark.parametrize("case", _cases())
def test_case_matches_its_golden_files(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stdout, report = _run(case, monkeypatch)
    out_file = GOLDEN / f"{case}.injected.yaml"
    report_file = GOLDEN / f"{case}.report"
    if REFRESH:
        out_file.write_text(stdout)
        report_file.write_text(report)
    assert out_file.exists(), f"no golden output for {case}; run with SIDECARKIT_REFRESH_GOLDEN=1"
    assert stdout == out_file.read_text()
    assert report == report_file.read_text()


def test_no_golden_file_is_stale() -> None:
    cases = set(_cases())
    stale = []
    for path in GOLDEN.iterdir():
        if path.is_dir():
            continue
        for suffix in OUTPUT_SUFFIXES:
            if path.name.endswith(suffix) and path.name[: -len(suffix)] not in cases:
                stale.append(path.name)
    assert stale == [], f"golden files without an input case: {stale}"


def _failing() -> list[str]:
    return [c for c in _cases() if not (GOLDEN / f"{c}.report").read_text().startswith("exit: 0")]


def test_failing_cases_print_nothing_on_stdout_with_strict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _failing(), "the golden set has error cases"
    for case in _failing():
        stdout, report = _run(case, monkeypatch, "--strict")
        assert stdout == "", case
        assert report.startswith("exit: 2\n"), case


def test_failed_documents_come_out_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    for case in _failing():
        if case == "malformed":
            continue  # its first document is fine, and injected
        stdout, _ = _run(case, monkeypatch)
        assert stdout == (GOLDEN / f"{case}.yaml").read_text(), case


def test_unchanged_documents_come_out_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    for case in ("not-opted-in", "opted-out"):
        stdout, _ = _run(case, monkeypatch)
        assert stdout == (GOLDEN / f"{case}.yaml").read_text()
