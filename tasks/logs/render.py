"""Renderers of a review: Markdown for reports and the gate, table rows for a
Prefect table artifact (plain dicts: this package does not import Prefect)."""

from __future__ import annotations

from .model import ReviewResult
from .timestamps import format_ns


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_table_rows(result: ReviewResult) -> list[dict[str, str | int]]:
    """One row per finding, most severe first, columns stable for the artifact."""
    return [
        {
            "severity": f.severity.label,
            "rule": f"{f.rule_id} {f.rule}",
            "source": f.source,
            "key": f.key,
            "count": f.count,
            "first_seen": format_ns(f.first_ns),
            "last_seen": format_ns(f.last_ns),
            "line": str(f.ref),
            "sample": f.sample,
        }
        for f in result.findings
    ]


def to_markdown(result: ReviewResult) -> str:
    """The findings table, per-source counts and the merged timeline as Markdown."""
    out = [f"## Log review\n\n{result.summary()}\n"]
    out.append("### Findings\n")
    if result.findings:
        out.append(
            "| severity | rule | source | key | count | first seen | last seen | line | sample |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|")
        for row in to_table_rows(result):
            out.append("| " + " | ".join(_cell(str(v)) for v in row.values()) + " |")
        out.append("\nRationale:\n")
        seen: set[str] = set()
        for f in result.findings:
            if f.rule_id not in seen:
                seen.add(f.rule_id)
                out.append(f"- **{f.rule_id} {f.rule}** ({f.severity.label}): {f.rationale}")
    else:
        out.append("No findings.")
    out.append("\n### Sources\n")
    out.append(
        "| source | seeked | bytes read | lines read | baseline | in window | formats "
        "| unknown | no timestamp | binary | oversized |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, c in result.per_source.items():
        formats = ", ".join(f"{k} {v}" for k, v in sorted(c.formats.items())) or "-"
        out.append(
            f"| {_cell(name)} | {'yes' if c.seeked else 'no'} | {c.bytes_read} | {c.lines_read} "
            f"| {c.lines_baseline} | {c.lines_in_window} | {formats} | {c.unknown} "
            f"| {c.no_timestamp} | {c.binary_lines} | {c.oversized_lines} |"
        )
    for name, c in result.per_source.items():
        if c.prescan_failed:
            out.append(
                f"\nThe parallel prescan of {_cell(name)} failed ({_cell(c.prescan_failed)}); "
                "the review continued in one process (same result)."
            )
    shown = len(result.timeline)
    out.append(f"\n### Timeline ({shown} of {result.timeline_total} events)\n")
    for e in result.timeline:
        text = _cell(e.text).replace("`", "'")
        out.append(
            f"- `{format_ns(e.ts_ns)}` **{e.severity.label}** {_cell(e.source)} "
            f"({_cell(str(e.ref))}): {_cell(e.what)} — `{text}`"
        )
    return "\n".join(out) + "\n"


def to_document(result: ReviewResult) -> dict[str, object]:
    """The review as one JSON document (``mcp-ir review --json``, the ``review_logs``
    findings artifact): ``sources`` (path, lines, parsed, unknown, formats,
    assumed_zone, zone; ``prescan_failed`` only when the second process failed),
    ``findings`` (rule, severity, title, source, count, first, last, sample —
    redacted) and ``timeline``."""
    return {
        "window": {
            "start": result.window.start.isoformat(),
            "end": result.window.end.isoformat(),
        },
        "sources": [
            {
                "path": name,
                "lines": counts.lines_in_window,
                "parsed": counts.parsed,
                "unknown": counts.unknown,
                "formats": dict(sorted(counts.formats.items())),
                "assumed_zone": counts.assumed_zone,
                "zone": counts.zone,
            }
            | ({"prescan_failed": counts.prescan_failed} if counts.prescan_failed else {})
            for name, counts in result.per_source.items()
        ],
        "findings": [
            {
                "rule": f.rule,
                "severity": f.severity.label,
                "title": f.title,
                "source": f.source,
                "count": f.count,
                "first": format_ns(f.first_ns),
                "last": format_ns(f.last_ns),
                "sample": f.sample,
            }
            for f in result.findings
        ],
        "timeline": [
            {
                "at": format_ns(e.ts_ns),
                "source": e.source,
                "severity": e.severity.label,
                "what": e.what,
                "text": e.text,
            }
            for e in result.timeline
        ],
    }
