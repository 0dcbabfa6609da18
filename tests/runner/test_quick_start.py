"""``sidecarkit run`` starts a plain command line without click, and leaves the rest to click.

click's import is start-up time before the first container. The quick reader may only ever
say "plain" (and then mean what click would) or "ask click": every command line it does not
take must end exactly as it did through click.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sidecarkit.runner import quick, specs
from tests.support.imports import imported_by

_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p"},
    "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "app", "image": "i", "command": ["true"]}],
    },
}


def _pod(tmp_path: Path) -> Path:
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(_POD))
    return path


def test_a_plain_run_does_not_import_click(tmp_path: Path) -> None:
    path = _pod(tmp_path)
    imported = imported_by("-m", "sidecarkit", "run", str(path), "--events", "none")
    assert "sidecarkit.runner.launching" in imported
    assert "click" not in imported


def test_a_plain_run_with_volumes_and_probes_imports_nothing_it_can_do_without(
    tmp_path: Path,
) -> None:
    # Each of these cost milliseconds of CPU before the first container: pathlib (with
    # urllib.parse and ipaddress), tempfile (with shutil, random and the compressors),
    # dataclasses (and the methods it compiles for each class).
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [
                {
                    "name": "app",
                    "image": "i",
                    "command": ["sh", "-c", "test -d /scratch"],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                    "startupProbe": {"exec": {"command": ["true"]}},
                }
            ],
        },
    }
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    imported = imported_by("-m", "sidecarkit", "run", str(path))
    assert "sidecarkit.runner.planning" in imported
    assert not {"click", "pathlib", "urllib.parse", "tempfile", "dataclasses"} & imported


def test_the_options_of_a_plain_command_line_are_read_as_click_reads_them(tmp_path: Path) -> None:
    path = str(_pod(tmp_path))
    params = quick.parse(
        [
            "--inject",
            path,
            "--config=c.yaml",
            "--command",
            "app=python app.py",
            "--command=b=x",
            "--grace",
            "5s",
            "--backoff-scale",
            "0.01",
            "--events=json",
            "--status",
            "off",
            "--keep",
            "--lenient",
        ]
    )
    assert params == {
        "manifest": path,
        "inject": True,
        "config_path": "c.yaml",
        "commands": ("app=python app.py", "b=x"),
        "grace": "5s",
        "backoff_scale": 0.01,
        "events_format": "json",
        "keep": True,
        "status": "off",
        "lenient": True,
    }
    assert quick.parse(["-"]) is not None  # the manifest on stdin


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["-h"],
        ["POD", "--backoff-scale", "nan"],
        ["POD", "--backoff-scale", "0"],
        ["POD", "--backoff-scale", "-1"],
        ["POD", "--backoff-scale=inf"],
        ["POD", "--events", "yaml"],
        ["POD", "--status=maybe"],
        ["POD", "--grace", "abc"],
        ["POD", "--grace"],
        ["POD", "--restartPolicyy"],
        ["POD", "--inject=yes"],
        ["POD", "other.json"],
        ["POD", "--", "x"],
        ["DIR"],
    ],
)
def test_a_command_line_it_does_not_take_goes_to_click_with_clicks_answer(
    tmp_path: Path, args: list[str]
) -> None:
    pod = str(_pod(tmp_path))
    args = [pod if a == "POD" else str(tmp_path) if a == "DIR" else a for a in args]
    assert quick.parse(args) is None
    result = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr
    if "--help" in args or "-h" in args:
        assert result.returncode == 0
        assert "Usage: sidecarkit run" in result.stdout
    else:
        assert result.returncode == 2
        assert "Error: " in result.stderr


def test_the_runner_specs_are_built_without_compiling_generated_methods() -> None:
    # A frozen dataclass compiles six methods at import (42 for the specs' seven classes), start-up
    # time before the first container; a NamedTuple evaluates one constructor per class.
    probe = (
        "import sys, dataclasses, typing, collections\n"
        "from sidecarkit.runner import podschema\n"
        "count = [0]\n"
        "def hook(event, args):\n"
        "    if event == 'exec' and getattr(args[0], 'co_filename', '') == '<string>':\n"
        "        count[0] += 1  # generated source; modules run from their files\n"
        "sys.addaudithook(hook)\n"
        "from sidecarkit.runner import specs\n"
        "print(count[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) <= 7


def test_a_spec_cannot_be_changed_and_has_no_instance_dict() -> None:
    handler = specs.Handler("exec", command=("true",))
    with pytest.raises(AttributeError):
        handler.kind = "sleep"  # type: ignore[misc]
    assert not hasattr(handler, "__dict__")
    assert handler._replace(command=("false",)) == specs.Handler("exec", command=("false",))
