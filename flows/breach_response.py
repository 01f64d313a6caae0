"""Flow: contain a possibly compromised MCP tunnel stack (playbook ``breach-response``)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.runner import execute


@flow(name="breach-response", flow_run_name="{incident_id}", log_prints=False, persist_result=False)
def breach_response(
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
    """Runs the breach procedure against ``target`` under ``incident_id``; running it
    again with the same incident id resumes where the earlier run stopped."""
    return execute(playbook="breach-response", **locals())
