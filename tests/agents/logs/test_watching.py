"""inotify wakes the shipper when a followed directory changes; polling stays the fallback."""

from __future__ import annotations

import os
from pathlib import Path

from sidecarkit.agents.logs import watching


def test_writes_creations_and_renames_in_a_watched_directory_are_seen(tmp_path: Path) -> None:
    watcher = watching.Watcher([str(tmp_path)])
    try:
        assert watcher.fd is not None, "inotify is available on Linux"
        assert watcher.take() is False, "nothing happened yet"
        (tmp_path / "app.log").write_text("one\n")
        assert watcher.take() is True
        assert watcher.take() is False, "each event is taken once"
        with (tmp_path / "app.log").open("a") as f:
            f.write("two\n")
        assert watcher.take() is True
        os.rename(tmp_path / "app.log", tmp_path / "app.log.1")
        assert watcher.take() is True
    finally:
        watcher.close()


def test_only_directories_without_wildcards_are_watched() -> None:
    dirs = watching.directories(["/var/log/app/*.log", "/var/log/*/x.log", "-", "app.log"])
    assert dirs == ["/var/log/app", "."]


def test_a_directory_that_cannot_be_watched_leaves_polling(tmp_path: Path) -> None:
    watcher = watching.Watcher([str(tmp_path / "missing")])
    try:
        assert watcher.take() is False
    finally:
        watcher.close()
