"""One destructive run per target at a time: a Prefect global concurrency limit
named after the target, held with a lease that a background thread renews.

The lease id is written to the incident's trail, so that when a killed run of the
SAME incident is resumed, the new run releases its own predecessor's lease at
once instead of waiting for it to expire (Prefect's minimum lease is 60 s).
Another incident's lease is never touched: it waits, then fails clearly.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any
from uuid import UUID

from httpx import HTTPStatusError
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists

from core.errors import McpIrError

LEASE_SECONDS = 60.0


class TargetBusy(McpIrError):
    """Another run holds the target."""


def limit_name(target: str) -> str:
    return f"mcp-ir-target-{target}"


class TargetLock:
    def __init__(self, target: str, *, wait_s: float | None = None) -> None:
        self.target = target
        self.name = limit_name(target)
        # How long a second run waits for the target before giving up.
        self.wait_s = (
            wait_s if wait_s is not None else float(os.environ.get("MCP_IR_TARGET_WAIT_S", "30"))
        )
        self.lease_id: UUID | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _ensure_limit(self, client: Any) -> None:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=self.name, limit=1)
            )

    @staticmethod
    def release_stale(lease_id: str) -> bool:
        """Releases a lease left by a dead run of the same incident (404 if expired)."""
        with get_client(sync_client=True) as client:
            try:
                client.release_concurrency_slots_with_lease(UUID(lease_id))
                return True
            except HTTPStatusError as exc:
                if exc.response.status_code == 404:
                    return False
                raise

    def acquire(self) -> UUID:
        deadline = time.monotonic() + self.wait_s
        with get_client(sync_client=True) as client:
            self._ensure_limit(client)
            while True:
                try:
                    resp = client.increment_concurrency_slots_with_lease(
                        names=[self.name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS
                    )
                    self.lease_id = UUID(resp.json()["lease_id"])
                    break
                except HTTPStatusError as exc:
                    if exc.response.status_code != 423:
                        raise
                    if time.monotonic() > deadline:
                        raise TargetBusy(
                            f"target {self.target!r} is held by another run (Prefect concurrency limit "
                            f"{self.name!r}); waited {self.wait_s:.0f}s. See `mcp-ir status` of the other incident."
                        ) from None
                    time.sleep(1.0)
        self._renewer = threading.Thread(
            target=self._renew, name=f"lease-{self.target}", daemon=True
        )
        self._renewer.start()
        return self.lease_id

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                with get_client(sync_client=True) as client:
                    client.renew_concurrency_lease(self.lease_id, lease_duration=LEASE_SECONDS)
            except Exception:  # noqa: BLE001, S112 (renewal retries on the next tick; expiry frees the target)
                continue

    def release(self) -> None:
        self._stop.set()
        if self.lease_id is not None:
            try:
                self.release_stale(str(self.lease_id))
            finally:
                self.lease_id = None
