"""Flow: the hardening audit (playbook ``posture-audit``) of some or all targets,
scheduled daily in ``prefect.yaml``. Each target is audited in a Prefect task; the
results are stored in the evidence store and diffed against the previous run, and
drift goes to Slack and ``/metrics``. The result JSON is also a Prefect artifact."""

from __future__ import annotations

import contextlib
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from runbook.settings import Settings


@task(name="audit-target", cache_policy=NO_CACHE, persist_result=False)
def audit_one(inventory: Any, name: str, evidence_dir: str) -> Any:
    from audit.engine import audit_target

    return audit_target(inventory, name, evidence_dir)  # type: ignore[arg-type]


@flow(name="posture-audit", log_prints=False, persist_result=False)
def posture_audit(
    targets: list[str] | None = None,
    initiator: str = "scheduler",
    notify: bool = True,
    config_path: str | None = None,
    evidence_dir: str | None = None,
) -> dict[str, Any]:
    """Audits ``targets`` (every target of the inventory when omitted); returns the
    JSON report. Read-only on every target: running it twice changes nothing there."""
    from pathlib import Path

    from audit.report import as_json, render
    from audit.service import run_audit

    settings = Settings.from_env(config_path, evidence_dir)
    inventory = settings.inventory()
    names = list(targets or sorted(inventory.targets))
    outcome = run_audit(
        inventory,
        names,
        Path(settings.evidence_dir),
        initiator=initiator,
        trigger={"kind": "schedule" if initiator == "scheduler" else "flow", "by": initiator},
        notify=notify,
        audit_one=lambda name: audit_one(inventory, name, str(settings.evidence_dir)),
    )
    # the report is in the evidence store already: a Prefect artifact failure is not fatal
    with contextlib.suppress(Exception):
        create_markdown_artifact(
            markdown=render(outcome, "md"),
            key=f"posture-audit-{outcome.audit_id.lower()}",
            description=f"Hardening audit {outcome.audit_id}",
        )
    return as_json(outcome)
