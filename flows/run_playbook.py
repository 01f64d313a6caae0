"""Flow: run any playbook by name (custom playbooks in ``MCP_IR_PLAYBOOK_DIR``)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.runner import execute


@flow(name="run-playbook", flow_run_name="{incident_id}", log_prints=False, persist_result=False)
def run_playbook(
    playbook: str,
    target: str,
    incident_id: str,
    initiator: str,
    trigger: dict[str, Any] | None = None,
    severity: str = "high",
    window_start: str | None = None,
    window_end: str | None = None,
    policy: str = "standard",
    config_path: str | None = None,
    evidence_dir: str | None = None,
) -> dict[str, Any]:
    """The generic runner every named flow shares, exposed for playbooks without a
    flow of their own."""
    return execute(**locals())
