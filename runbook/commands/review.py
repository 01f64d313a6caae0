"""``mcp-ir review``: review log files for a window, without a Prefect server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAME = "review"
HELP = "review cloudflared, proxy and MCP client/server logs (files, dirs, .gz, -)"
DESCRIPTION = (
    "Review log files for the suspected window and print the findings, most severe "
    "first. Each PATH is a file (plain or gzip), a directory (every file in it) or - "
    "for standard input. Formats are detected line by line: cloudflared text (every "
    "version) and JSON, journald/syslog, Docker Compose and kubectl --timestamps "
    "prefixes, Go log, mcp-proxy, Claude Desktop and VS Code MCP logs, JSON-RPC, Rust "
    "tracing/env_logger, logfmt and JSON lines. Without a window everything is "
    "reviewed. Zone-less timestamps are read in --tz (else the target's "
    "review.timezone, else UTC) and counted as assumed_zone. --target takes the "
    "deployment's expectations (tool allowlist, edge locations, clients, IP ranges) and "
    "its secret values from the inventory. Stack traces behind docker/podman/kubectl "
    "timestamps are grouped into one record. --output DIR writes, per input, the "
    "window's original bytes, a redacted view and a secret-free evidence copy (the "
    "original with each line holding a secret withheld, named by its fingerprint), "
    "with SHA-256 hashes in evidence/manifest.json, and the reports review.json and "
    "review.md. No Prefect "
    "server is needed. Exit 0: no finding at medium or above; 1: findings a person must "
    "read; 2: bad input."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, directory, .gz or -")
    p.add_argument("--target", help="target name from the inventory (its review settings)")
    p.add_argument("--window-start", help="ISO 8601, inclusive (zone-less: read in --tz)")
    p.add_argument("--window-end", help="ISO 8601, exclusive (zone-less: read in --tz)")
    p.add_argument("--tz", help="zone of zone-less timestamps: IANA name, UTC or +02:00")
    p.add_argument("--json", action="store_true", help="print the review as one JSON document")
    p.add_argument("--output", metavar="DIR", help="write the evidence copy and the reports here")


def run(args: argparse.Namespace, settings: Any) -> int:
    """Reviews the paths; 1 when a finding is medium or above, else 0.

    Raises:
        ConfigError: a path, the window, the zone or the target is invalid (exit 2).
    """
    from core.redact import Redactor
    from tasks.logs import ReviewConfig, Severity
    from tasks.logs.batch import make_window, review_paths

    config = ReviewConfig()
    redactor = Redactor()
    if args.target:
        from runbook.context import build_redactor

        target = settings.inventory().target(args.target)
        fields = set(ReviewConfig.model_fields)
        config = ReviewConfig.model_validate(target.review.model_dump(include=fields))
        redactor = build_redactor(target)
    zone = args.tz or config.timezone
    window = make_window(args.window_start, args.window_end, zone)
    batch = review_paths(
        args.paths,
        window=window,
        config=config,
        redactor=redactor,
        zone=zone,
        output=Path(args.output) if args.output else None,
    )
    if args.json:
        print(json.dumps(batch.document, indent=2))
    else:
        _print_text(batch.document, batch.written)
    worst = max((f.severity for f in batch.result.findings), default=Severity.INFO)
    return 1 if worst >= Severity.MEDIUM else 0


def _print_text(document: dict[str, Any], written: list[Path]) -> None:
    findings = document["findings"]
    print(f"{len(findings)} finding(s)" + ("" if findings else ": nothing at all"))
    for f in findings:
        print(
            f"  {f['severity'].upper():8} {f['title']}  [{f['source']}] ×{f['count']} "
            f"{f['first']} → {f['last']}"
        )
        print(f"           {f['sample']}")
    print("sources:")
    for s in document["sources"]:
        rate = f"{100 * s['parsed'] / s['lines']:.1f}%" if s["lines"] else "-"
        formats = ", ".join(f"{k} {v}" for k, v in s["formats"].items())
        print(
            f"  {s['path']}: {s['lines']} lines, {s['parsed']} parsed ({rate}), "
            f"{s['unknown']} unknown, {s['assumed_zone']} assumed {s['zone']} ({formats})"
        )
    for path in written:
        print(f"wrote {path}")
