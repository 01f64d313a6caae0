"""Starting and resuming incident runs through the Prefect deployments (on workers).

The intake host (and any CLI that must not hold worker credentials) never runs a
flow itself: it asks the Prefect API for a flow run of the playbook's deployment
(``prefect.yaml``: ``<flow name>/<deployment name>``, both the playbook's name), and
a worker of the deployment's work pool executes it. Resuming is the same call with
the same ``incident_id``: the flow replays the incident's trail and continues where
the earlier run stopped.

Idempotency: every call carries an idempotency key; the Prefect server returns the
flow run already created with that key instead of making a second one. Use
:func:`idempotency_key` (incident id + attempt number): a launcher that crashed
between creating the run and recording it calls again with the same key and gets the
same run; a retry after that run died uses the next attempt number and gets a new run
of the same incident.

API (used by ``intake.launchers.DeploymentLauncher`` and ``mcp-ir breach|teardown|drill
--on-worker``, ``runbook.on_worker``)::

    ref = start_run("breach-response", parameters={...}, idempotency_key=key)
    ref.flow_run_id, ref.deployment
    state = run_state(ref.flow_run_id)     # RunState(type="RUNNING", name=..., message=...)
    ref = resume_incident(evidence_dir, incident_id)   # everything else from the trail

Also the one place that says how to resume an incident (:func:`resume_command`): in
production mode (``MCP_IR_MODE=production``, or when the incident's last run came
through a deployment) every hint points to ``--on-worker``.

Blocking (sync Prefect client): call it from a thread, not an event loop.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from core.errors import ConfigError, TransientError
from core.trail import TRAIL_FILE, Record, Trail, check_incident_id

# playbook -> "<flow name>/<deployment name>" as prefect.yaml declares them
DEPLOYMENTS = {
    "breach-response": "breach-response/breach-response",
    "teardown": "teardown/teardown",
    "rotation-drill": "rotation-drill/rotation-drill",
}
# playbook -> the CLI command that runs (and resumes) it
COMMANDS = {"breach-response": "breach", "teardown": "teardown", "rotation-drill": "drill"}
RUN_KINDS = ("run.started", "run.resumed")
# Flow-run states after which a run will not write anything more.
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


@dataclass(frozen=True)
class RunRef:
    """A flow run created (or found) for an incident."""

    flow_run_id: str
    deployment: str
    created: bool | None  # None: not checked (start_run(check_existing=False))


@dataclass(frozen=True)
class RunState:
    """A flow run's state as the Prefect API reports it."""

    type: str
    name: str
    message: str

    @property
    def final(self) -> bool:
        """True when the run will not write anything more."""
        return self.type in FINAL_STATES


def idempotency_key(incident_id: str, attempt: int = 1) -> str:
    """``mcp-ir:<incident>:<attempt>``: one flow run per incident and attempt."""
    return f"mcp-ir:{incident_id}:{attempt}"


def deployment_name(playbook: str, deployment: str | None = None) -> str:
    """The deployment to run for ``playbook`` (``deployment`` overrides).

    Raises:
        ConfigError: the playbook has no deployment.
    """
    if deployment:
        return deployment
    if playbook not in DEPLOYMENTS:
        raise ConfigError(
            f"playbook {playbook!r} has no Prefect deployment "
            f"(deployed: {', '.join(sorted(DEPLOYMENTS))})"
        )
    return DEPLOYMENTS[playbook]


