"""Helm capture: both containers' logs of every pod of the release (timestamps,
``previous`` logs), the Deployment, ReplicaSets, Pods, Events, NetworkPolicies, Jobs
and CronJobs as YAML (scrubbed), and the release's Secrets as metadata and key names
only; bounded by ``params.deadline_s``. The values of the credential Secrets are read
only to register them with the trail's redactor."""

from __future__ import annotations

from typing import Any

from core.errors import StepFailed, TransientError
from runbook.context import StepContext
from runbook.steps._evidence import dumps
from targets.base import PlanPart
from targets.helm.common import (
    INSTANCE_LABEL,
    api_path,
    config,
    subject,
    subjects,
)
from targets.helm.scrub import scrub_yaml


def _register_secret_values(ctx: StepContext) -> dict[str, str]:
    """Reads the release's credential Secrets only to register their values with the
    trail's redactor (a token in a debug log line is then removed), and returns the
    fingerprints of the public certificates they hold. Nothing read here is stored."""
    from tasks import kubernetes
    from tasks.tunnels import pem_fingerprint

    cfg = config(ctx)
    certs: dict[str, str] = {}
    for name in kubernetes.credential_secret_names(cfg.release):
        try:
            data = kubernetes.read_secret_values(
                ctx.clients.kubernetes, cfg.namespace, name, op=ctx.step
            )
        except (StepFailed, TransientError) as exc:
            certs[f"{name}"] = f"unreadable: {exc.detail}"
            continue
        for key, value in (data or {}).items():
            ctx.redactor.add(value)
            if key in ("ca.crt", "tls.crt"):
                try:
                    certs[f"{name}/{key}"] = pem_fingerprint(value)
                except ValueError:
                    certs[f"{name}/{key}"] = "unreadable: not a PEM certificate"
    return certs


def capture_plan(ctx: StepContext, deadline_s: float) -> PlanPart:
    """Read-only: the resources and the calls of a capture."""
    cfg = config(ctx)
    ns, rel = cfg.namespace, cfg.release
    sel = f"labelSelector={INSTANCE_LABEL}={rel}"
    return PlanPart(
        summary=f"capture logs, objects and Secret key names of Helm release {rel!r} in "
        f"namespace {ns!r}",
        resources=[f"helm-release:{ns}/{rel}"],
        reads=[
            f"GET {api_path('Pod', ns)}?{sel}",
            f"GET {api_path('Pod', ns)}/{{pod}}/log?container={{c}}&timestamps=true&previous=…",
            f"GET {api_path('Deployment', ns)}?{sel}",
            f"GET {api_path('ReplicaSet', ns)}?{sel}",
            f"GET {api_path('Job', ns)}?{sel}",
            f"GET {api_path('CronJob', ns)}?{sel}",
            f"GET {api_path('NetworkPolicy', ns)}",
            f"GET /api/v1/namespaces/{ns}/events",
            f"GET {api_path('Secret', ns)} (metadata and key names only are kept)",
        ],
    )


def capture(
    ctx: StepContext, deadline_s: float | None = None, *, skip_if_captured: bool = False
) -> dict[str, Any]:
    """Captures the release's logs, objects as YAML and Secrets as metadata + key
    names, each stored as an artifact; bounded by ``deadline_s``.

    Resumable: subjects this step already stored are skipped. With
    ``skip_if_captured`` (``stop_stack``), an earlier complete capture in this incident
    of the same pods (by any step) means nothing is read again.
    """
    from tasks import kubernetes

    cfg = config(ctx)
    if deadline_s is None:
        deadline_s = float(ctx.params.get("deadline_s", 5.0))
    if skip_if_captured:
        covered: set[str] = set()
        for rec in ctx.trail.records():
            if rec.kind == "evidence.captured" and rec.data.get("complete"):
                covered |= set(rec.data.get("pods", []))
        pods = kubernetes.release_pods(ctx.clients.kubernetes, cfg.namespace, cfg.release)
        if covered and set(pods) <= covered:
            return {"skipped": "captured earlier in this incident", "pods": sorted(covered)}
    have = subjects(ctx, any_step=skip_if_captured)
    certs = _register_secret_values(ctx)
    result = kubernetes.capture(
        ctx.clients.kubernetes, cfg.namespace, cfg.release, deadline_s=deadline_s
    )
    stored: list[str] = []
    for name, raw in sorted(result.artifacts.items()):
        subj = subject(name)
        if subj in have:
            continue
        is_log = name.startswith("logs/")
        ctx.artifact(
            raw if is_log else scrub_yaml(raw),
            name=name,
            media_type="text/plain" if is_log else "application/yaml",
            subject=subj,
            partial=name in result.truncated,
        )
        stored.append(subj)
    if "helm-certificates" not in have and certs:
        ctx.artifact(
            dumps(certs),
            name="certificate-fingerprints.json",
            media_type="application/json",
            subject="helm-certificates",
        )
        stored.append("helm-certificates")
    if result.incomplete:
        ctx.record("capture.incomplete", {"incomplete": result.incomplete, "errors": result.errors})
    if not result.pods:
        ctx.record(
            "capture.incomplete",
            {"pods": f'no pod labelled {INSTANCE_LABEL}={cfg.release} in "{cfg.namespace}"'},
        )
    summary = {
        "pods": result.pods,
        "complete": result.complete and bool(result.pods),
        "secrets": [s.name for s in result.secrets],
        "elapsed_s": round(result.elapsed_s, 3),
    }
    ctx.record("evidence.captured", summary)
    return {
        **summary,
        "stored": stored,
        "already_stored": sorted(have & set(map(subject, result.artifacts))),
    }
