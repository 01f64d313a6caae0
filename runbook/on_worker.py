"""``--on-worker`` for ``mcp-ir breach|teardown|drill|run``, and resuming by incident id
alone.

With ``--on-worker`` the CLI does not run the flow: it asks the Prefect server for a
flow run of the playbook's deployment (``runbook.deployment_runs``), which a worker
of the pool executes with the worker's own inventory, credentials and evidence
directory. The CLI host needs only ``PREFECT_API_URL`` (and, to resume, read access
to the evidence directory, where the incident's target is read from).
"""

from __future__ import annotations

import argparse
from typing import Any

from core.errors import ConfigError
from core.trail import TRAIL_FILE, Trail, check_incident_id
from runbook.deployment_runs import (
    RunRef,
    idempotency_key,
    incident_of,
    resume_incident,
    run_state,
    start_run,
)
from runbook.settings import Settings

ON_WORKER_HELP = (
    "run it on a worker through the playbook's Prefect deployment instead of in this "
    "process (this host needs no target credential); with an existing --incident, resume it"
)


def add_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-worker", action="store_true", help=ON_WORKER_HELP)


def target_of(settings: Settings, incident_id: str | None, target: str | None) -> str:
    """The target to run: ``target`` when given, else the one the incident's trail
    names (a resume needs only the incident id).

    Raises:
        ConfigError: neither a target nor an existing incident, or they disagree.
    """
    opened = _opened(settings, incident_id) if incident_id else None
    if target is None:
        if opened is None:
            raise ConfigError(
                "--target is required to start a new incident (to resume one, give "
                "--incident with an id that has a trail under the evidence directory)"
            )
        return str(opened["target"])
    if opened is not None and opened.get("target") != target:
        raise ConfigError(
            f"--target {target}: incident {incident_id} is on target {opened.get('target')!r}"
        )
    return target


def _opened(settings: Settings, incident_id: str) -> dict[str, Any] | None:
    check_incident_id(incident_id)
    directory = settings.incident_dir(incident_id)
    if not (directory / TRAIL_FILE).exists():
        return None
    return incident_of(Trail(directory).records())


def launch(
    settings: Settings,
    playbook: str,
    *,
    incident_id: str | None,
    target: str | None,
    parameters: dict[str, Any],
) -> int:
    """Starts (new incident) or resumes (incident with a trail) a run on a worker and
    prints what was asked for and how to follow it. Returns the exit code (0).

    Raises:
        ConfigError: no target for a new incident, no deployment for the playbook.
        TransientError: the Prefect API could not be reached.
    """
    from runbook.launch import new_incident_id

    if incident_id and _opened(settings, incident_id) is not None:
        run: RunRef = resume_incident(settings.evidence_dir, incident_id)
        verb = "resume"
    else:
        if target is None:
            target_of(settings, incident_id, target)  # raises the explanation
        incident_id = incident_id or new_incident_id()
        run = start_run(
            playbook,
            parameters={**parameters, "target": target, "incident_id": incident_id},
            idempotency_key=idempotency_key(incident_id),
            tags=("mcp-ir", f"incident:{incident_id}"),
        )
        verb = "start"
    state = run_state(run.flow_run_id)
    print(f"incident: {incident_id}")
    print(
        f"{verb}:    flow run {run.flow_run_id} of {run.deployment} ({state.type}"
        + ("" if run.created else ", already asked for")
        + ")"
    )
    print(f"follow:   mcp-ir status {incident_id}")
    return 0
