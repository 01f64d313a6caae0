"""Reviewing log files named on a command line (``mcp-ir review``): inputs, the
window, and the evidence copy. The review itself is :func:`.review.review`, the
same the ``review_logs`` step runs.

Inputs: a file (plain or gzip, recognised by its magic bytes), a directory (every
regular file in it, recursively, sorted) or ``-`` (standard input, spooled to a
temporary file so it can be read twice). Each input is a source named by its path
as given, so findings name it — never a temporary path.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import BinaryIO

from core.errors import ConfigError
from core.redact import Redactor

from .collect_files import collect_files
from .config import ReviewConfig
from .formats import zone_of
from .model import ReviewResult, Source, Window
from .render import to_document, to_markdown
from .review import review

OPEN_START = datetime(1970, 1, 1, tzinfo=UTC)
OPEN_END = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class BatchResult:
    """The review, its JSON document and, with an output directory, what was written."""

    result: ReviewResult
    document: dict[str, object]
    written: list[Path]


def parse_moment(text: str | None, field: str, zone: tzinfo) -> datetime | None:
    """An ISO 8601 date-time; a zone-less one is read in ``zone``.

    Raises:
        ConfigError: naming ``field`` when ``text`` is not ISO 8601.
    """
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{field}: {text!r} is not an ISO 8601 date-time (e.g. 2026-11-21T20:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def make_window(start: str | None, end: str | None, zone_name: str | None) -> Window | None:
    """The window from ``--window-start``/``--window-end`` (None when neither is given:
    everything is reviewed)."""
    zone = zone_of(zone_name)
    begin = parse_moment(start, "--window-start", zone)
    finish = parse_moment(end, "--window-end", zone)
    if begin is None and finish is None:
        return None
    if begin is not None and finish is not None and finish <= begin:
        raise ConfigError(
            f"--window-end: {finish.isoformat()} is not after --window-start {begin.isoformat()}"
        )
    return Window(begin or OPEN_START, finish or OPEN_END)


def expand(paths: Sequence[str]) -> list[tuple[str, Path | None]]:
    """(name as given, file) for every input; ``-`` maps to None (standard input).

    Raises:
        ConfigError: a path does not exist, is not a file or directory, or a
            directory holds no file; ``-`` given twice.
    """
    if not paths:
        raise ConfigError("PATH: give at least one file, directory, .gz or - (stdin)")
    out: list[tuple[str, Path | None]] = []
    for given in paths:
        if given == "-":
            if any(p is None for _, p in out):
                raise ConfigError("PATH: '-' (standard input) can be given only once")
            out.append(("-", None))
            continue
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            if not files:
                raise ConfigError(f"PATH {given!r}: the directory holds no file")
            out.extend((str(path / f.relative_to(path)), f) for f in files)
        elif path.is_file():
            out.append((given, path))
        elif path.exists():
            raise ConfigError(f"PATH {given!r}: not a regular file or directory")
        else:
            raise ConfigError(f"PATH {given!r}: no such file or directory")
    names = [name for name, _ in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"PATH: given more than once: {', '.join(repeated)}")
    return out


@contextmanager
def _sources(
    inputs: list[tuple[str, Path | None]], stdin: BinaryIO | None
) -> Iterator[list[Source]]:
    with tempfile.TemporaryDirectory(prefix="mcp-ir-review-") as tmp:
        sources = []
        for name, path in inputs:
            if path is None:
                path = Path(tmp) / "stdin"
                with open(path, "wb") as spool:
                    shutil.copyfileobj(stdin or sys.stdin.buffer, spool, 1 << 20)
            sources.append(Source(name=name, paths=[path]))
        yield sources


def review_paths(
    paths: Sequence[str],
    *,
    window: Window | None,
    config: ReviewConfig,
    redactor: Redactor,
    zone: str | None = None,
    output: Path | None = None,
    stdin: BinaryIO | None = None,
) -> BatchResult:
    """Reviews the inputs; with ``output``, writes the evidence (per input: the
    window's original bytes, the redacted view, and the secret-free evidence copy
    with each line holding a secret withheld; ``evidence/manifest.json`` with the
    hashes) and the reports (``review.json``, ``review.md``)."""
    inputs = expand(paths)
    zone_name = zone or config.timezone
    if window is None:
        # Everything: no baseline before it and no gap/truncation judgement.
        config = config.model_copy(
            update={"gap_threshold": timedelta(0), "baseline_period": timedelta(0)}
        )
    effective = window or Window(OPEN_START, OPEN_END)
    written: list[Path] = []
    with _sources(inputs, stdin) as sources:
        result = review(sources, effective, config, redactor=redactor, zone=zone_name)
        document = to_document(result)
        if window is None:
            document["window"] = None
        if output is not None:
            written = _write_output(output, sources, effective, redactor, zone_name, config)
            written += _write_reports(output, result, document, redactor)
    return BatchResult(result, document, written)


def _write_output(
    output: Path,
    sources: list[Source],
    window: Window,
    redactor: Redactor,
    zone_name: str | None,
    config: ReviewConfig,
) -> list[Path]:
    evidence = output / "evidence"
    zone = zone_of(zone_name)
    manifest = []
    written: list[Path] = []
    for source in sources:
        collected = collect_files(
            source,
            window,
            evidence,
            redactor=redactor,
            max_line=config.max_line_bytes,
            zone=zone,
        )
        manifest.append(
            {
                "source": source.name,
                "original": collected.path.name,
                "sha256": collected.sha256,
                "bytes": collected.bytes,
                "lines": collected.lines,
                "redacted_view": collected.redacted_path.name if collected.redacted_path else None,
                "redacted_sha256": collected.redacted_sha256,
                "evidence_copy": collected.evidence_path.name if collected.evidence_path else None,
                "evidence_sha256": collected.evidence_sha256,
                "withheld_lines": [n for n, _ in collected.withheld],
                "problems": [redactor.text(p.detail) for p in collected.problems],
            }
        )
        written.append(collected.path)
        if collected.redacted_path is not None:
            written.append(collected.redacted_path)
        if collected.evidence_path is not None:
            written.append(collected.evidence_path)
    path = evidence / "manifest.json"
    path.write_text(json.dumps({"files": manifest}, indent=2) + "\n")
    written.append(path)
    return written


def _write_reports(
    output: Path, result: ReviewResult, document: dict[str, object], redactor: Redactor
) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    json_path = output / "review.json"
    json_path.write_text(json.dumps(redactor.data(document), indent=2) + "\n")
    md_path = output / "review.md"
    md_path.write_text(redactor.text(to_markdown(result)))
    return [json_path, md_path]
