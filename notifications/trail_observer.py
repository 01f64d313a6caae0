"""An incident's notifications (the Slack thread, and any other notifier plugin),
driven by its evidence trail.

:func:`observe` is what the Slack plugin's ``build`` returns
(:mod:`notifications.slack_plugin`): the runner builds it once per flow run and
subscribes it to the incident's trail, so every
record the flow writes becomes (at most) one notifier call — the flow itself
never calls a notifier. Every plugin the inventory configures under ``notifiers:``
(:mod:`notifications.plugins`) gets every call. Mapping:

=====================================  =========================================
trail record                           notifier call
=====================================  =========================================
``incident.opened`` / ``run.resumed``  ``incident_opened`` (a resumed run posts
                                       "resumed" in the same thread)
``step.started``                       ``step_started``
``step.succeeded|failed|skipped``      ``step_finished`` (duration from the record)
``gate.opened`` / ``gate.waiting``     ``approval_requested`` (plan from the
                                       preceding ``step.planned``; approvals so far
                                       replayed from the trail)
``approval.accepted`` / ``gate.rejected``  ``approval_decided``
``gate.escalated``                     ``escalated`` (the secondary group's members)
``gate.timeout``                       ``gate_timed_out``
``run.ended``                          ``incident_closed``
=====================================  =========================================

The notifier's delivery records (``notification.failed``,
``notification.delivered_late``) are appended to the trail of the incident they
concern (``Trail.append`` holds a file lock, so the background delivery thread
and the flow can both write); the observer ignores them.

Who delivers what is left when the flow process exits (Slack's case; a plugin
keeps its state in ``<evidence dir>/_<name>/``): every message is in the
durable outbox ``<evidence dir>/_slack/slack-outbox.sqlite3`` (one per evidence
dir, shared by all incidents). :meth:`TrailObserver.close` tries for a few
seconds and then leaves the rest there. It is delivered by (1) the next run of
the same incident (resume), which owns that thread again; (2) the next run of
any incident against the same evidence dir, whose notifier adopts the pending
messages of every incident whose run has ended; (3) :func:`drain_outbox`, which
``mcp-ir serve`` (or cron) calls to deliver them without a new run. Incidents
whose run is still going (or died without ``run.ended``) are left to their own
process or their resume, so two processes never race for one thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import McpIrError
from core.trail import TRAIL_FILE, Record, Trail
from notifications import plugins
from notifications.base import Notifier
from runbook.gates import gate_state

if TYPE_CHECKING:
    from notifications.plugins import NotifierContext
    from runbook.settings import Settings

FLUSH_TIMEOUT_S = 3.0
PLAN_FIELDS = ("summary", "target", "resources", "api_calls")
STEP_OUTCOMES = {
    "step.succeeded": "succeeded",
    "step.failed": "failed",
    "step.skipped": "skipped",
}


def trigger_text(trigger: dict[str, Any]) -> str:
    """A one-line description of what started the incident (no payload bodies)."""
    kind = str(trigger.get("kind") or trigger.get("source") or "unknown")
    parts = [kind]
    for key in ("source", "rule", "alert_id", "by"):
        value = trigger.get(key)
        if value and str(value) != kind:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def plan_summary(plan: dict[str, Any]) -> dict[str, Any]:
    """What an approver sees of a ``step.planned`` record (its hash is shown apart)."""
    return {k: plan[k] for k in PLAN_FIELDS if plan.get(k)}


class TrailRecorder:
    """The notifier's ``record`` callback: appends ``(kind, data)`` to the trail of
    ``data["incident_id"]`` (the run's own trail when it is that incident's), with
    that incident's redactor. Called from the delivery thread; never raises."""

    def __init__(
        self,
        evidence_dir: Path,
        trail_for: Callable[[str], Trail | None],
        own: Trail | None = None,
    ) -> None:
        self._evidence_dir = Path(evidence_dir)
        self._trail_for = trail_for
        self._own = own
        self._trails: dict[str, Trail | None] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        incident_id = str(data.get("incident_id") or (self._own.incident_id if self._own else ""))
        trail = self._trail(incident_id)
        if trail is not None:
            trail.append(kind, None, data)

    def _trail(self, incident_id: str) -> Trail | None:
        if self._own is not None and incident_id == self._own.incident_id:
            return self._own
        with self._lock:
            if incident_id not in self._trails:
                trail = None
                if (self._evidence_dir / incident_id / TRAIL_FILE).exists():
                    with contextlib.suppress(Exception):
                        trail = self._trail_for(incident_id)
                self._trails[incident_id] = trail
            return self._trails[incident_id]


