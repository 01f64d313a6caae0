"""The launch worker: starts breach-response once for every new incident.

A thread claims incidents from the store (``new -> launching``, atomically), calls the
launcher with the incident id as its idempotency key, and records ``launched`` or
``failed``. On start it first returns incidents a crash left in ``launching`` to
``new``: relaunching them is safe because the launcher is idempotent on the
incident id, so a server killed right after its 202 still gets the run, once.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any, Protocol

from core.errors import ConfigError, McpIrError
from core.redact import Redactor
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
    """Background thread turning stored incidents into flow runs.

    Args:
        store: the alert store.
        settings: passed through to the launcher.
        launcher: callable with ``launch_incident``'s signature.
        poll_s: longest sleep between looks at the store (a new alert wakes it at once).
        max_attempts: launches tried for a retryable error before ``failed``.
        backoff_s: first retry delay, doubled each attempt.
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
    ) -> None:
        self._store = store
        self._settings = settings
        self._launcher = launcher
        self._poll_s = poll_s
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
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
        """Wakes the thread (called after a new incident is committed)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops after the launch in progress, if any."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

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
            )
        except McpIrError as exc:
            self._failed(record, exc.detail, retryable=exc.retryable)
        except Exception as exc:  # unknown failure: retried, then recorded as failed
            detail = Redactor().text(f"{type(exc).__name__}: {exc}")[:500]
            self._failed(record, detail, retryable=True)
        else:
            self._store.finish(record.incident_id, state="launched").result()
            log.info("incident %s launched (target %s)", record.incident_id, record.target)

    def _failed(self, record: IncidentRecord, detail: str, *, retryable: bool) -> None:
        if retryable and record.attempts < self._max_attempts:
            delay = self._backoff_s * 2 ** (record.attempts - 1)
            self._store.finish(
                record.incident_id, state="new", error=detail, retry_at=time.time() + delay
            ).result()
            log.warning(
                "launch of %s failed (attempt %d), retrying in %.0fs: %s",
                record.incident_id,
                record.attempts,
                delay,
                detail,
            )
        else:
            self._store.finish(record.incident_id, state="failed", error=detail).result()
            log.error("launch of %s failed for good: %s", record.incident_id, detail)
