"""Flow: retire a tunnel stack (playbook ``teardown``): stop it, archive the tunnel,
destroy its stored credentials, verify nothing is left."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.runner import execute


@flow(name="teardown", flow_run_name="{incident_id}", log_prints=False, persist_result=False)
def teardown(
    target: str,
    incident_id: str,
    initiator: str,
    remove_config: bool = False,
    trigger: dict[str, Any] | None = None,
    severity: str = "info",
    window_start: str | None = None,
    window_end: str | None = None,
    policy: str = "standard",
    config_path: str | None = None,
    evidence_dir: str | None = None,
) -> dict[str, Any]:
    """Tears ``target`` down under ``incident_id`` (its own trail); running it again
    with the same incident id resumes, and a new teardown of a retired target finds
    every step already done. ``remove_config`` also deletes ``config/`` and the
    compose file; it is kept in the incident's trigger, so a resume honours it."""
    trig = {"kind": "teardown", "by": initiator, **(trigger or {})}
    if remove_config:
        trig["remove_config"] = True
    return execute(
        playbook="teardown",
        target=target,
        incident_id=incident_id,
        initiator=initiator,
        trigger=trig,
        severity=severity,
        window_start=window_start,
        window_end=window_end,
        policy=policy,
        config_path=config_path,
        evidence_dir=evidence_dir,
    )
