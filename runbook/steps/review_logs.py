"""review_logs: review the proxy, cloudflared and MCP server logs of the suspected
window, before service is restored, and put the findings in front of a person.

``prepare`` (read-only for the stack, runs before the gate, once per plan) reviews
the container logs ``capture_evidence`` stored, plus what the collectors can still
reach: the live logs of containers still running (only what they wrote after the
capture, so no line is counted twice), and the files and CloudWatch log groups the
target's ``review`` section lists. Every collected log becomes a hashed artifact
first and is reviewed from there, so each finding's line reference points into the
evidence. The findings (Markdown, JSON) and the merged timeline are stored as
artifacts and published to Prefect; the gate shows the summary.

``apply`` records ``logs.reviewed`` with the counts and who approved. Findings that
need a human are never passed automatically, except on a sandbox target under the
``auto-approve`` policy, which is recorded explicitly.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import ConfigError, StepFailed
from core.trail import Record
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from targets import base
from tasks.logs import CollectedArtifact, ReviewResult, Source, Window
from tasks.logs.model import SourceKind

LOG_SUBJECT = "logs:"
FINDINGS_SUBJECTS = ("log-review:markdown", "log-review:findings", "log-review:timeline")
_TAIL = 1 << 16
_LISTED = 1000  # withheld lines named one by one in the trail (the count is exact)


def _kind_of(name: str) -> SourceKind:
    """The log format a container's name implies (the review also auto-detects)."""
    if "cloudflared" in name:
        return "cloudflared"
    if "mcp-proxy" in name:
        return "proxy"
    return "auto"


def captured_logs(records: list[Record]) -> dict[str, Record]:
    """Container name → the ``artifact`` record of its captured log (latest wins)."""
    found: dict[str, Record] = {}
    for rec in records:
        subject = str(rec.data.get("subject", "")) if rec.kind == "artifact" else ""
        if rec.step == "capture_evidence" and subject.startswith(LOG_SUBJECT):
            found[subject.removeprefix(LOG_SUBJECT)] = rec
    return found


def incident_window(ctx: StepContext) -> Window:
    """The incident's suspected window (start inclusive, end exclusive).

    Raises:
        ConfigError: the incident has no window (``window_start``/``window_end``).
    """
    start, end = ctx.incident.window_start, ctx.incident.window_end
    if start is None or end is None:
        missing = "window_start" if start is None else "window_end"
        raise ConfigError(f"incident {ctx.incident.id}: field '{missing}' is not set")
    return Window(start, end)


def _last_ns(path: Path) -> int | None:
    """The timestamp of the last dated line of a (time-ordered) log file."""
    from tasks.logs.reader import line_ns

    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - _TAIL))
        tail = fh.read()
    for line in reversed(tail.split(b"\n")):
        ns = line_ns(line)
        if ns is not None:
            return ns
    return None


