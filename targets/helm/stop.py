"""Helm containment: containment first, destruction second — the release's pods are
isolated by their effective NetworkPolicy set (targets/helm/isolation.py), evidence is
captured (unless an earlier step of the incident already did), the pods are deleted so
no open connection survives, then the release is uninstalled as ``helm uninstall
--no-hooks`` does (its manifest stored as an artifact first); verified, by polling
while garbage collection finishes: nothing of the release is left
(``tasks/kubernetes.py`` does the Kubernetes work)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from core import failpoints
from core.errors import StepFailed
from core.operations import request_digest
from runbook.context import StepContext
from targets.base import PlanPart, nothing_left
from targets.helm import capture as helm_capture
from targets.helm import isolation
from targets.helm.common import (
    INSTANCE_LABEL,
    KIND_PATHS,
    MANIFEST_SUBJECT,
    config,
    k8s_op,
    stored_manifest,
    subjects,
)
from targets.helm.scrub import scrub_manifest


def isolate(ctx: StepContext) -> dict[str, Any]:
    """Isolation by the effective policy set (targets/helm/isolation.py); recorded as
    ``stack.isolated``."""
    return isolation.isolate(ctx)


def uninstall(ctx: StepContext) -> dict[str, Any]:
    """``helm uninstall --no-hooks``: stores the decoded release manifest (scrubbed and
    redacted) as an artifact BEFORE deleting anything — ``restore`` re-applies it —
    then deletes the release the adapter's way and records ``stack.stopped``."""
    from tasks import kubernetes

    cfg = config(ctx)
    api = ctx.clients.kubernetes
    helm, secrets = kubernetes.read_release(api, cfg.namespace, cfg.release)
    if helm is not None:
        subject = f"{MANIFEST_SUBJECT}:{cfg.release}.v{helm.version}"
        if subject not in subjects(ctx, any_step=True):
            ctx.artifact(
                scrub_manifest(helm.manifest),
                name=f"{cfg.release}.v{helm.version}.manifest.yaml",
                media_type="application/yaml",
                subject=subject,
                release=cfg.release,
                namespace=cfg.namespace,
                revision=helm.version,
                release_secrets=secrets,
            )
    failpoints.reach(ctx.step, "after_manifest")
    started = time.monotonic()
    result = kubernetes.uninstall_release(
        api,
        cfg.namespace,
        cfg.release,
        timeout_s=max(5.0, ctx.timeout_s * 0.5),  # garbage collection is asynchronous
    )
    data = {"kind": "helm", **asdict(result), "elapsed_s": round(time.monotonic() - started, 3)}
    ctx.record("stack.stopped", data)
    if ctx.params.get("absent_ok"):
        # Teardown: the release is retired, so other teams' policies get their selector
        # back now (its own policies went with it).
        data["policies"] = isolation.restore_policies(ctx, actions=("narrow",))
    return data


def isolation_present(ctx: StepContext) -> bool:
    from tasks import kubernetes

    cfg = config(ctx)
    return kubernetes.isolation_present(ctx.clients.kubernetes, cfg.namespace, cfg.release)


def remaining(ctx: StepContext) -> list[str]:
    """Everything of the release still in the cluster (``Kind/name``): the manifest's
    resources, any non-hook object labelled with the release, and its release Secrets.
    Hook resources and the setup-written credential Secrets are left by ``helm
    uninstall`` by design and are not listed. Read-only."""
    from tasks import kubernetes
    from tasks.kubernetes_helm import parse_manifest

    cfg = config(ctx)
    ns, api = cfg.namespace, ctx.clients.kubernetes
    helm, _ = kubernetes.read_release(api, ns, cfg.release, ctx.step)
    manifest = parse_manifest(helm.manifest) if helm else []
    left = kubernetes.release_leftovers(api, ns, cfg.release, manifest, op=ctx.step)
    return left.remaining


def _plan_source(ctx: StepContext) -> tuple[list[Any], list[str], int | None]:
    """(manifest resources, release Secret names, revision) for a plan: from this
    incident's stored manifest when an earlier attempt already stored it (the release
    may be half gone by now; the plan must not change), else read from the cluster."""
    from tasks import kubernetes
    from tasks.kubernetes_helm import parse_manifest

    cfg = config(ctx)
    rec = stored_manifest(ctx)
    if rec is not None:
        text = ctx.trail.read_artifact(rec.data["sha256"]).decode("utf-8", errors="replace")
        return (
            parse_manifest(text),
            list(rec.data.get("release_secrets", [])),
            rec.data.get("revision"),
        )
    helm, secrets = kubernetes.read_release(
        ctx.clients.kubernetes, cfg.namespace, cfg.release, ctx.step
    )
    if helm is None:
        return [], secrets, None
    return parse_manifest(helm.manifest), secrets, helm.version