class TrailObserver:
    """Turns one incident's trail records into notifier calls (see module doc)."""

    def __init__(
        self,
        notifier: Notifier,
        trail: Trail,
        incident: Callable[[], Any],
        flush_timeout_s: float = FLUSH_TIMEOUT_S,
    ) -> None:
        self.notifier = notifier
        self._trail = trail
        self._incident = incident
        self._flush_timeout_s = flush_timeout_s
        self._plans: dict[str, dict[str, Any]] = {}
        self._requested: set[tuple[str, str]] = set()

    # -- Observer ------------------------------------------------------------

    def on_record(self, record: Record) -> None:
        """One trail record → at most one notifier call. Never raises."""
        # A notification never fails the run (the notifier records its own errors).
        with contextlib.suppress(Exception):
            self._dispatch(record)

    def close(self) -> None:
        """Delivers what it can within a few seconds; the rest stays in the outbox."""
        try:
            self.notifier.flush(self._flush_timeout_s)
        finally:
            self.notifier.close()

    # -- mapping -------------------------------------------------------------

    def _dispatch(self, rec: Record) -> None:
        kind, step, d = rec.kind, rec.step or "", rec.data
        inc_id = self._trail.incident_id
        if kind in ("incident.opened", "run.resumed"):
            self._opened(rec)
        elif kind == "step.planned":
            self._plans[step] = plan_summary(d)
        elif kind == "step.started":
            self.notifier.step_started(inc_id, step)
        elif kind in STEP_OUTCOMES:
            detail = str(d.get("error") or d.get("reason") or "")
            self.notifier.step_finished(
                inc_id, step, STEP_OUTCOMES[kind], float(d.get("duration_s") or 0.0), detail
            )
        elif kind in ("gate.opened", "gate.waiting"):
            self._approval_requested(
                step, str(d.get("plan_hash") or ""), force=kind == "gate.opened"
            )
        elif kind == "approval.accepted":
            remaining = gate_state(self._trail.records(), step).remaining
            self.notifier.approval_decided(inc_id, step, str(d["approver"]), "approve", remaining)
        elif kind == "gate.rejected":
            self.notifier.approval_decided(inc_id, step, str(d["approver"]), "reject", 0)
        elif kind == "gate.escalated":
            state = gate_state(self._trail.records(), step)
            self.notifier.escalated(
                inc_id,
                step,
                str(d.get("to") or ""),
                list(d.get("members") or []),
                timeout_s=state.timeout_s or None,
            )
        elif kind == "gate.timeout":
            if d.get("input"):
                self.notifier.step_finished(
                    inc_id, step, "timed_out", 0.0, "nobody recorded the manual input in time"
                )
            else:
                self.notifier.gate_timed_out(inc_id, step)
        elif kind == "run.ended":
            status = str(d.get("status") or "unknown")
            self.notifier.incident_closed(inc_id, status, str(d.get("detail") or ""))

    def _opened(self, rec: Record) -> None:
        if rec.kind == "incident.opened":
            d = rec.data
            incident_id, target = str(d["incident_id"]), str(d["target"])
            severity, initiator = str(d.get("severity", "")), str(d.get("initiator", ""))
            trigger, playbook = dict(d.get("trigger") or {}), str(d.get("playbook", ""))
        else:
            inc = self._incident()
            incident_id, target, severity = inc.id, inc.target, inc.severity
            initiator, trigger, playbook = inc.initiator, dict(inc.trigger), inc.playbook
        self.notifier.incident_opened(
            incident_id, target, severity, trigger_text(trigger), initiator, playbook
        )

    def _approval_requested(self, step: str, plan_hash: str, *, force: bool) -> None:
        # gate.waiting follows every pause round; the request is (re)posted when the
        # gate opens and when this process first waits on a plan (a resumed run).
        if not force and (step, plan_hash) in self._requested:
            return
        self._requested.add((step, plan_hash))
        state = gate_state(self._trail.records(), step)
        plan = self._plans.get(step)
        if plan is None:
            plan = next(
                (
                    plan_summary(r.data)
                    for r in reversed(self._trail.records())
                    if r.step == step
                    and r.kind == "step.planned"
                    and r.data.get("hash") == plan_hash
                ),
                {},
            )
        self.notifier.approval_requested(
            self._trail.incident_id,
            step,
            plan_hash,
            plan,
            state.group or "",
            state.required,
            list(state.approvals),
            state.timeout_s,
        )


