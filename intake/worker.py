"""The launch worker: starts breach-response once for every new incident, and tells
the truth about what became of each launch.

A thread claims incidents from the store (``new``, or ``failed`` whose retry is due,
-> ``launching``, atomically), calls the launcher with the incident id as its
idempotency key, and records ``launched`` or ``failed``. On start it first returns
incidents a crash left in ``launching`` to ``new``: relaunching them is safe because
the launcher is idempotent on the incident id.

``launched`` only means "started": the same thread then watches every launched
incident until its trail has a first record (``started_at``). A run that dies before
that — its process gone (``ProcessLauncher``), its flow run crashed (deployments), or
no first record within ``confirm_timeout_s`` — is recorded ``failed`` with its error
and retried with exponential backoff (``backoff_s`` doubling up to
``backoff_max_s``), at most ``max_attempts`` times; then it stays ``failed`` for good
(``gave_up``). The same loop appends the trail records decided at intake
(``alert.joined``, ``alert.resolved``) once the incident's trail exists, and marks an
incident ended when its trail says the run ended (so later alerts open a new one).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from prometheus_client.core import GaugeMetricFamily, Metric

from core.errors import ConfigError, McpIrError
from core.redact import Redactor
from core.trail import TRAIL_FILE, Trail
from intake.store import AlertStore, IncidentRecord

log = logging.getLogger("mcp_ir.intake.worker")

PLAYBOOK = "breach-response"


class Launcher(Protocol):
    """The signature of ``runbook.launch.launch_incident``."""

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
    ) -> str: ...


@runtime_checkable
class ProbingLauncher(Protocol):
    """A launcher that can also say whether a launched run died before its first
    record (``runbook.launchers``)."""

    def probe(self, settings: Any, record: IncidentRecord) -> str | None:
        """None while the run may still start; else why it will not."""
        ...

    def run_ref(self, incident_id: str) -> str | None:
        """What identifies the launched run (a flow run id), if anything."""
        ...


def default_launcher() -> Launcher:
    """``runbook.launch.launch_incident``, imported when the server starts.

    Raises:
        ConfigError: the launch module is not installed.
    """
    try:
        from runbook.launch import launch_incident
    except ImportError as exc:
        raise ConfigError(
            f"intake: runbook.launch.launch_incident is not available ({exc})"
        ) from None
    return launch_incident


class LaunchWorker:
    """Background thread turning stored incidents into runs, and watching them start.

    Args:
        store: the alert store.
        settings: passed through to the launcher.
        launcher: callable with ``launch_incident``'s signature (optionally a
            :class:`ProbingLauncher`).
        poll_s: longest sleep between looks at the store (a new alert wakes it at once).
        max_attempts: launches tried before ``failed`` for good.
        backoff_s: first retry delay, doubled each attempt.
        backoff_max_s: longest retry delay.
        confirm_timeout_s: a launched run without a first record after this long is
            treated as dead.
    """

    def __init__(
        self,
        store: AlertStore,
        settings: Any,
        launcher: Launcher,
        *,
        poll_s: float = 1.0,
        max_attempts: int = 5,
        backoff_s: float = 2.0,
        backoff_max_s: float = 300.0,
        confirm_timeout_s: float = 300.0,
    ) -> None:
        self._store = store
        self._settings = settings
        self._launcher = launcher
        self._poll_s = poll_s
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._confirm_timeout_s = confirm_timeout_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="intake-launch", daemon=True)

    def start(self) -> None:
        """Recovers interrupted launches, then starts the thread."""
        recovered = self._store.recover().result()
        if recovered:
            log.warning("relaunching %d incident(s) interrupted while launching", recovered)
        self._thread.start()

    def notify(self) -> None:
        """Wakes the thread (called after a new incident or trail event is committed)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops after the launch in progress, if any."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def delay(self, attempts: int) -> float:
        """The wait before attempt ``attempts + 1``: bounded exponential backoff."""
        return min(self._backoff_max_s, self._backoff_s * 2 ** max(0, attempts - 1))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                record = self._store.claim_next().result()
            except McpIrError as exc:
                log.error("cannot claim incidents: %s", exc.detail)
                record = None
            if record is not None:
                self._launch(record)
                continue
            try:
                self._watch()
            except McpIrError as exc:
                log.error("cannot watch launched runs: %s", exc.detail)
            self._wake.wait(self._sleep_time())
            self._wake.clear()

    def _sleep_time(self) -> float:
        try:
            due = self._store.next_due()
        except McpIrError:
            return self._poll_s
        if due is None:
            return self._poll_s
        return max(0.0, min(self._poll_s, due - time.time()))

    def _launch(self, record: IncidentRecord) -> None:
        extra: dict[str, Any] = {}
        if isinstance(self._launcher, ProbingLauncher):
            extra["attempt"] = record.attempts  # a retry after a dead run is a new run
        try:
            self._launcher(
                self._settings,
                target=record.target,
                playbook=PLAYBOOK,
                incident_id=record.incident_id,
                initiator=f"alert:{record.source}",
                trigger=record.trigger,
                severity=record.severity,
                window_start=record.window_start,
                window_end=record.window_end,
                **extra,
            )
        except McpIrError as exc:
            self._failed(record, exc.detail, retryable=exc.retryable)
        except Exception as exc:  # unknown failure: retried, then recorded as failed
            detail = Redactor().text(f"{type(exc).__name__}: {exc}")[:500]
            self._failed(record, detail, retryable=True)
        else:
            ref = (
                self._launcher.run_ref(record.incident_id)
                if isinstance(self._launcher, ProbingLauncher)
                else None
            )
            self._store.finish(record.incident_id, state="launched", run_ref=ref).result()
            log.info("incident %s launched (target %s)", record.incident_id, record.target)

    def _failed(self, record: IncidentRecord, detail: str, *, retryable: bool) -> None:
        gave_up = not retryable or record.attempts >= self._max_attempts
        delay = self.delay(record.attempts)
        self._store.finish(
            record.incident_id,
            state="failed",
            error=detail,
            retry_at=time.time() + delay,
            gave_up=gave_up,
        ).result()
        if gave_up:
            log.error("launch of %s failed for good: %s", record.incident_id, detail)
        else:
            log.warning(
                "launch of %s failed (attempt %d), retrying in %.0fs: %s",
                record.incident_id,
                record.attempts,
                delay,
                detail,
            )

    # -- watching launched runs ----------------------------------------------------

    def _trail_dir(self, incident_id: str) -> Path:
        return Path(self._settings.evidence_dir) / incident_id

    def _watch(self) -> None:
        for record in self._store.watched().result():
            trail_dir = self._trail_dir(record.incident_id)
            has_trail = (trail_dir / TRAIL_FILE).exists()
            if record.started_at is None:
                if has_trail:
                    self._store.mark(record.incident_id, "started_at", time.time()).result()
                    continue
                self._check_alive(record)
            elif has_trail and _run_ended(trail_dir):
                self._store.mark(record.incident_id, "ended_at", time.time()).result()
        self._write_events()

    def _check_alive(self, record: IncidentRecord) -> None:
        reason = None
        if isinstance(self._launcher, ProbingLauncher):
            try:
                reason = self._launcher.probe(self._settings, record)
            except Exception as exc:  # noqa: BLE001 (a probe failure is not a verdict)
                log.warning("cannot probe %s: %s", record.incident_id, type(exc).__name__)
        launched_at = record.launched_at or record.updated_at
        if reason is None and time.time() - launched_at > self._confirm_timeout_s:
            reason = f"no first trail record {self._confirm_timeout_s:.0f}s after the launch"
        if reason is None:
            return
        reason = Redactor().text(reason)[:500]
        gave_up = record.attempts >= self._max_attempts
        delay = self.delay(record.attempts)
        if self._store.run_died(
            record.incident_id, error=reason, retry_at=time.time() + delay, gave_up=gave_up
        ).result():
            log.error(
                "run of %s died before its first record (attempt %d)%s: %s",
                record.incident_id,
                record.attempts,
                "; giving up" if gave_up else f"; retrying in {delay:.0f}s",
                reason,
            )

    def _write_events(self) -> None:
        for row in self._store.pending_events().result():
            incident_id = row["incident_id"]
            if not (self._trail_dir(incident_id) / TRAIL_FILE).exists():
                continue  # written once the run's first record exists
            trail = Trail.open(Path(self._settings.evidence_dir), incident_id)
            trail.append(row["kind"], None, json.loads(row["data_json"]))
            self._store.event_written(row["id"]).result()


def _run_ended(trail_dir: Path) -> bool:
    """True when the trail's last run record says the run ended (not crashed mid-way:
    a killed run writes nothing, and is resumed by people)."""
    last = None
    with open(trail_dir / TRAIL_FILE, encoding="utf-8") as fh:
        for line in fh:
            if '"run.' in line:
                last = line
    if last is None:
        return False
    try:
        return json.loads(last).get("kind") == "run.ended"
    except ValueError:
        return False


class LaunchCollector:
    """Prometheus collector: ``mcp_ir_intake_launches{state}`` from the store —
    ``new``, ``launching``, ``retrying`` (failed, retry due later),
    ``awaiting_first_record``, ``failed`` (given up)."""

    def __init__(self, store: AlertStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "mcp_ir_intake_launches",
            "Incidents opened by the intake whose run is not (yet) running, by state.",
            labels=["state"],
        )
        try:
            backlog = self._store.backlog().result(timeout=5)
        except Exception:  # noqa: BLE001 (a closed store shows no samples)
            backlog = {}
        for state, count in backlog.items():
            gauge.add_metric([state], count)
        yield gauge
