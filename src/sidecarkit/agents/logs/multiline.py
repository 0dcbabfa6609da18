"""Multiline records: messages of one stream joined into one, as stack traces are. Pure: no I/O.

``Rules`` is a small state machine, built once per parser spec: a preset (``preset``) or the
user's own start and continue tests (``custom``). A ``Joiner`` runs it over the messages of one
stream: a record begins at a message the rules call a start, takes the messages the rules of its
current state accept, and ends at the first one they do not. Some rules are *tentative* (blank
lines inside Go and Python traces): the lines they match join only if a later line confirms the
record, otherwise they are released as messages of their own.

A held record also ends when it reaches ``max_lines`` (later lines go on in a new record in the
same state), when a state without rules is reached, and on ``flush``. Joined lines are separated
by ``\\n``; the record keeps the line number, fields and time of its first message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sidecarkit.agents.logs import records

__all__ = ["Joiner", "Rules", "Test", "custom", "preset"]

Test = Callable[[str], object]
"""A rule's test of a message's text: a truthy result accepts it."""


@dataclass(frozen=True, slots=True)
class Rules:
    """A multiline state machine.

    A message with no record held begins one in the state of the first ``begin`` test it
    passes, or in ``otherwise`` (None: it stands alone). A held record takes a message when a
    rule of its state accepts it and moves to that rule's state; a state without rules means
    the record is complete. A ``tentative`` rule's lines join only once a later line is taken.
    """

    begin: tuple[tuple[Test, str], ...]
    otherwise: str | None
    states: dict[str, tuple[tuple[Test, str, bool], ...]]


def _search(pattern: str, flags: int = 0) -> Test:
    return re.compile(pattern, flags).search


def _presets() -> dict[str, Rules]:
    blank = _search(r"^\s*$")
    java = _search(
        r"""^\s+at\s | ^\s*(?:Caused\ by|Suppressed): | ^\s*nested\ exception\ is:
        | ^\s+\.\.\.\ \d+\ (?:more|common\ frames\ omitted)\s*$
        # Logback and Log4j print the message, then the exception on a line of its own.
        | ^(?:[A-Za-z_$][\w$]*\.)+[\w$]*(?:Exception|Error|Throwable)(?::.*)?$""",
        re.VERBOSE,
    )
    traceback = _search(r"^Traceback \(most recent call last\):$")
    chained = _search(
        r"^(?:During handling of the above exception, another exception occurred"
        r"|The above exception was the direct cause of the following exception):$"
    )
    python = {
        "python": ((traceback, "frames", False),),
        "frames": (
            (_search(r"^\s"), "frames", False),
            (_search(r"^[A-Za-z_][\w.]*(?::.*)?$"), "raised", False),
        ),
        "raised": ((blank, "gap", True), (chained, "chained", False)),
        "gap": ((chained, "chained", False),),
        "chained": ((blank, "chained", True), (traceback, "frames", False)),
    }
    goroutine = _search(r"^goroutine \d+ .*\]:$")
    go = {
        "panic": (
            (blank, "panic", True),
            (goroutine, "frames", False),
            (_search(r"^\s+panic: |^\[signal |^PC=0x"), "panic", False),
        ),
        "frames": (
            (_search(r"^\t"), "frames", False),
            (_search(r"^created by |^\.\.\.additional frames elided\.\.\.$"), "frames", False),
            (_search(r"^[^\s(]+\(.*\)$"), "frames", False),
            (blank, "gap", True),
        ),
        "gap": ((blank, "gap", True), (goroutine, "frames", False)),
    }
    ruby_frame = _search(r"^\s+(?:from \S.*:\d+:in |\.\.\. \d+ levels\.\.\.$)")

    def ends_in_backslash(text: str) -> bool:
        return text.endswith("\\")

    def anything(text: str) -> bool:
        return True

    return {
        "java": Rules((), "java", {"java": ((java, "java", False),)}),
        "python": Rules(((traceback, "frames"),), "python", python),
        "go": Rules(
            (
                (_search(r"^(?:panic: |fatal error: |SIGQUIT: quit$)"), "panic"),
                (goroutine, "frames"),
            ),
            None,
            go,
        ),
        "ruby": Rules((), "ruby", {"ruby": ((ruby_frame, "ruby", False),)}),
        "backslash": Rules(
            ((ends_in_backslash, "open"),),
            None,
            {"open": ((ends_in_backslash, "open", False), (anything, "done", False)), "done": ()},
        ),
    }


_PRESETS: Final = _presets()


def preset(name: str) -> Rules:
    """The rules of the preset ``name``: ``java``, ``python``, ``go``, ``ruby`` or ``backslash``."""
    return _PRESETS[name]


def custom(start: Test | None, more: Test | None) -> Rules | None:
    """Rules from the user's tests; None when there are none.

    ``start`` passes the first line of a record, ``more`` a continuation line. Without ``more``,
    every line ``start`` does not pass continues the record; without ``start``, any line may
    begin one.
    """
    if start is None:
        if more is None:
            return None
        return Rules((), "record", {"record": ((more, "record", False),)})
    begins = start

    def not_a_start(text: str) -> bool:
        return begins(text) is None

    joins = more or not_a_start
    return Rules(((start, "record"),), None, {"record": ((joins, "record", False),)})


def _accepted(rules: tuple[tuple[Test, str, bool], ...], text: str) -> tuple[str, bool] | None:
    """The next state and tentativeness of the first rule accepting ``text``, or None."""
    for test, after, tentative in rules:
        if test(text):
            return after, tentative
    return None


class Joiner:
    """The multiline state of one stream: the record held, its state, its tentative lines."""

    __slots__ = (
        "fields",
        "first",
        "last",
        "lines",
        "max_lines",
        "pending",
        "rules",
        "state",
        "time_ns",
    )

    def __init__(self, rules: Rules, max_lines: int) -> None:
        self.rules = rules
        self.max_lines = max_lines
        self.state: str | None = None
        self.lines: list[str] = []
        self.pending: list[records.Event] = []
        self.first = 0
        self.fields: dict[str, Any] | None = None
        self.time_ns: int | None = None
        self.last = 0.0

    def held_from(self) -> int | None:
        if self.lines:
            return self.first
        if self.pending:
            return self.pending[0][0]
        return None

    def push(self, event: records.Event, now: float, out: list[records.Event]) -> None:
        """Take one message; append to ``out`` what it completes."""
        todo = self._step(event, now, out)
        while todo:
            todo[0:1] = self._step(todo[0], now, out) or ()

    def _step(
        self, event: records.Event, now: float, out: list[records.Event]
    ) -> list[records.Event] | None:
        """Take ``event``, or return the lines to take again first (released tentative lines,
        then ``event``) when it ended a record that had some."""
        states = self.rules.states
        if self.state is not None:
            taken = _accepted(states[self.state], event[1])
            if taken is None:
                released = self._end(out)
                if released:
                    released.append(event)
                    return released
            else:
                after, tentative = taken
                if tentative:
                    self.pending.append(event)
                else:
                    if self.pending:
                        self._take(self.pending)
                        self.pending = []
                    self._take((event,))
                self.state = after
                self.last = now
                if not states[after]:
                    self._end(out)
                elif len(self.lines) + len(self.pending) >= self.max_lines:
                    self._cut(out)
                return None
        text = event[1]
        state = next((to for test, to in self.rules.begin if test(text)), self.rules.otherwise)
        if state is None:
            out.append(event)
            return None
        self.state = state
        self._take((event,))
        self.last = now
        if not states[state]:
            self._end(out)
        elif self.max_lines == 1:
            self._cut(out)
        return None

    def flush(self, now: float, timeout: float, out: list[records.Event], *, force: bool) -> None:
        if self.state is not None and (force or now - self.last >= timeout):
            out.extend(self._end(out))

    def _take(self, events: tuple[records.Event, ...] | list[records.Event]) -> None:
        if not self.lines:
            self.first, _, self.fields, self.time_ns = events[0]
        self.lines.extend(event[1] for event in events)

    def _cut(self, out: list[records.Event]) -> None:
        """Emit the record at ``max_lines``, tentative lines included; later lines go on in a
        new record in the same state."""
        if self.pending:
            self._take(self.pending)
            self.pending = []
        out.append((self.first, "\n".join(self.lines), self.fields, self.time_ns))
        self.lines = []

    def _end(self, out: list[records.Event]) -> list[records.Event]:
        """Emit the record; return its unconfirmed tentative lines."""
        if self.lines:
            out.append((self.first, "\n".join(self.lines), self.fields, self.time_ns))
            self.lines = []
        released, self.pending = self.pending, []
        self.state = None
        return released
