"""The shell of ``sidecarkit inject`` and ``uninject``: streams in, one document at a time, out.

Inputs are files, directories (their ``*.yaml``, ``*.yml`` and ``*.json`` files, with ``-R``
also those of subdirectories, in name order) and ``-`` for stdin, read as one stream in the
order given. Each document is parsed, transformed and written before the next one is read, so
memory grows with the largest document, not with the stream.

What a bad document does depends on ``strict``:

- By default, a document that cannot be read or injected (malformed YAML, an alias bomb, a
  wrong-typed field, a conflict, a bad annotation) is written out unchanged, byte for byte, and
  reported with the error; the others are injected. The exit code is the error's (2 for a
  manifest) once the stream is done: what ``linkerd inject`` does, so one odd document in a
  Helm chart's output does not hold back the rest.
- ``strict``: the first such document stops everything and nothing is written to stdout, so
  ``sidecarkit inject --strict -f x | kubectl apply -f -`` applies all or nothing. The output
  is held as text (never as parsed documents) until the end.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TextIO

import orjson

from sidecarkit import errors
from sidecarkit.injection import reports
from sidecarkit.k8s import manifests

__all__ = ["Options", "Transform", "expand", "rewrite"]

Transform = Callable[[Any, str], tuple[Any, reports.Report]]
"""(document data, ``file document N``) -> (new data, report); may change the data in place."""

MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class Options:
    """How ``rewrite`` reads, writes and reports."""

    strict: bool = False
    """Stop at the first bad document and write nothing; default: pass it through and go on."""
    output: str = "yaml"
    """``yaml`` keeps each document's text; ``json`` writes each object as a JSON document."""
    report: str = "text"
    """``text`` (a line per reason), ``json`` (one array at the end) or ``none``, on stderr."""
    recursive: bool = False
    """Descend into subdirectories of a directory given as input."""
    check: bool = False
    """Write nothing; exit 1 when a document would change (for CI gates)."""


def expand(paths: Sequence[str], *, recursive: bool) -> list[str]:
    """The files to read for ``paths``: files and ``-`` as given, directories listed."""
    files: list[str] = []
    for path in paths or ("-",):
        if path == "-" or not os.path.isdir(path):
            files.append(path)
            continue
        found: list[str] = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
            found.extend(
                os.path.join(root, n)
                for n in names
                if n.endswith(MANIFEST_SUFFIXES) and not n.startswith(".")
            )
        if not found:
            hint = "" if recursive else "; pass -R to read its subdirectories too"
            raise errors.InputError(f"{path}: a directory without manifests (*.yaml){hint}")
        files.extend(sorted(found))
    return files


def _open(path: str) -> tuple[str, TextIO]:
    """(source name, text stream) of ``-`` or a file; line endings are kept as written."""
    if path == "-":
        return "<stdin>", io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
    try:
        return path, open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise errors.InputError(f"cannot read {path}: {exc.strerror}") from exc


def _lines(source: str, stream: TextIO) -> Iterator[str]:
    try:
        yield from stream
    except UnicodeDecodeError as exc:
        raise errors.ManifestError(
            f"{source}: not UTF-8 text ({exc.reason}); convert the file to UTF-8"
        ) from exc


class _Writer:
    """Joins documents of several files into one stream, as ``kubectl`` reads it."""

    __slots__ = ("last", "out")

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last = ""

    def document(self, text: str, *, first_of_file: bool) -> None:
        if not text:
            return
        if self.last and not self.last.endswith("\n"):
            self.out.write("\n")
        if self.last and first_of_file and not text.startswith(("---", "%")):
            self.out.write("---\n")
        self.out.write(text)
        self.out.flush()  # a pipe's reader (kubectl, a CI step) sees each document when done
        self.last = text


