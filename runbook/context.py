"""What a step sees: the incident, the target, the trail, and lazily built clients.

Clients are built here, from the inventory, in exactly one place each, so that a
test or a sandbox substitutes them by configuration (``DOCKER_HOST``,
``ANTHROPIC_BASE_URL``, ``KUBECONFIG``, ``AWS_ENDPOINT_URL``), never by patching.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from core.errors import StepFailed
from core.operations import Guard, Operation
from core.redact import Redactor
from core.trail import Record, Trail
from runbook.inventory import Inventory, Target


@dataclass(frozen=True)
class Incident:
    """The facts recorded when the incident was opened."""

    id: str
    target: str
    playbook: str
    initiator: str
    trigger: dict[str, Any]
    severity: str
    window_start: datetime | None
    window_end: datetime | None
    drill: bool = False
    policy: str = "standard"


class Clients:
    """Lazily built SDK clients for one target, each wired to the operation guard
    (``guard``): every mutating request they send is admitted by it first
    (``runbook/guarded.py``)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.guard = Guard()

    @cached_property
    def docker(self) -> Any:
        import docker

        host = (self.target.compose and self.target.compose.docker_host) or os.environ.get(
            "DOCKER_HOST"
        )
        # A pinned API version avoids the constructor's GET /version round trip, which
        # would otherwise run inside capture's deadline (1.41: Docker 20.10+, podman).
        from runbook.guarded import guard_docker

        if host:
            client = docker.DockerClient(base_url=host, timeout=30, version="1.41")
        else:
            client = docker.from_env(timeout=30, version="1.41")
        return guard_docker(client, self.guard)

    @cached_property
    def anthropic(self) -> Any:
        from tasks.anthropic_client import build_client

        cfg = self.target.anthropic
        wif = cfg.credentials.workload_identity
        from runbook.guarded import guard_anthropic

        client = build_client(
            cfg.base_url,
            bearer_env=cfg.credentials.bearer_env,
            workload_identity=wif.model_dump() if wif else None,
        )
        return guard_anthropic(client, self.guard)

    @cached_property
    def kubernetes(self) -> Any:
        from runbook.guarded import guard_kubernetes
        from tasks.kubernetes import load_client

        helm = self.target.helm
        api = load_client(helm.kubeconfig if helm else None, helm.context if helm else None)
        return guard_kubernetes(api, self.guard)

    def close(self) -> None:
        for name in ("docker", "anthropic"):
            client = self.__dict__.get(name)
            if client is not None and hasattr(client, "close"):
                client.close()


def secrets_for(target: Target) -> list[str]:
    """The secret values this process may meet for a target, for redaction."""
    values: list[str] = []
    names = list(target.secrets_env)
    if target.anthropic.credentials.bearer_env:
        names.append(target.anthropic.credentials.bearer_env)
    for name in names:
        value = os.environ.get(name)
        if value:
            values.append(value)
    if target.compose:
        for fname in ("tunnel-token", "ca.key", "tls.key"):
            path = target.compose.data_dir / fname
            try:
                values.append(path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                continue
    return values


def build_redactor(target: Target) -> Redactor:
    return Redactor(secrets_for(target))


@dataclass
class StepContext:
    incident: Incident
    step: str
    target: Target
    inventory: Inventory
    trail: Trail
    clients: Clients
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 600.0
    prepared: dict[str, Any] | None = None
    manual: dict[str, Any] | None = None
    # The plan the step runs under (set by the runner before check/apply/verify): its
    # operations are what the guard admits.
    plan: Any = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("mcp_ir.step"))

    @classmethod
    def for_spec(
        cls,
        spec: Any,
        incident: Incident,
        target: Target,
        inventory: Inventory,
        trail: Trail,
        clients: Clients,
        **extra: Any,
    ) -> StepContext:
        """The context of one playbook step (a ``runbook.playbook.StepSpec``): its key,
        a copy of its params and its timeout; the runner and ``mcp-ir plan`` both build
        it here, so a plan previewed is made from the same context as the live one."""
        return cls(
            incident=incident,
            step=spec.key,
            target=target,
            inventory=inventory,
            trail=trail,
            clients=clients,
            params=dict(spec.params),
            timeout_s=spec.timeout_s,
            **extra,
        )

    @property
    def redactor(self) -> Redactor:
        return self.trail.redactor

    @property
    def driver(self) -> Any:
        """The target driver of the target's kind (``targets.driver_for``)."""
        from targets import driver_for

        return driver_for(self.target.kind)

    @property
    def guard(self) -> Guard:
        return self.clients.guard

    def admit(self, operation: Operation) -> None:
        """A mutating action that goes through no guarded client (a local file)."""
        self.clients.guard.admit(operation)

    def record(self, kind: str, data: dict[str, Any] | None = None) -> Record:
        """Writes evidence right after a side effect, from the code that caused it."""
        return self.trail.append(kind, self.step, data or {})

    def artifact(
        self, content: bytes, *, name: str, media_type: str = "text/plain", **extra: Any
    ) -> Record:
        return self.trail.add_artifact(
            content, name=name, media_type=media_type, step=self.step, extra=extra
        )

    def last_record(self, kind: str, missing: str) -> Record:
        """This step's last ``kind`` record, which a verify relies on.

        Raises:
            StepFailed: there is none (``missing`` says what is lacking).
        """
        found = self.step_records(kind)
        if not found:
            raise StepFailed(self.step, missing)
        return found[-1]

    def step_records(self, kind: str | None = None) -> list[Record]:
        return [
            r
            for r in self.trail.records()
            if r.step == self.step and (kind is None or r.kind == kind)
        ]
