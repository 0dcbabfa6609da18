"""ConfigMap, Secret and downwardAPI volumes; and a second Ctrl-C forcing the end."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def test_config_map_secret_and_downward_api_volumes_are_files(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    stream = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"level": "debug", "mode": "fast"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"token": base64.b64encode(b"s3cr3t").decode()},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "files", "labels": {"app": "files", "tier": "web"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox",
                        "command": [
                            "sh",
                            "-c",
                            f"cat /etc/cfg/level /etc/creds/token /etc/info/labels > {out}",
                        ],
                        "volumeMounts": [
                            {"name": "cfg", "mountPath": "/etc/cfg"},
                            {"name": "creds", "mountPath": "/etc/creds"},
                            {"name": "info", "mountPath": "/etc/info"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "settings"}},
                    {"name": "creds", "secret": {"secretName": "creds"}},
                    {
                        "name": "info",
                        "downwardAPI": {
                            "items": [
                                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
                            ]
                        },
                    },
                ],
            },
        },
    ]
    path = tmp_path / "pod.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in stream))
    result = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == 'debugs3cr3tapp="files"\ntier="web"\n'


def test_a_second_interrupt_kills_everything_at_once(tmp_path: Path) -> None:
    up = tmp_path / "up"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stubborn"},
        "spec": {
            "terminationGracePeriodSeconds": 60,
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "command": [
                        "sh",
                        "-c",
                        f"trap '' TERM INT; touch {up}; while :; do sleep 0.05; done",
                    ],
                }
            ],
        },
    }
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    runner = subprocess.Popen(
        [sys.executable, "-m", "sidecarkit", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Interrupt only once the container runs: by then the runner's signal handlers are in place.
    deadline = time.monotonic() + 30
    while not up.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert up.exists(), "the container never started"
    runner.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert runner.poll() is None, "the first interrupt waits for the 60 s grace period"
    started = time.monotonic()
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=10) == 137, "Failed: the app was killed by SIGKILL (128 + 9)"
    assert time.monotonic() - started < 5


def test_a_reader_that_goes_away_does_not_stop_the_pod(tmp_path: Path) -> None:
    # `sidecarkit run pod.yaml | head` must not leave the runner stuck once head is gone.
    done = tmp_path / "done"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "chatty"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "command": ["sh", "-c", f"echo one; sleep 0.5; seq 1 2000; touch {done}"],
                }
            ],
        },
    }
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    runner = subprocess.Popen(
        [sys.executable, "-m", "sidecarkit", "run", str(path), "--events", "text"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert runner.stdout is not None
    runner.stdout.readline()
    runner.stdout.close()  # the reader goes away
    assert runner.wait(timeout=30) == 0
    assert done.exists()
