"""Runs every check against one target and returns its :class:`TargetAudit`.

The target's facts are read by the reader of its kind; a check that raises
:class:`FactUnavailable` is ``unverifiable`` with that reason, and any other error
is ``unverifiable`` naming the error type — one failing check never hides the others.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audit.checks import registry
from audit.config import AuditSettings
from audit.context import AuditContext
from audit.facts import FactUnavailable, TargetFacts
from audit.model import CheckResult, Evidence, TargetAudit
from core.errors import McpIrError


def facts_for(target: Any) -> TargetFacts:
    """The facts reader of the target's kind."""
    if target.kind == "compose":
        from audit.facts_compose import ComposeFacts

        return ComposeFacts(target.compose)
    from audit.facts_helm import HelmFacts
    from tasks.kubernetes_calls import load_client

    helm = target.helm
    return HelmFacts(load_client(helm.kubeconfig, helm.context), helm)


def audit_target(
    inventory: Any,
    name: str,
    evidence_dir: Path,
    *,
    now: dt.datetime | None = None,
    env: Mapping[str, str] | None = None,
    only: list[str] | None = None,
) -> TargetAudit:
    """Audits ``name``; ``only`` restricts the run to those check ids."""
    target = inventory.target(name)
    now = now or dt.datetime.now(dt.UTC)
    settings: AuditSettings = target.audit
    try:
        facts = facts_for(target)
    except McpIrError as exc:
        return _all_unverifiable(name, target.kind, now, f"cannot reach the target: {exc.detail}")
    ctx = AuditContext(
        name=name,
        target=target,
        inventory=inventory,
        evidence_dir=Path(evidence_dir),
        facts=facts,
        settings=settings,
        now=now,
        env=dict(env if env is not None else os.environ),
    )
    results: list[CheckResult] = []
    try:
        for spec in registry(target.kind):
            if only and spec.id not in only:
                continue
            try:
                results.append(spec.run(ctx, spec))
            except FactUnavailable as exc:
                results.append(
                    CheckResult(spec.id, spec.title, "unverifiable", spec.severity, [], exc.reason)
                )
            except Exception as exc:  # noqa: BLE001 (one broken check must not hide the others)
                detail = exc.detail if isinstance(exc, McpIrError) else type(exc).__name__
                results.append(
                    CheckResult(
                        spec.id,
                        spec.title,
                        "unverifiable",
                        spec.severity,
                        [],
                        f"check error: {detail}",
                    )
                )
    finally:
        api = getattr(facts, "api", None)
        if api is not None:
            api.close()
    return TargetAudit(name, target.kind, results, now.isoformat())


def _all_unverifiable(name: str, kind: str, now: dt.datetime, reason: str) -> TargetAudit:
    checks = []
    for s in registry(kind):
        status = "manual" if s.id == "sso" else "unverifiable"  # SSO never needs the target
        checks.append(
            CheckResult(s.id, s.title, status, s.severity, [Evidence(name, reason)], reason)
        )
    return TargetAudit(name, kind, checks, now.isoformat())


def check_ids(kind: str | None = None) -> list[str]:
    """The ids of the checks (of target kind ``kind``, when given)."""
    return [s.id for s in registry(kind)]


def checks_for(target: Any) -> list[str]:
    """The ids of the checks that apply to ``target`` (an inventory target): the audit,
    not the step, knows which checks a kind of target has."""
    return check_ids(target.kind)
