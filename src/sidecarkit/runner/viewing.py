"""A live status view of the pod on a terminal: state, ready, restarts and age per container.

Drawn with rich on stderr below the containers' output, which is printed through the same
console so that lines scroll above the table instead of tearing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["StatusView"]


class StatusView:
    def __init__(self, snapshot: Callable[[], list[dict[str, Any]]], title: str) -> None:
        self.snapshot = snapshot
        self.title = title
        self.console = Console(stderr=True)
        self.live = Live(
            console=self.console, refresh_per_second=4, transient=False, get_renderable=self.render
        )

    def render(self) -> Table:
        table = Table(title=self.title, title_justify="left", expand=False)
        for column in ("CONTAINER", "KIND", "STATE", "READY", "RESTARTS", "AGE"):
            table.add_column(column)
        for row in self.snapshot():
            state = row["state"]
            colour = (
                "green"
                if state == "running"
                else "yellow"
                if state in ("starting", "waiting")
                else "cyan"
                if state.startswith("completed")
                else "red"
            )
            table.add_row(
                row["name"],
                row["kind"],
                Text(state, style=colour),
                "yes" if row["ready"] else "no",
                str(row["restarts"]),
                f"{row['age']:.0f}s",
            )
        return table

    def print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> StatusView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)
