"""The two ways ``mcp-ir serve`` starts a run, each able to tell whether a launched
run died before its first trail record (:class:`intake.worker.ProbingLauncher`).

- :class:`ProcessLauncher` (``--launch process``, single host): a detached ``mcp-ir
  run`` per incident on this host (``runbook.launch.launch_incident``, optionally
  through the warm pool). Dead = the process named by the incident's launch marker
  is gone and there is no trail; the error is the tail of ``run.log``.
- :class:`DeploymentLauncher` (``--launch deployment``, production): a flow run of
  the playbook's Prefect deployment (``runbook.deployment_runs``), executed by a
  worker; this host needs no target credential. Dead = the flow run reached a final
  state (crashed, failed, cancelled) without the trail's first record.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from core.errors import TransientError
from core.trail import TRAIL_FILE
from intake.store import IncidentRecord
from runbook.deployment_runs import idempotency_key, run_state, start_run
from runbook.launch import MARKER_FILE, Spawner, launch_incident, marker_holder, process_start

LOG_TAIL_BYTES = 600


def log_tail(path: Path) -> str:
    """The last lines of a run log (what a dead run said last)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return " | ".join(lines[-3:])


class ProcessLauncher:
    """``launch_incident`` with a spawner, plus :meth:`probe`."""

    def __init__(self, spawner: Spawner | None = None) -> None:
        self.spawner = spawner

    def __call__(self, settings: Any, *, attempt: int = 1, **kwargs: Any) -> str:
        # ``attempt`` is not needed here: a dead run's stale marker is taken over.
        return launch_incident(settings, spawner=self.spawner, **kwargs)

    def run_ref(self, incident_id: str) -> str | None:
        """Processes are found through the incident's launch marker, not a ref."""
        return None

    def probe(self, settings: Any, record: IncidentRecord) -> str | None:
        """Why the run will never write its first record, or None while it may."""
        incident_dir = Path(settings.evidence_dir) / record.incident_id
        if (incident_dir / TRAIL_FILE).exists():
            return None
        holder = marker_holder(incident_dir / MARKER_FILE)
        if holder is None or holder.get("phase") != "spawned":
            return None
        if process_start(int(holder["pid"])) == holder.get("start"):
            return None  # still running
        if (incident_dir / TRAIL_FILE).exists():
            return None  # wrote its first record just before exiting
        said = log_tail(incident_dir / "run.log")
        return "run process exited before its first trail record" + (f": {said}" if said else "")


class DeploymentLauncher:
    """Starts runs as flow runs of the Prefect deployments (workers execute them).

    Args:
        deployment: override ``<flow>/<deployment>`` (default per playbook).
        pass_paths: also pass this host's ``config_path``/``evidence_dir`` as flow
            parameters (single-machine set-ups and tests); by default the worker's
            own ``MCP_IR_CONFIG``/``MCP_IR_EVIDENCE_DIR`` apply.
    """

    def __init__(self, deployment: str | None = None, *, pass_paths: bool = False) -> None:
        self.deployment = deployment
        self.pass_paths = pass_paths
        self._refs: dict[str, str] = {}
        self._lock = threading.Lock()
        self._client: Any = None  # opened by the launch thread at its first launch

    def _prefect(self) -> Any:
        """The sync Prefect client the launch thread keeps open (building one per
        launch costs an HTTP client and its TLS context on the path to containment)."""
        if self._client is None:
            from prefect.client.orchestration import get_client

            client = get_client(sync_client=True)
            client.__enter__()
            self._client = client
        return self._client

    def close(self) -> None:
        """Closes the kept client, if any."""
        client, self._client = self._client, None
        if client is not None:
            client.__exit__(None, None, None)

    def __call__(
        self,
        settings: Any,
        *,
        target: str,
        playbook: str,
        incident_id: str,
        initiator: str,
        trigger: dict[str, Any],
        severity: str,
        window_start: datetime | None,
        window_end: datetime | None,
        attempt: int = 1,
    ) -> str:
        parameters: dict[str, Any] = {
            "target": target,
            "incident_id": incident_id,
            "initiator": initiator,
            "trigger": trigger,
            "severity": severity,
            "window_start": window_start.isoformat() if window_start else None,
            "window_end": window_end.isoformat() if window_end else None,
        }
        if self.pass_paths:
            parameters["config_path"] = str(settings.config_path) if settings.config_path else None
            parameters["evidence_dir"] = str(settings.evidence_dir)
        try:
            ref = start_run(
                playbook,
                parameters=parameters,
                idempotency_key=idempotency_key(incident_id, attempt),
                deployment=self.deployment,
                check_existing=False,  # the key is per attempt: nothing to learn, one call less
                client=self._prefect(),
            )
        except TransientError:
            self.close()  # the next launch starts with a fresh client
            raise
        with self._lock:
            self._refs[incident_id] = ref.flow_run_id
        return incident_id

    def run_ref(self, incident_id: str) -> str | None:
        """The flow run id of the last launch of ``incident_id``."""
        with self._lock:
            return self._refs.pop(incident_id, None)

    def probe(self, settings: Any, record: IncidentRecord) -> str | None:
        """Why the flow run will never write its first record, or None while it may."""
        if record.run_ref is None:
            return None
        state = run_state(record.run_ref)
        if not state.final:
            return None
        incident_dir = Path(settings.evidence_dir) / record.incident_id
        if (incident_dir / TRAIL_FILE).exists():
            return None
        return f"flow run {record.run_ref} ended {state.name} before its first trail record" + (
            f": {state.message[:300]}" if state.message else ""
        )