def stop_plan(ctx: StepContext) -> PlanPart:
    """What ``stop`` will do, read-only: every mutating call in order, each as an
    operation (``*`` where a name is only known at run time) plus a note."""
    from tasks.kubernetes import isolation_policy_body, isolation_policy_name
    from tasks.kubernetes_gone import propagation_for
    from tasks.kubernetes_helm import UNINSTALL_ORDER, uninstall_sorted

    cfg = config(ctx)
    ns, rel = cfg.namespace, cfg.release
    manifest, secrets, revision = _plan_source(ctx)
    policy = isolation_policy_name(rel)
    ops = [
        k8s_op(
            "POST",
            "NetworkPolicy",
            ns,
            note=f"create {policy}: deny all ingress and egress of pods labelled "
            f"{INSTANCE_LABEL}={rel}",
            # Exactly this policy: any other body is refused at run time.
            params_digest=request_digest(body=isolation_policy_body(rel)),
        ),
        k8s_op(
            "PUT", "NetworkPolicy", ns, policy, note=f"only if an existing {policy} was loosened"
        ),
        *isolation.plan_operations(ns, rel),
    ]
    pods_op = k8s_op(
        "DELETE",
        "Pod",
        ns,
        "*",
        note=f"every pod labelled {INSTANCE_LABEL}={rel}, gracePeriodSeconds=0",
    )
    pod_slot = UNINSTALL_ORDER.index("Pod")
    pods_listed = False
    for res in uninstall_sorted(manifest):
        if res.keep:
            continue
        if not pods_listed and UNINSTALL_ORDER.index(res.kind) > pod_slot:
            ops.append(pods_op)
            pods_listed = True
        if res.kind not in KIND_PATHS:
            raise StepFailed(
                ctx.step,
                f'release "{rel}" in namespace "{ns}": manifest has kind {res.kind} '
                f"({res.name}) that this engine cannot delete",
            )
        ops.append(
            k8s_op(
                "DELETE",
                res.kind,
                res.namespace or ns,
                res.name,
                note="gracePeriodSeconds=0"
                if res.kind == "Pod"
                else f"propagationPolicy={propagation_for(res.kind)}",
            )
        )
    if not pods_listed:
        ops.append(pods_op)
    ops += [k8s_op("DELETE", "Secret", ns, s, note="Helm release record") for s in secrets]
    ops.append(
        k8s_op(
            "DELETE",
            "NetworkPolicy",
            ns,
            policy,
            note="isolation lifted once nothing of the release runs",
        )
    )
    kept = [r.ref for r in manifest if r.keep]
    resources = [
        f"helm-release:{ns}/{rel}" + (f"@v{revision}" if revision else ""),
        *[r.ref for r in uninstall_sorted(manifest) if not r.keep],
        *[f"Secret/{s}" for s in secrets],
    ]
    summary = (
        f"isolate, capture, then uninstall Helm release {rel!r} in namespace {ns!r}"
        + (f" (revision {revision})" if revision else " (no release record found)")
        + f": {len(manifest) - len(kept)} resource(s), every pod with grace period 0, "
        f"{len(secrets)} release Secret(s); hooks not run"
        + (f"; kept by resource-policy: {', '.join(kept)}" if kept else "")
    )
    plan_capture = helm_capture.capture_plan(ctx, 0)
    return PlanPart(
        summary=summary,
        resources=resources,
        reads=plan_capture.reads,
        operations=ops,
        parameters={
            "namespace": ns,
            "release": rel,
            "kubeconfig": cfg.kubeconfig,
            "context": cfg.context,
            "grace_period_seconds": 0,
            "no_hooks": True,
        },
    )


def stopped_reason(ctx: StepContext) -> str | None:
    """A reason when nothing of the release is left and the isolation policy is gone
    too (a finished earlier attempt), else None.

    Raises:
        StepFailed: no trace of the release at all and this incident never uninstalled
            it — the release or namespace in the inventory is wrong (a 404 for the whole
            release); succeeding here would report a containment that never happened.
    """
    cfg = config(ctx)
    if remaining(ctx) or isolation_present(ctx):
        return None
    if ctx.params.get("absent_ok"):
        # Teardown of a retired target: a release already gone is the goal, not a typo.
        return f'Helm release "{cfg.release}" is already absent from namespace "{cfg.namespace}"'
    if stored_manifest(ctx) is None and not any(
        r.kind == "stack.stopped" for r in ctx.trail.records()
    ):
        raise StepFailed(
            ctx.step,
            f'Helm release "{cfg.release}" not found in namespace "{cfg.namespace}" (404): no '
            f"Secret sh.helm.release.v1.{cfg.release}.v<N> and no resource labelled "
            f"{INSTANCE_LABEL}={cfg.release}; check the target's helm.release and helm.namespace",
        )
    return f'nothing of Helm release "{cfg.release}" is left in namespace "{cfg.namespace}"'


def stop(ctx: StepContext) -> dict[str, Any]:
    """Isolate and capture only while something of the release still runs: a re-run
    after a crash late in the uninstall just finishes it."""
    out: dict[str, Any] = {}
    if remaining(ctx):
        out["isolation"] = isolate(ctx)
        failpoints.reach(ctx.step, "after_isolate")
        out["capture"] = helm_capture.capture(ctx, skip_if_captured=True)
        failpoints.reach(ctx.step, "after_capture")
        out["connections"] = isolation.cut_connections(ctx)
    out["uninstall"] = uninstall(ctx)
    return out


def verify_stopped(ctx: StepContext) -> dict[str, Any]:
    nothing_left(ctx, remaining(ctx), "uninstall")
    return {"remaining": [], "isolation_lifted": not isolation_present(ctx)}