def ended_incidents(evidence_dir: Path, pending: set[str]) -> set[str]:
    """Those of ``pending`` whose latest run has ended (``run.ended`` after the last
    ``run.started`` / ``run.resumed``): nobody else is delivering their thread."""
    done: set[str] = set()
    for incident_id in pending:
        path = Path(evidence_dir) / incident_id / TRAIL_FILE
        if not path.exists():
            continue
        with contextlib.suppress(Exception):
            last = None
            for rec in Trail(path.parent).records():
                if rec.kind in ("run.started", "run.resumed", "run.ended"):
                    last = rec.kind
            if last == "run.ended":
                done.add(incident_id)
    return done


def adopt_ended(notifier: Notifier, evidence_dir: Path) -> set[str]:
    """Hands the notifier the undelivered messages of incidents whose run ended."""
    outbox = getattr(notifier, "outbox", None)
    if outbox is None:
        return set()
    pending = {m.incident_id for m in outbox.pending()}
    ended = ended_incidents(evidence_dir, pending)
    if ended:
        notifier.adopt(ended)  # type: ignore[attr-defined]
    return ended


class UnavailableObserver:
    """A notifier is configured but cannot be used (no token, no channel): the run goes
    on without it — containment never waits for a notification — and its trail
    says why, once, right after the run starts."""

    def __init__(self, trail: Trail, reason: str) -> None:
        self._trail = trail
        self._reason = reason
        self._told = False

    def on_record(self, record: Record) -> None:
        if record.kind in ("run.started", "run.resumed") and not self._told:
            self._told = True
            self._trail.append("notification.unavailable", None, {"error": self._reason})

    def close(self) -> None:
        """Nothing to flush."""


def observe(plugin: Any, config: Any, ctx: NotifierContext) -> TrailObserver | UnavailableObserver:
    """The trail observer of a plugin that speaks the :class:`Notifier` interface
    (``plugin.notifier(...)``, Slack's): an :class:`UnavailableObserver` when the
    channel is configured but cannot be used (no token, no channel)."""
    try:
        recorder = TrailRecorder(
            ctx.evidence_dir,
            lambda incident_id: _open_trail(ctx.settings, incident_id),
            own=ctx.trail,
        )
        notifier = plugin.notifier(
            config,
            inventory=ctx.inventory,
            target_name=ctx.target,
            record=recorder,
            state_dir=plugins.state_dir(ctx.evidence_dir, plugin.name),
            redactor=ctx.trail.redactor,
        )
    except McpIrError as exc:
        return UnavailableObserver(ctx.trail, exc.detail)
    except Exception as exc:  # noqa: BLE001 (e.g. the Prefect API is down while loading the Secret block)
        return UnavailableObserver(ctx.trail, f"cannot set up {plugin.name}: {type(exc).__name__}")
    with contextlib.suppress(Exception):
        adopt_ended(notifier, ctx.evidence_dir)
    return TrailObserver(notifier, ctx.trail, lambda: _incident(ctx.trail))


def _incident(trail: Trail) -> Any:
    from flows.incident import incident_from_trail

    return incident_from_trail(trail.records())


def _open_trail(settings: Any, incident_id: str) -> Trail | None:
    from runbook.approvals import open_trail

    return open_trail(settings, incident_id)


def drain_outbox(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Delivers what every configured notifier left undelivered for incidents whose
    run has ended (for ``mcp-ir serve`` or a cron job); late deliveries are recorded
    in their incidents' trails (:func:`notifications.plugins.drain_all`).

    Returns:
        ``{"incidents": n, "left": m}`` summed over the plugins.

    Raises:
        CredentialsError: a plugin's credentials are missing.
    """
    return plugins.drain_all(settings, timeout_s)


def recorder_for(settings: Settings) -> TrailRecorder:
    """A ``record`` callback for deliveries outside a run (the drain)."""
    return TrailRecorder(
        settings.evidence_dir, lambda incident_id: _open_trail(settings, incident_id)
    )
