"""The installed ``sidecarkit`` command, run as a real process."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
SIDECARKIT = [sys.executable, "-m", "sidecarkit"]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDECARKIT, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_inject_reads_stdin_and_writes_stdout() -> None:
    result = run("inject", stdin=(GOLDEN / "pod.yaml").read_text())
    assert result.returncode == 0
    assert result.stdout == (GOLDEN / "pod.injected.yaml").read_text()
    assert "<stdin> document 1 Pod/web: injected: added logs (native), metrics (native)" in (
        result.stderr
    )


def test_several_files_are_concatenated_as_one_stream() -> None:
    result = run("inject", "-f", str(GOLDEN / "pod.yaml"), "-f", str(GOLDEN / "not-opted-in.yaml"))
    assert result.returncode == 0
    pod = (GOLDEN / "pod.injected.yaml").read_text()
    plain = (GOLDEN / "not-opted-in.yaml").read_text()
    assert result.stdout == pod + "---\n" + plain


def test_with_strict_malformed_input_anywhere_means_exit_2_and_no_output() -> None:
    result = run(
        "inject", "--strict", "-f", str(GOLDEN / "pod.yaml"), "-f", str(GOLDEN / "malformed.yaml")
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "malformed.yaml:14:5" in result.stderr


def test_with_strict_a_conflict_in_the_second_document_means_no_output_at_all() -> None:
    stream = (
        (GOLDEN / "pod.yaml").read_text() + "---\n" + (GOLDEN / "conflict-port.yaml").read_text()
    )
    result = run("inject", "--strict", stdin=stream)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "<stdin> document 2: Pod/port-clash: injection would overwrite" in result.stderr


def test_a_conflict_is_reported_for_its_document_and_the_rest_are_injected() -> None:
    pod = (GOLDEN / "pod.yaml").read_text()
    clash = (GOLDEN / "conflict-port.yaml").read_text()
    result = run("inject", "--report", "json", stdin=pod + "---\n" + clash + "---\n" + pod)
    assert result.returncode == 2
    injected = (GOLDEN / "pod.injected.yaml").read_text()
    assert result.stdout == injected + "---\n" + clash + "---\n" + injected
    report = json.loads(result.stderr)
    assert [d["reasons"][-1]["code"] for d in report] == ["injected", "failed", "injected"]
    assert report[1]["location"] == "<stdin> document 2"
    assert "Pod/port-clash: injection would overwrite" in report[1]["reasons"][0]["message"]
    assert "written unchanged" in report[1]["reasons"][0]["message"]
    text = run("inject", stdin=pod + "---\n" + clash + "---\n" + pod)
    assert "sidecarkit: error: <stdin> document 2: Pod/port-clash: injection would" in text.stderr
    assert "1 of 3 documents failed and were written unchanged" in text.stderr


def test_malformed_yaml_in_one_file_is_passed_through_and_the_other_injected() -> None:
    broken = (GOLDEN / "malformed.yaml").read_text().split("---\n")[1]
    result = run("inject", "-f", str(GOLDEN / "pod.yaml"), "-f", str(GOLDEN / "malformed.yaml"))
    assert result.returncode == 2
    assert result.stdout.startswith((GOLDEN / "pod.injected.yaml").read_text() + "---\n")
    assert result.stdout.endswith("---\n" + broken)
    assert result.stdout.count("sidecarkit.io/status") == 2  # pod.yaml and the fine Pod
    assert "malformed.yaml document 2: " in result.stderr
    assert "malformed.yaml:14:5" in result.stderr


def test_report_json_is_machine_readable() -> None:
    result = run("inject", "--report", "json", "-f", str(GOLDEN / "list.yaml"))
    assert result.returncode == 0
    report = json.loads(result.stderr)
    assert [d["target"] for d in report] == ["Service/web", "Deployment/web", "-"]
    assert report[1]["changed"] is True
    assert report[1]["reasons"][-1]["code"] == "injected"


def test_a_bad_config_exits_3() -> None:
    result = run("inject", "--config", str(GOLDEN / "pod.yaml"), stdin="")
    assert result.returncode == 3
    assert "unknown key" in result.stderr
    assert result.stdout == ""


def test_bad_namespace_labels_say_how_to_write_them() -> None:
    result = run("inject", "--namespace-labels", "sidecarkit.io/inject", stdin="")
    assert result.returncode == 3
    assert "key=value" in result.stderr


def test_a_missing_file_is_named() -> None:
    result = run("inject", "-f", "/nonexistent/x.yaml")
    assert result.returncode == 2
    assert "cannot read /nonexistent/x.yaml" in result.stderr


def test_uninject_round_trip_through_the_command() -> None:
    injected = run("inject", "-f", str(GOLDEN / "existing-init.yaml"), "--report", "none")
    back = run("uninject", "--report", "none", stdin=injected.stdout)
    assert back.returncode == 0
    assert back.stdout == (GOLDEN / "existing-init.yaml").read_text()


def test_profiles_lists_every_annotation() -> None:
    result = run("profiles", "--config", str(GOLDEN / "configs" / "secrets.yaml"))
    assert result.returncode == 0
    assert "secrets: Renders secrets from the vault into /secrets." in result.stdout
    assert "sidecarkit.io/secrets.role  a DNS-1123 label" in result.stdout
    assert "required" in result.stdout
    assert "logs (default)" in result.stdout


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert "0.1.0" in result.stdout


def test_inject_writes_each_document_before_it_reads_the_whole_stream() -> None:
    """One document at a time: memory follows the largest document, not the stream."""
    pod = (GOLDEN / "pod.yaml").read_text()
    child = subprocess.Popen(
        [*SIDECARKIT, "inject", "--report", "none"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        child.stdin.write((pod + "---\n" + pod + "---\n").encode())
        child.stdin.flush()
        seen = b""
        waiting = select.poll()  # not select(): the test run may hold descriptors past 1024
        waiting.register(child.stdout, select.POLLIN)
        deadline = time.monotonic() + 30
        while b"sidecarkit.io/status" not in seen and time.monotonic() < deadline:
            if waiting.poll(500):
                chunk = os.read(child.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
        assert b"sidecarkit.io/status" in seen, "nothing written while the stream was open"
        assert child.poll() is None
        child.stdin.write(pod.encode())
        child.stdin.close()
        rest = child.stdout.read()
        assert child.wait(timeout=30) == 0
        assert (seen + rest).decode().count("sidecarkit.io/status") == 3
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        if child.stderr is not None:
            child.stderr.close()


def test_check_passes_on_up_to_date_manifests_and_writes_nothing() -> None:
    result = run("inject", "--check", "-f", str(GOLDEN / "pod.injected.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "up-to-date" in result.stderr


def test_check_fails_on_a_workload_that_would_be_injected() -> None:
    result = run("inject", "--check", "-f", str(GOLDEN / "pod.yaml"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "1 workloads are stale against the current profiles" in result.stderr


def test_check_names_the_profile_revisions_that_changed() -> None:
    injected = run("inject", "-f", str(GOLDEN / "pod.yaml")).stdout
    assert '"revision":"' in injected
    changed = injected.replace('"revision":"', '"revision":"0ld', 1)
    changed = changed.replace('"hash":"', '"hash":"0', 1)
    result = run("inject", "--check", stdin=changed)
    assert result.returncode == 1
    assert "reinjected" in result.stderr
    assert "revision 0ld" in result.stderr


def test_json_output_is_one_json_object_per_document() -> None:
    stream = (
        (GOLDEN / "pod.yaml").read_text() + "---\n" + (GOLDEN / "not-opted-in.yaml").read_text()
    )
    result = run("inject", "-o", "json", stdin=stream)
    assert result.returncode == 0, result.stderr
    decoder = json.JSONDecoder()
    objects, text = [], result.stdout.strip()
    while text:
        obj, end = decoder.raw_decode(text)
        objects.append(obj)
        text = text[end:].strip()
    assert [o["kind"] for o in objects] == ["Pod", "Deployment"]
    assert objects[0]["spec"]["initContainers"][0]["name"] == "sidecarkit-logs"


def test_a_directory_is_read_in_name_order_and_r_descends(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text((GOLDEN / "pod.yaml").read_text())
    (tmp_path / "a.yml").write_text((GOLDEN / "not-opted-in.yaml").read_text())
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text((GOLDEN / "pod.yaml").read_text())
    flat = run("inject", "-f", str(tmp_path))
    assert flat.returncode == 0, flat.stderr
    assert flat.stdout == (
        (GOLDEN / "not-opted-in.yaml").read_text()
        + "---\n"
        + (GOLDEN / "pod.injected.yaml").read_text()
    )
    deep = run("inject", "-R", "-f", str(tmp_path))
    assert deep.stdout.count("sidecarkit.io/status") == 2
    assert "sub/c.yaml document 1" in deep.stderr


def test_an_empty_directory_says_what_it_looks_for(tmp_path: Path) -> None:
    result = run("inject", "-f", str(tmp_path))
    assert result.returncode == 2
    assert "a directory without manifests" in result.stderr


def test_a_custom_kind_from_the_config_round_trips_through_inject_and_uninject(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "workloads:\n  - {group: example.com, kind: WebApp, path: spec.podTemplate}\n"
    )
    webapp = (
        "apiVersion: example.com/v1\nkind: WebApp\nmetadata: {name: shop}\nspec:\n"
        "  podTemplate:\n    metadata:\n      labels: {sidecarkit.io/inject: 'true'}\n"
        "    spec:\n      containers:\n        - {name: app, image: nginx}\n"
    )
    injected = run("inject", "--config", str(config), stdin=webapp)
    assert injected.returncode == 0, injected.stderr
    assert "sidecarkit-logs" in injected.stdout
    back = run("uninject", "--config", str(config), stdin=injected.stdout)
    assert back.returncode == 0, back.stderr
    assert back.stdout == webapp
