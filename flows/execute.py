"""The body of every playbook flow: open or resume the incident, take the target's
lock, run the playbook's steps (:class:`flows.runner.Runner`), end the run with its
report, whatever happened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.errors import GateRejected, GateTimedOut, McpIrError, RunSuperseded
from flows.incident import RunEnded, parse_time, publish_report
from flows.playbook import PlaybookRun
from flows.progress import emit
from flows.runner import Runner
from runbook import observers
from runbook.context import Incident
from runbook.playbook import load_playbook
from runbook.settings import Settings
from runbook.target_lock import TargetLock


def execute(params: PlaybookRun, *, drill: bool = False) -> dict[str, Any]:
    """The body of every playbook flow (``flows.playbook.run`` resolves ``params``:
    incident id, trigger and severity are set)."""
    assert params.incident_id and params.severity
    settings = Settings.from_env(params.config_path, params.evidence_dir)
    end = parse_time(params.window_end) or datetime.now(UTC)
    start = parse_time(params.window_start) or end - timedelta(hours=24)
    incident = Incident(
        id=params.incident_id,
        target=params.target,
        playbook=params.playbook,
        initiator=params.initiator,
        trigger=params.trigger or {"kind": "manual", "by": params.initiator},
        severity=params.severity,
        window_start=start,
        window_end=end,
        drill=drill,
        policy=params.policy,
    )
    runner = Runner(settings, incident)
    resumed = runner.open_or_resume()
    inc = runner.incident
    emit(f"incident {inc.id}: {inc.playbook} on {inc.target}" + (" (resumed)" if resumed else ""))
    status, detail = "failed", ""
    superseded: RunSuperseded | None = None
    lock = TargetLock(inc.target)
    try:
        pb = load_playbook(
            inc.playbook,
            inventory=runner.inventory,
            target=inc.target,
            context={
                "trigger": {"severity": inc.severity, "auto_contain": False, **inc.trigger},
                "severity": inc.severity,
                "policy": inc.policy,
                "drill": inc.drill,
            },
        )
        # The Tunnels SDK takes seconds to import (10 s on a loaded 2-core machine): pay
        # for it here, not inside the first step's timeout and capture deadline.
        import tasks.tunnels  # noqa: F401

        lease = lock.acquire()
        runner.trail.append("lock.acquired", None, {"lease_id": str(lease), "limit": lock.name})
        try:
            status = runner.run(pb)
        finally:
            lock.release()
            runner.trail.append("lock.released", None, {"lease_id": str(lease)})
    except RunSuperseded as exc:
        superseded = exc  # a resumed run owns the incident: end without a word in its trail
    except GateRejected as exc:
        status, detail = "rejected", exc.detail
    except GateTimedOut as exc:
        status, detail = "timed_out", exc.detail
    except McpIrError as exc:
        status, detail = "failed", exc.detail
    finally:
        try:
            if superseded is None:
                runner.trail.append("run.ended", None, {"status": status, "detail": detail})
                report_path = publish_report(runner.trail)
        finally:
            runner.trail.release()
            observers.close_all(runner.observers)
            runner.clients.close()
    if superseded is not None:
        emit(f"incident {inc.id}: {superseded.detail}")
        raise superseded
    emit(f"incident {inc.id}: {status}" + (f" — {runner.redactor.text(detail)}" if detail else ""))
    result = {
        "incident_id": inc.id,
        "status": status,
        "detail": runner.redactor.text(detail),
        "evidence_dir": str(runner.trail.dir),
        "report_path": str(report_path) if report_path else None,
    }
    if status != "succeeded":
        raise RunEnded(result)
    return result