def rewrite(paths: Sequence[str], transform: Transform, options: Options) -> int:
    """Run ``transform`` on every document of ``paths``; return the exit code.

    Raises the first error with ``strict`` (nothing written), and errors that end the stream
    either way (an unreadable file), which may come after documents were written.
    """
    files = expand(paths, recursive=options.recursive)
    opened = [_open(path) for path in files]  # every file can be opened before any output
    held = io.StringIO() if options.strict else None
    writer = _Writer(held if held is not None else sys.stdout)
    reporter = _Reporter(options.report)
    failed, exit_code, documents, stale = 0, 0, 0, 0
    passed_through = options.output == "yaml" and not options.check
    try:
        for source, stream in opened:
            for index, (line, chunk) in enumerate(manifests.split(_lines(source, stream)), 1):
                documents += 1
                where = f"{source} document {index}"
                try:
                    doc = manifests.parse(chunk, line=line, index=index, source=source)
                    new, report = transform(doc.data, where)
                    text = "" if options.check else _render(doc, new, report, options.output)
                except errors.InputError as exc:
                    error = type(exc)(f"{where}: {exc}")
                    if options.strict:
                        reporter.finish()
                        raise error from exc
                    failed += 1
                    exit_code = max(exit_code, exc.exit_code)
                    if options.report != "json":  # there, the report says it
                        print(f"sidecarkit: error: {error}", file=sys.stderr, flush=True)
                    reporter.add(_failure(where, exc, passed_through=passed_through))
                    text = chunk if passed_through else ""
                else:
                    for decision in report.decisions:
                        reporter.add(decision)
                        stale += decision.changed
                writer.document(text, first_of_file=index == 1)
    finally:
        for _, stream in opened:
            if stream is not sys.stdin:
                stream.close()
    if held is not None:
        sys.stdout.write(held.getvalue())
    sys.stdout.flush()
    reporter.finish()
    if failed and options.report != "json":
        print(
            f"sidecarkit: {failed} of {documents} documents failed and were "
            + ("written unchanged" if passed_through else "left out")
            + "; fix them and run again",
            file=sys.stderr,
        )
    if options.check and stale and not exit_code:
        if options.report != "json":
            print(
                f"sidecarkit: {stale} workloads are stale against the current profiles; "
                "run the same command without --check to update them",
                file=sys.stderr,
            )
        return 1
    return exit_code


def _render(doc: manifests.Document, new: Any, report: reports.Report, output: str) -> str:
    if output == "json":
        if new is None:
            return ""
        plain = manifests.to_plain(new)
        return orjson.dumps(plain, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE).decode()
    return manifests.dump(doc, new, changed=report.changed)


def _failure(where: str, error: errors.InputError, *, passed_through: bool) -> reports.Decision:
    what = "written unchanged" if passed_through else "left out"
    reason = reports.Reason(reports.Code.FAILED, f"{error}; {what}")
    return reports.Decision(where, "-", (reason,), False)


class _Reporter:
    """Writes decisions to stderr as they are made: a long stream keeps none of them.

    ``text`` writes a line per reason (failures were said as errors already); ``json`` writes
    one JSON array, an element at a time. With ``strict``, the text lines of documents done
    before a failure are written too: they say how far the stream got.
    """

    __slots__ = ("count", "format")

    def __init__(self, report_format: str) -> None:
        self.format = report_format
        self.count = 0

    def add(self, decision: reports.Decision) -> None:
        if self.format == "json":
            (item,) = reports.Report((decision,)).to_json()
            sys.stderr.write(("[\n" if not self.count else ",\n") + orjson.dumps(item).decode())
        elif self.format == "text":
            for reason in decision.reasons:
                if reason.code is not reports.Code.FAILED:
                    sys.stderr.write(
                        f"{decision.location} {decision.target}: {reason.code}: {reason.message}\n"
                    )
        self.count += 1

    def finish(self) -> None:
        if self.format == "json":
            sys.stderr.write("\n]\n" if self.count else "[]\n")
        sys.stderr.flush()