def _dumps(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


@register
class ReviewLogs(Step):
    key = "review_logs"
    reversible = True
    needs = frozenset({base.LOG_SOURCES})
    description = (
        "Review proxy, cloudflared and MCP server logs of the suspected window; "
        "findings table, timeline, a human reads them"
    )

    def plan(self, ctx: StepContext) -> Plan:
        # Made from the inventory and the incident window only (not from the trail or
        # what runs now), so ``mcp-ir plan`` with the same window shows the same hash.
        window = incident_window(ctx)
        config = ctx.target.review
        live = ctx.driver.log_sources_plan(ctx)
        resources = ["artifact:logs:* (every container log capture_evidence stored)"]
        resources += live.resources
        api_calls: list[str] = list(live.reads)
        resources += [f"file:{f.path}" for f in config.files]
        resources += [f"log-group:{g.log_group}" for g in config.cloudwatch]
        if config.cloudwatch:
            api_calls.append("logs:FilterLogEvents")
        return self.new_plan(
            ctx,
            summary=f"review the stored container logs and {len(resources) - 1} more log "
            f"source(s) for {window.start.isoformat()} → {window.end.isoformat()} (baseline "
            f"{config.baseline_period}); a person reads the findings before service is restored",
            resources=resources,
            api_calls=api_calls,
            parameters={
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "config": config.model_dump(mode="json"),
            },
        )

    # -- prepare: collect, review, publish ------------------------------------------

    def prepare(self, ctx: StepContext) -> dict[str, Any]:
        window = incident_window(ctx)
        config = ctx.target.review
        wide = window.widened(config.baseline_period)
        sources: list[Source] = []
        captured = captured_logs(ctx.trail.records())
        for name, rec in sorted(captured.items()):
            path = ctx.trail.artifacts / rec.data["sha256"]
            sources.append(Source(name=name, paths=[path], kind=_kind_of(name)))
        with self._scratch() as scratch:
            sources += self._collect_live(ctx, wide, captured, scratch)
            sources += self._collect_files(ctx, wide, scratch)
            sources += self._collect_cloudwatch(ctx, wide, scratch)
        if not sources:
            raise StepFailed(
                self.key,
                "no logs to review: capture_evidence stored no container logs, no container "
                "is running and the target's 'review' section lists no files or log groups",
            )
        from tasks.logs import review

        result = review(sources, window, config, redactor=ctx.redactor, zone=config.timezone)
        stored = self._store_findings(ctx, result)
        self._publish(ctx, result)
        return {
            "summary": result.summary(),
            "needs_human": result.needs_human,
            "findings": len(result.findings),
            "severity_counts": self._severity_counts(result),
            "sources": [s.name for s in sources],
            "artifacts": stored,
            "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        }

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="mcp-ir-review-") as tmp:
            yield Path(tmp)

    def _keep(
        self, ctx: StepContext, collected: CollectedArtifact, subject: str, kind: SourceKind
    ) -> Source:
        """Stores a collected log in the trail and returns it as a review source read
        from the stored copy (so line references point into the evidence).

        The trail never holds secret values. Two artifacts are stored: the evidence
        copy — the window's original lines, each line the redactor had to change (and
        every line of a private key block) withheld and named by the fingerprint of
        the original line — and the redacted view, which is what gets reviewed and
        shown. Both are text, so the trail's own redaction pass runs over them too
        (it reads them as UTF-8: an invalid byte becomes U+FFFD there). Both carry
        the original's SHA-256 and size (``collected_sha256``, ``original_bytes``),
        which a responder can check against the source; the view's record says
        whether the stored evidence copy IS the original (``original_kept``: same
        SHA-256). ``mcp-ir review --output`` keeps the exact original bytes in the
        operator's own directory."""
        withheld = [{"line": n, "fingerprint": f} for n, f in collected.withheld[:_LISTED]]
        original = {
            "lines": collected.lines,
            "collected_sha256": collected.sha256,
            "original_bytes": collected.bytes,
            "redacted_lines": collected.redacted_lines,
        }
        evidence_digest = None
        if collected.evidence_path is not None:
            evidence = ctx.artifact(
                collected.evidence_path.read_bytes(),
                name=collected.evidence_path.name,
                subject=f"{subject}:evidence",
                withheld=withheld,
                **original,
            )
            evidence_digest = evidence.data["sha256"]
        stored = collected.redacted_path or collected.path
        rec = ctx.artifact(
            stored.read_bytes(),
            name=f"{collected.path.name}",
            subject=subject,
            evidence_sha256=evidence_digest,
            original_kept=evidence_digest == collected.sha256,
            problems=[ctx.redactor.text(p.detail) for p in collected.problems],
            **original,
        )
        return Source(
            name=collected.source,
            paths=[ctx.trail.artifacts / rec.data["sha256"]],
            kind=kind,
            problems=list(collected.problems),
        )

    def _collect_live(
        self, ctx: StepContext, wide: Window, captured: dict[str, Record], scratch: Path
    ) -> list[Source]:
        """The logs the target's driver can still read live (Compose: running
        containers), only what they wrote after the capture."""
        from tasks.logs.timestamps import from_ns

        out: list[Source] = []
        for live in ctx.driver.live_logs(ctx):
            window = wide
            name = live.name
            if name in captured:
                # Only what it wrote after the capture: the rest is in the captured log.
                last = _last_ns(ctx.trail.artifacts / captured[name].data["sha256"])
                if last is not None:
                    if last + 1 >= wide.end_ns:
                        continue
                    window = Window(max(wide.start, from_ns(last + 1)), wide.end)
                name = f"{name} (live)"
            collected = live.collect(window, scratch, name)
            out.append(self._keep(ctx, collected, f"review-logs:{name}", _kind_of(name)))
        return out

    def _collect_files(self, ctx: StepContext, wide: Window, scratch: Path) -> list[Source]:
        from tasks.logs.collect_files import collect_files

        out: list[Source] = []
        for spec in ctx.target.review.files:
            source = Source.from_file(spec.name, spec.path, kind=spec.kind)
            collected = collect_files(
                source,
                wide,
                scratch,
                redactor=ctx.redactor,
                max_line=ctx.target.review.max_line_bytes,
            )
            kept = self._keep(ctx, collected, f"review-file:{spec.name}", spec.kind)
            kept.mcp_server = spec.mcp_server
            out.append(kept)
        return out

    def _collect_cloudwatch(self, ctx: StepContext, wide: Window, scratch: Path) -> list[Source]:
        groups = ctx.target.review.cloudwatch
        if not groups:
            return []
        import boto3

        from tasks.logs.collect_cloudwatch import collect_log_group

        region = ctx.target.aws.region if ctx.target.aws else None
        client = boto3.client("logs", region_name=region) if region else boto3.client("logs")
        out: list[Source] = []
        for spec in groups:
            collected = collect_log_group(
                client,
                spec.log_group,
                wide,
                scratch,
                stream_names=spec.streams or None,
                name=spec.name or spec.log_group,
                redactor=ctx.redactor,
            )
            kept = self._keep(ctx, collected, f"review-log-group:{spec.log_group}", spec.kind)
            kept.mcp_server = spec.mcp_server
            out.append(kept)
        return out

    @staticmethod
    def _severity_counts(result: ReviewResult) -> dict[str, int]:
        counts: dict[str, int] = {}
        for finding in result.findings:
            counts[finding.severity.label] = counts.get(finding.severity.label, 0) + 1
        return counts

    def _store_findings(self, ctx: StepContext, result: ReviewResult) -> dict[str, str]:
        from tasks.logs import to_markdown, to_table_rows
        from tasks.logs.render import to_document
        from tasks.logs.timestamps import format_ns

        timeline = [
            {
                "at": format_ns(e.ts_ns),
                "source": e.source,
                "line": str(e.ref),
                "severity": e.severity.label,
                "what": e.what,
                "text": e.text,
            }
            for e in result.timeline
        ]
        document = to_document(result)  # the same shape as `mcp-ir review --json`
        findings = {
            "window": document["window"],
            "sources": document["sources"],
            "summary": result.summary(),
            "needs_human": result.needs_human,
            "findings": [
                {**row, "rule_id": f.rule_id, "title": f.title, "rationale": f.rationale}
                for row, f in zip(to_table_rows(result), result.findings, strict=True)
            ],
        }
        docs = (
            (to_markdown(result).encode(), "log-review.md", "text/markdown"),
            (_dumps(findings), "log-review-findings.json", "application/json"),
            (
                _dumps({"events": timeline, "total": result.timeline_total}),
                "log-review-timeline.json",
                "application/json",
            ),
        )
        stored: dict[str, str] = {}
        for subject, (content, name, media) in zip(FINDINGS_SUBJECTS, docs, strict=True):
            rec = ctx.artifact(content, name=name, media_type=media, subject=subject)
            stored[subject] = rec.data["sha256"]
        return stored

    def _publish(self, ctx: StepContext, result: ReviewResult) -> None:
        """The findings table and the Markdown in the Prefect UI (best effort: they are
        in the trail already)."""
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        from tasks.logs import to_markdown, to_table_rows

        key = f"log-review-{ctx.incident.id.lower()}"
        try:
            create_table_artifact(
                ctx.redactor.data(to_table_rows(result)),
                key=key,
                description=ctx.redactor.text(result.summary()),
            )
            create_markdown_artifact(
                markdown=ctx.redactor.text(to_markdown(result)),
                key=f"{key}-md",
                description=f"Log review for {ctx.incident.id}",
            )
        except Exception as exc:  # noqa: BLE001 (the trail holds the findings already)
            ctx.record("review.publish_failed", {"error": type(exc).__name__})

    # -- check → apply → verify ---------------------------------------------------------

    def _gate(self, ctx: StepContext) -> Record:
        for rec in reversed(ctx.trail.records()):
            if rec.step == self.key and rec.kind in ("gate.passed", "gate.auto"):
                return rec
        raise StepFailed(self.key, "the review gate has not passed (no gate.passed/gate.auto)")

    def check(self, ctx: StepContext) -> str | None:
        plan_hash = self.plan(ctx).digest()
        for rec in ctx.step_records("logs.reviewed"):
            if rec.data.get("plan_hash") == plan_hash:
                return f"review recorded at seq {rec.seq} for this plan"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        prepared = ctx.prepared or {}
        if "needs_human" not in prepared:
            raise StepFailed(self.key, "no prepared review: the findings were never produced")
        gate = self._gate(ctx)
        auto = gate.kind == "gate.auto"
        data: dict[str, Any] = {
            "plan_hash": self.plan(ctx).digest(),
            "findings": prepared["findings"],
            "severity_counts": prepared.get("severity_counts", {}),
            "needs_human": prepared["needs_human"],
            "approvers": [] if auto else list(gate.data.get("approvers", [])),
            "gate": gate.kind,
            "artifacts": prepared.get("artifacts", {}),
        }
        if auto and prepared["needs_human"]:
            if not (ctx.target.sandbox and ctx.incident.policy == "auto-approve"):
                raise StepFailed(
                    self.key,
                    f"{prepared['findings']} finding(s) need a human, but the gate passed "
                    f"automatically ({gate.data.get('reason', 'auto')}); only a sandbox target "
                    "under the auto-approve policy may pass them unread",
                )
            data["auto_passed_needing_human"] = (
                f"sandbox target {ctx.incident.target} under the auto-approve policy: "
                "findings that need a human were passed without one"
            )
        ctx.record("logs.reviewed", data)
        return data

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        import hashlib

        reviewed = ctx.step_records("logs.reviewed")
        if not reviewed:
            raise StepFailed(self.key, "no logs.reviewed record after apply")
        stored = reviewed[-1].data.get("artifacts", {})
        for subject in FINDINGS_SUBJECTS:
            digest = stored.get(subject)
            path = ctx.trail.artifacts / str(digest)
            if not digest or not path.exists():
                raise StepFailed(self.key, f"findings artifact {subject} is missing")
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise StepFailed(self.key, f"findings artifact {subject} does not match its hash")
        return {"findings": reviewed[-1].data["findings"], "artifacts": sorted(stored)}
