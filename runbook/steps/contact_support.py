"""contact_support: hand the vendor what it needs, and record that a person did.

``prepare`` renders the vendor-support report (tunnel id and domain, the suspected
window, certificate fingerprints, the actions already taken with their times) from
the evidence trail — identifiers, times and fingerprints only, never a secret —
and stores it as an artifact. The step then waits for a person to record who
contacted support and the ticket reference (the Prefect UI form or ``mcp-ir record
INCIDENT contact_support --ticket REF --as NAME``); ``apply`` writes that as
``support.contacted``, bound to the report's SHA-256.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from prefect.input import RunInput

from core.durations import format_duration
from core.errors import ApprovalRefused, StepFailed
from core.trail import Record, Trail
from runbook.context import Incident, StepContext
from runbook.registry import Plan, Step, register

TEMPLATE = "support_report.md.j2"
REPORT_SUBJECT = "support-report"
MAX_TICKET_CHARS = 200
MAX_COMMENT_CHARS = 2000


class SupportContactInput(RunInput):
    """Who contacted the vendor's support, and the ticket reference they got."""

    by: str
    ticket: str
    comment: str = ""
    source: str = "ui"
    proof: str = ""  # the signed statement from `mcp-ir record` (runbook.proofs)


def _certificates(
    trail: Trail, records: list[Record], fallback: Callable[[], Iterable[Any]]
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Fingerprints captured by capture_evidence (the tunnel record and the local
    certificate files); the API is asked only when no tunnel record was captured.
    Also returns the captured tunnel record (may be empty)."""
    certs: list[dict[str, str]] = []
    tunnel: dict[str, Any] = {}
    captured = False
    for rec in records:
        if rec.kind != "artifact" or rec.step != "capture_evidence":
            continue
        subject = rec.data.get("subject")
        if subject not in ("tunnel-record", "local-certificates"):
            continue
        doc = json.loads(trail.read_artifact(rec.data["sha256"]))
        if subject == "tunnel-record":
            captured = True
            tunnel = doc.get("tunnel") or {}
            for cert in doc.get("certificates", []):
                state = "archived" if cert.get("archived_at") else "active"
                certs.append(
                    {
                        "source": f"registered CA ({state}, captured)",
                        "name": str(cert.get("id")),
                        "fingerprint": str(cert.get("fingerprint")),
                    }
                )
        else:
            for name, value in sorted(doc.items()):
                if isinstance(value, str) and not value.startswith("unreadable"):
                    certs.append({"source": "stack data/", "name": name, "fingerprint": value})
    if not captured:
        for cert in fallback():
            state = "archived" if cert.archived_at else "active"
            certs.append(
                {
                    "source": f"registered CA ({state}, Tunnels API)",
                    "name": cert.id,
                    "fingerprint": cert.fingerprint,
                }
            )
    return certs, tunnel


# How the report words each kind of record that says something was done.
_ACTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "step.already_done": lambda d: f"step found already done: {d.get('reason', '')}",
    "stack.stopped": lambda d: (
        f"stack stopped: {len(d.get('removed_containers', []))} container(s) and "
        f"{len(d.get('removed_networks', []))} network(s) removed"
    ),
    "tunnel.archived": lambda d: (
        f"tunnel `{d.get('id')}` archived (archived_at {d.get('archived_at')})"
    ),
    "session.interrupted": lambda d: (
        f"session `{d.get('session_id')}` interrupted (user.interrupt)"
    ),
    "session.detached": lambda d: (
        f"session `{d.get('session_id')}` detached from {', '.join(d.get('removed_servers', []))} "
        f"({d.get('before_count')} → {d.get('after_count')} MCP servers)"
    ),
    "agent.detached": lambda d: (
        f"agent `{d.get('agent_id')}` new version {d.get('version')} without "
        f"{', '.join(d.get('removed_servers', []))}"
    ),
}


def _action(rec: Record) -> str | None:
    """One line for a record that describes something done, or None."""
    d = rec.data
    if rec.kind == "step.succeeded":
        took = d.get("duration_s")
        return "step succeeded" + (
            f" in {format_duration(float(took))}" if took is not None else ""
        )
    if rec.kind == "artifact" and d.get("subject") == "blocklist":
        return f"blocklist for Messages API callers published (sha256 `{d.get('sha256')}`)"
    render = _ACTIONS.get(rec.kind)
    return render(d) if render else None


def report_context(
    trail: Trail,
    incident: Incident,
    *,
    tunnel_id: str,
    domain: str | None,
    fallback_certificates: Callable[[], Iterable[Any]],
) -> dict[str, Any]:
    """Everything the support report shows, from the trail (and, only when no tunnel
    record was captured, the certificates the API lists)."""
    records = trail.records()
    certs, captured = _certificates(trail, records, fallback_certificates)
    actions = [
        {"ts": rec.ts, "step": rec.step or "—", "text": text}
        for rec in records
        if (text := _action(rec)) is not None
    ]

    def iso(value: datetime | None) -> str:
        return value.isoformat() if value else "unknown"

    return {
        "incident": {
            "id": incident.id,
            "severity": incident.severity,
            "initiator": incident.initiator,
            "drill": incident.drill,
        },
        "tunnel": {"id": tunnel_id, "domain": domain or captured.get("domain") or "unknown"},
        "window": {"start": iso(incident.window_start), "end": iso(incident.window_end)},
        "certificates": certs,
        "actions": actions,
    }


def render_report(context: dict[str, Any]) -> str:
    """The report as Markdown (StrictUndefined: a missing field is an error)."""
    from runbook.report import markdown_env

    return markdown_env().get_template(TEMPLATE).render(**context)


def check_ticket(ticket: Any) -> str:
    """The ticket reference, stripped.

    Raises:
        ApprovalRefused: empty, longer than 200 characters, or containing a line break
            or another control character (naming the field).
    """
    if not isinstance(ticket, str) or not ticket.strip():
        raise ApprovalRefused("ticket: must not be empty (the vendor's ticket reference)")
    value = ticket.strip()
    if len(value) > MAX_TICKET_CHARS:
        raise ApprovalRefused(f"ticket: at most {MAX_TICKET_CHARS} characters (got {len(value)})")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ApprovalRefused("ticket: must be one line without control characters")
    return value


@register
class ContactSupport(Step):
    key = "contact_support"
    reversible = True
    description = "Render the vendor-support report and record who contacted support (ticket)"
    manual_input = SupportContactInput

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        return self.new_plan(
            ctx,
            summary=f"render the vendor-support report for tunnel {tunnel} and wait for a "
            "person to record the support ticket",
            resources=[f"tunnel:{tunnel}"],
            api_calls=[f"GET /v1/tunnels/{tunnel}/certificates (only if none was captured)"],
            parameters={},
        )

    def prepare(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import tunnels

        tunnel_id = ctx.target.tunnel.id
        context = report_context(
            ctx.trail,
            ctx.incident,
            tunnel_id=tunnel_id,
            domain=ctx.target.tunnel.domain,
            fallback_certificates=lambda: tunnels.list_certificates(
                ctx.clients.anthropic, tunnel_id, include_archived=True
            ),
        )
        text = render_report(context)
        record = ctx.artifact(
            text.encode(),
            name=f"support-report-{ctx.incident.id}.md",
            media_type="text/markdown",
            subject=REPORT_SUBJECT,
        )
        sha = str(record.data["sha256"])
        self._publish(ctx, text)
        return {
            "summary": f"support report for tunnel {tunnel_id} ({context['tunnel']['domain']}): "
            f"{len(context['certificates'])} certificate fingerprint(s), "
            f"{len(context['actions'])} action(s) taken; report sha256 {sha[:16]}",
            "report_sha256": sha,
        }

    def _publish(self, ctx: StepContext, text: str) -> None:
        """Shows the report in the Prefect UI; the trail already holds it, so a failure
        here is recorded and does not stop the step."""
        from prefect.artifacts import create_markdown_artifact

        try:
            create_markdown_artifact(
                markdown=ctx.redactor.text(text),
                key=f"support-report-{ctx.incident.id.lower()}",
                description=f"Vendor-support report for {ctx.incident.id}",
            )
        except Exception as exc:  # noqa: BLE001 (the report is in the trail already)
            ctx.record("support_report.publish_failed", {"error": type(exc).__name__})

    def manual_prompt(self, ctx: StepContext) -> str:
        summary = (ctx.prepared or {}).get("summary", "")
        return (
            f"### Contact vendor support for incident `{ctx.incident.id}`\n\n{summary}\n\n"
            "Send the support report (artifact `support-report`) to the vendor, then record "
            "who did it and the ticket reference here or with "
            f"`mcp-ir record {ctx.incident.id} {self.key} --ticket REF --as NAME`."
        )

    def validate_manual(self, ctx: StepContext, data: dict[str, Any]) -> None:
        super().validate_manual(ctx, data)
        data["ticket"] = check_ticket(data.get("ticket"))
        comment = data.get("comment") or ""
        if len(comment) > MAX_COMMENT_CHARS:
            raise ApprovalRefused(f"comment: at most {MAX_COMMENT_CHARS} characters")

    def check(self, ctx: StepContext) -> str | None:
        done = ctx.step_records("support.contacted")
        if done:
            d = done[-1].data
            return f"support already contacted by {d.get('by')} (ticket {d.get('ticket')})"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        manual = ctx.manual or {}
        sha = (ctx.prepared or {}).get("report_sha256")
        if not manual.get("by") or not manual.get("ticket") or not sha:
            raise StepFailed(self.key, "no recorded support contact (by, ticket) or report")
        data = {
            "by": manual["by"],
            "ticket": manual["ticket"],
            "comment": manual.get("comment", ""),
            "source": manual.get("source", ""),
            "report_sha256": sha,
        }
        ctx.record("support.contacted", data)
        return data

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        done = ctx.last_record("support.contacted", "no support.contacted record in the trail")
        sha = done.data.get("report_sha256", "")
        if not (ctx.trail.artifacts / str(sha)).is_file():
            raise StepFailed(self.key, f"support report artifact {sha!r} is missing")
        return {"ticket": done.data["ticket"], "report_sha256": sha}