def start_run(
    playbook: str,
    *,
    parameters: dict[str, Any],
    idempotency_key: str,
    deployment: str | None = None,
    tags: tuple[str, ...] = ("mcp-ir",),
    check_existing: bool = True,
    client: Any = None,
) -> RunRef:
    """Creates (or finds, by ``idempotency_key``) a flow run of the playbook's
    deployment with ``parameters``; a worker picks it up.

    ``check_existing=False`` skips the look-up that only tells whether the run
    already existed (``RunRef.created`` is then None): one API round trip less on
    the intake's path to containment. Idempotency is the same either way.
    ``client``: an open sync Prefect client to use (default: a new one per call) —
    the intake's launch thread keeps one, so a launch builds no client.

    Raises:
        ConfigError: no such deployment on the Prefect server (run ``prefect deploy``).
        TransientError: the Prefect API is unreachable or answered 5xx (retry).
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    name = deployment_name(playbook, deployment)
    try:
        with contextlib.nullcontext(client) if client else get_client(sync_client=True) as client:
            cache_key = (str(client.api_url), name)
            if cache_key not in _DEPLOYMENT_IDS:
                try:
                    _DEPLOYMENT_IDS[cache_key] = client.read_deployment_by_name(name).id
                except ObjectNotFound:
                    raise ConfigError(
                        f"deployment {name!r} not found on the Prefect server "
                        "(deploy prefect.yaml: `prefect deploy --all`)"
                    ) from None
            existing = (
                client.read_flow_runs(flow_run_filter=_key_filter(idempotency_key), limit=1)
                if check_existing
                else None
            )
            try:
                run = _create(client, _DEPLOYMENT_IDS[cache_key], parameters, idempotency_key, tags)
            except ObjectNotFound:  # deleted and deployed again since it was cached
                _DEPLOYMENT_IDS[cache_key] = client.read_deployment_by_name(name).id
                run = _create(client, _DEPLOYMENT_IDS[cache_key], parameters, idempotency_key, tags)
    except PrefectHTTPStatusError as exc:
        status = exc.response.status_code
        if status >= 500 or status == 429:
            raise TransientError(f"Prefect API answered {status} creating a flow run") from None
        raise ConfigError(f"Prefect API refused the flow run: {status}") from None
    except OSError as exc:
        raise TransientError(f"Prefect API unreachable: {type(exc).__name__}") from None
    return RunRef(str(run.id), name, created=None if not check_existing else not existing)


def run_state(flow_run_id: str) -> RunState:
    """The flow run's current state.

    Raises:
        TransientError: the Prefect API is unreachable.
    """
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
    except OSError as exc:
        raise TransientError(f"Prefect API unreachable: {type(exc).__name__}") from None
    state = run.state
    if state is None:
        return RunState("PENDING", "Pending", "")
    return RunState(state.type.value, state.name or state.type.value, state.message or "")


# (API URL, deployment name) -> deployment id: one lookup per process, not per run.
_DEPLOYMENT_IDS: dict[tuple[str, str], Any] = {}


def _create(
    client: Any, deployment_id: Any, parameters: dict[str, Any], key: str, tags: tuple[str, ...]
) -> Any:
    return client.create_flow_run_from_deployment(
        deployment_id, parameters=parameters, idempotency_key=key, tags=list(tags)
    )


def _key_filter(key: str) -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    return FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[key]))


def resume_incident(evidence_dir: Path, incident_id: str) -> RunRef:
    """Creates a flow run that resumes ``incident_id`` on its playbook's deployment:
    target, playbook, initiator and trigger come from the trail. The attempt number is
    one more than the runs the trail records, so asking twice to resume the same dead
    run gives one new flow run.

    Raises:
        ConfigError: no trail for the incident, or its playbook has no deployment.
        TransientError: the Prefect API is unreachable.
    """
    records = trail_records(evidence_dir, incident_id)
    opened = incident_of(records)
    if opened is None:
        raise ConfigError(f"incident {incident_id}: its trail has no incident.opened record")
    trigger = dict(opened.get("trigger") or {})
    parameters: dict[str, Any] = {
        "target": opened["target"],
        "incident_id": incident_id,
        "initiator": opened["initiator"],
        "trigger": trigger,
        "severity": opened.get("severity", "high"),
        "window_start": opened.get("window_start"),
        "window_end": opened.get("window_end"),
        "policy": opened.get("policy", "standard"),
    }
    # Playbook switches (rotate_ca, remove_config) ride in the trigger itself.
    attempt = sum(1 for r in records if r.kind in RUN_KINDS) + 1
    return start_run(
        opened["playbook"],
        parameters=parameters,
        idempotency_key=idempotency_key(incident_id, attempt),
        tags=("mcp-ir", f"incident:{incident_id}"),
    )


def trail_records(evidence_dir: Path, incident_id: str) -> list[Record]:
    """The incident's trail records (read-only).

    Raises:
        ConfigError: bad id, or no trail for it under ``evidence_dir``.
    """
    check_incident_id(incident_id)
    if not (Path(evidence_dir) / incident_id / TRAIL_FILE).exists():
        raise ConfigError(
            f"--incident {incident_id}: no trail under {evidence_dir} (to start a new "
            "incident, give --target)"
        )
    return Trail(Path(evidence_dir) / incident_id).records()


def incident_of(records: list[Record]) -> dict[str, Any] | None:
    """The ``incident.opened`` data of a trail (target, playbook, initiator, …)."""
    return next((dict(r.data) for r in records if r.kind == "incident.opened"), None)


def production_mode() -> bool:
    """``MCP_IR_MODE=production``: runs belong on workers, never on the CLI host."""
    return os.environ.get("MCP_IR_MODE", "").strip().lower() == "production"


def resume_command(incident_id: str, records: list[Record] | None = None) -> str:
    """The command that resumes ``incident_id``: ``mcp-ir <playbook command> --incident
    ID``, with ``--on-worker`` in production mode or when its last run came through a
    deployment (a worker holds the credentials, not the person's machine)."""
    records = records or []
    opened = incident_of(records) or {}
    playbook = opened.get("playbook", "breach-response")
    command = COMMANDS.get(playbook, f"run {playbook}")
    last = next((r for r in reversed(records) if r.kind in RUN_KINDS), None)
    on_worker = production_mode() or bool(last and last.data.get("deployment_id"))
    return f"mcp-ir {command} --incident {incident_id}" + (" --on-worker" if on_worker else "")
